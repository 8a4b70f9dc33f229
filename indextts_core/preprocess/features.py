"""Where a feature set lives: a local folder, or the artifact store that every worker and later run shares.

A feature set (``<root>/<feature set id>/`` or ``features/<feature set id>/`` in the store) holds one
shard and one ``unit-*.json`` record per finished unit.  Both kinds answer the same questions for the
stage (:mod:`indextts_core.preprocess.run`): which units are finished, where a unit writes its shard and
record, how a finished unit is kept, and how the index names the folder.  A unit whose shard is gone
(deleted as damaged) counts as not finished either way, so the next run computes it again.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from indextts_core.errors import StorageError
from indextts_core.preprocess.planning import UnitRecords, read_units, record_complete
from indextts_core.store.objects import ArtifactStore, corrupt_message
from indextts_core.utils.fileio import read_json


class FeatureStore(Protocol):
    """A feature set's home, as the stage uses it."""

    featureset: str
    feature_dir: Path  # a local folder, or the store's key prefix as a relative path

    def records(self) -> UnitRecords:
        """What every finished unit recorded (a unit whose shard is missing is not finished)."""
        ...

    def workspace(self) -> AbstractContextManager[Path]:
        """A context giving the local folder a unit writes its shard and record into."""
        ...

    def save_unit(self, work: Path, name: str) -> None:
        """Keep the unit ``name`` that was written into ``work``: its shard first, its record last."""
        ...

    def reference(self, out_dir: Path) -> str:
        """How an index written to ``out_dir`` names this feature set (``preprocess.json``'s ``feature_dir``)."""
        ...


class FeatureFolder:
    """A feature set in a local folder, ``root/<featureset>``; units write into it directly."""

    def __init__(self, root: Path, featureset: str):
        self.featureset = featureset
        self.feature_dir = Path(root) / featureset

    def records(self) -> UnitRecords:
        return read_units(self.feature_dir)

    @contextmanager
    def workspace(self) -> Iterator[Path]:
        yield self.feature_dir

    def save_unit(self, work: Path, name: str) -> None:
        """Nothing to do: the unit wrote its shard and, last, its record into the folder itself."""

    def reference(self, out_dir: Path) -> str:
        return os.path.relpath(self.feature_dir, out_dir)


def feature_prefix(featureset: str) -> str:
    """The store key prefix of a feature set."""
    return f"features/{featureset}"


class StoredFeatures:
    """A feature set in the artifact store, ``features/<featureset>/``; a unit writes into a temporary folder
    and is uploaded from there, its shard checked by content against its record before the record goes up."""

    def __init__(self, store: ArtifactStore, featureset: str):
        self.store, self.featureset = store, featureset
        self.prefix = feature_prefix(featureset)
        self.feature_dir = Path(self.prefix)

    def records(self) -> UnitRecords:
        records = UnitRecords()
        keys = self.store.list(self.prefix)
        present = {k.rsplit("/", 1)[-1] for k in keys}
        for key in keys:
            if key.rsplit("/", 1)[-1].startswith("unit-") and key.endswith(".json"):
                record = self.store.get_json(key)
                if record_complete(record, present=present):
                    records.add(record)
        return records

    def unit_done(self, name: str) -> bool:
        """The unit's record is in the store, and so is its shard (one deleted as damaged is made again)."""
        key = f"{self.prefix}/{name}.json"
        if not self.store.exists(key):
            return False
        record = self.store.get_json(key)
        return not record.get("shard") or self.store.exists(f"{self.prefix}/{record['shard']}")

    @contextmanager
    def workspace(self) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="indextts-unit-") as tmp:
            yield Path(tmp)

    def save_unit(self, work: Path, name: str) -> None:
        """Upload the shard, check that the store got the bytes whose sha256 the record carries, then the record."""
        record = read_json(work / f"{name}.json")
        if record.get("shard"):
            key = f"{self.prefix}/{record['shard']}"
            got = self.store.put_file(work / record["shard"], key).sha256
            if record.get("shard_sha256") and got != record["shard_sha256"]:  # changed on this disk before upload
                self.store.delete(key)
                raise StorageError(corrupt_message(f"{work / record['shard']} (uploading to {self.store.uri_for(key)})",
                                                   got, record["shard_sha256"], "the unit is retried"), transient=True)
        self.store.put_file(work / f"{name}.json", f"{self.prefix}/{name}.json")  # last: the unit is now complete

    def reference(self, out_dir: Path) -> str:
        return f"store:{self.prefix}"
