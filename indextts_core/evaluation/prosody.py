"""Prosody figures anyone can recompute from a 16 kHz float wave: pitch, loudness range, speaking rate.

* :func:`trim_silence`: the clip without its leading and trailing silence: 20 ms frames whose RMS is
  more than :data:`TRIM_BELOW_PEAK_DB` below the loudest frame's (or under :data:`FLOOR_DBFS`) are
  silence; the wave from the first to the last loud frame is kept;
* :func:`speaking_rate`: characters of the normalised text
  (:func:`~indextts_core.evaluation.scoring.normalize_for_scoring`, spaces removed) per second of the
  trimmed clip (``chars_per_s``);
* :func:`f0_stats`: librosa's pYIN (65-500 Hz, 40 ms frames, 20 ms hop) on the voiced frames only:
  the mean F0 and its range (90th minus 10th percentile, Hz); None without voiced frames;
* :func:`energy_range`: the frame RMS in dBFS over the non-silent frames, 90th minus 10th percentile (dB);
* :func:`prosody`: all of them in one :class:`Prosody`;
* :func:`pace_summary`: the evaluation's ``summary["pace"]``: per model and language the mean speaking rate and
  its drift against the real recordings of the same items.

Percentiles rather than extremes, so one cracked frame or a click does not make the range.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from indextts_core.evaluation.scoring import normalize_for_scoring

SAMPLE_RATE = 16000
#: Frame and hop of the energy figures and the trim (seconds).
FRAME_S = 0.02
#: A frame this far below the loudest one is silence (dB).
TRIM_BELOW_PEAK_DB = 40.0
#: A frame below this level (dBFS) is silence, however quiet the clip.
FLOOR_DBFS = -60.0
#: pYIN's search range (Hz): a low male voice to a high child's.
F0_MIN, F0_MAX = 65.0, 500.0
#: pYIN's frame and hop (samples at 16 kHz): 40 ms frames (two periods of 65 Hz), 20 ms hop.
F0_FRAME, F0_HOP = 640, 320
#: The percentiles a range spans.
LOW_PCT, HIGH_PCT = 10.0, 90.0


@dataclass(frozen=True)
class Prosody:
    """A clip's prosody figures; None where a figure cannot be measured (no voiced or no loud frame)."""

    f0_mean: float | None  # Hz, voiced frames
    f0_range: float | None  # Hz, 90th - 10th percentile of the voiced frames' F0
    energy_range: float | None  # dB, 90th - 10th percentile of the non-silent frames' RMS
    speech_s: float  # seconds between the first and the last non-silent frame

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


def frame_db(wave: np.ndarray, sample_rate: int = SAMPLE_RATE, frame_s: float = FRAME_S) -> np.ndarray:
    """The RMS level (dBFS) of consecutive non-overlapping frames of ``frame_s`` (a last partial frame is dropped;
    a clip shorter than one frame is one frame); -inf for an all-zero frame."""
    x = np.asarray(wave, dtype=np.float64).reshape(-1)
    n = max(1, int(round(frame_s * sample_rate)))
    count = len(x) // n
    frames = x[: count * n].reshape(count, n) if count else np.pad(x, (0, n - len(x)))[None]
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(rms)


def loud_frames(levels: np.ndarray) -> np.ndarray:
    """Which frames are not silence: within :data:`TRIM_BELOW_PEAK_DB` of the loudest and above :data:`FLOOR_DBFS`."""
    if levels.size == 0 or not np.isfinite(levels).any():
        return np.zeros(levels.shape, dtype=bool)
    peak = float(np.max(levels[np.isfinite(levels)]))
    return np.isfinite(levels) & (levels >= peak - TRIM_BELOW_PEAK_DB) & (levels >= FLOOR_DBFS)


