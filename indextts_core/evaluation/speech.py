"""Is an output speech at all?  Silent and runaway outputs are failures: counted, shown, never scored.

A random or broken model can give exact digital silence (the demo's tiny random vocoder gives
about 6e-9 of full scale, zero in 16-bit audio) or never stop (its codes run to the evaluation's
length limit).  An error rate or a speaker similarity computed on such audio measures how the judge
behaves on silence or babble, not the model: an item whose output is not speech carries the failure
instead (``not_speech``: ``"silent"``, below the RMS floor or shorter than 0.3 s, or ``"runaway"``, and
``speech_failure`` 1, a metric of its own), and no CER, WER or similarity.  The real recordings go
through the same check.
"""

from __future__ import annotations

import math

import numpy as np

#: A clip whose RMS level is below this (dB relative to full scale) is silence: far below any
#: recording of speech (a quiet room is around -60 dBFS, speech -30 to -15 dBFS).
SILENT_DBFS = -70.0


def level_dbfs(wave: np.ndarray) -> float:
    """The RMS level of float samples in [-1, 1], in dB relative to full scale (-inf for exact zeros)."""
    samples = np.asarray(wave, dtype=np.float64).reshape(-1)
    if samples.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(samples * samples)))
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


#: A clip shorter than this (seconds) is too short to hold a word: counted as silent.
MIN_SPEECH_S = 0.3


def not_speech(wave: np.ndarray, stopped: bool = True, sample_rate: int = 16000) -> str | None:
    """Why an output cannot be scored as speech: ``"silent"`` (below the RMS floor, or shorter than
    :data:`MIN_SPEECH_S`), ``"runaway"`` (it never stopped), or None."""
    if level_dbfs(wave) < SILENT_DBFS or np.asarray(wave).size < MIN_SPEECH_S * sample_rate:
        return "silent"
    if not stopped:
        return "runaway"
    return None
