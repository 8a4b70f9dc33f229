"""The S2Mel front against the official implementation (tests/fixtures/s2mel_tiny, README section 6).

Reference mel of the prompt, the codec's S_ref, the length regulator (prompt, segment, the batch
quirk), gpt_layer and target lengths.  Tolerances: atol 1e-5, rtol 1e-4; integers exact.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from indextts_core.model.codec import CodecConfig, load_codec
from indextts_core.model.s2mel import (
    LengthRegulator,
    MelSpec,
    gpt_layer,
    load_front,
    load_s2mel_net,
    mel_spectrogram,
    target_lengths,
)
from indextts_core.errors import InputError
from tests_support import FIXTURES, close

DIR = FIXTURES / "s2mel_tiny"


@pytest.fixture(scope="module")
def s2mel_cfg() -> dict:
    return yaml.safe_load((DIR / "config.yaml").read_text())["s2mel"]


@pytest.fixture(scope="module")
def cases() -> dict:
    return torch.load(DIR / "cases.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def codec():
    cfg = yaml.safe_load((FIXTURES / "semantic_codec_tiny" / "config.yaml").read_text())["semantic_codec"]
    return load_codec(FIXTURES / "semantic_codec_tiny" / "model.safetensors", CodecConfig.from_dict(cfg))


def test_prompt_branch(s2mel_cfg, cases, codec):
    i, o = cases["inputs"], cases["outputs"]["prompt"]
    spec = MelSpec.from_config(s2mel_cfg["preprocess_params"])
    assert spec.fmax is None  # the YAML's string "None", as infer_v2 reads it
    ref_mel = mel_spectrogram(i["ref_wave_22k"].float(), spec)
    close(ref_mel, o["ref_mel"])
    codes, s_ref = codec.quantize(i["spk_cond_emb"])
    assert torch.equal(codes, o["S_ref_codes"])
    close(s_ref, o["S_ref"])
    regulator, _ = load_front(DIR / "s2mel.pth", s2mel_cfg)
    with torch.no_grad():
        close(regulator(s_ref, o["ref_target_lengths"]), o["prompt_condition"])


def test_segment_branch(s2mel_cfg, cases, codec):
    i, o = cases["inputs"], cases["outputs"]["segment"]
    regulator, layer = load_front(DIR / "s2mel.pth", s2mel_cfg)
    with torch.no_grad():
        close(layer(i["gpt_latent"]), o["gpt_layer_out"])
        close(codec.embed_codes(i["codes"]), o["S_infer_vq2emb"])
        s_infer = layer(i["gpt_latent"]) + codec.embed_codes(i["codes"])
        close(s_infer, o["S_infer"])
        frames = target_lengths(i["code_lens"])
        assert torch.equal(frames, o["target_lengths"]) and frames.item() == 39  # 23 * 1.72 = 39.56, truncated
        close(regulator(s_infer, frames), o["cond"])


def test_a_batch_is_stretched_to_its_longest_as_released(s2mel_cfg, cases):
    i, o = cases["inputs"]["lr_batch"], cases["outputs"]["lr_batch"]
    regulator, _ = load_front(DIR / "s2mel.pth", s2mel_cfg)
    with torch.no_grad():
        close(regulator(i["x"], i["ylens"]), o["output"])
        alone = regulator(i["x"][1:2], i["ylens"][1:2])
    close(alone, o["item1_alone"])
    assert (alone - o["output"][1:2, :16]).abs().max() > 0.1  # the released batch quirk, reproduced


def test_full_size_keys_and_strict_loading(s2mel_cfg, tmp_path):
    full = json.loads((FIXTURES / "s2mel_full_shapes.json").read_text())
    with torch.device("meta"):
        parts = {"length_regulator": LengthRegulator.from_config(full["s2mel_config"]["length_regulator"]),
                 "gpt_layer": gpt_layer()}
    for name, module in parts.items():
        expected = {e["key"]: tuple(e["shape"]) for e in full["net"][name]}
        assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == expected, name
    net = load_s2mel_net(DIR / "s2mel.pth")
    del net["length_regulator"]["mask_token"]
    torch.save({"net": net}, tmp_path / "s2mel.pth")
    missing = r"(?s)s2mel.pth\[net.length_regulator\]: does not match.*missing \(1\): mask_token"
    with pytest.raises(InputError, match=missing):
        load_front(tmp_path / "s2mel.pth", s2mel_cfg)
    torch.save({"model": {}}, tmp_path / "other.pth")
    with pytest.raises(InputError, match="other.pth: not an S2Mel checkpoint"):
        load_s2mel_net(tmp_path / "other.pth")


@pytest.fixture(scope="module")
def decoder(s2mel_cfg):
    from indextts_core.model.s2mel_decoder import load_decoder

    return load_decoder(DIR / "s2mel.pth", s2mel_cfg)


def test_estimator_batch_with_a_masked_item(decoder, cases):
    e, o = cases["inputs"]["est"], cases["outputs"]["estimator"]
    with torch.no_grad():
        close(decoder.estimator(e["x"], e["prompt_x"], e["x_lens"], e["t"], e["style"], e["mu"]), o["output"])


@pytest.mark.parametrize("steps, rate, key", [(4, 0.7, "cfm"), (25, 0.7, "cfm_infer_v2_steps"), (2, 0.0, "cfm_nocfg")])
def test_euler_solver_on_the_injected_noise(decoder, cases, steps, rate, key):
    """cfm.inference with the stored noise: 4 steps with CFG, infer_v2's 25, and 2 without CFG."""
    i, o = cases["inputs"], cases["outputs"]
    seg, ref = o["segment"], o["prompt"]["ref_mel"]
    out = decoder.solve_euler(o["cfm"]["noise"], seg["x_lens"], ref, seg["cat_condition"], i["style"], steps, rate)
    torch.testing.assert_close(out, o[key]["output"], atol=1e-4, rtol=1e-4)
    assert out[..., : ref.size(-1)].eq(0).all()  # the prompt frames are exactly 0, as released
    if key == "cfm":
        torch.testing.assert_close(out[:, :, ref.size(-1):], o["cfm"]["vc_target"], atol=1e-4, rtol=1e-4)


def test_decoder_full_size_keys():
    from indextts_core.model.s2mel_decoder import FlowMatching

    full = json.loads((FIXTURES / "s2mel_full_shapes.json").read_text())
    with torch.device("meta"):
        model = FlowMatching(full["s2mel_config"])
    expected = {e["key"]: tuple(e["shape"]) for e in full["net"]["cfm"]}
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
