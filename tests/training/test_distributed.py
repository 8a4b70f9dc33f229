"""The seed's train command, as users run it: one process, and two processes under torchrun (gloo on CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from indextts_core.training.metrics import read_metrics

BIN = Path(sys.executable).parent


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"COLUMNS": "200", "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_two_process_data_parallel_matches_one_process(processed, tmp_path: Path):
    common = ["train", "--train-manifest", str(processed.train_pairs), "--val-manifest", str(processed.val_pairs),
              "--tokenizer", str(processed.tokenizer), "--checkpoint", str(processed.checkpoint),
              "--max-steps", "6", "--val-interval", "3", "--batch-tokens", "1024", "--learning-rate", "1e-3",
              "--set", "train.warmup_steps=2", "--set", "train.dropout=0",
              # what is compared is the training: no decoding or audio at the validations
              "--set", "train.val_generate=0", "--set", "train.val_audio_samples=0"]
    one = run([str(BIN / "indextts-train"), *common, "--output-dir", "one"], tmp_path)
    two = run([str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "--no-python",
               str(BIN / "indextts-train"), *common, "--output-dir", "two"], tmp_path)
    assert "Validation: step 0 -> step 6" in one.stdout and "tensorboard --logdir one" in one.stdout
    assert two.stdout.count("Validation: step 0 -> step 6") == 1  # only rank 0 reports

    a = torch.load(tmp_path / "one" / "latest.pth", weights_only=True)
    b = torch.load(tmp_path / "two" / "latest.pth", weights_only=True)
    assert a["world"] == 1 and b["world"] == 2 and len(b["rng"]) == 2  # every rank's generators are saved
    assert a["progress"]["step"] == b["progress"]["step"] == 6
    assert a["progress"]["samples"] == b["progress"]["samples"]
    # the same global batches: the same losses at every step and (nearly) the same weights
    la = [r for r in read_metrics(tmp_path / "one" / "metrics.jsonl") if "train/loss" in r]
    lb = [r for r in read_metrics(tmp_path / "two" / "metrics.jsonl") if "train/loss" in r]
    assert [r["step"] for r in la] == [r["step"] for r in lb] == [1, 2, 3, 4, 5, 6]
    for x, y in zip(la, lb):
        assert y["train/loss"] == pytest.approx(x["train/loss"], rel=1e-5)
        assert y["train/micro_batches"] >= 2  # each rank ran its own share
    # Adam turns summation-order noise in near-zero gradients into small weight differences: bound them
    # against how far training moved the weights
    from indextts_core.model.checkpoint import read_state_dict

    base = read_state_dict(processed.checkpoint / "gpt.pth")
    moved = max((a["model"][k] - base[k]).abs().max().item() for k in base if base[k].shape == a["model"][k].shape)
    diff = max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"]
               if a["model"][k].is_floating_point())
    assert diff < 0.01 * moved, (diff, moved)


@pytest.mark.slow
def test_flow_stage_runs_torchrun_and_replays_metrics(processed, tmp_path: Path):
    """The train stage's multi-process path (train.nproc_per_node > 1), outside Prefect."""
    from indextts_core.config import load_config
    from indextts_core.training import TrainInputs
    from tasks.train import train_distributed

    cfg = load_config(overrides={"train.batch_tokens": 1024, "train.max_steps": 4, "train.val_interval": 2,
                                 "train.warmup_steps": 2, "train.learning_rate": 1e-3, "train.val_generate": 0,
                                 "train.val_audio_samples": 0})
    inputs = TrainInputs(processed.checkpoint, processed.tokenizer, processed.train_pairs, processed.val_pairs,
                         tmp_path / "out")  # the stage resumes "auto" (tasks.train.stage_settings)

    class Collect:
        def __init__(self):
            self.rows, self.closed = [], False

        def log(self, metrics, step):
            self.rows.append((step, metrics))

        def close(self):
            self.closed = True

    sink, mirrored = Collect(), []
    result = train_distributed(cfg, inputs, 2, lambda path, *_: mirrored.append(path), [sink])
    assert result.steps == 4 and result.export_verified and result.base_rows_unchanged
    assert mirrored == [tmp_path / "out" / "latest.pth"] and sink.closed
    assert [s for s, m in sink.rows if "train/loss" in m] == [1, 2, 3, 4]
    assert torch.load(tmp_path / "out" / "latest.pth", weights_only=True)["world"] == 2
