"""The README and docs/ name only what exists: every repository path, every link, every ``indextts-train`` command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: Top-level folders of the repository: a code span starting with one of these names a file or folder of ours.
TOP = ("indextts_core/", "tasks/", "flows/", "tests/", "docs/", "configs/", "benchmarks/", "deployments/", "docker/",
       ".ci/")


def _repo_paths(text: str) -> set[str]:
    found = set()
    for span in re.findall(r"`([^`\n]+)`", text):
        for token in re.split(r"[\s,;]+", span):
            token = token.strip("()[]'\".")
            if not token.startswith(TOP) or any(c in token for c in "<>*{}$"):
                continue
            found.add(re.sub(r":[\w.-]*$", "", token))  # flows/finetune.py:finetune, :12, ...
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_path_and_link_exists(page: Path):
    text = page.read_text(encoding="utf-8")
    missing = sorted(p for p in _repo_paths(text) if not (REPO / p).exists())
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if "://" in target or target.startswith(("#", "mailto:")):
            continue
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            missing.append(target)
    assert not missing, f"{page.relative_to(REPO)} names what does not exist: {missing}"


def test_every_command_named_exists():
    import typer.main

    from flows.cli import app

    commands = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    for page in PAGES:
        named = set(re.findall(r"(?<![/\w-])indextts-train ([a-z][a-z0-9-]*)", page.read_text(encoding="utf-8")))
        assert named <= commands, f"{page.relative_to(REPO)} names commands that do not exist: {named - commands}"
