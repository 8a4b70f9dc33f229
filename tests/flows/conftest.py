"""Flow tests run real Prefect (a temporary API server for the session) and real MLflow (sqlite)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests_support import make_cfg


@pytest.fixture(scope="session", autouse=True)
def prefect_api(prefect_harness: None) -> Iterator[None]:
    yield


@dataclass(frozen=True)
class FirstRun:
    """Where the demo's first run (``make_cfg(root)``) left its run folder, store and MLflow, and what it returned."""

    root: Path
    summary: Any  # flows.runtime.RunSummary

    def cfg(self, overrides: dict[str, Any] | None = None) -> Any:
        return make_cfg(self.root, overrides)


def _copy_tree(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> None:
    """``src`` copied to ``dst``, files that are hard links of each other still one file (the store, the run folder
    and the checkpoints share their large files so), ``skip`` (names at the top) left out."""
    first: dict[tuple[int, int], str] = {}

    def copy(a: str, b: str) -> None:
        st = os.stat(a)
        if (st.st_dev, st.st_ino) in first:
            os.link(first[st.st_dev, st.st_ino], b)
        else:
            shutil.copy2(a, b)
            first[st.st_dev, st.st_ino] = b

    shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True, copy_function=copy,
                    ignore=lambda d, names: [n for n in names if Path(d) == src and n in skip])


@pytest.fixture(scope="session")
def _first_run_snapshot(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any]:
    """One demo run per test worker, and a copy of everything it wrote (taken when it ended).

    A run's records name absolute paths (the store's URIs, MLflow's artifact folder), so the copy is
    restored at the same path, not elsewhere; the tests of one worker run one after another, so that path
    is theirs in turn.
    """
    from flows.finetune import finetune

    root = tmp_path_factory.mktemp("first-run")
    summary = finetune(make_cfg(root))
    snapshot = tmp_path_factory.mktemp("first-run-snapshot") / "root"
    _copy_tree(root, snapshot)
    return root, snapshot, summary


@pytest.fixture
def first_run(_first_run_snapshot: tuple[Path, Path, Any]) -> FirstRun:
    """The state right after the demo's first run, fresh for each test: the tests that begin where a first run
    ends (a second run, a vanished artifact, a fresh machine) do not each train the demo again."""
    root, snapshot, summary = _first_run_snapshot
    database = root / "mlflow.db"
    for path in root.iterdir():
        if path != database:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    _copy_tree(snapshot, root, skip=("mlflow.db",))
    # in place: MLflow keeps its connections to the file open (a new file would leave them on the old one)
    shutil.copyfile(snapshot / "mlflow.db", database)
    return FirstRun(root, summary)
