"""Model set-up: tokenizer/checkpoint/index mismatches fail at start-up naming the files; freezing is real."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from indextts_core.errors import InputError
from indextts_core.model.bundle import open_bundle
from indextts_core.training.optim import param_groups, warmup_cosine
from indextts_core.training.setup import PRECOMPUTED, check_index, prepare_model
from indextts_core.training.autosize import resolve_amp
from tests_support import append_pieces


def test_tokenizer_must_extend_the_checkpoints(processed, base_tokenizer_path: Path, tmp_path: Path):
    bundle = open_bundle(processed.checkpoint)
    # another base vocabulary altogether (300 pieces trained separately): named as the wrong one
    with pytest.raises(InputError, match=r"--tokenizer .*bpe.model: id \d+ is .* in the checkpoint's tokenizer"):
        prepare_model(bundle, base_tokenizer_path)
    # a tokenizer smaller than the checkpoint's vocabulary
    small = tmp_path / "small.model"
    from indextts_core.tiny import train_base_tokenizer

    train_base_tokenizer(["HELLO WORLD", "ONE TWO THREE"], small, vocab_size=30)
    with pytest.raises(InputError, match=r"has \d+ pieces, fewer than the 256 .*not an extension"):
        prepare_model(bundle, small)


def test_index_made_with_another_tokenizer_or_base_model_is_refused(processed, tmp_path: Path):
    bundle = open_bundle(processed.checkpoint)
    other = append_pieces(processed.tokenizer, ["ZZZQ"], tmp_path / "other.model")
    setup = prepare_model(bundle, other)  # a valid extension, but not the one the ids were made with
    meta = json.loads((processed.data / "preprocess.json").read_text())
    with pytest.raises(InputError, match=r"preprocess.json: the text ids were made with tokenizer extended_bpe.model"):
        check_index(meta, processed.data, setup.tokenizer, setup.base_gpt_sha256, 10)
    setup = prepare_model(bundle, processed.tokenizer)
    with pytest.raises(InputError, match=r"speaker latents and emotion vectors were computed with base GPT"):
        check_index(meta, processed.data, setup.tokenizer, "0" * 64, 10)
    with pytest.raises(InputError, match="outside the tokenizer"):
        check_index(meta, processed.data, setup.tokenizer, setup.base_gpt_sha256, setup.vocab_size)
    check_index(meta, processed.data, setup.tokenizer, setup.base_gpt_sha256, setup.vocab_size - 1)


def test_another_stats_file_than_preprocess_used_is_refused(processed, tmp_path: Path):
    """Every checkpoint file behind the features is fingerprinted, not only gpt.pth."""

    import torch

    bundle = open_bundle(processed.checkpoint)
    setup = prepare_model(bundle, processed.tokenizer)
    meta = json.loads((processed.data / "preprocess.json").read_text())
    assert set(meta["base_files_sha256"]) == {"wav2vec2bert_stats.pt"}
    check_index(meta, processed.data, setup.tokenizer, setup.base_gpt_sha256, 1, processed.checkpoint)
    other = tmp_path / "ckpt"
    shutil.copytree(processed.checkpoint, other)
    stats = torch.load(other / "wav2vec2bert_stats.pt", weights_only=True)
    torch.save({k: v + 1 for k, v in stats.items()}, other / "wav2vec2bert_stats.pt")
    with pytest.raises(InputError, match=r"features were computed with wav2vec2bert_stats.pt .* not the checkpoint "
                                         r"preprocess used \(download.checkpoint / --checkpoint\)"):
        check_index(meta, processed.data, setup.tokenizer, setup.base_gpt_sha256, 1, other)


def test_frozen_parts_are_not_parameters_and_groups_have_their_own_settings(processed):
    bundle = open_bundle(processed.checkpoint)
    setup = prepare_model(bundle, processed.tokenizer)
    model, n = setup.model, setup.base_vocab
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert not any(name.startswith(PRECOMPUTED + ("speed_emb",)) for name in trainable)
    assert "text_embedding.weight_base" not in dict(model.named_parameters())  # a buffer: no grad, no decay
    assert {"text_embedding.weight_new", "text_head.weight_new", "text_head.bias_new"} <= trainable
    groups = param_groups(model, 2e-5, 0.01, 1e-4, 0.0)
    assert [g["name"] for g in groups] == ["decay", "no_decay", "new_rows"]
    assert groups[2]["lr"] == 1e-4 and groups[2]["weight_decay"] == 0.0 and groups[1]["weight_decay"] == 0.0
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert in_groups == {id(p) for p in model.parameters() if p.requires_grad}
    # the state dict is still the official one, with the base rows in place
    sd = model.state_dict()
    base = bundle.load_gpt().state_dict()
    assert torch.equal(sd["text_embedding.weight"][:n], base["text_embedding.weight"][:n])
    assert sd["text_embedding.weight"].shape[0] == setup.vocab_size + 1

    # unfrozen: base rows train with the backbone, new rows keep their own group
    open_setup = prepare_model(bundle, processed.tokenizer, freeze_base_rows=False, freeze_conditioning=False)
    names = {id(p): name for name, p in open_setup.model.named_parameters()}
    groups = param_groups(open_setup.model, 2e-5, 0.01, 1e-4, 0.0)
    decay = {names[id(p)] for p in groups[0]["params"]}
    assert {"text_embedding.weight_base", "speed_emb.weight"} <= decay
    assert {names[id(p)] for p in groups[2]["params"]} == {"text_embedding.weight_new", "text_head.weight_new",
                                                           "text_head.bias_new"}


def test_schedule_and_precision_choices():
    f = warmup_cosine(warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.55) and f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    assert resolve_amp("auto", torch.device("cpu")) == (None, False)  # fp32 on CPU
    assert resolve_amp("bf16", torch.device("cpu")) == (torch.bfloat16, False)
    with pytest.raises(InputError, match="fp16 needs a CUDA device"):
        resolve_amp("fp16", torch.device("cpu"))
