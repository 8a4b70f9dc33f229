"""Loudness normalisation of clips (ITU-R BS.1770 integrated loudness, measured with ``pyloudnorm``).

:func:`normalise_loudness` applies one gain so a clip reaches a target loudness, lowered where it
would push the peak above :data:`PEAK_LIMIT` (no clipping is ever introduced; the dict says so and
what was reached).  :func:`prepare_clip` resamples once, then normalises.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from indextts_core.data.audio import resample

PEAK_LIMIT = 0.99
GATE_BLOCK_S = 0.4  # BS.1770 gating block: shorter clips have no integrated loudness


def integrated_loudness(samples: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness in LUFS (``-inf`` for silence); the clip must be at least 0.4 s long."""
    import pyloudnorm

    x = np.asarray(samples, dtype=np.float64)
    return float(pyloudnorm.Meter(sample_rate).integrated_loudness(x))


def normalise_loudness(
    samples: np.ndarray, sample_rate: int, target_lufs: float | None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Gain a clip to ``target_lufs``; returns float32 samples and what was done.

    The dict: ``lufs_in`` / ``lufs_out`` (None where not measurable), ``gain_db`` (0.0 when unchanged),
    ``limited`` (the gain was lowered to keep the peak at :data:`PEAK_LIMIT`) and ``note`` (why the clip
    was left unchanged or limited; empty otherwise).  Unchanged: no target, a clip shorter than the
    0.4 s gating block, or a silent one (``-inf`` LUFS).
    """
    x = np.asarray(samples, dtype=np.float32)
    info: dict[str, Any] = {"lufs_in": None, "lufs_out": None, "gain_db": 0.0, "limited": False, "note": ""}
    if x.shape[0] < math.ceil(GATE_BLOCK_S * sample_rate):
        info["note"] = f"shorter than the {GATE_BLOCK_S:g} s gating block: not measured, unchanged"
        return x, info
    lufs_in = integrated_loudness(x, sample_rate)
    if not math.isfinite(lufs_in):
        info["note"] = "silent (-inf LUFS): unchanged"
        return x, info
    info["lufs_in"] = info["lufs_out"] = round(lufs_in, 3)
    if target_lufs is None:
        info["note"] = "no target: unchanged"
        return x, info
    gain_db = float(target_lufs) - lufs_in
    peak = float(np.max(np.abs(x)))
    if peak > 0 and peak * 10 ** (gain_db / 20) > PEAK_LIMIT:
        gain_db = 20 * math.log10(PEAK_LIMIT / peak)
        info["limited"] = True
    y = (x.astype(np.float64) * 10 ** (gain_db / 20)).astype(np.float32)
    info["gain_db"] = round(gain_db, 3)
    info["lufs_out"] = round(integrated_loudness(y, sample_rate), 3)
    if info["limited"]:
        info["note"] = (f"gain limited to keep the peak at {PEAK_LIMIT:g}: reached {info['lufs_out']:.2f} LUFS "
                        f"of {float(target_lufs):g}")
    return y, info


def prepare_clip(
    samples: np.ndarray, sample_rate: int, target_rate: int, target_lufs: float | None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Resample to ``target_rate`` (once, :func:`indextts_core.data.audio.resample`) then normalise."""
    y = resample(np.asarray(samples, dtype=np.float32), sample_rate, target_rate)
    return normalise_loudness(y, target_rate, target_lufs)
