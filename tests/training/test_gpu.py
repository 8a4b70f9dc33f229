"""CUDA smoke test of the trainer: mixed precision (bf16, fp16 with a scaler), the memory probe, fused AdamW.

Run by hand on a machine with a GPU: ``pytest -m gpu tests/training/test_gpu.py``; skipped without CUDA.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from indextts_core.config import TrainConfig
from indextts_core.training import TrainInputs, train
from indextts_core.training import trainer as trainer_module

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

AMP_MODES = ["fp16", pytest.param("bf16", marks=pytest.mark.skipif(
    not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()), reason="no bf16 on this GPU"))]


@pytest.mark.parametrize("amp", AMP_MODES)
def test_a_few_cuda_steps_with_amp_probe_and_fused_adamw(amp, processed, tmp_path: Path, monkeypatch):
    probed: list[int] = []
    optimizers: list[torch.optim.Optimizer] = []
    real_probe, real_build = trainer_module.probe_model, trainer_module.build_optimizer

    def probe(*args, **kwargs) -> int:
        probed.append(real_probe(*args, **kwargs))
        return probed[-1]

    def build(*args, **kwargs):
        optimizers.append(real_build(*args, **kwargs))
        return optimizers[-1]

    monkeypatch.setattr(trainer_module, "probe_model", probe)
    monkeypatch.setattr(trainer_module, "build_optimizer", build)
    cfg = TrainConfig(epochs=1, batch_tokens=1024, micro_batch_tokens="auto", learning_rate=1e-3, warmup_steps=2,
                      val_interval=1000, max_steps=4, export=False, device="cuda", amp=amp, workers=0,
                      val_audio_samples=0)
    steps = []
    out = tmp_path / amp
    result = train(TrainInputs(processed.checkpoint, processed.tokenizer, processed.train_pairs, processed.val_pairs,
                               out), cfg, seed=1234, on_step=steps.append)

    assert result.steps == 4 and len(steps) == 4
    for info in steps:
        for key in ("train/loss", "train/text_loss", "train/mel_loss", "train/grad_norm"):
            assert math.isfinite(info.metrics[key]), (info.step, key, info.metrics[key])
    assert all(math.isfinite(v) for v in result.final.values())
    # the memory probe ran and chose the micro-batch budget (capped at the step's tokens)
    assert len(probed) == 1 and probed[0] > 0
    run = json.loads((out / "train.json").read_text())
    assert run["micro_batch_tokens"] == min(probed[0], cfg.batch_tokens) == steps[0].micro_tokens
    assert run["amp"] == {"bf16": "bfloat16", "fp16": "float16"}[amp]
    # fp16 needs a gradient scaler, bf16 does not
    assert ("train/loss_scale" in steps[-1].metrics) == (amp == "fp16")
    # AdamW, the fused CUDA kernel
    (optimizer,) = optimizers
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"] is True
