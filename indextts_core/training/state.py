"""Training checkpoints: what they hold, how they are written, kept and matched to a run.

A checkpoint (``model_step{N}.pth``) holds everything the next step depends on: the model (as the
official state dict), the optimizer, the scheduler, the gradient scaler, the progress counters
(optimizer step, epoch, step within the epoch: checkpoints are only written between optimizer
steps, so there is never a partial accumulation window), the micro-batch budget in use, every
random generator of every rank, the best validation result so far, and a fingerprint of what the
run was built from.  Everything is plain data and tensors, so it loads with ``weights_only=True``.

In the output folder:

* ``model_step{N}.pth``: the last ``keep`` of them are kept;
* ``latest.pth``: the newest checkpoint, replaced at each save;
* ``best.pth``: the checkpoint with the best validation metric, never deleted by retention.

``latest.pth`` and ``best.pth`` are hard links to a step file where the file system allows (no
extra space), copies otherwise.  Every file appears atomically (temporary name, fsync, rename).
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from indextts_core.errors import InputError
from indextts_core.utils.fileio import atomic_write

log = logging.getLogger(__name__)

FORMAT = "indextts-train/1"
STEP_FILE = re.compile(r"^model_step(\d+)\.pth$")

#: Fingerprint fields and what a mismatch means.
FINGERPRINT_FIELDS = {
    "tokenizer_sha256": "the tokenizer",
    "vocab_size": "the vocabulary size",
    "base_vocab": "the base vocabulary size",
    "model_config_sha256": "the model configuration",
    "base_checkpoint_sha256": "the base checkpoint (gpt.pth)",
    "data_sha256": "the training data (index and pair files)",
    "sampling": "the sample order (seed, batch_tokens, fresh prompts)",
    "optimizer_layout": "the trainable parameters (freeze settings)",
}


def fingerprint_mismatch(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between a checkpoint's fingerprint and this run's."""
    out = []
    for key, what in FINGERPRINT_FIELDS.items():
        a, b = saved.get(key), current.get(key)
        if a != b:
            show = (lambda v: v[:12] if isinstance(v, str) and len(v) > 20 else v)
            out.append(f"{what} ({key}): checkpoint {show(a)!r}, this run {show(b)!r}")
    return out


# ------------------------------------------------------------------------ random generators


def rng_state() -> dict[str, Any]:
    """Every random generator of this process, as plain data and tensors."""
    version, keys, gauss = random.getstate()
    name, np_keys, pos, has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(keys), gauss],
        "numpy": {"name": name, "keys": np_keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            log.warning("checkpoint has CUDA generator states for %d devices, this machine has %d: CUDA generators "
                        "not restored", len(cuda), torch.cuda.device_count())


# ------------------------------------------------------------------------ files


def save_file(obj: Mapping[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, rename."""
    with atomic_write(path, "wb") as f:
        torch.save(dict(obj), f)


def load_file(path: Path) -> dict[str, Any]:
    """A training checkpoint, loaded with ``weights_only=True``."""
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling fails in many ways
        raise InputError(f"{path}: cannot be read with weights_only=True ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:300]})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        hint = " (a plain gpt.pth? use it as --checkpoint, or --warm-start to take its weights)" \
            if isinstance(obj, dict) and "format" not in obj else ""
        raise InputError(f"{path}: not a training checkpoint ({FORMAT}){hint}")
    return obj


def _link_or_copy(src: Path, dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CheckpointDir:
    """The checkpoint files of one training run (see the module docstring)."""

    def __init__(self, root: Path, keep: int = 3):
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.root = Path(root)
        self.keep = keep

    @property
    def latest(self) -> Path:
        return self.root / "latest.pth"

    @property
    def best(self) -> Path:
        return self.root / "best.pth"

    def step_path(self, step: int) -> Path:
        return self.root / f"model_step{step}.pth"

    def steps(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := STEP_FILE.match(p.name)))

    def has_checkpoints(self) -> bool:
        return self.latest.is_file() or bool(self.steps())

    def clean_partial(self) -> None:
        """Remove temporary files an interrupted save left behind."""
        if self.root.is_dir():
            for p in self.root.glob(".*.tmp"):
                p.unlink(missing_ok=True)

    def save(self, state: Mapping[str, Any], step: int, is_best: bool) -> Path:
        path = self.step_path(step)
        save_file(state, path)
        _link_or_copy(path, self.latest)
        if is_best:
            _link_or_copy(path, self.best)
        self.prune()
        return path

    def prune(self) -> list[Path]:
        """Delete all but the newest ``keep`` step files (``best.pth`` and ``latest.pth`` are separate links)."""
        removed = []
        for step in self.steps()[:-self.keep]:
            p = self.step_path(step)
            p.unlink(missing_ok=True)
            removed.append(p)
        return removed

    def resolve(self, resume: str | Path | None) -> Path | None:
        """The file to resume from: None (fresh), ``auto`` (latest.pth if any) or a path."""
        if resume is None:
            return None
        if str(resume) == "auto":
            if self.latest.is_file():
                return self.latest
            steps = self.steps()
            return self.step_path(steps[-1]) if steps else None
        path = Path(resume)
        if not path.is_file():
            raise InputError(f"--resume {resume}: no such checkpoint")
        return path
