"""LoRA fine-tuning end to end on the tiny bundle: what trains, the merged export, exact resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from indextts_core.config import TrainConfig
from indextts_core.errors import InputError
from indextts_core.model.checkpoint import load_gpt, official_state_dict, read_state_dict
from indextts_core.training import TrainInputs, train

OPTS = TrainConfig(epochs=1, batch_tokens=1024, learning_rate=3e-3, new_rows_learning_rate=3e-3, warmup_steps=2,
                   val_interval=7, val_audio_samples=0, val_generate=0, lora_rank=4, lora_alpha=8.0)


def inputs(processed, out: Path, **kw) -> TrainInputs:
    return TrainInputs(processed.checkpoint, processed.tokenizer, processed.train_pairs, processed.val_pairs, out, **kw)


@pytest.fixture(scope="module")
def lora_run(processed, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "trained_ckpts"
    return out, train(inputs(processed, out), OPTS)


def test_lora_trains_only_adapters_and_new_rows(lora_run, processed):
    out, result = lora_run
    info = json.loads((out / "train.json").read_text())["model"]
    assert info["lora"] == {"rank": 4, "alpha": 8.0, "dropout": 0.0, "layers": 8,
                            "targets": ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]}
    d, layers = 64, 2  # the tiny GPT
    adapters = layers * 4 * (d + 3 * d + d + d + d + 4 * d + 4 * d + d)  # rank * (in + out) per wrapped layer
    new_rows = (info["text_rows"] - info["base_vocab"]) * (d + d + 1)  # rows past the base: embedding, head w, b
    assert info["trainable_parameters"] == adapters + new_rows
    assert result.final["val/loss"] < result.baseline["val/loss"]  # it learns through the adapters


def test_the_export_is_the_merged_official_checkpoint(lora_run, processed):
    out, result = lora_run
    export = result.export_dir
    assert result.export_verified and export is not None
    base = load_gpt(processed.checkpoint)
    exported = read_state_dict(export / "gpt.pth")
    assert list(exported) == list(official_state_dict(base))  # the official keys, no adapter keys
    merged = load_gpt(export, strict=True)  # loads strictly as the official code will
    assert merged.cfg.number_text_tokens > base.cfg.number_text_tokens
    # the stack changed (the adapters are in its weights); what LoRA freezes did not
    assert not torch.equal(exported["gpt.h.0.attn.c_attn.weight"], base.state_dict()["gpt.h.0.attn.c_attn.weight"])
    for key in ("mel_embedding.weight", "mel_head.weight", "gpt.h.0.ln_1.weight", "final_norm.weight"):
        assert torch.equal(exported[key], base.state_dict()[key]), key
    meta = json.loads((export / "indextts-export.json").read_text())
    assert meta["lora_merged"]["layers"] == 8 and meta["verified_reload"]
    assert meta["lora_merged"]["mel_logits_max_diff"] < 1e-4  # adapters vs merged weights on a validation batch
    # training checkpoints keep the adapters themselves (what resume restores)
    saved = torch.load(out / "latest.pth", map_location="cpu", weights_only=True)["model"]
    assert "gpt.h.0.attn.c_attn.lora_a" in saved and "gpt.h.1.mlp.c_proj.lora_b" in saved


def test_resume_restores_the_adapters_bit_identically(lora_run, processed, tmp_path: Path):
    ref_out, ref = lora_run
    out = tmp_path / "trained_ckpts"
    shutil.copytree(ref_out, out)
    step = 14
    train(inputs(processed, out), OPTS.model_copy(update={"resume": str(out / f"model_step{step}.pth")}))
    a = torch.load(out / "latest.pth", map_location="cpu", weights_only=True)["model"]
    b = torch.load(ref_out / "latest.pth", map_location="cpu", weights_only=True)["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_without_the_adapters_is_refused(lora_run, processed, tmp_path: Path):
    ref_out, _ = lora_run
    out = tmp_path / "trained_ckpts"
    shutil.copytree(ref_out, out)
    with pytest.raises(InputError, match="refusing to resume") as e:
        train(inputs(processed, out), OPTS.model_copy(update={"lora_rank": 0, "resume": "auto"}))
    assert "the LoRA adapters" in str(e.value)


def test_warm_start_from_full_weights_gives_fresh_adapters(lora_run, processed, tmp_path: Path):
    """A LoRA run warm-started from a plain gpt.pth (here the merged export) starts from those weights."""
    _, result = lora_run
    out = tmp_path / "trained_ckpts"
    again = train(inputs(processed, out), OPTS.model_copy(update={
        "max_steps": 2, "resume": str(result.export_dir / "gpt.pth"), "warm_start": True}))
    assert again.steps == 2
    # step 0's validation is the exported model's (fresh adapters add nothing)
    assert again.baseline["val/loss"] == pytest.approx(result.final["val/loss"], abs=1e-4)
