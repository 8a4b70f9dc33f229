"""UnifiedVoice against the golden outputs of the official implementation (tests/fixtures/indextts2_gpt_tiny).

Tolerances are the fixtures': atol 1e-5, rtol 1e-4 for floats; integers exact.
"""

from __future__ import annotations

import torch

from indextts_core.model import UnifiedVoice, compute_losses
from indextts_core.model.losses import target_mask
from tests_support import check_emotion_outputs, check_forward_outputs, check_gradients, check_official_losses, close


def test_speaker_conditioning(model: UnifiedVoice, cases: dict):
    i, o = cases["inputs"], cases["outputs"]["a_speaker"]
    with torch.no_grad():
        close(model.speaker_latents(i["cond_feats"], i["cond_lengths"]), o["spk_cond_latent"])
        for k in (0, 1):
            n = int(i["cond_lengths"][k])
            close(model.speaker_latents(i["cond_feats"][k:k + 1, :n], i["cond_lengths"][k:k + 1]),
                  o[f"spk_cond_latent_item{k}_unpadded"])
        # infer_v2 passes the feature width (1024) as the length: no masking for a single prompt
        close(model.speaker_latents(i["cond_feats"][0:1], torch.tensor([1024])), o["spk_cond_latent_item0_infer_style"])


def test_padding_leaks_through_the_conformer_conv_bias_as_released(model: UnifiedVoice, cases: dict):
    i, o = cases["inputs"], cases["outputs"]["a_speaker"]
    with torch.no_grad():
        batched = model.speaker_latents(i["cond_feats"], i["cond_lengths"])[1]
    diff = (batched - o["spk_cond_latent_item1_unpadded"][0]).abs().max()
    assert diff > 1e-3  # the released model's batched result depends on padding; ours reproduces it


def test_emotion(model: UnifiedVoice, cases: dict):
    check_emotion_outputs(model, cases)


def _forward(model: UnifiedVoice, i: dict, grad: bool = False):
    with torch.set_grad_enabled(grad):
        spk = model.speaker_latents(i["cond_feats"], i["cond_lengths"])
        emo = model.emotion_vector(i["emo_feats"], i["emo_lengths"])
        return model(spk, emo, i["text_ids"], i["text_lengths"], i["mel_codes"], i["mel_lengths"]), spk, emo


def test_teacher_forced_forward(model: UnifiedVoice, cases: dict):
    i, o = cases["inputs"], cases["outputs"]["c_forward"]
    text_before, codes_before = i["text_ids"].clone(), i["mel_codes"].clone()
    out, spk, emo = _forward(model, i)
    # the official forward overwrites the caller's tensors with stop tokens; ours leaves them alone
    assert torch.equal(i["text_ids"], text_before) and torch.equal(i["mel_codes"], codes_before)
    check_forward_outputs(out, o)
    with torch.no_grad():
        close(model.conditioning(spk, emo), o["conds"])
        assert torch.equal(out.text_targets[:, :-2], o["text_inputs_after_forward"])
        assert torch.equal(out.mel_targets[:, :-2], o["mel_codes_after_forward"])
        from indextts_core.model.unified_voice import frame

        text_in, _ = frame(i["text_ids"], i["text_lengths"], 0, 1)
        mel_in, _ = frame(i["mel_codes"], i["mel_lengths"], 64, 65)
        assert torch.equal(text_in, o["text_inputs_aligned"]) and torch.equal(mel_in, o["mel_inputs_aligned"])
        close(model.text_embedding(text_in) + model.text_pos_embedding(text_in.size(1)), o["text_emb"])
        close(model.mel_embedding(mel_in) + model.mel_pos_embedding(mel_in.size(1)), o["mel_emb"])


