"""Audio decoding and resampling: one place that turns files into float32 mono waveforms.

* :func:`decode_audio` reads WAV/FLAC/OGG/MP3 (libsndfile through ``soundfile``) from a path or
  bytes at the file's own rate, converts integer PCM to float32 in [-1, 1) and averages the
  channels to mono.
* :func:`resample` uses ``torchaudio.functional.resample`` (the same band-limited sinc resampler
  the official IndexTTS2 front-end uses, with its default settings).
* Conversion is peak-safe: a waveform whose peak exceeds full scale after resampling (or that was
  stored as float beyond ±1) is scaled down as a whole, never hard-clipped.

Any problem (missing, empty, corrupt, no samples, NaN) raises :class:`AudioDecodeError` naming the file.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from indextts_core.errors import AudioDecodeError

_PEAK_LIMIT = 0.999


@dataclass(frozen=True)
class Waveform:
    """A mono float32 waveform and its sample rate."""

    samples: np.ndarray  # shape (n,), float32
    sample_rate: int
    channels: int = 1  # channels in the source file, before the mono downmix

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    @property
    def peak(self) -> float:
        return float(np.max(np.abs(self.samples))) if len(self.samples) else 0.0


def decode_audio(source: str | os.PathLike[str] | bytes, name: str | None = None,
                 peak_safe: bool = True) -> Waveform:
    """Decode a file (path or its bytes) to float32 mono at its native sample rate.

    ``name`` is used in error messages when ``source`` is bytes (for example an ``s3://`` URI).
    ``peak_safe=False`` keeps a float file's samples beyond full scale as they are (as librosa does).
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    if isinstance(source, bytes):
        if not source:
            raise AudioDecodeError(f"{label}: audio file is empty (0 bytes)")
        handle: io.BytesIO | str = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise AudioDecodeError(f"{label}: audio file not found")
        if path.stat().st_size == 0:
            raise AudioDecodeError(f"{label}: audio file is empty (0 bytes)")
        handle = str(path)
    try:
        data, sr = sf.read(handle, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioDecodeError(f"{label}: cannot decode audio ({e})") from None
    if data.shape[0] == 0:
        raise AudioDecodeError(f"{label}: audio file contains no samples")
    declared = _wav_declared_frames(source if isinstance(source, bytes) else Path(source))
    if declared is not None and declared > data.shape[0]:
        raise AudioDecodeError(f"{label}: truncated: the WAV header declares {declared / sr:.2f} s but the file holds "
                               f"{data.shape[0] / sr:.2f} s (an interrupted copy or download?)")
    if not np.isfinite(data).all():
        raise AudioDecodeError(f"{label}: audio contains NaN or infinite samples")
    channels = data.shape[1]
    mono = np.ascontiguousarray(data.T.mean(axis=0) if channels > 1 else data[:, 0], dtype=np.float32)
    return Waveform(_peak_safe(mono) if peak_safe else mono, int(sr), channels)


def _wav_declared_frames(source: bytes | Path) -> int | None:
    """Frames a RIFF/WAVE header promises in its ``data`` chunk (None: not a WAV, or no size given)."""
    head = source[:65536] if isinstance(source, bytes) else _read_head(source)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, block_align = 12, None
    while pos + 8 <= len(head):
        chunk, size = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if chunk == b"fmt " and pos + 22 <= len(head):
            block_align = int.from_bytes(head[pos + 20:pos + 22], "little")
        if chunk == b"data":
            if not block_align or size in (0, 0xFFFFFFFF):  # streaming writers leave the size open
                return None
            return size // block_align
        pos += 8 + size + (size & 1)
    return None


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(65536)


def resample(samples: np.ndarray | torch.Tensor, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling (torchaudio defaults), peak-safe; returns float32 numpy (empty in, empty out)."""
    x = samples if isinstance(samples, torch.Tensor) else torch.from_numpy(np.asarray(samples, dtype=np.float32))
    if orig_sr != target_sr and x.numel():
        x = AF.resample(x, orig_sr, target_sr)
    return _peak_safe(x.numpy().astype(np.float32, copy=False))


def load_audio(
    source: str | os.PathLike[str] | bytes, target_sr: int | None = None, name: str | None = None
) -> Waveform:
    """Decode and, if ``target_sr`` is given, resample to it."""
    wav = decode_audio(source, name=name)
    if target_sr is None or target_sr == wav.sample_rate:
        return wav
    return Waveform(resample(wav.samples, wav.sample_rate, target_sr), target_sr, wav.channels)


def _peak_safe(x: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 1.0:
        x = x * np.float32(_PEAK_LIMIT / peak)
    return x
