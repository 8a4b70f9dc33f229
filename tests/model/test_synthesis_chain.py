"""The whole infer_v2 chain against the official code (tests/fixtures/synthesis_chain_tiny, README section 9).

The public tiny models of sections 1, 3, 6, 7 and 8; the w2v-bert features are the fixture's stand-ins,
and, as in the fixture (its one unofficial step), the 64-wide tiny GPT latent is tiled 20 times for
``gpt_layer``.  Codes and lengths exact; the noise drawn from one seeded stream equals the stored draws;
waveforms on the PCM scale at atol 32767 * 1e-4.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from indextts_core.config import GenerationConfig
from indextts_core.model.bigvgan import load_bigvgan
from indextts_core.model.campplus import load_campplus
from indextts_core.model.checkpoint import load_gpt
from indextts_core.model.codec import CodecConfig, load_codec
from indextts_core.model.s2mel import MelSpec, load_front
from indextts_core.model.s2mel_decoder import load_decoder
from indextts_core.synthesis.chain import SynthesisModels, join_segments, prompt_state, speak_segment
from tests_support import FIXTURES, close

from model.test_campplus_parity import FBANK_ATOL, assert_style

PCM = 32767 * 1e-4


@pytest.fixture(scope="module")
def models() -> SynthesisModels:
    s2mel = yaml.safe_load((FIXTURES / "s2mel_tiny" / "config.yaml").read_text())["s2mel"]
    regulator, layer = load_front(FIXTURES / "s2mel_tiny" / "s2mel.pth", s2mel)
    codec_cfg = yaml.safe_load((FIXTURES / "semantic_codec_tiny" / "config.yaml").read_text())["semantic_codec"]
    campplus_cfg = json.loads((FIXTURES / "campplus_tiny" / "campplus_config.json").read_text())["constructor_kwargs"]
    return SynthesisModels(
        load_gpt(FIXTURES / "indextts2_gpt_tiny").eval(),
        load_codec(FIXTURES / "semantic_codec_tiny" / "model.safetensors", CodecConfig.from_dict(codec_cfg)),
        regulator, layer, load_decoder(FIXTURES / "s2mel_tiny" / "s2mel.pth", s2mel),
        load_bigvgan(FIXTURES / "bigvgan_tiny"),
        load_campplus(FIXTURES / "campplus_tiny" / "campplus_cn_common.bin", campplus_cfg),
        MelSpec.from_config(s2mel["preprocess_params"]))


def test_text_to_waveform_as_infer_v2(models):
    c = torch.load(FIXTURES / "synthesis_chain_tiny" / "cases.pt", map_location="cpu", weights_only=True)
    i, o = c["inputs"], c["outputs"]
    state = prompt_state(models, i["spk_wave_22k"], i["spk_cond_emb"])
    torch.testing.assert_close(state.campplus_feat, o["prompt"]["campplus_feat"], atol=FBANK_ATOL, rtol=0)
    assert_style(state.style, o["prompt"]["style"])
    close(state.ref_mel, o["prompt"]["ref_mel"])
    close(state.prompt_condition, o["prompt"]["prompt_condition"])
    # infer_v2's arguments with do_sample=False, num_beams=1 (as the fixture ran it)
    opts = GenerationConfig(do_sample=False, num_beams=1, repetition_penalty=10.0,
                            max_mel_tokens=i["max_generate_length"], emo_alpha=i["emo_alpha"])
    stream = torch.Generator().manual_seed(i["noise_seed"])  # one seeded stream for every segment, as infer_v2
    pcms = []
    for k, text in enumerate(i["text_segments"]):
        expect = o["segments"][k]
        seg = speak_segment(models, state, text, opts, emo_feats=i["emo_cond_emb"], random=stream,
                            diffusion_steps=i["diffusion_steps"], cfg_rate=i["inference_cfg_rate"],
                            latent_adapter=lambda x: x.repeat(1, 1, 20))
        assert torch.equal(seg.codes, expect["codes"]) and torch.equal(seg.code_lens, expect["code_lens"])
        assert torch.equal(seg.noise, expect["noise"])  # the stream continues across segments
        close(seg.latent, expect["gpt_latent"])
        torch.testing.assert_close(seg.vc_target, expect["vc_target"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(seg.pcm, expect["wav_pcm"], atol=PCM, rtol=0)
        pcms.append(seg.pcm)
    wav = join_segments(pcms, i["interval_silence_ms"])
    torch.testing.assert_close(wav, o["wav_pcm"], atol=PCM, rtol=0)
    assert (wav.type(torch.int16).int() - o["wav_int16"].int()).abs().max() <= 1
