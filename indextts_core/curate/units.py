"""Where the curate stage keeps one recording's finished work (its unit): a local folder or the artifact store.

A unit is a folder: ``unit.json`` (what was measured on every candidate clip, see
:mod:`indextts_core.curate.process`) and ``clips/*.flac``.  It is named by the recording's content digest
and the options that shape the clips (:func:`indextts_core.curate.process.unit_name`), so it is made once and
reused by every later run over the same recording, and a run killed part-way resumes at the next recording.
The clips go up first and ``unit.json`` last, so a unit whose record exists is complete; a record whose
clips are missing or damaged (checked against the sha256 it carries when a clip is fetched) is made again.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from indextts_core.store.objects import ArtifactStore, store_uri
from indextts_core.utils.fileio import atomic_copy, read_json, sha256_file

#: The store prefix of the curate stage's units.
UNITS_PREFIX = "curate/units"
RECORD = "unit.json"


class UnitStore(Protocol):
    """Finished units: look one up, save one, say where a clip of one is."""

    def record(self, name: str) -> dict[str, Any] | None:
        """The unit's record when the unit is complete (its record and every clip present), else None."""

    @contextmanager
    def workspace(self) -> Iterator[Path]:
        """An empty local folder to build a unit in."""

    def save(self, work: Path, name: str) -> None:
        """Store a unit built in ``work`` (clips first, the record last)."""

    def audio_ref(self, name: str, rel: str) -> str:
        """What a manifest row says for the unit's file ``rel``: a path ingest can read on any worker."""

    def fetch(self, name: str, rel: str, sha256: str, dest: Path) -> Path:
        """Copy the unit's file ``rel`` to ``dest``, checked against its sha256."""


@contextmanager
def _workspace() -> Iterator[Path]:
    """An empty temporary folder a unit is built in (both stores build units locally)."""
    with tempfile.TemporaryDirectory(prefix="indextts-curate-") as tmp:
        yield Path(tmp)


def _complete(record: Any, present: set[str]) -> bool:
    return isinstance(record, dict) and all(c.get("file") in present for c in record.get("clips", ()))


class UnitFolder:
    """Units in a local folder (``<root>/<name>/``); a manifest names clips by their absolute path."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()

    def record(self, name: str) -> dict[str, Any] | None:
        folder = self.root / name
        if not (folder / RECORD).is_file():
            return None
        record = read_json(folder / RECORD)
        present = {p.relative_to(folder).as_posix() for p in folder.rglob("*.flac")}
        return record if _complete(record, present) else None

    workspace = staticmethod(_workspace)

    def save(self, work: Path, name: str) -> None:
        dest = self.root / name
        for path in sorted(work.rglob("*")):
            if path.is_file() and path.name != RECORD:
                atomic_copy(path, dest / path.relative_to(work))
        atomic_copy(work / RECORD, dest / RECORD)  # last: the unit is now complete

    def audio_ref(self, name: str, rel: str) -> str:
        return str(self.root / name / rel)

    def fetch(self, name: str, rel: str, sha256: str, dest: Path) -> Path:
        src = self.root / name / rel
        if sha256_file(src) != sha256:
            raise OSError(f"{src}: changed since it was written (sha256 differs from its unit record)")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        return dest


class StoredUnits:
    """Units in the artifact store (``curate/units/<name>/``); a manifest names clips ``store:<key>``, so the
    clips are stored once and ingest (and every later stage) reads them from there, on any worker."""

    def __init__(self, store: ArtifactStore):
        self.store = store

    def _key(self, name: str, rel: str) -> str:
        return f"{UNITS_PREFIX}/{name}/{rel}"

    def record(self, name: str) -> dict[str, Any] | None:
        key = self._key(name, RECORD)
        if not self.store.exists(key):
            return None
        prefix = self._key(name, "")
        present = {k[len(prefix):] for k in self.store.list(prefix)}
        record = self.store.get_json(key)
        return record if _complete(record, present) else None

    workspace = staticmethod(_workspace)

    def save(self, work: Path, name: str) -> None:
        for path in sorted(work.rglob("*")):
            if path.is_file() and path.name != RECORD:
                self.store.put_file(path, self._key(name, path.relative_to(work).as_posix()))
        self.store.put_file(work / RECORD, self._key(name, RECORD))

    def audio_ref(self, name: str, rel: str) -> str:
        return store_uri(self._key(name, rel))

    def fetch(self, name: str, rel: str, sha256: str, dest: Path) -> Path:
        return self.store.get_file_verified(self._key(name, rel), dest, sha256)
