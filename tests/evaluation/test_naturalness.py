"""DNSMOS naturalness: the four numbers, their range, determinism, offline use and the edge cases."""

from __future__ import annotations

import importlib.metadata
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from indextts_core.data.audio import load_audio
from indextts_core.evaluation.naturalness import (
    DNSMOS_NOTE,
    DNSMOS_SOURCE,
    NATURALNESS_METRICS,
    Naturalness,
    open_naturalness,
)

DEMO_AUDIO = Path(__file__).resolve().parents[2] / "indextts_core" / "demo" / "dataset" / "audio"


@pytest.fixture(scope="module")
def scorer() -> Naturalness:
    return Naturalness(threads=1)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """9.5 s of clean (espeak-ng) English speech: one speaker's three English demo clips, 0.25 s apart.

    Longer than DNSMOS's 9.01 s window and shorter than 10 s, so one window (the fastest case).
    """
    gap = np.zeros(4000, np.float32)
    parts = []
    for name in ("spk01_en_001.flac", "spk01_en_002.flac", "spk01_en_003.flac"):
        parts += [load_audio((DEMO_AUDIO / name).read_bytes(), 16000, name=name).samples, gap]
    wave = np.concatenate(parts[:-1])
    assert 9.01 < len(wave) / 16000 < 10.0
    return wave


@pytest.fixture(scope="module")
def speech_scores(scorer, speech) -> dict[str, float]:
    return scorer.score(speech)


def _noise_like(wave: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(wave.astype(np.float64) ** 2)))
    noise = np.random.default_rng(0).standard_normal(len(wave)) * rms
    return noise.astype(np.float32)


def test_keys_and_range(speech_scores):
    scores = speech_scores
    assert tuple(scores) == NATURALNESS_METRICS
    for name, value in scores.items():
        assert isinstance(value, float)
        assert 1.0 <= value <= 5.0, (name, value)


def test_deterministic(scorer, speech, speech_scores):
    assert scorer.score(speech.copy()) == speech_scores


def test_speech_beats_white_noise(scorer, speech, speech_scores):
    noise_scores = scorer.score(_noise_like(speech))
    assert speech_scores["dnsmos_ovrl"] > noise_scores["dnsmos_ovrl"] + 0.5
    assert speech_scores["dnsmos_p808"] > noise_scores["dnsmos_p808"]


def test_short_clip_is_repeated_not_rejected(scorer, speech):
    # 0.6 s: DNSMOS doubles it to 9.6 s (one window; 0.5 s would double to 16 s, seven windows)
    scores = scorer.score(speech[4000:13600])
    assert all(1.0 <= value <= 5.0 for value in scores.values())


def test_out_of_range_samples_are_clipped(scorer, speech):
    loud = speech * 4.0
    assert scorer.score(loud) == scorer.score(np.clip(loud, -1.0, 1.0))


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros(0, np.float32), "empty"),
        (np.zeros((2, 16000), np.float32), "mono"),
        (np.full(16000, np.nan, np.float32), "NaN"),
    ],
)
def test_unscorable_clips_raise(scorer, bad, message):
    with pytest.raises(ValueError, match=message):
        scorer.score(bad)


def test_offline(monkeypatch, speech):
    def refuse(*args, **kwargs):
        raise OSError("network forbidden in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    scores = Naturalness(threads=1).score(speech)
    assert set(scores) == set(NATURALNESS_METRICS)


def test_open_naturalness_disabled_and_enabled():
    assert open_naturalness(False) is None
    assert isinstance(open_naturalness(True, threads=1), Naturalness)


@pytest.mark.parametrize("missing", ["speechmos.dnsmos", "onnxruntime", "librosa"])
def test_missing_package_is_named(monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # importing it now raises ImportError
    with pytest.raises(ImportError, match=f"package '{missing.split('.')[0]}'"):
        open_naturalness(True)


def test_provenance_matches_installed_package():
    assert f"speechmos {importlib.metadata.version('speechmos')}" in DNSMOS_SOURCE
    assert "MIT" in DNSMOS_SOURCE
    assert "English" in DNSMOS_NOTE and "relative" in DNSMOS_NOTE


def test_same_numbers_as_the_package_entry_point(speech, speech_scores):
    from speechmos import dnsmos

    reference = dnsmos.run(speech, 16000)  # the package's own sessions (default options), same models
    assert speech_scores == pytest.approx(
        {
            "dnsmos_ovrl": reference["ovrl_mos"],
            "dnsmos_sig": reference["sig_mos"],
            "dnsmos_bak": reference["bak_mos"],
            "dnsmos_p808": reference["p808_mos"],
        },
        abs=1e-4,
    )
