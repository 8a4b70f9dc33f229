"""The full-size models, built on the meta device, have exactly the released key/shape lists."""

from __future__ import annotations

import json

import torch

from indextts_core.model import GPTConfig, UnifiedVoice
from indextts_core.model.codec import CodecConfig, SemanticCodec
from indextts_core.model.checkpoint import official_state_dict
from tests_support import FIXTURES


def _entries(sd: dict) -> list[tuple[str, list[int]]]:
    return [(k, list(v.shape)) for k, v in sd.items()]


def test_indextts2_gpt_full_size_keys_and_shapes():
    ref = json.loads((FIXTURES / "indextts2_gpt_full_shapes.json").read_text())
    cfg = GPTConfig.from_dict(ref["gpt_config"])
    with torch.device("meta"):
        model = UnifiedVoice(cfg)
    ours = _entries(official_state_dict(model))
    expected = [(e["key"], e["shape"]) for e in ref["state_dict"]]
    assert len(ours) == ref["num_state_dict_entries"] == 665
    assert ours == expected  # same keys, same shapes, same order
    assert sum(p.numel() for p in model.parameters()) == ref["total_parameters"]
    assert sum(v.numel() for v in model.state_dict().values()) == ref["total_state_dict_elements"]
    assert cfg.text_vocab_rows == 12001


def test_semantic_codec_full_size_keys_and_shapes():
    ref = json.loads((FIXTURES / "semantic_codec_full_shapes.json").read_text())
    with torch.device("meta"):
        codec = SemanticCodec(CodecConfig.from_dict(ref["semantic_codec_config"]))
    assert _entries(codec.state_dict()) == [(e["key"], e["shape"]) for e in ref["state_dict"]]
    assert sum(p.numel() for p in codec.parameters()) == ref["total_parameters"]
