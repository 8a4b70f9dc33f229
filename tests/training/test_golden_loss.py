"""Golden losses: a short fixed training run must reproduce stored per-step losses.

Any change in sample order, micro-batch split, loss normalisation or random draws (dropout) moves
these numbers.  The values in ``tests/fixtures/golden_train_losses.json`` were recorded by running
this very test's training on the code before the "one stage, one name, one path" refactor
(``GOLDEN_RECORD=1 pytest tests/training/test_golden_loss.py`` rewrites them; do that only for an
intended change of the training maths, and say so in the commit).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from indextts_core.config import TrainConfig
from indextts_core.training import TrainInputs, train
from indextts_core.training.metrics import read_metrics

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden_train_losses.json"
KEYS = ("train/loss", "train/text_loss", "train/mel_loss", "train/grad_norm")
VAL_KEYS = ("val/loss", "val/text_loss", "val/mel_loss")
THREADS = 1  # CPU results are bit-reproducible for a fixed number of intra-op threads


OPTIONS = TrainConfig(epochs=1, batch_tokens=1024, micro_batch_tokens=512, learning_rate=1e-3,
                      new_rows_learning_rate=3e-3, warmup_steps=2, val_interval=1000, max_steps=5, export=False,
                      device="cpu", workers=0, val_audio_samples=0)


def _run(processed, out: Path) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        train(TrainInputs(processed.checkpoint, processed.tokenizer, processed.train_pairs, processed.val_pairs, out),
              OPTIONS, seed=1234)
    finally:
        torch.set_num_threads(threads)
    rows = read_metrics(out / "metrics.jsonl")
    steps = {str(r["step"]): {k: r[k] for k in KEYS} for r in rows if "train/loss" in r}
    val = {str(r["step"]): {k: r[k] for k in VAL_KEYS} for r in rows if "val/loss" in r}
    return {"train": steps, "val": val}


def test_short_run_reproduces_the_golden_losses(processed, tmp_path: Path):
    got = _run(processed, tmp_path / "golden")
    if os.environ.get("GOLDEN_RECORD"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps({
            "note": "Per-step losses of tests/training/test_golden_loss.py (tiny bundle, demo pairs, seed 1234, "
                    f"{THREADS} CPU thread, 5 steps of 1024 tokens in 512-token micro-batches), recorded with "
                    "GOLDEN_RECORD=1 after preprocessing began reading clips on the official speaker path "
                        "(features version 2).",
            "torch": torch.__version__, **got}, indent=2) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert sorted(got["train"], key=int) == sorted(want["train"], key=int) == ["1", "2", "3", "4", "5"]
    assert sorted(got["val"], key=int) == sorted(want["val"], key=int)
    for part in ("train", "val"):
        for step, values in want[part].items():
            for k, v in values.items():
                assert got[part][step][k] == pytest.approx(v, abs=1e-4), (part, step, k)
