"""Loudness normalisation (ITU-R BS.1770 via pyloudnorm): target reached, peaks limited, edge cases unchanged."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest

from indextts_core.curate.loudness import PEAK_LIMIT, integrated_loudness, normalise_loudness, prepare_clip

SR = 16000


def sine(lufs: float, seconds: float = 3.0, freq: float = 440.0, sr: int = SR) -> np.ndarray:
    """A sine scaled to the given integrated loudness."""
    t = np.arange(int(seconds * sr)) / sr
    x = 0.1 * np.sin(2 * np.pi * freq * t)
    x = x * 10 ** ((lufs - pyloudnorm.Meter(sr).integrated_loudness(x)) / 20)
    return x.astype(np.float32)


def test_sine_at_minus_30_reaches_minus_23():
    x = sine(-30.0)
    assert integrated_loudness(x, SR) == pytest.approx(-30.0, abs=0.05)
    y, info = normalise_loudness(x, SR, -23.0)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert integrated_loudness(y, SR) == pytest.approx(-23.0, abs=0.5)
    assert info["lufs_in"] == pytest.approx(-30.0, abs=0.05)
    assert info["lufs_out"] == pytest.approx(-23.0, abs=0.5)
    assert info["gain_db"] == pytest.approx(7.0, abs=0.1)
    assert info["limited"] is False and info["note"] == ""


def test_loud_clip_is_turned_down():
    y, info = normalise_loudness(sine(-12.0), SR, -23.0)
    assert info["gain_db"] == pytest.approx(-11.0, abs=0.1) and not info["limited"]
    assert integrated_loudness(y, SR) == pytest.approx(-23.0, abs=0.5)


def test_gain_limited_at_the_peak():
    # quiet speech-like clip with one sharp click: reaching -10 LUFS would push the click past full scale
    x = sine(-30.0)
    x[SR] = 0.5
    y, info = normalise_loudness(x, SR, -10.0)
    assert info["limited"] is True
    assert float(np.max(np.abs(y))) == pytest.approx(PEAK_LIMIT, abs=1e-4)
    assert float(np.max(np.abs(y))) <= PEAK_LIMIT + 1e-6
    assert info["lufs_out"] < -10.5 and info["lufs_out"] == pytest.approx(integrated_loudness(y, SR), abs=0.01)
    assert info["gain_db"] == pytest.approx(20 * np.log10(PEAK_LIMIT / 0.5), abs=0.01)
    assert "limited" in info["note"]


def test_silent_clip_unchanged():
    x = np.zeros(SR * 2, dtype=np.float32)
    y, info = normalise_loudness(x, SR, -23.0)
    assert np.array_equal(x, y) and info["gain_db"] == 0.0 and info["lufs_in"] is None
    assert "silent" in info["note"]


def test_too_short_clip_unchanged():
    x = sine(-30.0)[: int(0.3 * SR)]
    y, info = normalise_loudness(x, SR, -23.0)
    assert np.array_equal(x, y) and info["gain_db"] == 0.0 and info["lufs_in"] is None
    assert "gating block" in info["note"]


def test_no_target_unchanged_but_measured():
    x = sine(-30.0)
    y, info = normalise_loudness(x, SR, None)
    assert np.array_equal(x, y) and info["gain_db"] == 0.0 and not info["limited"]
    assert info["lufs_in"] == info["lufs_out"] == pytest.approx(-30.0, abs=0.05)
    assert "no target" in info["note"]


def test_prepare_clip_resamples_once_then_normalises():
    x = sine(-30.0, sr=22050)
    y, info = prepare_clip(x, 22050, 24000, -23.0)
    assert y.dtype == np.float32 and y.size == pytest.approx(3.0 * 24000, abs=2)
    assert integrated_loudness(y, 24000) == pytest.approx(-23.0, abs=0.5)
    same, info = prepare_clip(x, 22050, 22050, None)
    assert np.array_equal(same, x) and info["note"] == "no target: unchanged"
