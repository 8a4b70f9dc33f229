"""The evaluation: scores on known strings, intervals, the evaluation set, the promotion rule, the Whisper
backend (a tiny random Whisper written here, loaded like a real one), and a whole evaluation on the tiny bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from indextts_core.config import EvaluateConfig, GenerationConfig
from indextts_core.errors import InputError
from indextts_core.evaluation.asr import WhisperTranscriber
from indextts_core.tiny import write_tiny_whisper
from indextts_core.evaluation.evalset import build_eval_set, read_sentences
from indextts_core.evaluation.promotion import choose_metric, decide
from indextts_core.evaluation.report import write_report
from indextts_core.evaluation.run import REFERENCE, SpeakerEmbedder, evaluate_models
from indextts_core.evaluation.scoring import char_error_rate, has_words, normalize_for_scoring, word_error_rate
from indextts_core.evaluation.stats import bootstrap_mean, paired_difference
from indextts_core.model.bundle import open_bundle
from indextts_core.model.campplus import load_campplus
from indextts_core.utils.fileio import read_jsonl
from tests_support import write_audio

# ----------------------------------------------------------------------------- scores


def test_normalisation_drops_punctuation_of_every_script_and_case():
    assert normalize_for_scoring("ሰላም፣ እንዴት ነህ።") == normalize_for_scoring("ሰላም, እንዴት ነህ.") == "ሰላም እንዴት ነህ"
    assert normalize_for_scoring("  Hello,   WORLD!  ") == "hello world"
    assert normalize_for_scoring("ｆｕｌｌ") == "full"  # NFKC: full-width letters are the same letters


def test_error_rates_on_known_strings():
    assert char_error_rate("abcd", "abxd") == pytest.approx(0.25)
    assert char_error_rate("ab cd", "abcd") == 0.0  # a word-boundary choice is not a character error
    assert char_error_rate("ሰላም።", "ሰላም") == 0.0
    assert char_error_rate("abc", "") == 1.0
    assert char_error_rate("ab", "abxyz") == pytest.approx(1.5)  # insertions count: CER can exceed 1
    assert word_error_rate("the cat sat", "the cat sit") == pytest.approx(1 / 3)
    assert word_error_rate("The cat, sat.", "the cat sat") == 0.0
    with pytest.raises(ValueError, match="empty after normalisation"):
        char_error_rate("...", "a")
    assert has_words("am") and has_words("en-US") and not has_words("ja") and not has_words("zh")


def test_bootstrap_intervals_are_seeded_and_bracket_the_mean():
    values = [0.1, 0.4, 0.2, 0.9, 0.3, 0.5]
    a, b = bootstrap_mean(values, seed=3), bootstrap_mean(values, seed=3)
    assert a == b and a.low <= a.mean <= a.high and a.n == 6
    assert a.mean == pytest.approx(np.mean(values))
    one = bootstrap_mean([0.7])
    assert (one.mean, one.low, one.high) == (0.7, 0.7, 0.7)
    assert np.isnan(bootstrap_mean([]).mean)
    same = paired_difference([0.5, 0.2, 0.3], [0.5, 0.2, 0.3])
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)
    better = paired_difference([0.1, 0.2, 0.1, 0.2], [0.5, 0.6, 0.5, 0.7])
    assert better.high < 0
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference([1.0], [1.0, 2.0])


# ----------------------------------------------------------------------------- the evaluation set


def _row(cid: str, speaker: str, lang: str = "am", text: str = "ሰላም") -> dict:
    return {"id": cid, "speaker": speaker, "language": lang, "text": text, "audio": f"/a/{cid}.wav",
            "duration": 2.0, "code_len": 50}


def test_eval_set_prompts_with_another_clip_of_the_same_speaker():
    train = [_row(f"s1_{i}", "s1") for i in range(5)] + [_row("s1_en", "s1", "en")]
    val = [_row("s1_v1", "s1"), _row("s1_v2", "s1"), _row("s1_ve", "s1", "en"),
           _row("u1_a", "u1"), _row("u1_b", "u1"), _row("lonely", "u2")]
    s = build_eval_set(train, val, max_items=1, seed=7)
    by_group = {(i.language, i.group): i for i in s.items}
    assert set(by_group) == {("am", "seen"), ("en", "seen"), ("am", "unseen")}
    seen = by_group[("am", "seen")]
    assert seen.prompt_id.startswith("s1_") and seen.prompt_id in {r["id"] for r in train}  # never the target
    assert by_group[("en", "seen")].prompt_id == "s1_en"  # the same language when the speaker has it
    unseen = by_group[("am", "unseen")]
    assert unseen.speaker == "u1" and unseen.prompt_id != unseen.id and unseen.prompt_id.startswith("u1_")
    assert s.skipped == {"no_other_clip_of_speaker": 1, "over_max_items": 2}  # nothing vanishes unreported
    assert build_eval_set(train, val, max_items=1, seed=7).items == s.items  # fixed for a seed


def test_sentences_file_lines_and_errors(tmp_path: Path):
    f = tmp_path / "s.txt"
    f.write_text("am\tሰላም ነው\n\nHello there\nen\t\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"s\.txt:4"):
        read_sentences(f, "en")
    f.write_text("am\tሰላም ነው\nHello there\n", encoding="utf-8")
    assert read_sentences(f, "en") == [("am", "ሰላም ነው"), ("en", "Hello there")]
    s = build_eval_set([_row("a", "s1")], [_row("b", "s1")], max_items=4, seed=0, sentences=read_sentences(f, "en"))
    extra = [i for i in s.items if i.group == "sentences"]
    assert [i.text for i in extra] == ["ሰላም ነው", "Hello there"] and all(i.reference_audio is None for i in extra)
    assert extra[0].prompt_id == "a"


# ----------------------------------------------------------------------------- promotion


def test_promotion_rule():
    assert decide("cer", 0.20, 0.30, "base model").promote
    d = decide("cer", 0.30, 0.30, "champion v2")
    assert not d.promote and "not lower" in d.reason
    assert not decide("cer", 0.28, 0.30, "champion v2", min_improvement=0.05).promote
    assert decide("speaker_sim", 0.8, 0.7, "base model").promote  # higher is better
    noisy = decide("cer", 0.2, 0.3, "champion v2", interval={"low": -0.2, "high": 0.05}, require_significant=True)
    assert not noisy.promote and "includes 0" in noisy.reason
    sure = decide("cer", 0.2, 0.3, "champion v2", interval={"low": -0.15, "high": -0.05}, require_significant=True)
    assert sure.promote and sure.tags()["promotion.promote"] == "True"
    # nothing to beat is not a win: a lost baseline or a champion without the metric never promotes
    assert not decide("cer", 0.2, None, "champion v1").promote
    assert not decide("val_loss", 3.9, float("nan"), "base model").promote
    assert not decide("val_loss", 3.9, "nan", "champion v1 (recorded)").promote
    assert not decide("cer", None, 0.3, "base model").promote
    assert choose_metric("auto", has_asr=True) == "cer" and choose_metric("auto", has_asr=False) == "val_loss"


# ----------------------------------------------------------------------------- Whisper


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_whisper(tmp_path_factory.mktemp("asr") / "whisper", languages=("en", "am"))


def test_tiny_whisper_loads_and_transcribes_like_a_real_one(tiny_whisper: Path):
    asr = WhisperTranscriber(tiny_whisper, max_new_tokens=8)
    waves = [np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), np.zeros(8000, np.float32)]
    texts = asr.transcribe(waves, "am")
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert asr.supports("am") and asr.supports("en-US") and not asr.supports("fr")
    with pytest.raises(InputError, match="does not know language 'fr'"):
        asr.transcribe(waves, "fr")


def test_whisper_folder_errors_name_the_file(tmp_path: Path, tiny_whisper: Path):
    with pytest.raises(InputError, match="ASR model folder not found"):
        WhisperTranscriber(tmp_path / "nope")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_whisper, broken)
    (broken / "generation_config.json").unlink()
    with pytest.raises(InputError, match="missing generation_config.json"):
        WhisperTranscriber(broken)
    cfg = json.loads((tiny_whisper / "config.json").read_text())
    (broken / "generation_config.json").write_text("{}")
    (broken / "config.json").write_text(json.dumps(cfg | {"model_type": "wav2vec2"}))
    with pytest.raises(InputError, match=r"config\.json: model_type is 'wav2vec2'"):
        WhisperTranscriber(broken)


# ----------------------------------------------------------------------------- a whole evaluation


def _evaluate(tmp_path: Path, tiny_bundle, tiny_whisper: Path, **scorers: Any) -> tuple[Any, Path, Any]:
    clips = {cid: write_audio(tmp_path / "clips" / f"{cid}.wav", seconds=1.2, freq=f)
             for cid, f in (("p1", 220.0), ("t1", 330.0), ("t2", 440.0))}
    rows = lambda ids, lang: [{**_row(c, "s1", lang, "hello world" if lang == "en" else "ሰላም ነው"),  # noqa: E731
                               "audio": str(clips[c]), "duration": 1.2, "code_len": 30} for c in ids]
    evalset = build_eval_set(rows(["p1"], "en"), rows(["t1"], "en") + rows(["t2"], "am"), max_items=4, seed=0)
    base = open_bundle(tiny_bundle.checkpoint_dir)
    models = {"base": base, "fine-tuned": open_bundle(tiny_bundle.checkpoint_dir)}
    out = tmp_path / "eval"
    result = evaluate_models(
        models, evalset, out, GenerationConfig(num_beams=1, max_mel_tokens=40, seed=5),
        asr=WhisperTranscriber(tiny_whisper, max_new_tokens=8),
        embedder=SpeakerEmbedder(load_campplus(base.campplus_path, base.campplus_config)),
        read_audio=lambda uri: Path(uri).read_bytes(), options=EvaluateConfig(diffusion_steps=3, resamples=50),
        **scorers)
    return result, out, evalset


def test_evaluation_of_two_models_with_the_same_seeds(tmp_path: Path, tiny_bundle, tiny_whisper: Path):
    """The same weights under two names say every item identically; every score, interval and file is there.

    The tiny random models' output is silence: it is counted as a failure and never scored (no CER or
    similarity of silence); the real recordings are scored."""
    result, out, evalset = _evaluate(tmp_path, tiny_bundle, tiny_whisper)
    items = read_jsonl(out / "items.jsonl")
    assert len(items) == 3 * len(evalset.items)  # reference + two models
    by = {(r["model"], r["id"]): r for r in items}
    for item in evalset.items:
        a, b = by[("base", item.id)], by[("fine-tuned", item.id)]
        assert (out / a["wav"]).read_bytes() == (out / b["wav"]).read_bytes()  # same seeds, same weights
        assert a["not_speech"] == b["not_speech"] == "silent" and a["speech_failure"] == 1.0
        assert a["cer"] is a["wer"] is a["speaker_sim"] is a["transcript"] is None and a["duration_ratio"] > 0
        real = by[(REFERENCE, item.id)]
        assert real["duration_ratio"] == 1.0 and real["not_speech"] is None and real["speech_failure"] == 0.0
        assert real["cer"] is not None and real["speaker_sim"] is not None
    summary = result.summary
    assert summary["tiny_random"] is True
    assert summary["not_speech"] == {"base": {"silent": 2}, "fine-tuned": {"silent": 2}}
    assert set(summary["headline"]) == {REFERENCE, "base", "fine-tuned"}
    assert "cer" in summary["headline"][REFERENCE] and "cer" not in summary["headline"]["fine-tuned"]
    assert summary["headline"]["fine-tuned"]["speech_failure"] == 1.0
    diffs = [d for d in summary["differences"] if d["language"] == "all" and d["versus"] == "base"]
    assert {d["metric"] for d in diffs} == {"duration_ratio", "stop_failure", "speech_failure"}
    assert all(d["mean"] == 0.0 for d in diffs)
    languages = {(e["language"], e["group"]) for e in summary["table"]}
    assert {("en", "seen"), ("am", "seen"), ("all", "all")} <= languages

    paths = write_report(out, title="tiny")
    page = paths["html"].read_text()
    for r in items:  # every sample has a player
        assert f'src="{r["wav"]}"' in page and (out / r["wav"]).is_file()
    assert 'src="audio/prompt/p1.wav"' in page and "plots.png" in page
    md = paths["markdown"].read_text()
    assert "fine-tuned - base" in md and "| not speech (lower is better) |" in md
    # the tiny random judge cannot read the real recordings: its CER is marked, and does not decide
    assert "| CER (lower is better) (judge unreliable) |" in md and "judge unreliable for am: CER " in md
    assert summary["judge"]["unreliable"] == ["am", "en"] and summary["judge"]["name"] == summary["asr"]
    assert "These are random models" in md and "fine-tuned: 2 silent output(s) not speech" in md
    assert "not speech (silent): not scored" in page
    assert paths["plot"].stat().st_size > 1000


def test_outputs_that_are_speech_are_transcribed_and_scored(tmp_path: Path, tiny_bundle, tiny_whisper: Path,
                                                           monkeypatch: pytest.MonkeyPatch):
    """An output with sound in it (here: the item's own recording, as a model that copies it would) gets
    CER, WER and speaker similarity like the real recordings; an output that never stopped does not."""
    from indextts_core.data.audio import load_audio
    from indextts_core.synthesis import run as synthesis

    def speak(self, line, language, state, random, *, max_mel_tokens=None, where="line", **_):
        wave = load_audio(Path(tmp_path / "clips" / ("t1.wav" if language == "en" else "t2.wav")).read_bytes(),
                          22050).samples
        pcm = torch.as_tensor(wave * 32767.0).reshape(1, -1)
        return synthesis.Spoken(pcm, 1, 30, stopped=language == "en")

    monkeypatch.setattr(synthesis.Synthesizer, "speak", speak)
    from indextts_core.evaluation.naturalness import NATURALNESS_METRICS, Naturalness
    from indextts_core.evaluation.speaker import open_speaker_verifier
    from indextts_core.tiny import write_tiny_xvector

    verifier = open_speaker_verifier(write_tiny_xvector(tmp_path / "xvector"))
    result, out, _ = _evaluate(tmp_path, tiny_bundle, tiny_whisper, verifier=verifier, naturalness=Naturalness())
    by = {(r["model"], r["language"]): r for r in read_jsonl(out / "items.jsonl")}
    spoke, ran_on = by[("fine-tuned", "en")], by[("fine-tuned", "am")]
    assert spoke["not_speech"] is None and spoke["cer"] is not None and spoke["speaker_sim"] is not None
    assert ran_on["not_speech"] == "runaway" and ran_on["cer"] is None and ran_on["stop_failure"] == 1.0
    assert result.summary["not_speech"]["fine-tuned"] == {"runaway": 1}
    # speech, and only speech, is scored by the independent verifier and DNSMOS: the models and the recordings
    for row in (spoke, by[(REFERENCE, "en")], by[(REFERENCE, "am")]):
        assert -1 <= row["speaker_sim_verifier"] <= 1 and all(1 <= row[m] <= 5 for m in NATURALNESS_METRICS)
    assert "speaker_sim_verifier" not in ran_on and "dnsmos_ovrl" not in ran_on
    scale = result.summary["speaker_scale"]
    assert set(scale) == {"own", "verifier"} and scale["verifier"]["metric"] == "speaker_sim_verifier"
    # one speaker: a ceiling from the prompt p1 and the recording t2 (p1 prompts the am item first), no floor
    am = scale["own"]["by_language"]["am"]
    assert am["ceiling"]["n"] == 1 and am["floor"]["mean"] is None and am["models"][REFERENCE]["scaled"] is None
    assert result.summary["naturalness"]["note"].startswith("DNSMOS")
    md = write_report(out, title="tiny")["markdown"].read_text()
    assert "DNSMOS overall (P.835 OVRL)" in md and "Speaker similarity scale: independent verifier" in md
    assert "same-speaker ceiling" in md and "trained on English" in md
