"""Who the judges are: each ASR judge's name, revision and licence, as the report records them.

Some public ASR weights are licensed for non-commercial use only (for example MMS, cc-by-nc-4.0): a
report built with such a judge says so.  :func:`judge_info` reads a local model folder: the licence
from a Hugging Face model card's front matter (``README.md``, the ``license:`` line) or else the first
line of a ``LICENSE`` file ("unknown" without either); the revision is the hub commit when the caller
knows it (the ``download.asr`` asset's record), else the folder's content digest given by the caller,
else ``sha256:`` of its ``config.json``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

UNKNOWN = "unknown"
LICENSE_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "LICENCE.txt", "COPYING")


def read_licence(folder: Path) -> str:
    """The folder's licence: the model card's ``license:`` (front matter), else a LICENSE file's first line."""
    card = folder / "README.md"
    if card.is_file():
        found = _card_licence(card.read_text(encoding="utf-8", errors="replace"))
        if found:
            return found
    for name in LICENSE_FILES:
        path = folder / name
        if path.is_file():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.strip():
                    return line.strip()[:200]
    return UNKNOWN


def _card_licence(text: str) -> str | None:
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    front: list[str] = []
    for line in lines[1:]:
        if line.strip() == "---":
            break
        front.append(line)
    else:
        return None
    for i, line in enumerate(front):
        m = re.match(r"licen[cs]e\s*:\s*(.*)$", line)
        if not m:
            continue
        value = m.group(1).split(" #")[0].strip().strip("'\"")
        if value.startswith("[") and value.endswith("]"):  # inline list
            value = ", ".join(v.strip().strip("'\"") for v in value[1:-1].split(",") if v.strip())
        if not value:  # a block list: "license:\n  - cc-by-nc-4.0"
            items = []
            for nxt in front[i + 1:]:
                item = re.match(r"\s*-\s*(.+)$", nxt)
                if not item:
                    break
                items.append(item.group(1).strip().strip("'\""))
            value = ", ".join(items)
        return value or None
    return None


def is_non_commercial(licence: str) -> bool:
    """cc-by-nc-4.0, cc-by-nc-sa-4.0, "Non-Commercial", "noncommercial": an ``nc`` word or the phrase."""
    text = licence.lower()
    return "nc" in re.split(r"[^a-z0-9]+", text) or bool(re.search(r"non[\s_-]?commercial", text))


def folder_revision(folder: Path) -> str | None:
    """``sha256:<hex>`` of the folder's ``config.json`` (what identifies a local folder), None without one."""
    config = folder / "config.json"
    return f"sha256:{hashlib.sha256(config.read_bytes()).hexdigest()}" if config.is_file() else None


def judge_info(folder: Path, name: str | None = None, revision: str | None = None) -> dict[str, Any]:
    """``{"name", "revision", "licence"}`` of the judge in ``folder`` (``name``: the transcriber's; default
    the folder's name; ``revision``: the hub commit or a content digest when known, else its config's sha256)."""
    folder = Path(folder)
    return {"name": name or folder.name, "revision": revision or folder_revision(folder) or UNKNOWN,
            "licence": read_licence(folder)}


def licence_caveats(judges: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """One line per judge whose licence is non-commercial."""
    return [f"the judge {j['name']} is licensed {j['licence']} (non-commercial): its transcripts and the CER/WER "
            "they give may not be usable for commercial work; check the licence before relying on this report "
            "commercially." for j in judges or () if is_non_commercial(str(j.get("licence") or ""))]


def judges_line(judges: Sequence[Mapping[str, Any]] | None) -> str:
    """The judges, one clause each: role, name, revision and licence."""
    if not judges:
        return ""
    return "Judges: " + "; ".join(f"{j.get('role', 'first')} {j['name']} (revision {j['revision']}, licence "
                                  f"{j['licence']})" for j in judges) + "."
