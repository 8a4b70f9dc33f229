"""Prompt files read exactly as the official inference reads them (``infer_v2._load_and_cut_audio``).

The official front end reads a prompt with ``librosa.load``: libsndfile decodes it to float32, the
channels are averaged (before resampling), and ``soxr`` (quality ``soxr_hq``) resamples it to the
asked rate, padded or trimmed to ``ceil(n * target / native)`` samples. It then keeps the first
15 s *at that rate*. Two readings of the same file feed inference:

* the **speaker path** reads at 22.05 kHz (the reference mel) and resamples that with
  ``torchaudio.transforms.Resample(22050, 16000)`` for Wav2Vec2-BERT (the speaker conditioning,
  the semantic codes of the prompt) and for CAMPPlus;
* the **emotion path** reads the emotion prompt (the speaker prompt again when there is none)
  directly at 16 kHz.

The two 16 kHz signals differ (about 1e-3); the official GPT sees both, and so do we. Nothing here
normalises or limits the level (librosa does not). :func:`prompt_problems` says what makes a prompt
a poor one (silent, very short, longer than what is read) so callers can warn or refuse.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from indextts_core.data.audio import decode_audio
from indextts_core.errors import InputError

log = logging.getLogger(__name__)

SPEAKER_SR = 22050  # librosa.load's default rate: the official speaker prompt
FEATURE_SR = 16000  # Wav2Vec2-BERT and CAMPPlus
PROMPT_MAX_S = 15.0  # infer_v2 keeps the first 15 s of every prompt
MIN_PROMPT_S = 0.1  # shorter is refused: nothing to condition on
SHORT_PROMPT_S = 1.0  # shorter is warned about: the official release expects a few seconds of speech
QUIET_PROMPT_DBFS = -50.0  # RMS level under which a prompt is warned about as nearly silent


def resample_soxr(samples: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """``librosa.resample(..., res_type="soxr_hq")``: soxr, then padded with zeros or trimmed to
    ``ceil(n * target_sr / orig_sr)`` samples; float32 in, float32 out (a copy-free no-op at equal rates)."""
    if orig_sr == target_sr:
        return samples
    import soxr

    want = int(math.ceil(samples.shape[-1] * float(target_sr) / orig_sr))
    out = np.asarray(soxr.resample(samples, orig_sr, target_sr, quality="soxr_hq"), dtype=np.float32)
    if out.shape[-1] < want:
        out = np.pad(out, (0, want - out.shape[-1]))
    return out[:want]


def read_like_librosa(source: str | os.PathLike[str] | bytes, sample_rate: int, name: str | None = None,
                      max_seconds: float | None = PROMPT_MAX_S) -> np.ndarray:
    """``librosa.load(source, sr=sample_rate)`` and the official 15 s cut: float32 mono at ``sample_rate``.

    Decoding errors name the file (:class:`~indextts_core.errors.AudioDecodeError`).
    """
    return _read(source, sample_rate, name or str(source), max_seconds)[0]


def _read(source: str | os.PathLike[str] | bytes, sample_rate: int, label: str,
          max_seconds: float | None) -> tuple[np.ndarray, float]:
    """(samples at ``sample_rate`` cut to ``max_seconds``, the file's own duration in seconds)."""
    wav = decode_audio(source, name=label, peak_safe=False)
    samples = resample_soxr(wav.samples, wav.sample_rate, sample_rate)
    if max_seconds is not None:
        samples = samples[: int(max_seconds * sample_rate)]
    return np.ascontiguousarray(samples, dtype=np.float32), wav.duration


def to_16k(wave_22k: torch.Tensor) -> torch.Tensor:
    """The speaker path's 16 kHz signal: ``torchaudio.transforms.Resample(22050, 16000)`` of (1, N) at 22.05 kHz."""
    import torchaudio

    return torchaudio.transforms.Resample(SPEAKER_SR, FEATURE_SR).to(wave_22k.device)(wave_22k)


def speaker_path_16k(source: str | os.PathLike[str] | bytes, name: str | None = None) -> np.ndarray:
    """A whole file (not cut) on the speaker path: 22.05 kHz by soxr, then torchaudio to 16 kHz; float32 mono.

    What preprocessing extracts a clip's codes and conditioning from, so that a training clip's features
    are the ones inference computes when that clip is the prompt.
    """
    wave_22k = read_like_librosa(source, SPEAKER_SR, name=name, max_seconds=None)
    return to_16k(torch.from_numpy(wave_22k).unsqueeze(0))[0].numpy()


@dataclass(frozen=True)
class SpeakerPrompt:
    """A speaker prompt as infer_v2 reads it: (1, N) at 22.05 kHz and its torchaudio 16 kHz resampling."""

    wave_22k: torch.Tensor
    wave_16k: torch.Tensor

    @property
    def seconds(self) -> float:
        return self.wave_22k.size(-1) / SPEAKER_SR


def read_speaker_prompt(source: str | os.PathLike[str] | bytes, name: str | None = None,
                        max_seconds: float = PROMPT_MAX_S, warn: bool = True) -> SpeakerPrompt:
    """The speaker path of a prompt file (or its bytes); under 0.1 s or digital silence is an InputError,
    and with ``warn`` each of :func:`prompt_problems` is logged as a warning."""
    label = name or str(source)
    wave, seconds = _read(source, SPEAKER_SR, label, max_seconds)
    check_prompt(wave, SPEAKER_SR, label, seconds, warn=warn)
    wave_22k = torch.from_numpy(wave).unsqueeze(0)
    return SpeakerPrompt(wave_22k, to_16k(wave_22k))


def read_emotion_prompt(source: str | os.PathLike[str] | bytes, name: str | None = None,
                        max_seconds: float = PROMPT_MAX_S, warn: bool = True) -> torch.Tensor:
    """The emotion path of a prompt file: (1, N) read directly at 16 kHz and cut to 15 s (``warn``: as
    :func:`read_speaker_prompt`; off when the file is the speaker prompt read again)."""
    label = name or str(source)
    wave, seconds = _read(source, FEATURE_SR, label, max_seconds)
    check_prompt(wave, FEATURE_SR, label, seconds, warn=warn)
    return torch.from_numpy(wave).unsqueeze(0)


def check_prompt(wave: np.ndarray, sample_rate: int, name: str, file_seconds: float | None = None,
                 warn: bool = True) -> None:
    """Refuse what cannot condition anything (under :data:`MIN_PROMPT_S`, or all zeros); with ``warn``, log a
    warning for each of :func:`prompt_problems`."""
    seconds = wave.shape[-1] / sample_rate
    if seconds < MIN_PROMPT_S:
        raise InputError(f"{name}: prompt is {seconds:.2f} s long (under {MIN_PROMPT_S} s); give 3-15 s of speech")
    if not np.any(wave):
        raise InputError(f"{name}: prompt is digital silence (every sample is zero); give 3-15 s of speech")
    for problem in prompt_problems(wave, sample_rate, name, file_seconds) if warn else ():
        log.warning("%s", problem)


def prompt_problems(wave: np.ndarray, sample_rate: int, name: str, file_seconds: float | None = None) -> list[str]:
    """What makes a readable prompt a poor one, one sentence each (empty: nothing to say).

    Nearly silent (RMS under :data:`QUIET_PROMPT_DBFS`), shorter than :data:`SHORT_PROMPT_S`, or a file
    longer than the :data:`PROMPT_MAX_S` the official inference reads (the rest is not heard).
    """
    seconds = wave.shape[-1] / sample_rate
    file_seconds = seconds if file_seconds is None else file_seconds
    problems = []
    if file_seconds > PROMPT_MAX_S + 1e-6:
        problems.append(f"{name}: prompt is {file_seconds:.1f} s; only its first {PROMPT_MAX_S:.0f} s are used "
                        "(as the official inference does)")
    elif seconds < SHORT_PROMPT_S:
        problems.append(f"{name}: prompt is only {seconds:.2f} s; the voice is conditioned on very little "
                        "(3-15 s of clean speech work best)")
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) if wave.size else 0.0
    level = 20 * math.log10(max(rms, 1e-12))
    if level < QUIET_PROMPT_DBFS:
        problems.append(f"{name}: prompt is nearly silent ({level:.1f} dBFS RMS); the output will not carry a "
                        "recognisable voice")
    return problems
