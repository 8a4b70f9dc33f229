"""Vocabulary resize (rows from vocab, decomposition init) and base-row freezing that really freezes."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from indextts_core.model.checkpoint import export_checkpoint, load_gpt, official_state_dict
from indextts_core.model.config import text_rows
from indextts_core.model.vocab import freeze_base_rows, new_row_parameters, resize_text_vocab
from indextts_core.text.tokenizer import load_sentencepiece, new_piece_decompositions
from tests_support import FIXTURES, append_pieces

NEW_PIECES = ["▁ሰላም", "ነው", "▁THEWEATHER", "HER", "ሰ"]


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


@pytest.fixture
def extended(tiny_bundle, tmp_path: Path):
    base = load_sentencepiece(tiny_bundle.tokenizer_path)
    path = append_pieces(tiny_bundle.tokenizer_path, NEW_PIECES, tmp_path / "extended.model")
    return base, load_sentencepiece(path), path


def test_rows_from_vocab_rule():
    assert text_rows(12000) == 12001 and text_rows(24000) == 24001
    with pytest.raises(ValueError):
        text_rows(1)


def test_decompositions_use_the_base_pieces(extended):
    base, ext, _ = extended
    dec = new_piece_decompositions(base, ext)
    n = base.GetPieceSize()
    assert sorted(dec) == list(range(n, n + len(NEW_PIECES)))
    # Ge'ez letters are <unk> in the base and dropped; a word-initial piece keeps the base's "▁"
    assert dec[n] == [base.PieceToId("▁")] and dec[n + 1] == [] and dec[n + 4] == []
    assert [base.IdToPiece(i) for i in dec[n + 2]] == base.EncodeAsPieces("THEWEATHER")
    pieces = [base.IdToPiece(i) for i in dec[n + 3]]  # a mid-word piece: no word marker anywhere
    assert "".join(pieces) == "HER" and not any(p.startswith("▁") for p in pieces)


def test_resize_copies_base_rows_and_initialises_new_ones(tiny_bundle, extended):
    base, ext, _ = extended
    model = tiny_bundle.load_gpt()
    n = base.GetPieceSize()
    before = {k: official_state_dict(model)[k].clone() for k in ("text_embedding.weight", "text_head.weight",
                                                                 "text_head.bias")}
    report = resize_text_vocab(model, ext.GetPieceSize(), new_piece_decompositions(base, ext))
    v = ext.GetPieceSize()
    assert report.rows == text_rows(v) == model.text_embedding.weight.shape[0] == model.text_head.bias.shape[0]
    assert model.cfg.number_text_tokens == v and report.copied == n
    assert (report.from_pieces, report.from_mean) == (3, 2)
    dec = new_piece_decompositions(base, ext)
    for key, tensor in (("text_embedding.weight", model.text_embedding.weight),
                        ("text_head.weight", model.text_head.weight), ("text_head.bias", model.text_head.bias)):
        old = before[key]
        assert torch.equal(tensor[:n], old[:n])  # base ids keep their rows
        assert torch.equal(tensor[-1], old[-1])  # the extra "+1" row keeps its values
        torch.testing.assert_close(tensor[n + 2], old[dec[n + 2]].mean(0))
        torch.testing.assert_close(tensor[n + 1], old[:n].mean(0))  # nothing known: mean of all base rows
    with pytest.raises(ValueError, match="cannot shrink"):
        resize_text_vocab(model, n - 1)


def test_freezing_really_freezes(tiny_bundle, extended):
    base, ext, _ = extended
    n = base.GetPieceSize()
    model = tiny_bundle.load_gpt()
    resize_text_vocab(model, ext.GetPieceSize(), new_piece_decompositions(base, ext))
    freeze_base_rows(model, n)
    sd = official_state_dict(model)
    frozen_before = {k: _digest(sd[k][:n]) for k in ("text_embedding.weight", "text_head.weight", "text_head.bias")}
    new_before = sd["text_embedding.weight"][n:].clone()
    other_before = sd["gpt.h.0.mlp.c_fc.weight"].clone()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == sum(p.numel() for p in model.parameters())
    assert all(p.shape[0] == ext.GetPieceSize() + 1 - n for p in new_row_parameters(model))
    # strong weight decay and a large learning rate: a mask-only freeze would visibly decay the rows
    opt = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.5)
    model.train()
    torch.manual_seed(0)
    for _ in range(3):
        b, length, m = 2, 6, 12
        ids = torch.randint(3, ext.GetPieceSize(), (b, length))
        out = model(torch.randn(b, 32, 64), torch.randn(b, 64), ids, torch.tensor([6, 4]),
                    torch.randint(0, 64, (b, m)), torch.tensor([12, 7]))
        loss = torch.nn.functional.cross_entropy(out.text_logits.flatten(0, 1), out.text_targets.flatten()) \
            + torch.nn.functional.cross_entropy(out.mel_logits.flatten(0, 1), out.mel_targets.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    sd = official_state_dict(model)
    assert {k: _digest(sd[k][:n]) for k in frozen_before} == frozen_before  # byte-identical
    assert not torch.equal(sd["text_embedding.weight"][n:], new_before)  # new rows trained
    assert not torch.equal(sd["gpt.h.0.mlp.c_fc.weight"], other_before)  # the rest trained
    assert set(sd) == set(official_state_dict(tiny_bundle.load_gpt()))  # still the official key set


def test_round_trip_official_resize_train_export_reload(tmp_path: Path, extended):
    """Tiny official checkpoint -> resize -> train with frozen base rows -> export -> strict reload."""
    base, ext, ext_path = extended
    ckpt = tmp_path / "official"
    shutil.copytree(FIXTURES / "indextts2_gpt_tiny", ckpt)
    model = load_gpt(ckpt)
    n = model.cfg.number_text_tokens  # 200 in the fixture; the test tokenizer has 256 + 5 pieces
    original = {k: v.clone() for k, v in official_state_dict(model).items()}
    v = ext.GetPieceSize()
    resize_text_vocab(model, v, {})
    freeze_base_rows(model, n)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    model.train()
    cases = torch.load(FIXTURES / "indextts2_gpt_tiny" / "cases.pt", weights_only=True)["inputs"]
    for _ in range(2):
        spk = model.speaker_latents(cases["cond_feats"], cases["cond_lengths"])
        emo = model.emotion_vector(cases["emo_feats"], cases["emo_lengths"])
        ids = cases["text_ids"].clone()
        ids[:, 0] = v - 1  # use a new piece
        out = model(spk, emo, ids, cases["text_lengths"], cases["mel_codes"], cases["mel_lengths"])
        loss = out.mel_logits.logsumexp(-1).mean() + out.text_logits.logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    export = export_checkpoint(model, tmp_path / "export", ckpt, ext_path, vocab_size=v)
    reloaded = load_gpt(export.output_dir)  # strict
    sd = official_state_dict(reloaded)
    assert reloaded.cfg.number_text_tokens == v and sd["text_embedding.weight"].shape[0] == v + 1
    for key in ("text_embedding.weight", "text_head.weight", "text_head.bias"):
        assert torch.equal(sd[key][:n], original[key][:n]), key  # base rows byte-identical
        assert not torch.equal(sd[key][n:v], original[key][n:n + 1].expand_as(sd[key][n:v])), key
    assert not torch.equal(sd["final_norm.weight"], original["final_norm.weight"])
    for k, t in official_state_dict(model).items():
        assert torch.equal(t, sd[k]), k
