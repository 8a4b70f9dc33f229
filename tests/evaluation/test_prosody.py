"""Prosody figures on synthetic tones: F0 of a known pitch, an energy range of a known step, the speaking rate of a
clip with silence around it, and the pace drift arithmetic."""

from __future__ import annotations

import time

import numpy as np
import pytest

from indextts_core.evaluation.prosody import energy_range, f0_stats, pace_summary, prosody, speaking_rate, \
    speech_seconds, trim_silence

SR = 16000


def tone(seconds: float, freq: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_a_200_hz_tone_has_f0_200_and_almost_no_range():
    mean, spread = f0_stats(tone(2.0, 200.0))
    assert mean == pytest.approx(200.0, abs=3.0) and spread < 5.0
    glide = np.concatenate([tone(1.0, 150.0), tone(1.0, 250.0)])
    mean, spread = f0_stats(glide)
    assert 180 < mean < 220 and 80 < spread < 110  # two pitches: the range spans them
    assert f0_stats(np.zeros(SR, np.float32)) == (None, None)  # nothing voiced


def test_energy_range_of_a_loud_soft_alternation():
    steady = tone(2.0, 200.0)
    assert energy_range(steady) < 1.0
    # 0.25 s loud, 0.25 s at a tenth of the amplitude (-20 dB), four times
    alternating = np.concatenate([tone(0.25, 200.0, 0.5 if k % 2 == 0 else 0.05) for k in range(8)])
    assert energy_range(alternating) == pytest.approx(20.0, abs=1.5)
    assert energy_range(np.zeros(SR, np.float32)) is None


def test_speaking_rate_counts_scored_characters_over_trimmed_speech():
    clip = np.concatenate([np.zeros(SR // 2, np.float32), tone(2.0, 200.0), np.zeros(SR, np.float32)])
    assert speech_seconds(clip) == pytest.approx(2.0, abs=0.03)
    assert len(trim_silence(clip)) == pytest.approx(2 * SR, abs=0.03 * SR)
    # "Hello, world!" is scored as "helloworld": 10 characters in 2 s of speech
    assert speaking_rate("Hello, world!", clip) == pytest.approx(5.0, rel=0.02)
    assert speaking_rate("ሰላም ነው።", clip) == pytest.approx(2.5, rel=0.02)  # 5 Ethiopic characters
    assert speaking_rate("hi", np.zeros(SR, np.float32)) is None and speech_seconds(np.zeros(10)) == 0.0


def test_prosody_is_fast_enough():
    clip = tone(3.0, 180.0)
    prosody(clip)  # the first call compiles librosa's kernels
    start = time.perf_counter()
    p = prosody(clip)
    assert time.perf_counter() - start < 0.5
    assert p.f0_mean == pytest.approx(180.0, abs=3.0) and p.speech_s == pytest.approx(3.0, abs=0.03)


def test_pace_drift_against_the_recordings_of_the_same_items():
    rows = [{"model": "reference", "id": "a", "language": "am", "chars_per_s": 10.0},
            {"model": "reference", "id": "b", "language": "am", "chars_per_s": 12.0},
            {"model": "reference", "id": "c", "language": "en", "chars_per_s": 15.0},
            {"model": "base", "id": "a", "language": "am", "chars_per_s": 11.0},
            {"model": "base", "id": "b", "language": "am", "chars_per_s": 11.0},
            {"model": "fine-tuned", "id": "a", "language": "am", "chars_per_s": 13.0},
            {"model": "fine-tuned", "id": "b", "language": "am"},  # not speech: no rate
            {"model": "fine-tuned", "id": "p", "language": "am", "chars_per_s": 20.0}]  # no recording (a paragraph)
    pace = pace_summary(rows, ["base", "fine-tuned"])
    assert pace["reference"]["am"] == {"chars_per_s": 11.0, "n": 2}
    assert pace["base"]["am"]["pace_drift"] == pytest.approx(0.0) and pace["base"]["am"]["common"] == 2
    tuned = pace["fine-tuned"]["am"]
    assert tuned["chars_per_s"] == pytest.approx(16.5) and tuned["n"] == 2  # its mean over every rate it has
    assert tuned["pace_drift"] == pytest.approx(13.0 / 10.0 - 1) and tuned["common"] == 1  # only item a is shared
    assert pace["reference"]["all"]["n"] == 3 and "en" not in pace["base"]
    assert pace_summary([r for r in rows if r["model"] != "reference"], ["base"])["base"]["am"]["pace_drift"] is None
