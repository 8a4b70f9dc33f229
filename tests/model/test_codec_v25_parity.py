"""IndexTTS-2.5's semantic codec (the official ``EnhancedCodec``): the same codec behind a stride-2 convolution,
so 50 Hz features give 25 Hz codes.  Golden data: ``tests/fixtures/semantic_codec_v25_tiny`` (README section 5)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from indextts_core.errors import ConfigError
from indextts_core.model.codec import CodecConfig, SemanticCodec, load_codec

from tests_support import FIXTURES

V25 = FIXTURES / "semantic_codec_v25_tiny"


@pytest.fixture(scope="module")
def codec() -> SemanticCodec:
    cfg = yaml.safe_load((V25 / "config.yaml").read_text())["semantic_codec"]
    return load_codec(V25 / "codec.pth", CodecConfig.from_dict(cfg, version="2.5"))  # strict: every key, every shape


@pytest.fixture(scope="module")
def cases() -> dict:
    return torch.load(V25 / "cases.pt", weights_only=True)


def test_a_version_2_5_config_builds_the_downsampling_codec():
    assert CodecConfig.from_dict({}, version="2.5").downsample_scale == 2  # EnhancedCodec's default
    assert CodecConfig.from_dict({}, version=2.0).downsample_scale == 1
    assert CodecConfig.from_dict({"downsample_scale": None}).downsample_scale == 1
    with pytest.raises(ConfigError, match="downsample_scale must be 1"):
        CodecConfig.from_dict({"downsample_scale": 4})


def test_quantize_gives_the_official_25_hz_codes(codec, cases):
    out = cases["outputs"]
    codes, quantized = codec.quantize(cases["inputs"]["feats"])
    assert torch.equal(codes, out["batch_codes"])  # 24 frames -> 12 codes
    torch.testing.assert_close(quantized, out["batch_quantized"], atol=1e-5, rtol=1e-5)
    codes, quantized = codec.quantize(cases["inputs"]["feats_single"])
    assert torch.equal(codes, out["single_codes"])  # 17 frames -> ceil(17 / 2) = 9 codes
    torch.testing.assert_close(quantized, out["single_quantized"], atol=1e-5, rtol=1e-5)
    assert codec.code_lengths(torch.tensor([17, 24])).tolist() == [9, 12]


def test_decode_gives_the_official_reconstruction(codec, cases):
    out = cases["outputs"]
    torch.testing.assert_close(codec.decode(out["batch_codes"]), out["batch_decode"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(codec.decode(out["single_codes"]), out["single_decode"], atol=1e-5, rtol=1e-5)


def test_a_padded_batch_gives_each_clip_its_solo_codes(codec, cases):
    """Beyond the official code: with ``lengths``, a short clip in a padded batch gets the codes it gets alone."""
    single = cases["inputs"]["feats_single"]  # 17 frames
    batch = torch.cat([torch.nn.functional.pad(single, (0, 0, 0, 7), value=3.0), cases["inputs"]["feats"][:1]])
    codes, _ = codec.quantize(batch, torch.tensor([17, 24]))
    assert torch.equal(codes[0, :9], cases["outputs"]["single_codes"][0])
    assert torch.equal(codes[1], cases["outputs"]["batch_codes"][0])


def test_full_size_keys_and_shapes():
    ref = json.loads((FIXTURES / "semantic_codec_v25_full_shapes.json").read_text())
    with torch.device("meta"):
        codec = SemanticCodec(CodecConfig.from_dict(ref["semantic_codec_config"], version="2.5"))
    ours = {k: list(v.shape) for k, v in codec.state_dict().items()}
    assert ours == {e["key"]: e["shape"] for e in ref["state_dict"]}
    assert sum(p.numel() for p in codec.parameters()) == ref["total_parameters"]
