"""IndexTTS-2.5's GPT against the official golden outputs (tests/fixtures/indextts25_gpt_tiny).

The same ``UnifiedVoice`` class, switched by the config's ``version: 2.5``: the CAMPPlus speaker row,
three condition rows, ``lang_embedding``.  Tolerances are the fixtures': atol 1e-5, rtol 1e-4.
"""

from __future__ import annotations

import json

import pytest
import torch

from indextts_core.config import GenerationConfig
from indextts_core.generation import build_prompt, decode
from indextts_core.model import GPTConfig, UnifiedVoice, compute_losses
from indextts_core.model.checkpoint import CheckpointError, load_gpt, official_state_dict
from indextts_core.model.unified_voice import frame
from tests_support import FIXTURES, check_emotion_outputs, check_forward_outputs, check_gradients, check_official_losses, close

V25 = FIXTURES / "indextts25_gpt_tiny"
GREEDY = GenerationConfig(do_sample=False, num_beams=1, repetition_penalty=1.0, max_mel_tokens=10)
INFER_V25 = GenerationConfig(do_sample=False)  # infer_v2_5's defaults otherwise: 3 beams, penalty 10, lp 0


@pytest.fixture(scope="module")
def cases() -> dict:
    return torch.load(V25 / "cases.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def model() -> UnifiedVoice:
    torch.set_num_threads(2)
    return load_gpt(V25).eval()


def test_loads_strictly_with_the_released_key_order(model: UnifiedVoice):
    meta = json.loads((V25 / "meta.json").read_text())
    sd = torch.load(V25 / "gpt.pth", map_location="cpu", weights_only=True)
    assert model.cfg.is_v25
    assert list(official_state_dict(model)) == list(sd)
    assert sum(p.numel() for p in model.parameters()) == meta["total_parameters"]
    assert not hasattr(model, "speed_emb") and not hasattr(model, "conditioning_encoder")
    assert model.lang_embedding.weight.shape == (107, 64)


def test_a_2_0_config_refuses_the_2_5_checkpoint_naming_the_keys(tmp_path):
    (tmp_path / "config.yaml").write_text((V25 / "config.yaml").read_text().replace("version: 2.5", "version: 2.0"))
    (tmp_path / "gpt.pth").write_bytes((V25 / "gpt.pth").read_bytes())
    with pytest.raises(CheckpointError, match=r"missing .*conditioning_encoder") as e:
        load_gpt(tmp_path)
    assert "spk_emb_proj.weight" in str(e.value) and "lang_embedding.weight" in str(e.value)


def test_full_size_keys_and_shapes():
    ref = json.loads((FIXTURES / "indextts25_gpt_full_shapes.json").read_text())
    cfg = GPTConfig.from_dict(ref["gpt_config"], version=2.5)
    with torch.device("meta"):
        model = UnifiedVoice(cfg)
    ours = [(k, list(v.shape)) for k, v in official_state_dict(model).items()]
    assert ours == [(e["key"], e["shape"]) for e in ref["state_dict"]]
    assert len(ours) == ref["num_state_dict_entries"] == 456
    assert sum(p.numel() for p in model.parameters()) == ref["total_parameters"]
    assert cfg.text_vocab_rows == 60510


def test_a_speaker_projection(model: UnifiedVoice, cases: dict):
    i, o = cases["inputs"], cases["outputs"]["a_speaker"]
    with torch.no_grad():
        spk = model.speaker_projection(i["campplus_emb"])
        assert spk.shape == (2, 1, 64)
        close(spk[:, 0], o["spk_emb_proj"])
        close(model.speaker_projection(i["campplus_emb"].unsqueeze(1)), spk)  # the [B, 1, 192] form
    with pytest.raises(ValueError, match="CAMPPlus"):
        model.speaker_latents(i["cond_feats"], i["cond_lengths"])


def test_b_emotion(model: UnifiedVoice, cases: dict):
    check_emotion_outputs(model, cases)


def _forward(model: UnifiedVoice, i: dict, grad: bool = False, langs: torch.Tensor | None = None):
    with torch.set_grad_enabled(grad):
        spk = model.speaker_projection(i["campplus_emb"])
        emo = model.emotion_vector(i["emo_feats"], i["emo_lengths"])
        out = model(spk, emo, i["text_ids"], i["text_lengths"], i["mel_codes"], i["mel_lengths"], langs=langs)
        return out, spk, emo


def test_c_forward_as_released(model: UnifiedVoice, cases: dict):
    """The released forward (``do_spk_cond=True``) leaves the language embedding out: ``langs=None``."""
    i, o = cases["inputs"], cases["outputs"]["c_forward"]
    out, spk, emo = _forward(model, i)
    check_forward_outputs(out, o)
    with torch.no_grad():
        conds = model.conditioning(spk, emo)
        close(conds, o["conds"])
        assert conds.shape == (2, 3, 64) and conds[:, 1:].eq(0).all()
        text_in, _ = frame(i["text_ids"], i["text_lengths"], 0, 1)
        mel_in, _ = frame(i["mel_codes"], i["mel_lengths"], 64, 65)
        assert torch.equal(text_in, o["text_inputs_aligned"]) and torch.equal(mel_in, o["mel_inputs_aligned"])
        close(model.text_embedding(text_in) + model.text_pos_embedding(text_in.size(1)), o["text_emb"])
        close(model.mel_embedding(mel_in) + model.mel_pos_embedding(mel_in.size(1)), o["mel_emb"])
        for k in (0, 1):
            tl, ml, el = int(i["text_lengths"][k]), int(i["mel_lengths"][k]), int(i["emo_lengths"][k])
            emo_k = model.emotion_vector(i["emo_feats"][k:k + 1, :el], i["emo_lengths"][k:k + 1])
            latent = model.gpt_latent(spk[k:k + 1], emo_k, i["text_ids"][k:k + 1, :tl],
                                      i["text_lengths"][k:k + 1], i["mel_codes"][k:k + 1, :ml],
                                      i["mel_lengths"][k:k + 1])
            close(latent, o[f"latent_item{k}_unpadded"])
    check_official_losses(out, o)


def test_c_gradients_match(model: UnifiedVoice, cases: dict):
    o = cases["outputs"]["c_forward"]
    model.zero_grad(set_to_none=True)
    out, _, _ = _forward(model, cases["inputs"], grad=True)
    check_gradients(model, out, o)
    assert float(o["grad_norms"]["lang_embedding.weight"]) == 0.0  # the released forward never trains it
    model.zero_grad(set_to_none=True)


def test_training_forward_with_langs_sees_what_inference_feeds(model: UnifiedVoice, cases: dict):
    """``forward(langs=...)`` gives the text rows exactly the prompt's embeddings, language row included."""
    i = cases["inputs"]
    with torch.no_grad():
        out, spk, emo = _forward(model, i, langs=i["langs"])
        released, _, _ = _forward(model, i)
        assert not torch.allclose(out.mel_logits, released.mel_logits)
        # item 0 alone: the training pass's conds + text equal the inference prompt (no padding: ids has no 0/1)
        n = int(i["text_lengths"][0])
        ids = i["text_ids"][0:1, :n]
        assert not ((ids == 0) | (ids == 1)).any()
        prompt = build_prompt(model, model.conditioning(spk[0:1], emo[0:1]), ids, langs=i["langs"][0:1])
        text_in, _ = frame(ids, torch.tensor([n]), 0, 1)
        train_rows = torch.cat((model.conditioning(spk[0:1], emo[0:1]),
                                model.text_embedding(text_in) + model.text_pos_embedding(text_in.size(1))
                                + model.language_rows(i["langs"][0:1])), dim=1)
        close(prompt.embeds, train_rows)
        # and a gradient now reaches the language rows used
        model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        out, _, _ = _forward(model, i, grad=True, langs=i["langs"])
        compute_losses(out).loss.backward()
    rows = model.lang_embedding.weight.grad.abs().sum(dim=1).nonzero().flatten().tolist()
    assert rows == sorted(set(i["langs"].tolist()))
    model.zero_grad(set_to_none=True)


def test_d_greedy_decode_one_item(model: UnifiedVoice, cases: dict):
    i, o = cases["inputs"], cases["outputs"]["d_decode"]
    with torch.no_grad():
        spk = model.speaker_projection(i["campplus_emb"][0:1])
        emo = model.emotion_vector(i["emo_feats"][0:1], torch.tensor([36]))
        prompt = build_prompt(model, model.conditioning(spk, emo), i["text_ids"][0:1].int(), langs=i["langs"][0:1])
        out = decode(model, prompt, GREEDY, record_logits=True)
    close(spk, o["greedy_speech_conditioning_latent"])
    assert torch.equal(out.sequences, o["greedy_codes"])
    close(out.logits, o["greedy_step_logits"])


def test_d_greedy_decode_batch_as_released(model: UnifiedVoice, cases: dict):
    """The batch passes ``[B, 1, 192]`` CAMPPlus vectors (a ``[B, 192]`` input breaks the released code)."""
    i, o = cases["inputs"], cases["outputs"]["d_decode"]
    text = o["text_ids_batch_for_decode"]
    with torch.no_grad():
        spk = model.speaker_projection(i["campplus_emb"].unsqueeze(1))
        emo = model.emotion_vector(i["emo_feats"], i["emo_lengths"])
        out = decode(model, build_prompt(model, model.conditioning(spk, emo), text, langs=i["langs"]), GREEDY,
                     record_logits=True)
    assert torch.equal(out.sequences, o["greedy_codes_batch"])
    close(out.logits, o["greedy_step_logits_batch"])


def test_d_infer_v2_5_beam_search(model: UnifiedVoice, cases: dict):
    """infer_v2_5's call: text ending in the appended ``1`` (stripped), beam search, merged emotion."""
    i, o = cases["inputs"], cases["outputs"]["d_decode"]
    text = o["infer_style_text_tokens"]
    assert int(text[0, -1]) == 1
    infer = torch.tensor([1024])
    with torch.no_grad():
        spk = model.speaker_projection(i["campplus_emb"][0:1])
        emo = model.merge_emotion(i["cond_feats"][0:1], i["emo_feats"][0:1], infer, infer, i["emo_alpha"])
        out = decode(model, build_prompt(model, model.conditioning(spk, emo), text, langs=i["langs"][0:1]),
                     INFER_V25, max_new_tokens=10)
    close(spk, o["infer_style_speech_conditioning_latent"])
    close(emo, o["infer_style_emovec"])
    assert torch.equal(out.sequences, o["infer_style_beam_codes"])
    close(out.scores, o["infer_style_beam_sequences_scores"])
