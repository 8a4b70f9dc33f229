"""A warm-up as long as the run is clipped to a tenth of it, logged, recorded, and kept by a resumed run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from indextts_core.config import TrainConfig
from indextts_core.training import TrainInputs, train
from indextts_core.training.metrics import read_metrics
from indextts_core.training.optim import clipped_warmup, warmup_cosine

#: The seed's warm-up on a six-step run (what the demo data gives with max_steps 6).
OPTS = TrainConfig(epochs=1, batch_tokens=1024, learning_rate=1e-3, new_rows_learning_rate=3e-3, warmup_steps=1000,
                   max_steps=6, val_interval=3, val_generate=0, val_audio_samples=0, export=False)
PEAK = OPTS.learning_rate


def test_clipped_warmup():
    assert clipped_warmup(1000, 6) == 1  # under ten steps: the peak from the first step
    assert clipped_warmup(1000, 1000) == 100 and clipped_warmup(1000, 250) == 25  # a tenth of the run
    assert clipped_warmup(999, 1000) == 999 and clipped_warmup(0, 6) == 0  # shorter than the run: as set
    assert clipped_warmup(1000, 0) == 1000  # nothing planned: nothing to clip


def _inputs(processed, out: Path) -> TrainInputs:
    return TrainInputs(processed.checkpoint, processed.tokenizer, processed.train_pairs, processed.val_pairs, out)


def _lrs(out: Path) -> dict[int, float]:
    return {int(r["step"]): r["train/lr"] for r in read_metrics(out / "metrics.jsonl") if "train/lr" in r}


@pytest.fixture(scope="module")
def clipped(processed, tmp_path_factory):
    out = tmp_path_factory.mktemp("warmup") / "ckpts"
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("indextts_core.training")
    logger.addHandler(handler)
    try:
        result = train(_inputs(processed, out), OPTS)
    finally:
        logger.removeHandler(handler)
    return out, result, records


def test_a_warmup_longer_than_the_run_is_clipped_logged_and_recorded(clipped):
    out, result, records = clipped
    assert result.steps == 6
    assert "warmup_steps 1000 is longer than the run (6 steps): using 1" in records
    assert json.loads((out / "train.json").read_text())["warmup_steps"] == 1
    assert torch.load(out / "latest.pth", weights_only=True)["progress"]["warmup_steps"] == 1
    lrs = _lrs(out)
    assert lrs[1] == pytest.approx(PEAK)  # the peak from the first step, then the cosine
    factor = warmup_cosine(1, 6, OPTS.min_lr_ratio)
    assert [lrs[s] for s in range(1, 7)] == pytest.approx([PEAK * factor(s - 1) for s in range(1, 7)])
    assert result.final["val/loss"] < result.baseline["val/loss"]  # at a thousandth of the peak it did not move


def test_a_resumed_run_keeps_the_warmup_it_started_with(clipped, processed, tmp_path: Path):
    """Resumed with settings that plan more steps (the same data: the checkpoint is accepted), the schedule keeps
    the recorded warm-up; a checkpoint from before warm-ups were recorded keeps the setting as it was."""
    out, _, _ = clipped
    longer = OPTS.model_copy(update={"max_steps": 20, "val_interval": 1000,  # 20 steps would clip to 2
                                     "resume": str(out / "model_step3.pth")})
    train(_inputs(processed, tmp_path / "a"), longer)
    lrs = _lrs(tmp_path / "a")
    assert lrs[4] == pytest.approx(PEAK * warmup_cosine(1, 6, OPTS.min_lr_ratio)(3))  # set before the checkpoint
    factor = warmup_cosine(1, 20, OPTS.min_lr_ratio)  # then this run's length, with the recorded warm-up
    assert [lrs[s] for s in range(5, 9)] == pytest.approx([PEAK * factor(s - 1) for s in range(5, 9)])
    assert torch.load(tmp_path / "a" / "latest.pth", weights_only=True)["progress"]["warmup_steps"] == 1

    old = torch.load(out / "model_step3.pth", weights_only=True)
    del old["progress"]["warmup_steps"]
    (tmp_path / "b").mkdir()
    torch.save(old, tmp_path / "b" / "old.pth")
    train(_inputs(processed, tmp_path / "b"), OPTS.model_copy(update={"resume": str(tmp_path / "b" / "old.pth")}))
    factor = warmup_cosine(1000, 6, OPTS.min_lr_ratio)  # what the run that wrote it used
    assert [_lrs(tmp_path / "b")[s] for s in (5, 6)] == pytest.approx([PEAK * factor(s - 1) for s in (5, 6)])
