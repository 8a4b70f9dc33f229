"""Prompts that cannot carry a voice: refused, or warned about, before any model runs (fault campaign 2)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf

from indextts_core.data.prompt_audio import read_emotion_prompt, read_speaker_prompt
from indextts_core.errors import InputError

SR = 24000


def _wav(path, seconds: float, level: float = 0.3):
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (level * np.sin(2 * np.pi * 180 * t)).astype(np.float32), SR, subtype="PCM_16")
    return path


def test_digital_silence_is_refused_naming_the_file(tmp_path):
    path = _wav(tmp_path / "silent.wav", 3.0, level=0.0)
    with pytest.raises(InputError, match=r"silent\.wav: prompt is digital silence"):
        read_speaker_prompt(path)
    with pytest.raises(InputError, match="digital silence"):
        read_emotion_prompt(path)


@pytest.mark.parametrize(("seconds", "level", "said"), [
    (0.2, 0.3, "prompt is only 0.20 s"),
    (60.0, 0.3, "prompt is 60.0 s; only its first 15 s are used"),
    (3.0, 0.001, "nearly silent"),
])
def test_poor_prompts_are_warned_about(tmp_path, caplog, seconds, level, said):
    path = _wav(tmp_path / "p.wav", seconds, level)
    with caplog.at_level(logging.WARNING, logger="indextts_core.data.prompt_audio"):
        spk = read_speaker_prompt(path)
    assert said in caplog.text and "p.wav" in caplog.text
    assert spk.wave_22k.size(1) == min(int(seconds * 22050 + 0.5), 15 * 22050)  # the official 15 s cut
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="indextts_core.data.prompt_audio"):
        read_emotion_prompt(path, warn=False)  # the speaker prompt read again: said once, not twice
    assert not caplog.text


def test_a_good_prompt_is_read_quietly(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="indextts_core.data.prompt_audio"):
        read_speaker_prompt(_wav(tmp_path / "ok.wav", 4.0))
    assert not caplog.text


def test_too_short_to_condition_is_refused(tmp_path):
    with pytest.raises(InputError, match="under 0.1 s"):
        read_speaker_prompt(_wav(tmp_path / "blip.wav", 0.05))
