"""The prompt front end against the official code (tests/fixtures/prompt_frontend_tiny, README section 10).

Three prompt files (44.1 kHz mono with an odd fbank frame count, 16 kHz mono, 48 kHz stereo) go
through the project's own readers and models, and every tensor infer_v2 derives from them must come
out as the official code made it: the 22.05 kHz and 16 kHz readings bit for bit, the feature
extractor's inputs, the Wav2Vec2-BERT features (with the half-padded last frame kept), the prompt's
codes, reference mel, CAMPPlus input and style, the prompt condition, and what the GPT receives
(speaker latents, both emotion vectors, the merge for each ``emo_alpha``, the conditioning prefix).
The fixture's one unofficial step is applied as it was: the 32-wide features are tiled to 1024.
"""

from __future__ import annotations

import pytest
import torch

from indextts_core.data.prompt_audio import read_emotion_prompt, read_speaker_prompt
from indextts_core.model.features import SemanticFeatures, frame_count
from indextts_core.synthesis.chain import INFER_LENGTH, prompt_conditioning, prompt_state
from tests_support import FIXTURES, close

from model.test_campplus_parity import FBANK_ATOL, assert_style
from model.test_synthesis_chain import models  # noqa: F401 - the fixture's tiny GPT, codec, s2mel, CAMPPlus

HERE = FIXTURES / "prompt_frontend_tiny"
W2V = FIXTURES / "w2vbert_tiny"
PROMPTS = ("a", "b", "c")


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(HERE / "cases.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def features() -> SemanticFeatures:
    return SemanticFeatures.from_dirs(W2V / "model", W2V / "wav2vec2bert_stats.pt", W2V / "feature_extractor")


def _file(golden: dict, p: str):
    return HERE / golden["inputs"]["prompts"][p]["file"]


def _bridge(x: torch.Tensor, golden: dict) -> torch.Tensor:
    return x.repeat(1, 1, golden["inputs"]["width_bridge_repeat"])


def _features(features: SemanticFeatures, wave: torch.Tensor, expect: dict, key: str) -> torch.Tensor:
    """The extractor's inputs and the normalised layer-17 features of one 16 kHz reading, checked."""
    wave_np = wave[0].numpy()
    feats, mask = features.inputs([wave_np])
    close(feats, expect["input_features"])
    assert torch.equal(mask.int(), expect["attention_mask"])
    hidden, lengths = features.extract_padded([wave_np])
    assert hidden.shape == expect[key].shape and int(lengths[0]) == expect[key].size(1)
    close(hidden, expect[key])
    return hidden


@pytest.mark.parametrize("p", PROMPTS)
def test_speaker_path_matches_infer_v2(golden, features, models, p):  # noqa: F811
    expect = golden["outputs"]["spk"][p]
    spk = read_speaker_prompt(_file(golden, p))
    assert torch.equal(spk.wave_22k, expect["audio_22k"])  # librosa.load: soxr_hq, channels averaged first
    assert torch.equal(spk.wave_16k, expect["audio_16k"])  # torchaudio Resample(22050, 16000) of that
    hidden = _features(features, spk.wave_16k, expect, "spk_cond_emb_32")
    spk_feats = _bridge(hidden, golden)
    codes, s_ref = models.codec.quantize(spk_feats)
    assert torch.equal(codes, expect["S_ref_codes"])
    close(s_ref, expect["S_ref"])
    state = prompt_state(models, spk.wave_22k, spk_feats, wave_16k=spk.wave_16k)
    close(state.ref_mel, expect["ref_mel"])
    torch.testing.assert_close(state.campplus_feat, expect["campplus_feat"], atol=FBANK_ATOL, rtol=0)
    assert_style(state.style, expect["style"])
    close(state.prompt_condition, expect["prompt_condition"])


@pytest.mark.parametrize("p", PROMPTS)
def test_emotion_path_matches_infer_v2(golden, features, p):
    expect = golden["outputs"]["emo"][p]
    wave = read_emotion_prompt(_file(golden, p))
    assert torch.equal(wave, expect["audio_16k"])  # librosa.load(sr=16000), not the speaker path's resampling
    _features(features, wave, expect, "emo_cond_emb_32")


@pytest.mark.parametrize("case", ("a", "b", "c", "a_emo_b"))
def test_what_the_gpt_receives(golden, features, models, case):  # noqa: F811
    """Speaker latents, both emotion vectors and the conditioning prefix for each emo_alpha, from the files."""
    given = golden["inputs"]["cases"][case]
    expect = golden["outputs"]["cases"][case]
    spk = read_speaker_prompt(_file(golden, given["spk_audio_prompt"]))
    spk_feats = _bridge(features.extract_padded([spk.wave_16k[0].numpy()])[0], golden)

    def emotion(p: str) -> torch.Tensor:
        return _bridge(features.extract_padded([read_emotion_prompt(_file(golden, p))[0].numpy()])[0], golden)

    # the speaker prompt read again on the emotion path: what speaks when no emotion prompt is given
    state = prompt_state(models, spk.wave_22k, spk_feats, wave_16k=spk.wave_16k,
                         emo_feats=emotion(given["spk_audio_prompt"]))
    emo_feats = emotion(given["emo_audio_prompt"]) if given["emo_audio_prompt"] else None
    gpt = models.gpt
    infer = torch.tensor([INFER_LENGTH])
    assert torch.equal(expect["cond_lengths"], infer) and torch.equal(expect["emo_cond_lengths"], infer)
    with torch.no_grad():
        close(gpt.speaker_latents(spk_feats, infer), expect["speech_conditioning_latent"])
        close(gpt.emotion_vector(spk_feats, infer), expect["emovec_spk"])
        close(gpt.emotion_vector(emo_feats if emo_feats is not None else state.emo_feats, infer),
              expect["emovec_emo"])
        for name, alpha in (("emo_alpha_1_0", 1.0), ("emo_alpha_0_6", 0.6)):
            latents, emovec = prompt_conditioning(gpt, state, alpha, emo_feats)
            close(emovec, expect[name]["emovec"])
            close(gpt.conditioning(latents, emovec), expect[name]["conds_latent"])


def test_odd_frame_count_keeps_the_half_padded_frame(features):
    """Prompt a (109 fbank frames): 55 frames, the last with mask 0 and kept, alone and in a batch."""
    spk = read_speaker_prompt(HERE / "prompt_a_44k1_mono.wav")
    wave = spk.wave_16k[0].numpy()
    assert frame_count(len(wave)) == 55
    solo, solo_len = features.extract_padded([wave])
    assert int(solo_len[0]) == 55 and solo[0, -1].abs().max() > 0.1
    longer = read_speaker_prompt(HERE / "prompt_b_16k_mono.wav").wave_16k[0].numpy()
    batch, lengths = features.extract_padded([longer[:8000], wave, longer])
    assert lengths.tolist() == [frame_count(8000), 55, frame_count(len(longer))]
    close(batch[1, :55], solo[0])
    assert batch[0, int(lengths[0]):].abs().max() == 0  # batch padding stays zero
