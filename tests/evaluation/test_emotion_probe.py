"""The emotion probe: its figures and summary on hand-made values, the items it says, and one evaluation of the
tiny models whose synthesis is replaced by tones (neutral: a steady tone; with the emotion prompt: the prompt's own
lively tone), so the outputs are speech and every figure is computed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from indextts_core.config import EvaluateConfig, GenerationConfig
from indextts_core.evaluation.emotion import prosody_distance, summarise_probe, transfer_figures
from indextts_core.evaluation.evalset import EvalItem, build_eval_set, emotion_probe_items
from indextts_core.evaluation.prosody import Prosody
from indextts_core.evaluation.report import write_report
from indextts_core.evaluation.run import SpeakerEmbedder, evaluate_models
from indextts_core.model.bundle import open_bundle
from indextts_core.model.campplus import load_campplus
from indextts_core.utils.fileio import read_jsonl
from tests_support import write_audio

SR = 22050


def test_transfer_figures_on_hand_made_prosody():
    prompt = Prosody(f0_mean=300.0, f0_range=100.0, energy_range=20.0, speech_s=2.0)
    neutral = Prosody(f0_mean=200.0, f0_range=50.0, energy_range=10.0, speech_s=2.0)
    # each feature relative to the prompt's value: (-1/3, -1/2, -1/2) -> RMS
    assert prosody_distance(neutral, prompt) == pytest.approx(np.sqrt((1 / 9 + 1 / 4 + 1 / 4) / 3))
    halfway = Prosody(f0_mean=250.0, f0_range=75.0, energy_range=15.0, speech_s=2.0)
    figures = transfer_figures(neutral, halfway, prompt)
    assert figures["f0_mean_delta"] == 50.0 and figures["f0_range_delta"] == 25.0
    assert figures["energy_range_delta"] == 5.0
    assert figures["toward"] == pytest.approx(0.5) and figures["emotion_sim_gain"] is None
    assert transfer_figures(neutral, prompt, prompt)["toward"] == pytest.approx(1.0)
    assert transfer_figures(neutral, neutral, prompt)["toward"] == pytest.approx(0.0)
    unvoiced = Prosody(f0_mean=None, f0_range=None, energy_range=12.0, speech_s=1.0)
    missing = transfer_figures(neutral, unvoiced, prompt)
    assert missing["toward"] is None and missing["f0_mean_delta"] is None and missing["energy_range_delta"] == 2.0
    vectors = (torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0]))
    with_vectors = transfer_figures(neutral, halfway, prompt, vectors)
    assert with_vectors["emotion_sim_neutral"] == pytest.approx(0.0)
    assert with_vectors["emotion_sim_gain"] == pytest.approx(np.sqrt(0.5))


def _probe_row(model: str, lang: str, toward: float | None, gain: float | None = 0.1, scored: bool = True) -> dict:
    return {"model": model, "id": f"{model}-{lang}-{toward}", "language": lang, "scored": scored, "toward": toward,
            "emotion_sim_gain": gain, "f0_mean_delta": 10.0, "f0_range_delta": 5.0, "energy_range_delta": 2.0}


def test_probe_summary_means_counts_and_transfer_kept():
    rows = [_probe_row("base", "am", 0.4), _probe_row("base", "am", 0.6), _probe_row("base", "en", -0.2),
            _probe_row("fine-tuned", "am", 0.2), _probe_row("fine-tuned", "am", 0.3, gain=None),
            _probe_row("fine-tuned", "am", None, scored=False),  # an output not speech: counted, no figures
            _probe_row("fine-tuned", "en", 0.1)]
    s = summarise_probe(rows, ["base", "fine-tuned"])
    base, tuned = s["by_model"]["base"], s["by_model"]["fine-tuned"]
    assert base["am"]["toward"] == pytest.approx(0.5) and base["am"]["scored"] == 2
    assert tuned["am"] | {} == tuned["am"] and tuned["am"]["items"] == 3 and tuned["am"]["not_speech"] == 1
    assert tuned["am"]["toward"] == pytest.approx(0.25) and tuned["am"]["n_emotion_sim_gain"] == 1
    assert s["transfer_kept"]["fine-tuned"]["am"] == pytest.approx(0.5)  # kept half of the base's transfer
    assert s["transfer_kept"]["fine-tuned"]["en"] is None  # the base moves away from the prompt: not measurable
    assert s["transfer_kept"]["fine-tuned"]["all"] == pytest.approx(np.mean([0.2, 0.3, 0.1]) / np.mean([0.4, 0.6,
                                                                                                        -0.2]))
    assert "base" not in s["transfer_kept"] and s["baseline"] == "base"
    alone = summarise_probe([r for r in rows if r["model"] == "fine-tuned"], ["fine-tuned"])
    assert alone["transfer_kept"] == {} and alone["baseline"] is None


def test_probe_items_are_the_first_seen_items_per_language():
    def item(cid: str, lang: str, group: str) -> EvalItem:
        return EvalItem(cid, group, lang, "s", "text", "p", "/p.wav")

    items = [item("a1", "am", "seen"), item("a2", "am", "seen"), item("a3", "am", "seen"),
             item("u1", "am", "unseen"), item("e1", "en", "seen"), item("p", "am", "paragraph")]
    assert [(k, i.id) for k, i in emotion_probe_items(items, 2)] == [(0, "a1"), (1, "a2"), (4, "e1")]
    assert emotion_probe_items(items, 0) == []


def _tone(seconds: float, freq: float, lively: bool) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    amp = np.where((t * 4).astype(int) % 2 == 0, 0.5, 0.05) if lively else 0.2
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_evaluation_with_the_emotion_probe(tmp_path: Path, tiny_bundle, monkeypatch: pytest.MonkeyPatch):
    """Both models say the probe's items twice; the pace of every speech row, the transfer figures (the emotional
    output is the prompt itself: toward 1), an output that never stopped counted, the report's tables and players."""
    from indextts_core.synthesis import run as synthesis

    prompt = tmp_path / "excited.wav"
    sf.write(prompt, _tone(2.0, 300.0, lively=True), SR, subtype="PCM_16")

    def speak(self, line, language, state, random, *, emo_feats=None, max_mel_tokens=None, where="line", **_):
        wave = _tone(2.0, 300.0, lively=True) if emo_feats is not None else _tone(1.5, 200.0, lively=False)
        pcm = torch.as_tensor(wave * 32767.0).reshape(1, -1)
        return synthesis.Spoken(pcm, 1, 30, stopped=language == "en" or emo_feats is None)

    monkeypatch.setattr(synthesis.Synthesizer, "speak", speak)
    clips = {c: write_audio(tmp_path / "clips" / f"{c}.wav", seconds=1.2, freq=f)
             for c, f in (("p1", 220.0), ("t1", 330.0), ("t2", 440.0))}
    rows = lambda ids, lang: [{"id": c, "speaker": "s1", "language": lang, "text": "hello world" if lang == "en"  # noqa: E731
                               else "ሰላም ነው", "audio": str(clips[c]), "duration": 1.2, "code_len": 30} for c in ids]
    evalset = build_eval_set(rows(["p1"], "en"), rows(["t1"], "en") + rows(["t2"], "am"), max_items=4, seed=0)
    base = open_bundle(tiny_bundle.checkpoint_dir)
    out = tmp_path / "eval"
    result = evaluate_models(
        {"base": base, "fine-tuned": open_bundle(tiny_bundle.checkpoint_dir)}, evalset, out,
        GenerationConfig(num_beams=1, max_mel_tokens=40, seed=5), asr=None,
        embedder=SpeakerEmbedder(load_campplus(base.campplus_path, base.campplus_config)),
        read_audio=lambda uri: Path(uri).read_bytes(),
        options=EvaluateConfig(diffusion_steps=3, resamples=50, emotion_prompt=prompt, emotion_items=1))
    summary = result.summary

    items = read_jsonl(out / "items.jsonl")
    assert all(r["chars_per_s"] > 0 for r in items)  # every row is speech here, the recordings included
    ref = next(r for r in items if r["model"] == "reference" and r["language"] == "en")
    assert ref["chars_per_s"] == pytest.approx(10 / 1.2, rel=0.05)  # "helloworld" over the 1.2 s tone
    pace = summary["pace"]
    assert pace["base"]["en"]["chars_per_s"] == pytest.approx(10 / 1.5, rel=0.05)
    assert pace["base"]["en"]["pace_drift"] == pytest.approx(1.2 / 1.5 - 1, abs=0.03)  # slower than the recording

    probe = read_jsonl(out / "emotion_probe.jsonl")
    assert sorted((r["model"], r["language"]) for r in probe) == [("base", "am"), ("base", "en"),
                                                                   ("fine-tuned", "am"), ("fine-tuned", "en")]
    en = next(r for r in probe if r["model"] == "fine-tuned" and r["language"] == "en")
    assert en["scored"] and en["toward"] == pytest.approx(1.0, abs=0.05)
    assert en["f0_mean_delta"] == pytest.approx(100.0, abs=5.0) and en["energy_range_delta"] > 15
    assert -2 <= en["emotion_sim_gain"] <= 2 and en["emotion_sim_gain"] == pytest.approx(
        en["emotion_sim_emotional"] - en["emotion_sim_neutral"])
    assert en["neutral_wav"] == f"audio/emotion/fine-tuned/{en['id']}-neutral.wav"
    assert (out / en["emotional_wav"]).is_file()
    am = next(r for r in probe if r["model"] == "fine-tuned" and r["language"] == "am")
    assert not am["scored"] and am["emotional_not_speech"] == "runaway" and "toward" not in am
    emotion = summary["emotion"]
    assert emotion["prompt"] == "excited.wav" and (out / emotion["prompt_wav"]).is_file()
    assert emotion["by_model"]["fine-tuned"]["am"]["not_speech"] == 1
    assert emotion["transfer_kept"]["fine-tuned"]["en"] == pytest.approx(1.0)  # the same weights keep it all
    assert emotion["seconds"]["base"] is not None and summary["models"]["base"]["emotion_probe_seconds"] >= 0

    paths = write_report(out, title="tiny")
    md, page = paths["markdown"].read_text(), paths["html"].read_text()
    assert "## Emotion transfer (neutral → emotional prompt excited.wav)" in md
    assert "the model's own emotion encoder" in md and "transfer kept" in md and "Speaking pace" in md
    assert page.count("<audio") == 2 * 4 + 2 * 2 * 2 + 1  # per item its prompt, recording, two models; the probe
    assert f'src="{en["emotional_wav"]}"' in page
