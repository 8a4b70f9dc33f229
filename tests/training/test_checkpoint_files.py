"""Which checkpoint files hold the optimizer's moments (``train.optimizer_state``), and resuming from each.

``every`` (the default): every file holds them and ``latest.pth`` links the step file.  ``latest``:
only ``latest.pth`` does; the step files and ``best.pth`` hold the rest (for a full fine-tune of
the released GPT, about half the size), and resuming from one of them continues with fresh AdamW
moments, said in a warning.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

from indextts_core.config import TrainConfig
from indextts_core.training import TrainInputs, train
from indextts_core.training.checkpointing import CheckpointDir, load_file
from indextts_core.training.metrics import read_metrics

#: 8 steps of the demo pairs, validated and saved every 4: checkpoints at steps 4 and 8.
OPTS = TrainConfig(epochs=1, batch_tokens=1024, learning_rate=1e-3, new_rows_learning_rate=3e-3, warmup_steps=2,
                   val_interval=4, val_audio_samples=0, val_generate=0, max_steps=8, export=False)
LATEST = OPTS.model_copy(update={"optimizer_state": "latest"})
FULL = {"format", "model", "optimizer", "scheduler", "scaler", "progress", "rng", "fingerprint", "options", "world",
        "metrics"}


def state(step: int) -> dict:
    """A checkpoint dict whose optimizer holds two moments per weight, as AdamW's does."""
    w = torch.full((10_000,), float(step))
    return {"format": "indextts-train/1", "progress": {"step": step}, "model": {"w": w},
            "optimizer": {"state": {0: {"exp_avg": torch.zeros(10_000), "exp_avg_sq": torch.zeros(10_000)}}},
            "scheduler": {"last_epoch": step}}


def inode(path: Path) -> int:
    return os.stat(path).st_ino


def test_the_default_keeps_the_moments_in_every_file_and_links_latest(tmp_path: Path):
    d = CheckpointDir(tmp_path, keep=2)
    for step in (1, 2, 3):
        d.save(state(step), step, step == 2)
    assert d.steps() == [2, 3]
    assert inode(d.latest) == inode(d.step_path(3))
    for path in (d.step_path(3), d.best, d.latest):
        assert "optimizer" in load_file(path)


def test_latest_mode_keeps_the_moments_only_in_latest(tmp_path: Path):
    d = CheckpointDir(tmp_path, keep=2, optimizer_state="latest")
    for step, best in [(1, True), (2, False), (3, True), (4, False)]:
        d.save(state(step), step, best)
    assert d.steps() == [3, 4]  # retention is unchanged
    assert inode(d.best) == inode(d.step_path(3))  # best.pth still links its step file
    assert inode(d.latest) not in {inode(d.step_path(s)) for s in d.steps()}  # a file of its own
    latest, step4 = load_file(d.latest), load_file(d.step_path(4))
    assert "optimizer" in latest and latest["progress"]["step"] == 4
    assert set(step4) == set(latest) - {"optimizer"}
    assert torch.equal(step4["model"]["w"], latest["model"]["w"])
    assert "optimizer" not in load_file(d.best) and load_file(d.best)["progress"]["step"] == 3
    assert d.step_path(4).stat().st_size < 0.4 * d.latest.stat().st_size  # weights 1, moments 2
    assert d.resolve("auto") == d.latest
    d.latest.unlink()  # without latest.pth, auto falls back to the newest step file
    assert d.resolve("auto") == d.step_path(4)
    with pytest.raises(ValueError, match="every, latest"):
        CheckpointDir(tmp_path, optimizer_state="best")


def inputs(processed, out: Path) -> TrainInputs:
    return TrainInputs(processed.checkpoint, processed.tokenizer, processed.train_pairs, processed.val_pairs, out)


class Keep:
    """An ``on_checkpoint`` hook that copies the folder's files aside at one step (what a run killed there leaves)."""

    def __init__(self, step: int, to: Path):
        self.step, self.to = step, to

    def __call__(self, path: Path, progress, is_best: bool) -> None:
        if progress.step == self.step:
            shutil.copytree(path.parent, self.to, ignore=shutil.ignore_patterns("logs", "metrics.jsonl"))


class Losses:
    def __init__(self):
        self.by_step: dict[int, float] = {}

    def __call__(self, info) -> None:
        self.by_step[info.step] = info.metrics["train/loss"]


@pytest.fixture(scope="module")
def uninterrupted(processed, tmp_path_factory):
    """A run with ``optimizer_state=latest``, its folder as it was after the checkpoint of step 4, its losses."""
    root = tmp_path_factory.mktemp("latest_mode")
    losses = Losses()
    train(inputs(processed, root / "run"), LATEST, on_step=losses, on_checkpoint=Keep(4, root / "at4"))
    return root, losses.by_step


@pytest.mark.slow
def test_latest_mode_files_on_the_tiny_model(uninterrupted):
    root, _ = uninterrupted
    out = root / "run"
    assert sorted(p.name for p in out.glob("model_step*.pth")) == ["model_step4.pth", "model_step8.pth"]
    latest, step8 = torch.load(out / "latest.pth", weights_only=True), torch.load(out / "model_step8.pth",
                                                                                   weights_only=True)
    assert set(latest) == FULL and set(step8) == FULL - {"optimizer"}
    assert latest["options"]["optimizer_state"] == "latest"
    assert step8["progress"] == latest["progress"] and step8["progress"]["step"] == 8
    assert all(torch.equal(step8["model"][k], v) for k, v in latest["model"].items())
    assert inode(out / "latest.pth") != inode(out / "model_step8.pth")
    # the step file is smaller by the moments: two per trainable value (the tiny model trains few of its values, so
    # here that is about a sixth of the file; the released GPT trains 496 M of its 871 M: about half)
    moments = sum(t.numel() * t.element_size() for s in latest["optimizer"]["state"].values()
                  for t in s.values() if t.ndim)
    saved = (out / "latest.pth").stat().st_size - (out / "model_step8.pth").stat().st_size
    assert moments <= saved < moments + 100_000, (saved, moments)


@pytest.mark.slow
def test_resuming_from_latest_in_latest_mode_is_exact(uninterrupted, processed, tmp_path: Path):
    root, reference = uninterrupted
    out = tmp_path / "run"
    shutil.copytree(root / "at4", out)
    losses = Losses()
    train(inputs(processed, out), LATEST.model_copy(update={"resume": "auto"}), on_step=losses)
    assert sorted(losses.by_step) == [5, 6, 7, 8]
    assert all(losses.by_step[s] == reference[s] for s in losses.by_step)
    a, b = load_file(out / "latest.pth")["model"], load_file(root / "run" / "latest.pth")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_resuming_from_a_step_file_warns_and_starts_fresh_moments(uninterrupted, processed, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture):
    root, reference = uninterrupted
    out = tmp_path / "run"
    shutil.copytree(root / "at4", out)
    step_file = out / "model_step4.pth"
    losses = Losses()
    caplog.set_level(logging.WARNING, logger="indextts_core")
    train(inputs(processed, out), LATEST.model_copy(update={"resume": str(step_file)}), on_step=losses)
    note = (f"{step_file} holds no optimizer moments (train.optimizer_state=latest keeps them only in latest.pth): "
            "resuming at step 4 with fresh AdamW moments")
    assert note in caplog.messages
    assert sorted(losses.by_step) == [5, 6, 7, 8]
    assert losses.by_step[5] == reference[5]  # the same weights and batch: the first loss is the same
    assert losses.by_step[6] != reference[6]  # after one step with fresh moments, it is not
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows if "train/fresh_optimizer_moments" in r] == [4]
