"""Synthesis and generation on an IndexTTS-2.5 folder (a tiny random one, written once for the module).

What is checked is infer_v2_5's wiring, not audio quality: the prompt condition regulates the
Wav2Vec2-BERT features themselves, the speaker row is the projected CAMPPlus style, each segment's
content is ``codec.decode(codes)`` regulated to ``int(2T * 1.72)`` frames, the language row is
chosen per line (or by ``lang_code``), a seed reproduces a waveform, and IndexTTS-2-only paths
refuse a 2.5 model.  Few codes and two diffusion steps keep BigVGAN (the slow part on CPU) short.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch

from indextts_core.config import GenerationConfig
from indextts_core.errors import InputError
from indextts_core.generation.prompt import conditioning_from_features
from indextts_core.generation.run import generate_lines, prompt_campplus
from indextts_core.model.bundle import ModelBundle
from indextts_core.model.checkpoint import load_gpt
from indextts_core.synthesis.chain import PromptState, SynthesisModels, load_s2mel_v25, speak_segment
from indextts_core.synthesis.run import Synthesizer, synthesize_lines
from indextts_core.synthesis.segments import split_v25_text, v25_segments
from indextts_core.text.tiktoken_vocab import language_index
from tests_support import FIXTURES, write_audio

OPTS = GenerationConfig(num_beams=1, max_mel_tokens=3)
AMHARIC = "ሰላም ለዓለም"


@pytest.fixture(scope="module")
def bundle(tiny_bundle_v25) -> ModelBundle:
    return tiny_bundle_v25


@pytest.fixture(scope="module")
def prompt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_audio(tmp_path_factory.mktemp("prompt") / "prompt.wav", seconds=1.0, freq=220.0)


@pytest.fixture(scope="module")
def synth(bundle: ModelBundle) -> Synthesizer:
    return Synthesizer(bundle, OPTS, diffusion_steps=2)


@pytest.fixture(scope="module")
def state(synth: Synthesizer, prompt: Path) -> PromptState:
    return synth.prompt(prompt)


def test_synthesize_lines_writes_wavs_and_the_report(bundle: ModelBundle, prompt: Path, tmp_path: Path):
    for line, language in (("Hello world.", "en"), (AMHARIC, "am")):
        wav, report = tmp_path / f"{language}.wav", tmp_path / f"{language}.json"
        result = synthesize_lines(bundle, [line], language, prompt, [wav], OPTS, diffusion_steps=2, report=report)
        samples, sr = sf.read(wav)
        assert result.wavs == [wav] and sr == 22050 and len(samples) > 0
        info = json.loads(report.read_text())
        assert info["options"]["lang_code"] is None and info["options"]["max_mel_tokens"] == OPTS.max_mel_tokens
        (row,) = info["lines"]
        assert row["text"] == line and row["segments"] == 1 and 0 < row["codes"] <= OPTS.max_mel_tokens
        assert row["lang"] == language_index(language)


def test_speak_segment_decodes_the_codes_with_the_codec_and_a_seed_repeats_it(synth: Synthesizer, state: PromptState,
                                                                              monkeypatch: pytest.MonkeyPatch):
    models = synth.models
    # the prompt condition regulates the features themselves (2.0 regulates their quantised form)
    frames = torch.tensor([state.ref_mel.size(-1)])
    assert torch.equal(state.prompt_condition, models.regulator(state.spk_feats, frames))
    (ids,), lang = synth.segments("Hello world.", "en")
    decoded: list[torch.Tensor] = []
    real_decode = models.codec.decode
    monkeypatch.setattr(models.codec, "decode", lambda codes: decoded.append(codes) or real_decode(codes))

    def speak():
        return speak_segment(models, state, torch.tensor([ids]), OPTS, random=torch.Generator().manual_seed(3),
                             diffusion_steps=2, langs=torch.tensor([lang]))

    first, again = speak(), speak()
    t = first.codes.size(1)
    assert len(decoded) == 2 and torch.equal(decoded[0], first.codes) and t > 0
    assert first.vc_target.size(-1) == int(2 * t * 1.72)  # infer_v2_5's length, not 2.0's int(t * 1.72)
    assert first.pcm.size(-1) == first.vc_target.size(-1) * 256
    assert first.latent is None and models.gpt_layer is None
    assert torch.equal(first.codes, again.codes) and torch.equal(first.pcm, again.pcm)


def test_generate_lines_returns_codes_and_the_language_row(bundle: ModelBundle, synth: Synthesizer,
                                                          state: PromptState, prompt: Path, tmp_path: Path):
    # the speaker row comes from the same CAMPPlus vector the synthesis chain styles the decoder with
    assert torch.equal(prompt_campplus(bundle, prompt, torch.device("cpu")), state.style)
    result = generate_lines(bundle, [AMHARIC, "ሰላም"], "am", prompt, tmp_path / "g", OPTS, lang_code="ar")
    rows = [json.loads(x) for x in (tmp_path / "g" / "codes.jsonl").read_text().splitlines()]
    assert result.lines == 2 and result.codes == sum(r["code_len"] for r in rows) > 0
    ar_token = synth.text.vocab.lang_token_id("ar")
    for r in rows:
        assert r["lang"] == language_index("ar") and r["text_ids"][0] == ar_token
        assert len(r["codes"]) == r["code_len"] <= OPTS.max_mel_tokens
    assert json.loads((tmp_path / "g" / "generate.json").read_text())["options"]["lang_code"] == "ar"


def test_long_lines_are_cut_within_the_token_budget(synth: Synthesizer):
    count = len  # characters as tokens: the rule itself
    text = "one, two three. four five six seven eight nine ten"
    pieces = split_v25_text(count, text, 12)
    assert "".join(pieces) == text and all(count(p) <= 12 for p in pieces) and pieces[:2] == ["one,", " two three."]
    line = "the quick brown fox jumps over the lazy dog, again and again. " * 3
    segments, lang, _ = v25_segments(synth.text, line, "en", max_tokens=12, text_positions=202)
    assert len(segments) > 1 and all(len(ids) <= 12 for ids in segments) and lang == language_index("en")


def test_indextts2_only_paths_refuse_a_25_model(bundle: ModelBundle, synth: Synthesizer, state: PromptState):
    gpt, models = synth.models.gpt, synth.models
    with pytest.raises(ValueError, match="speaker_projection"):
        conditioning_from_features(gpt, state.spk_feats, torch.tensor([state.spk_feats.size(1)]))
    (ids,), lang = synth.segments("Hello.", "en")
    text = torch.tensor([ids])
    with pytest.raises(ValueError, match="langs"):
        speak_segment(models, state, text, OPTS)
    with pytest.raises(ValueError, match="latent_adapter"):
        speak_segment(models, state, text, OPTS, langs=torch.tensor([lang]), latent_adapter=lambda x: x)
    with pytest.raises(InputError, match="cannot speak with an IndexTTS-2 GPT"):
        SynthesisModels.load(bundle, gpt=load_gpt(FIXTURES / "indextts2_gpt_tiny"))


def test_a_25_s2mel_file_without_gpt_layer_loads(bundle: ModelBundle, tmp_path: Path):
    saved = torch.load(bundle.s2mel_path, map_location="cpu", weights_only=True)
    del saved["net"]["gpt_layer"]
    torch.save(saved, tmp_path / "s2mel.pth")
    regulator, decoder = load_s2mel_v25(tmp_path / "s2mel.pth", bundle.config["s2mel"])
    assert not regulator.training and not decoder.training


def test_lang_code_speaks_every_line_with_that_code(bundle: ModelBundle):
    """``--lang-code ar`` on Amharic text: the <|ar|> prefix and the Arabic row, as the official lang=ar."""
    synth = Synthesizer(bundle, OPTS, lang_code="ar")
    (ids, *_), lang = synth.segments(AMHARIC, "am")
    assert lang == language_index("ar") and ids[0] == synth.text.vocab.lang_token_id("ar")
    assert synth.lang_code == "ar"
    with pytest.raises(InputError, match="lang_code"):
        Synthesizer(bundle, OPTS, lang_code="amh")