def test_each_item_alone_and_no_attention_mask_as_released(model: UnifiedVoice, cases: dict):
    i, o = cases["inputs"], cases["outputs"]["c_forward"]
    with torch.no_grad():
        for k in (0, 1):
            tl, ml = int(i["text_lengths"][k]), int(i["mel_lengths"][k])
            cl, el = int(i["cond_lengths"][k]), int(i["emo_lengths"][k])
            spk = model.speaker_latents(i["cond_feats"][k:k + 1, :cl], i["cond_lengths"][k:k + 1])
            emo = model.emotion_vector(i["emo_feats"][k:k + 1, :el], i["emo_lengths"][k:k + 1])
            latent = model.gpt_latent(spk, emo, i["text_ids"][k:k + 1, :tl], i["text_lengths"][k:k + 1],
                                      i["mel_codes"][k:k + 1, :ml], i["mel_lengths"][k:k + 1])
            close(latent, o[f"latent_item{k}_unpadded"])
        out, _, _ = _forward(model, i)
    # item 1's mel positions attend to its padded text positions in the batch (no attention mask)
    assert (out.mel_latent[1, : int(i["mel_lengths"][1])] - o["latent_item1_unpadded"][0]).abs().max() > 1e-3


def test_official_losses_and_per_token_losses(model: UnifiedVoice, cases: dict):
    out, _, _ = _forward(model, cases["inputs"])
    check_official_losses(out, cases["outputs"]["c_forward"])


def test_masked_losses_and_top1_follow_the_spec(model: UnifiedVoice, cases: dict):
    i, o = cases["inputs"], cases["outputs"]["c_forward"]
    out, _, _ = _forward(model, i)
    losses = compute_losses(out, text_weight=0.3, mel_weight=0.7)
    # mask: each sample's real tokens plus its first stop token
    tmask = torch.zeros_like(o["loss_text_per_token"], dtype=torch.bool)
    mmask = torch.zeros_like(o["loss_mel_per_token"], dtype=torch.bool)
    for k in range(2):
        tmask[k, : int(i["text_lengths"][k]) + 1] = True
        mmask[k, : int(i["mel_lengths"][k]) + 1] = True
    assert torch.equal(target_mask(i["text_lengths"], tmask.size(1)), tmask)
    expected_text = o["loss_text_per_token"][tmask].mean()
    expected_mel = o["loss_mel_per_token"][mmask].mean()
    close(losses.text_loss, expected_text)
    close(losses.mel_loss, expected_mel)
    close(losses.loss, 0.3 * expected_text + 0.7 * expected_mel)
    assert (losses.text_tokens, losses.mel_tokens) == (int(tmask.sum()), int(mmask.sum()))
    pred = o["mel_logits"].argmax(dim=1)
    expected_top1 = (pred == o["mel_targets"])[mmask].float().mean()
    close(losses.mel_top1, expected_top1)


def test_gradients_match(model: UnifiedVoice, cases: dict):
    model.zero_grad(set_to_none=True)
    out, _, _ = _forward(model, cases["inputs"], grad=True)
    check_gradients(model, out, cases["outputs"]["c_forward"])
    model.zero_grad(set_to_none=True)


def test_gpt2_dropout_is_active_in_train_mode_only(model: UnifiedVoice, cases: dict):
    i = cases["inputs"]
    with torch.no_grad():
        spk = model.speaker_latents(i["cond_feats"], i["cond_lengths"])
        emo = model.emotion_vector(i["emo_feats"], i["emo_lengths"])
        args = (spk, emo, i["text_ids"], i["text_lengths"], i["mel_codes"], i["mel_lengths"])
        evals = [model(*args).mel_logits for _ in range(2)]
        model.train()
        try:
            torch.manual_seed(0)
            a = model(*args).mel_logits
            torch.manual_seed(0)
            b = model(*args).mel_logits
            torch.manual_seed(1)
            c = model(*args).mel_logits
            # the conditioners have no dropout: same latents in train mode
            close(model.speaker_latents(i["cond_feats"], i["cond_lengths"]), spk)
        finally:
            model.eval()
    assert torch.equal(evals[0], evals[1])
    assert torch.equal(a, b) and not torch.allclose(a, c) and not torch.allclose(a, evals[0])
    assert all(m.p == 0.1 for m in model.gpt.modules() if isinstance(m, torch.nn.Dropout))
