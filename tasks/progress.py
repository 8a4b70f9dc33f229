"""Long stages seen from the Prefect UI: a progress artifact that moves, and validation as a table.

:class:`TrainingReport` is both a training ``on_step`` hook and a metric sink (the core trainer
knows nothing of Prefect).  It keeps one progress artifact per stage run up to date (at most every
``every_s`` seconds: each update is an API call) and, at every validation, publishes a table
artifact with one row per language / speaker group, under a fixed key so the UI shows its history.
Every call is best-effort: a Prefect API hiccup is logged and never stops the training.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from indextts_core.training.records import StepInfo

log = logging.getLogger(__name__)

VALIDATION_COLUMNS = ("loss", "text_loss", "mel_loss", "mel_top1")


def validation_rows(metrics: Mapping[str, float], step: int) -> list[dict[str, Any]]:
    """``val/<group>/<name>`` metrics as rows: one per group (``all``, each language, seen/unseen speakers)."""
    groups: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        if not key.startswith("val/"):
            continue
        group, _, name = key.removeprefix("val/").rpartition("/")
        if name in VALIDATION_COLUMNS:
            groups.setdefault(group or "all", {"step": step, "group": group or "all"})[name] = round(float(value), 4)
    return [groups[g] for g in sorted(groups, key=lambda g: (g != "all", g))]


def _best_effort(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, or None when the Prefect API refuses (the UI is a view: never fail the work for it)."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001
        log.debug("prefect %s artifact not updated: %s", what, e)
        return None


class TrainingReport:
    """A Prefect progress artifact for the training steps and a table artifact per validation."""

    def __init__(self, key: str = "train", every_s: float = 10.0):
        self.key, self.every_s = key, every_s
        self._id: Any = None
        self._last = 0.0

    def start(self, description: str) -> None:
        from prefect.artifacts import create_progress_artifact

        self._id = _best_effort("progress", create_progress_artifact, 0.0, key=f"{self.key}-progress",
                              description=description)

    def on_step(self, info: StepInfo) -> None:
        now = time.monotonic()
        if self._id is None or not info.total_steps or (now - self._last < self.every_s
                                                         and info.step < info.total_steps):
            return
        self._last = now
        from prefect.artifacts import update_progress_artifact

        loss = info.metrics.get("train/loss")
        _best_effort("progress", update_progress_artifact, self._id, 100.0 * info.step / info.total_steps,
                   description=f"step {info.step}/{info.total_steps}, epoch {info.epoch + 1}"
                   + (f", loss {loss:.4f}" if loss is not None else ""))

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        rows = validation_rows(metrics, step)
        if not rows:
            return
        from prefect.artifacts import create_table_artifact

        _best_effort("validation", create_table_artifact, rows, key=f"{self.key}-validation",
                   description=f"validation at step {step} (per language and speaker group)")

    def close(self) -> None:
        if self._id is not None:
            from prefect.artifacts import update_progress_artifact

            _best_effort("progress", update_progress_artifact, self._id, 100.0, description="done")


class UnitProgress:
    """Preprocessing seen from the Prefect UI: a progress artifact and a log line per finished work unit."""

    def __init__(self, units: int, key: str = "preprocess"):
        from prefect import get_run_logger
        from prefect.artifacts import create_progress_artifact

        self.units, self.finished, self.clips = units, 0, 0
        self.started = time.monotonic()
        self.logger = get_run_logger()
        self._id = _best_effort("progress", create_progress_artifact, 0.0, key=f"{key}-progress",
                                description=f"0 of {units} units")

    def done(self, summary: Mapping[str, Any]) -> None:
        from prefect.artifacts import update_progress_artifact

        self.finished += 1
        self.clips += int(summary.get("processed") or 0) + int(summary.get("rejected") or 0)
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.finished * (self.units - self.finished)
        text = (f"{self.finished} of {self.units} units, {self.clips} clips decoded"
                + (f", about {eta / 60:.0f} min left" if self.finished < self.units else ""))
        self.logger.info("preprocess: %s", text)
        if self._id is not None:
            _best_effort("progress", update_progress_artifact, self._id, 100.0 * self.finished / self.units,
                         description=text)