def trim_silence(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``wave`` from its first to its last non-silent 20 ms frame (empty when every frame is silent)."""
    x = np.asarray(wave, dtype=np.float32).reshape(-1)
    loud = np.flatnonzero(loud_frames(frame_db(x, sample_rate)))
    if loud.size == 0:
        return x[:0]
    n = max(1, int(round(FRAME_S * sample_rate)))
    return x[loud[0] * n: (loud[-1] + 1) * n]


def speech_seconds(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Seconds of the clip with leading and trailing silence trimmed."""
    return len(trim_silence(wave, sample_rate)) / sample_rate


def text_chars(text: str) -> int:
    """Characters of the text as it is scored (normalised, spaces removed)."""
    return len(normalize_for_scoring(text).replace(" ", ""))


def speaking_rate(text: str, wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float | None:
    """Characters of the normalised text per second of speech (the trimmed clip); None for a clip that is all
    silence or a text with no character."""
    seconds = speech_seconds(wave, sample_rate)
    chars = text_chars(text)
    return chars / seconds if seconds > 0 and chars else None


def f0_stats(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> tuple[float | None, float | None]:
    """(mean F0, F0 range) in Hz over pYIN's voiced frames; (None, None) without any voiced frame."""
    import librosa

    x = np.asarray(wave, dtype=np.float32).reshape(-1)
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"f0_stats reads 16 kHz audio, got {sample_rate} Hz")
    if len(x) < F0_FRAME or not np.any(x):
        return None, None
    f0, voiced, _ = librosa.pyin(x, fmin=F0_MIN, fmax=F0_MAX, sr=sample_rate, frame_length=F0_FRAME,
                                 hop_length=F0_HOP, center=True)
    values = f0[voiced & np.isfinite(f0)]
    if values.size == 0:
        return None, None
    low, high = np.percentile(values, [LOW_PCT, HIGH_PCT])
    return float(np.mean(values)), float(high - low)


def energy_range(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float | None:
    """90th minus 10th percentile (dB) of the RMS level of the non-silent 20 ms frames; None without any."""
    levels = frame_db(wave, sample_rate)
    kept = levels[loud_frames(levels)]
    if kept.size == 0:
        return None
    low, high = np.percentile(kept, [LOW_PCT, HIGH_PCT])
    return float(high - low)


def prosody(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Prosody:
    """Every figure of one clip (16 kHz float samples in [-1, 1])."""
    mean, spread = f0_stats(wave, sample_rate)
    return Prosody(mean, spread, energy_range(wave, sample_rate), speech_seconds(wave, sample_rate))


def finite_or_none(x: float | None) -> float | None:
    """``x`` as a float, None for None or a value that is not finite."""
    return None if x is None or not math.isfinite(float(x)) else float(x)


def pace_summary(rows: Sequence[Mapping[str, Any]], models: Sequence[str], reference: str = "reference"
                 ) -> dict[str, dict[str, dict[str, Any]]]:
    """Per model (the real recordings ``reference`` first) and language (and ``all``): the mean ``chars_per_s``
    over the rows that have one and ``n``; for a model, ``pace_drift`` = its mean rate / the recordings' mean rate
    on the items both have a rate for, minus 1 (``common``: how many; None without any): > 0 speaks faster."""
    rates: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for r in rows:
        if r.get("chars_per_s") is not None:
            for lang in (r["language"], "all"):
                rates[(r["model"], lang)][r["id"]] = float(r["chars_per_s"])
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for model in [reference, *models]:
        for lang in sorted({lang for m, lang in rates if m == model}, key=lambda x: (x == "all", x)):
            mine = rates[(model, lang)]
            entry: dict[str, Any] = {"chars_per_s": float(np.mean(list(mine.values()))), "n": len(mine)}
            if model != reference:
                real = rates.get((reference, lang), {})
                common = sorted(set(mine) & set(real))
                ref_mean = float(np.mean([real[i] for i in common])) if common else 0.0
                entry["pace_drift"] = (float(np.mean([mine[i] for i in common])) / ref_mean - 1.0
                                       if common and ref_mean > 0 else None)
                entry["common"] = len(common)
            out.setdefault(model, {})[lang] = entry
    return out
