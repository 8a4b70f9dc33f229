"""CAMPPlus against the official implementation (tests/fixtures/campplus_tiny): fbank, FCM, style vectors.

Tolerances are the fixture's: fbank/feat atol 1e-4, head_out atol/rtol 1e-4, style atol 5e-4 (norm 40-55).
"""

from __future__ import annotations

import json

import pytest
import torch

from indextts_core.model.campplus import CAMPPlus, load_campplus, style_features
from indextts_core.model.checkpoint import CheckpointError
from tests_support import FIXTURES

DIR = FIXTURES / "campplus_tiny"


@pytest.fixture(scope="module")
def cases() -> dict:
    return torch.load(DIR / "cases.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def model() -> CAMPPlus:
    config = json.loads((DIR / "campplus_config.json").read_text())["constructor_kwargs"]
    return load_campplus(DIR / "campplus_cn_common.bin", config)


def test_style_vectors(model: CAMPPlus, cases: dict):
    i, o = cases["inputs"], cases["outputs"]
    with torch.no_grad():
        feat_a = style_features(i["wave_a_16k"])
        torch.testing.assert_close(feat_a, o["a"]["fbank"] - o["a"]["fbank"].mean(0, keepdim=True), atol=1e-4,
                                   rtol=0)
        torch.testing.assert_close(model(feat_a[None]), o["a"]["style"], atol=5e-4, rtol=0)  # 100 + 49 frames
        feat_b = style_features(i["wave_b_16k"])
        torch.testing.assert_close(feat_b, o["b"]["feat"], atol=1e-4, rtol=0)
        torch.testing.assert_close(model.head(feat_b[None].transpose(1, 2)), o["b"]["head_out"], atol=1e-4,
                                   rtol=1e-4)
        torch.testing.assert_close(model(feat_b[None]), o["b"]["style"], atol=5e-4, rtol=0)  # one partial segment
        batch = torch.stack([(o["a"]["fbank"] - o["a"]["fbank"].mean(0, keepdim=True))[:135], feat_b])
        torch.testing.assert_close(model(batch), o["batch"]["style"], atol=5e-4, rtol=0)


def test_the_full_size_key_list_matches_the_release():
    shapes = json.loads((FIXTURES / "campplus_full_shapes.json").read_text())
    with torch.device("meta"):
        sd = CAMPPlus().state_dict()
    expected = {e["key"]: tuple(e["shape"]) for e in shapes["state_dict"]}
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected and len(sd) == 937


def test_a_file_for_another_model_is_refused_naming_it(tmp_path):
    bad = tmp_path / "campplus_cn_common.bin"
    torch.save({"head.conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="campplus_cn_common.bin: does not match"):
        load_campplus(bad)
