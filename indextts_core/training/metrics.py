"""Where training metrics go: anything with ``log(metrics, step)`` and ``close()``.

The trainer writes to a list of sinks; this module has the two local ones, a JSON-lines file and
TensorBoard.  The orchestration layer adds its own (MLflow) without the trainer knowing about it.
Both local sinks drop what was logged after the step a run resumes from, so a resumed run's curves
have no duplicated or orphaned points.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from indextts_core.utils.fileio import atomic_write


class MetricSink(Protocol):
    def log(self, metrics: Mapping[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """One JSON object per call: ``{"step": N, "metric": value, ...}``."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.is_file():
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and _step_of(line) <= resume_step]
            with atomic_write(self.path) as f:
                f.write("".join(line + "\n" for line in kept))
        elif resume_step is None:
            self.path.unlink(missing_ok=True)
        self._f = self.path.open("a", encoding="utf-8")

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self._f.write(json.dumps({"step": step, **{k: float(v) for k, v in metrics.items()}}) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 0


def read_metrics(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


class TensorBoardSink:
    """Scalars under ``log_dir`` (``tensorboard --logdir <output dir>``)."""

    def __init__(self, log_dir: Path, resume_step: int | None = None):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from torch.utils.tensorboard import SummaryWriter

        purge = None if resume_step is None else resume_step + 1
        self._w = SummaryWriter(log_dir=str(log_dir), purge_step=purge)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for name, value in metrics.items():
            self._w.add_scalar(name, float(value), step)

    def log_audio(self, tag: str, wav: Path, samples: Any, sample_rate: int, step: int) -> None:
        """A sample for TensorBoard's audio tab (float samples in [-1, 1])."""
        import torch

        self._w.add_audio(tag, torch.as_tensor(samples).reshape(1, -1).clamp(-1, 1), step, sample_rate=sample_rate)

    def close(self) -> None:
        self._w.flush()
        self._w.close()
