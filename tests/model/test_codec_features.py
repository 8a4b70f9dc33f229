"""Semantic codec and the Wav2Vec2-BERT feature path against the official outputs; batched == solo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from indextts_core.model.codec import CodecConfig, load_codec
from indextts_core.model.features import SemanticFeatures
from tests_support import FIXTURES

CODEC = FIXTURES / "semantic_codec_tiny"
W2V = FIXTURES / "w2vbert_tiny"


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def codec():
    cfg = yaml.safe_load((CODEC / "config.yaml").read_text())["semantic_codec"]
    return load_codec(CODEC / "model.safetensors", CodecConfig.from_dict(cfg))


@pytest.fixture(scope="module")
def w2v():
    feats = SemanticFeatures.from_dirs(W2V / "model", W2V / "wav2vec2bert_stats.pt", W2V / "feature_extractor")
    cfg = yaml.safe_load((W2V / "semantic_codec_h32" / "config.yaml").read_text())["semantic_codec"]
    codec = load_codec(W2V / "semantic_codec_h32" / "model.safetensors", CodecConfig.from_dict(cfg))
    cases = torch.load(W2V / "cases.pt", map_location="cpu", weights_only=True)
    return feats, codec, cases


def test_codec_quantize_matches(codec):
    cases = torch.load(CODEC / "cases.pt", map_location="cpu", weights_only=True)
    i, o = cases["inputs"], cases["outputs"]
    codes, quantized = codec.quantize(i["feats"])
    assert torch.equal(codes, o["batch_codes"])
    close(quantized, o["batch_quantized"])
    close(codec.embed_codes(codes), o["batch_vq2emb"].transpose(1, 2))
    codes1, q1 = codec.quantize(i["feats_single"])
    assert torch.equal(codes1, o["single_codes"])
    close(q1, o["single_quantized"])
    close(codec.embed_codes(codes1), o["single_S_infer"])


def test_codec_batch_equals_solo_with_lengths(codec):
    torch.manual_seed(0)
    clips = [torch.randn(n, 1024) for n in (31, 17, 9)]
    # padded frames hold values, as Wav2Vec2-BERT's outputs for padding frames do
    batch = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True, padding_value=1.0)
    lengths = torch.tensor([c.shape[0] for c in clips])
    codes, quantized = codec.quantize(batch, lengths)
    for k, clip in enumerate(clips):
        solo_codes, solo_q = codec.quantize(clip[None])
        assert torch.equal(codes[k, : len(clip)], solo_codes[0])
        close(quantized[k, : len(clip)], solo_q[0])
    # without lengths the released codec lets padding change a short clip's last codes
    unmasked, _ = codec.quantize(batch)
    assert any(not torch.equal(unmasked[k, : len(c)], codes[k, : len(c)]) for k, c in enumerate(clips))


def test_features_and_codes_match_the_official_chain(w2v):
    feats, codec, cases = w2v
    wave, o = cases["inputs"]["waveform_16k"].numpy(), cases["outputs"]["direct"]
    input_features, mask = feats.inputs([wave])
    close(input_features, o["input_features"])
    assert torch.equal(mask.to(torch.int32), o["attention_mask"])
    hidden = feats.model(input_features=input_features, attention_mask=mask, output_hidden_states=True)
    close(hidden.hidden_states[17], o["hidden_state_17_raw"])  # layer 17, not the last hidden state
    assert len(hidden.hidden_states) == int(o["num_hidden_states"])
    (feat,) = feats.extract([wave])
    close(feat, o["feat"][0])
    codes, quantized = codec.quantize(feat[None])
    assert torch.equal(codes, o["semantic_codes"])
    close(quantized, o["semantic_quantized"])
    batch = cases["outputs"]["batch"]
    padded, lengths = feats.extract_padded([wave, wave[: int(batch["short_len_samples"])]])
    close(padded[0], batch["feat"][0])
    assert lengths.tolist() == batch["attention_mask"].sum(dim=1).tolist()


def test_batched_extraction_equals_per_clip_extraction(w2v):
    feats, codec, cases = w2v
    wave = cases["inputs"]["waveform_16k"].numpy()
    rng = np.random.default_rng(0)
    clips = [wave, wave[:20800], (rng.standard_normal(9000) * 0.1).astype(np.float32), wave[5000:12000]]
    batched = feats.extract(clips)
    padded, lengths = feats.extract_padded(clips)
    batch_codes, _ = codec.quantize(padded, lengths)
    for k, clip in enumerate(clips):
        (solo,) = feats.extract([clip])
        assert batched[k].shape == solo.shape and lengths[k] == solo.shape[0]
        close(batched[k], solo)
        solo_codes, _ = codec.quantize(solo[None])
        assert torch.equal(batch_codes[k, : solo.shape[0]], solo_codes[0])
    # 100 fbank frames/s (25 ms windows) stacked in pairs: about 50 frames per second of audio
    assert [b.shape[0] for b in batched] == [99, 64, 27, 21]
