"""Feature shards: many clips' audio features in one safetensors file.

A shard holds, for ``n`` clips (row order = the ``keys`` in its metadata):

* ``codes``: int16, every clip's semantic codes concatenated, with ``code_offsets`` (n + 1, int64);
* ``speaker_latents``: float16 (n, 32, D), the frozen base GPT's speaker conditioning;
* ``emotion_vectors``: float16 (n, D), its emotion vectors;
* ``durations``: float32 (n,).

Clips are keyed by their audio's sha256, so the same audio is never processed twice for the same
models.  A shard's name is derived from its content keys; it is written to a temporary file and
renamed, so a shard is either complete or absent.  Files are memory-mapped when read.

Integrity: :func:`write_shard_hashed` returns the sha256 of the bytes it wrote (serialized once, hashed
in memory: no second read).  The unit record keeps it (``shard_sha256``), the index's
``preprocess.json`` lists it per shard, and :func:`verify_shards` checks a folder of shards by
content before training reads them; a mismatch is a
:class:`~indextts_core.store.objects.CorruptArtifactError` naming the shard.  Indexes written
before shard hashes existed have no such list: their shards load unverified (a warning says so).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from indextts_core.store.objects import CorruptArtifactError, corrupt_message
from indextts_core.utils.fileio import atomic_write, sha256_file
from indextts_core.utils.safe_load import safetensors_open

log = logging.getLogger(__name__)

SHARD_FORMAT = "indextts-features/1"
#: What to do about a damaged shard (the unit that made it is recomputed once the shard is gone).
SHARD_REMEDY = ("delete the damaged file, then run preprocess again with --refresh-cache: the unit that made it "
                "is recomputed (its record is ignored while its shard is missing)")


@dataclass(frozen=True)
class ClipFeatures:
    key: str  # the audio's sha256
    codes: np.ndarray  # (T,) int, values < 32768
    speaker_latents: np.ndarray  # (32, D)
    emotion_vector: np.ndarray  # (D,)
    duration: float


def shard_name(keys: list[str]) -> str:
    return "shard-" + hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:20] + ".safetensors"


def write_shard(directory: Path, clips: list[ClipFeatures]) -> Path:
    """Write ``clips`` as one shard in ``directory`` (atomically); returns its path."""
    return write_shard_hashed(directory, clips)[0]


def write_shard_hashed(directory: Path, clips: list[ClipFeatures]) -> tuple[Path, str]:
    """Write ``clips`` as one shard in ``directory`` (atomically); returns its path and the sha256 of its bytes."""
    from safetensors.torch import save

    if not clips:
        raise ValueError("a shard needs at least one clip")
    lengths = [len(c.codes) for c in clips]
    if max(int(c.codes.max(initial=0)) for c in clips) > np.iinfo(np.int16).max:
        raise ValueError("codes do not fit in int16")
    tensors = {
        "codes": torch.from_numpy(np.concatenate([c.codes for c in clips]).astype(np.int16)),
        "code_offsets": torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)),
        "speaker_latents": torch.from_numpy(np.stack([c.speaker_latents for c in clips]).astype(np.float16)),
        "emotion_vectors": torch.from_numpy(np.stack([c.emotion_vector for c in clips]).astype(np.float16)),
        "durations": torch.tensor([c.duration for c in clips], dtype=torch.float32),
    }
    keys = [c.key for c in clips]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / shard_name(keys)
    # one metadata entry: safetensors writes a map's entries in hash order, so two would make
    # identical shards differ byte for byte
    data = save(tensors, metadata={"indextts": json.dumps({"format": SHARD_FORMAT, "keys": keys})})
    with atomic_write(path, "wb") as f:
        f.write(data)
    return path, hashlib.sha256(data).hexdigest()


def recorded_shard_hashes(meta: Mapping[str, Any]) -> dict[str, str] | None:
    """``{shard: sha256}`` from an index's ``preprocess.json``; None for an index older than shard hashes."""
    hashes = meta.get("shard_sha256")
    return dict(hashes) if isinstance(hashes, dict) else None


def verify_shard(path: Path, sha256: str) -> None:
    """Check one shard by content against the sha256 recorded when it was written."""
    got = sha256_file(path)
    if got != sha256:
        raise CorruptArtifactError(corrupt_message(f"feature shard {path}", got, sha256, SHARD_REMEDY))


def verify_shards(folder: Path, names: list[str], meta: Mapping[str, Any], label: str) -> bool:
    """Check every shard of ``names`` in ``folder`` against the hashes the index ``label`` recorded.

    Returns False (after a warning) when the index predates shard hashes, or for shards it has no
    hash for; True when every shard was verified.  Raises :class:`CorruptArtifactError` naming the
    first shard that does not match.
    """
    hashes = recorded_shard_hashes(meta)
    if hashes is None:
        log.warning("%s: written before feature shards were hashed; its %d shards are used unverified (run "
                    "preprocess with --refresh-cache to record their hashes)", label, len(names))
        return False
    unknown = [n for n in names if n not in hashes]
    for name in names:
        if name in hashes:
            verify_shard(folder / name, hashes[name])
    if unknown:
        log.warning("%s: no recorded hash for %d feature shard(s) (e.g. %s, made before shards were hashed); "
                    "they are used unverified", label, len(unknown), unknown[0])
    return not unknown


def _read_meta(path: Path, meta: dict[str, str] | None) -> list[str]:
    info = json.loads((meta or {}).get("indextts", "{}"))
    if info.get("format") != SHARD_FORMAT:
        raise ValueError(f"{path}: not an {SHARD_FORMAT} shard")
    return info["keys"]


class ShardReader:
    """Random access to the rows of one shard; tensors are read lazily from the memory-mapped file."""

    def __init__(self, path: Path):
        self.path = path
        self._f = safetensors_open(path, "feature shard")
        self.keys: list[str] = _read_meta(path, self._f.metadata())
        self._offsets = self._f.get_tensor("code_offsets")

    def __len__(self) -> int:
        return len(self.keys)

    def code_length(self, row: int) -> int:
        return int(self._offsets[row + 1] - self._offsets[row])

    def codes(self, row: int) -> torch.Tensor:
        a, b = int(self._offsets[row]), int(self._offsets[row + 1])
        return self._f.get_slice("codes")[a:b]

    def speaker_latents(self, row: int) -> torch.Tensor:
        return self._f.get_slice("speaker_latents")[row]

    def emotion_vector(self, row: int) -> torch.Tensor:
        return self._f.get_slice("emotion_vectors")[row]

    def duration(self, row: int) -> float:
        return float(self._f.get_slice("durations")[row])
