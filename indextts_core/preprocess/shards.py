"""Feature shards: many clips' audio features in one safetensors file.

A shard holds, for ``n`` clips (row order = the ``keys`` in its metadata):

* ``codes``: int16, every clip's semantic codes concatenated, with ``code_offsets`` (n + 1, int64);
* ``speaker_latents``: float16 (n, 32, D), the frozen base GPT's speaker conditioning;
* ``emotion_vectors``: float16 (n, D), its emotion vectors;
* ``durations``: float32 (n,).

Clips are keyed by their audio's sha256, so the same audio is never processed twice for the same
models.  A shard's name is derived from its content keys; it is written to a temporary file and
renamed, so a shard is either complete or absent.  Files are memory-mapped when read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from indextts_core.utils.fileio import atomic_path
from indextts_core.utils.safe_load import safetensors_open

SHARD_FORMAT = "indextts-features/1"


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
    from safetensors.torch import save_file

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
    with atomic_path(path) as tmp:
        # one metadata entry: safetensors writes a map's entries in hash order, so two would make
        # identical shards differ byte for byte
        save_file(tensors, tmp, metadata={"indextts": json.dumps({"format": SHARD_FORMAT, "keys": keys})})
    return path


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
