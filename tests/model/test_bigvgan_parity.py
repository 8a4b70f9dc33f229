"""BigVGAN v2 against the official implementation (tests/fixtures/bigvgan_tiny, README section 7).

Tolerance: atol 1e-5 on the waveform; the int16 outputs may differ by 1 LSB at integer boundaries.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from indextts_core.errors import InputError
from indextts_core.model.bigvgan import BigVGAN, kaiser_sinc_filter, load_bigvgan, to_pcm
from tests_support import FIXTURES

DIR = FIXTURES / "bigvgan_tiny"


@pytest.fixture(scope="module")
def cases() -> dict:
    return torch.load(DIR / "cases.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def vocoder() -> BigVGAN:
    return load_bigvgan(DIR)


def test_waveforms(vocoder, cases):
    i, o = cases["inputs"], cases["outputs"]
    with torch.no_grad():
        wav = vocoder(i["mel"])
        torch.testing.assert_close(wav, o["wav"], atol=1e-5, rtol=0)
        torch.testing.assert_close(vocoder(i["mel_batch"]), o["wav_batch"], atol=1e-5, rtol=0)
    pcm = to_pcm(wav)
    torch.testing.assert_close(pcm, o["infer_v2_pcm"], atol=32767 * 1e-5, rtol=0)
    assert (pcm.type(torch.int16).int() - o["infer_v2_int16"].int()).abs().max() <= 1  # truncation toward zero


def test_filters_are_the_released_kaiser_sinc(vocoder):
    stored = torch.load(DIR / "bigvgan_generator.pt", weights_only=True)["generator"]
    ours = kaiser_sinc_filter(0.25, 0.3)
    filters = [v for k, v in stored.items() if k.endswith(".filter")]
    # up and down filter of 6 per AMP block (6 stages x 3 blocks) and the last activation
    assert len(filters) == 2 * (6 * 3 * 6 + 1) and all(torch.allclose(f, ours, atol=1e-7) for f in filters)


def test_a_checkpoint_without_weight_norm_loads_and_gives_the_same_audio(vocoder, cases, tmp_path):
    plain = {}
    for k, v in vocoder.state_dict().items():
        if k.endswith(".weight_g"):
            continue
        if k.endswith(".weight_v"):
            base = k[: -len("_v")]
            plain[base] = torch._weight_norm(v, vocoder.state_dict()[base + "_g"], 0)
        else:
            plain[k] = v
    folder = tmp_path / "bigvgan"
    folder.mkdir()
    shutil.copy(DIR / "config.json", folder / "config.json")
    torch.save({"generator": plain}, folder / "bigvgan_generator.pt")
    with torch.no_grad():
        torch.testing.assert_close(load_bigvgan(folder)(cases["inputs"]["mel"]), cases["outputs"]["wav"], atol=1e-5,
                                   rtol=0)


def test_full_size_keys_and_clear_refusals(tmp_path):
    full = json.loads((FIXTURES / "bigvgan_full_shapes.json").read_text())
    with torch.device("meta"):
        model = BigVGAN(full["config"])
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == \
        {e["key"]: tuple(e["shape"]) for e in full["state_dict"]}
    with pytest.raises(InputError, match="not a BigVGAN folder"):
        load_bigvgan(tmp_path)
    with pytest.raises(InputError, match="resblock"):
        BigVGAN({**full["config"], "resblock": "2"})
