"""Loading official checkpoints strictly with clear errors; exporting in the official layout."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from indextts_core.model.checkpoint import (
    CheckpointError,
    export_checkpoint,
    load_gpt,
    official_state_dict,
    read_state_dict,
    update_config_text,
)
from tests_support import FIXTURES

GPT_DIR = FIXTURES / "indextts2_gpt_tiny"


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    dest = tmp_path / "ckpt"
    shutil.copytree(GPT_DIR, dest)
    return dest


def test_plain_and_wrapped_state_dicts_load_strictly(ckpt: Path):
    sd = read_state_dict(ckpt / "gpt.pth")
    assert len(sd) == len(official_state_dict(load_gpt(ckpt)))
    torch.save({"model": sd, "step": 5}, ckpt / "gpt.pth")
    model = load_gpt(ckpt)
    assert torch.equal(model.text_embedding.weight, sd["text_embedding.weight"])


def _save(ckpt: Path, sd: dict) -> None:
    torch.save(sd, ckpt / "gpt.pth")


def test_missing_unexpected_and_misshaped_keys_are_named(ckpt: Path):
    sd = read_state_dict(ckpt / "gpt.pth")
    broken = dict(sd)
    del broken["final_norm.weight"]
    broken["extra.weight"] = torch.zeros(1)
    broken["mel_head.bias"] = torch.zeros(3)
    _save(ckpt, broken)
    with pytest.raises(CheckpointError) as e:
        load_gpt(ckpt)
    msg = str(e.value)
    assert str(ckpt / "gpt.pth") in msg
    assert "missing (1): final_norm.weight" in msg and "unexpected (1): extra.weight" in msg
    assert "mel_head.bias: file (3,) vs model (66,)" in msg


def test_hints_for_the_usual_mistakes(ckpt: Path):
    sd = read_state_dict(ckpt / "gpt.pth")
    _save(ckpt, {f"module.{k}": v for k, v in sd.items()})
    with pytest.raises(CheckpointError, match="DistributedDataParallel"):
        load_gpt(ckpt)
    _save(ckpt, {**sd, "gpt.wte.weight": sd["mel_embedding.weight"]})
    with pytest.raises(CheckpointError, match="post_init_gpt2_config"):
        load_gpt(ckpt)
    grown = dict(sd)
    for k in ("text_embedding.weight", "text_head.weight", "text_head.bias"):
        grown[k] = torch.cat([sd[k], sd[k][:10]])
    _save(ckpt, grown)
    with pytest.raises(CheckpointError, match=r"211 text rows, i.e. a 210-piece tokenizer; config.yaml says "
                                              r"number_text_tokens=200"):
        load_gpt(ckpt)


def test_pickled_objects_are_refused(ckpt: Path):
    # a training script's checkpoint with its argparse namespace: arbitrary pickles are not loaded
    torch.save({"model": read_state_dict(ckpt / "gpt.pth"), "args": argparse.Namespace(lr=1e-5)}, ckpt / "gpt.pth")
    with pytest.raises(CheckpointError, match="refused: it can only be read by unpickling Python objects"):
        load_gpt(ckpt)


def test_export_writes_the_official_layout(ckpt: Path, tmp_path: Path, tiny_bundle):
    (ckpt / "LICENSE.txt").write_text("bilibili Model Use License Agreement (test copy)")
    (ckpt / "config.yaml").write_text("# the released config\n" + (ckpt / "config.yaml").read_text()
                                      + "dataset:\n  bpe_model: bpe.model  # tokenizer\n  sample_rate: 24000\n")
    model = load_gpt(ckpt)
    tok = tmp_path / "extended_bpe.model"
    shutil.copy(tiny_bundle.tokenizer_path, tok)
    out = export_checkpoint(model, tmp_path / "export", ckpt, tok, vocab_size=200)
    assert sorted(p.name for p in out.output_dir.iterdir()) == ["LICENSE.txt", "config.yaml", "extended_bpe.model",
                                                                "gpt.pth"]
    sd = torch.load(out.gpt_path, weights_only=True)
    assert list(sd) == list(read_state_dict(ckpt / "gpt.pth"))  # exactly the official keys, same order
    assert not any(k.startswith("inference_model.") or k == "gpt.wte.weight" for k in sd)
    old, new = (ckpt / "config.yaml").read_text().splitlines(), out.config_path.read_text().splitlines()
    changed = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
    assert changed == [("  bpe_model: bpe.model  # tokenizer", "  bpe_model: extended_bpe.model  # tokenizer")]
    reloaded = load_gpt(out.output_dir)
    for k, v in official_state_dict(model).items():
        assert torch.equal(v, official_state_dict(reloaded)[k]), k


def test_fp16_export_and_mismatch_refused(ckpt: Path, tmp_path: Path, tiny_bundle):
    model = load_gpt(ckpt)
    out = export_checkpoint(model, tmp_path / "half", ckpt, tiny_bundle.tokenizer_path, 200, dtype="float16")
    sd = torch.load(out.gpt_path, weights_only=True)
    assert all(v.dtype == torch.float16 for v in sd.values() if v.is_floating_point())
    assert out.gpt_path.stat().st_size < 0.6 * (ckpt / "gpt.pth").stat().st_size
    load_gpt(out.output_dir)  # loads (cast back to fp32) like the official loader does
    with pytest.raises(CheckpointError, match="201 text rows but the tokenizer has 256 pieces"):
        export_checkpoint(model, tmp_path / "bad", ckpt, tiny_bundle.tokenizer_path, 256)


def test_update_config_text():
    text = "gpt:\n  model_dim: 64\n  number_text_tokens: 12000   # base\nw2v_stat: x.pt\n"
    new = update_config_text(text, 24000, "extended_bpe.model")
    assert "  number_text_tokens: 24000   # base\n" in new
    parsed = yaml.safe_load(new)
    assert parsed["dataset"] == {"bpe_model": "extended_bpe.model"} and parsed["w2v_stat"] == "x.pt"
    with pytest.raises(CheckpointError, match="number_text_tokens"):
        update_config_text("gpt:\n  model_dim: 64\n", 10, "b.model")
