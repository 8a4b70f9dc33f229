"""Decoding against the official ``inference_speech`` (``d_decode`` in tests/fixtures/indextts2_gpt_tiny).

Codes and lengths exact; logits, latents and scores at the fixtures' tolerance (atol 1e-5, rtol 1e-4).
"""

from __future__ import annotations

import pytest
import torch

from indextts_core.config import GenerationConfig
from indextts_core.generation import build_prompt, decode, item_generators
from tests_support import close

GREEDY = GenerationConfig(do_sample=False, num_beams=1, repetition_penalty=1.0, max_mel_tokens=10)
INFER_V2 = GenerationConfig(do_sample=False)  # infer_v2's defaults otherwise: 3 beams, penalty 10, lp 0


def test_greedy_decode_one_item(model, cases):
    i, o = cases["inputs"], cases["outputs"]["d_decode"]
    with torch.no_grad():
        spk = model.speaker_latents(i["cond_feats"][0:1], torch.tensor([40]))
        emo = model.emotion_vector(i["emo_feats"][0:1], torch.tensor([36]))
        out = decode(model, build_prompt(model, model.conditioning(spk, emo), i["text_ids"][0:1].int()), GREEDY,
                     record_logits=True)
    close(spk, o["greedy_speech_conditioning_latent"])
    assert torch.equal(out.sequences, o["greedy_codes"])
    close(out.logits, o["greedy_step_logits"])
    assert out.lengths.tolist() == [10] and not out.stopped.any()  # ran into max_generate_length


def test_greedy_decode_batch_as_released(model, cases):
    """Texts right-padded with the stop id, prompts left-padded: the official batching, padding leak included."""
    i, o = cases["inputs"], cases["outputs"]["d_decode"]
    text = o["text_ids_batch_for_decode"]
    assert text[1, 7:].eq(1).all()  # the stop-id padding that the prompt strips
    with torch.no_grad():
        spk = model.speaker_latents(i["cond_feats"], i["cond_lengths"])
        emo = model.emotion_vector(i["emo_feats"], i["emo_lengths"])
        out = decode(model, build_prompt(model, model.conditioning(spk, emo), text), GREEDY, record_logits=True)
    assert torch.equal(out.sequences, o["greedy_codes_batch"])
    close(out.logits, o["greedy_step_logits_batch"])


def test_infer_v2_beam_search_trimming_and_s2mel_latent(model, cases):
    i, o = cases["inputs"], cases["outputs"]["d_decode"]
    text = o["infer_style_text_tokens"]
    infer = torch.tensor([1024])  # infer_v2 passes the feature width as the length
    with torch.no_grad():
        spk = model.speaker_latents(i["cond_feats"][0:1], infer)
        emo = model.merge_emotion(i["cond_feats"][0:1], i["emo_feats"][0:1], infer, infer, i["emo_alpha"])
        out = decode(model, build_prompt(model, model.conditioning(spk, emo), text), INFER_V2, max_new_tokens=30)
        latent = model.gpt_latent(spk, emo, text, torch.tensor([text.size(1)]), out.codes,
                                  torch.tensor([out.codes.size(1)]))
    close(spk, o["infer_style_speech_conditioning_latent"])
    close(emo, o["infer_style_emovec"])
    assert torch.equal(out.sequences, o["infer_style_beam_codes"])
    close(out.scores, o["infer_style_beam_sequences_scores"])
    assert torch.equal(out.lengths, o["infer_style_code_lens"]) and out.stopped.all()
    close(latent, o["infer_style_s2mel_latent"])


def test_kv_cache_changes_nothing(model, cases):
    i = cases["inputs"]
    opts = GenerationConfig(max_mel_tokens=12, num_beams=2, seed=3)
    with torch.no_grad():
        spk = model.speaker_latents(i["cond_feats"], i["cond_lengths"], exact_padding=True)
        emo = model.emotion_vector(i["emo_feats"], i["emo_lengths"], exact_padding=True)
        prompt = build_prompt(model, model.conditioning(spk, emo), i["text_ids"])
        cached = decode(model, prompt, opts, random=item_generators(3, 2))
        plain = decode(model, prompt, opts, random=item_generators(3, 2), use_cache=False)
    assert torch.equal(cached.sequences, plain.sequences)
    close(cached.scores, plain.scores)


