"""Audio decoding, resampling, peak safety and corrupt files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests_support import sine, write_audio
from indextts_core.data.audio import decode_audio, load_audio, resample
from indextts_core.errors import AudioDecodeError


def _dominant_freq(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * sr / len(x))


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3"])
def test_every_format_decodes_to_float32_mono(tmp_path: Path, suffix: str):
    path = write_audio(tmp_path / f"tone{suffix}", seconds=1.0, sr=22050, freq=440.0)
    wav = decode_audio(path)
    assert wav.samples.dtype == np.float32 and wav.samples.ndim == 1
    assert wav.sample_rate == 22050
    # lossy codecs pad a little; the content is still a 440 Hz tone of about one second
    assert wav.duration == pytest.approx(1.0, abs=0.06)
    assert _dominant_freq(wav.samples, wav.sample_rate) == pytest.approx(440.0, abs=3.0)


def test_int16_pcm_is_scaled_exactly(tmp_path: Path):
    path = tmp_path / "pcm.wav"
    sf.write(path, np.array([0, 16384, -32768, 32767], dtype=np.int16), 16000, subtype="PCM_16")
    assert decode_audio(path).samples.tolist() == [0.0, 0.5, -1.0, 32767 / 32768]


def test_stereo_is_averaged_to_mono(tmp_path: Path):
    path = tmp_path / "stereo.wav"
    left, right = sine(0.5, 16000, 300), sine(0.5, 16000, 300, amp=0.1)
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    wav = decode_audio(path)
    assert wav.channels == 2
    np.testing.assert_allclose(wav.samples, (left + right) / 2, atol=1e-6)


def test_resample_keeps_pitch_and_length(tmp_path: Path):
    path = write_audio(tmp_path / "tone.flac", seconds=2.0, sr=22050, freq=1000.0)
    wav = load_audio(path, target_sr=16000)
    assert wav.sample_rate == 16000
    assert len(wav.samples) == 32000
    assert _dominant_freq(wav.samples, 16000) == pytest.approx(1000.0, abs=2.0)


def test_resample_matches_torchaudio():
    import torch
    import torchaudio.functional as AF

    x = sine(0.3, 24000, 700)
    expected = AF.resample(torch.from_numpy(x), 24000, 16000).numpy()
    np.testing.assert_array_equal(resample(x, 24000, 16000), expected)


def test_peak_safe_scales_instead_of_clipping(tmp_path: Path):
    path = tmp_path / "hot.wav"
    x = sine(0.5, 16000, 200, amp=1.5)
    sf.write(path, x, 16000, subtype="FLOAT")
    wav = decode_audio(path)
    assert wav.peak <= 1.0
    # scaled as a whole: the waveform keeps its shape (no flat-topped clipping)
    np.testing.assert_allclose(wav.samples, x * (0.999 / np.max(np.abs(x))), rtol=1e-5)
    # a full-scale square wave overshoots when resampled; the result stays within [-1, 1]
    square = np.sign(sine(0.5, 22050, 300, amp=1.0)).astype(np.float32)
    assert np.max(np.abs(resample(square, 22050, 16000))) <= 1.0


def test_decode_from_bytes_names_the_source():
    with pytest.raises(AudioDecodeError, match=r"s3://b/x\.wav: audio file is empty"):
        decode_audio(b"", name="s3://b/x.wav")


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "audio file is empty"), (b"RIFF\x00\x00garbage" * 10, "cannot decode audio"),
     (None, "audio file not found")],
)
def test_bad_files_raise_naming_the_file(tmp_path: Path, content: bytes | None, message: str):
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioDecodeError) as e:
        decode_audio(path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_wav_with_no_samples(tmp_path: Path):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioDecodeError, match="contains no samples"):
        decode_audio(path)


def test_nan_samples_are_refused(tmp_path: Path):
    path = tmp_path / "nan.wav"
    x = sine(0.1, 16000)
    x[10] = np.nan
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match="NaN"):
        decode_audio(path)