@pytest.mark.parametrize("opts", [
    GenerationConfig(do_sample=False, num_beams=1, repetition_penalty=1.0),  # greedy
    GenerationConfig(num_beams=1),  # sampling: temperature, top-k, top-p, repetition penalty
    GenerationConfig(do_sample=False),  # beam search (infer_v2 with do_sample=False)
    GenerationConfig(),  # infer_v2's defaults: beam sampling
], ids=["greedy", "sampling", "beam-search", "beam-sampling"])
def test_batched_rows_equal_solo_decodes(model, cases, opts):
    """Beyond the official: exact conditioning and one random stream per item, so batching changes nothing."""
    i = cases["inputs"]
    opts = opts.model_copy(update={"max_mel_tokens": 15, "seed": 7})
    texts = [i["text_ids"][k, : int(i["text_lengths"][k])] for k in (0, 1)]
    text = torch.nn.utils.rnn.pad_sequence(texts, batch_first=True, padding_value=1)  # stop-id padding, stripped
    with torch.no_grad():
        spk = model.speaker_latents(i["cond_feats"], i["cond_lengths"], exact_padding=True)
        emo = model.emotion_vector(i["emo_feats"], i["emo_lengths"], exact_padding=True)
        batch = decode(model, build_prompt(model, model.conditioning(spk, emo), text), opts,
                       random=item_generators(opts.seed, 2), record_logits=True)
        for k in (0, 1):
            c, e = int(i["cond_lengths"][k]), int(i["emo_lengths"][k])
            s1 = model.speaker_latents(i["cond_feats"][k:k + 1, :c], i["cond_lengths"][k:k + 1])
            e1 = model.emotion_vector(i["emo_feats"][k:k + 1, :e], i["emo_lengths"][k:k + 1])
            solo = decode(model, build_prompt(model, model.conditioning(s1, e1), texts[k][None]), opts,
                          random=item_generators(opts.seed + k, 1), record_logits=True)
            assert torch.equal(batch.item(k), solo.item(0)) and bool(batch.stopped[k]) == bool(solo.stopped[0])
            if solo.logits is not None:
                n = solo.logits.size(1)
                close(batch.logits[k, :n], solo.logits[0])
            if solo.scores is not None:
                close(batch.scores[k], solo.scores[0])


def test_score_processors_follow_transformers():
    """Repetition penalty (divide positive, multiply negative scores of codes already present), then
    temperature, top-k and top-p, each keeping at least ``keep`` candidates."""
    from indextts_core.generation.decode import process_scores

    scores = torch.tensor([[2.0, -1.0, 0.5, 0.0, -3.0]])
    history = torch.tensor([[0, 1, 1]])
    penalised = process_scores(scores, history, GenerationConfig(do_sample=False, repetition_penalty=2.0), keep=1)
    assert penalised.tolist() == [[1.0, -2.0, 0.5, 0.0, -3.0]]
    top2 = process_scores(scores, history[:, :0], GenerationConfig(temperature=1.0, top_k=2, top_p=1.0,
                                                                   repetition_penalty=1.0), keep=1)
    assert torch.isinf(top2).tolist() == [[False, True, False, True, True]]
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    nucleus = process_scores(probs, history[:, :0], GenerationConfig(temperature=1.0, top_k=0, top_p=0.7,
                                                                      repetition_penalty=1.0), keep=1)
    assert torch.isinf(nucleus).tolist() == [[False, False, True, True]]  # 0.5 + 0.3 >= 0.7
    hot = process_scores(scores, history[:, :0], GenerationConfig(temperature=0.5, top_k=0, top_p=1.0,
                                                                  repetition_penalty=1.0), keep=1)
    assert torch.equal(hot, scores / 0.5)
    kept = process_scores(scores, history[:, :0], GenerationConfig(temperature=1.0, top_k=1, top_p=1.0,
                                                                   repetition_penalty=1.0), keep=2)
    assert (~torch.isinf(kept)).sum() == 2  # beams keep at least two candidates
