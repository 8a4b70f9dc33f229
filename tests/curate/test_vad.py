"""Silero VAD runs and the cuts: hand-written runs for the grouping rules, espeak-ng speech for the model."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from indextts_core.config import CurateConfig
from indextts_core.curate.types import Segment
from indextts_core.curate.vad import (
    VAD_RATE,
    Vad,
    bridge,
    cut_segments,
    runs_from_probabilities,
    segment_recording,
    speech_seconds,
)
from indextts_core.data.audio import load_audio, resample

RECORDINGS = Path(__file__).resolve().parents[2] / "indextts_core" / "demo" / "recordings"
TOL = 0.15


def cut(runs, duration=60.0, min_s=1.0, max_s=15.0, min_pause=0.3, head=0.1, tail=0.5):
    return cut_segments(runs, duration, min_s, max_s, min_pause, head, tail)


# -- cut_segments on hand-written runs ---------------------------------------------------------------


def test_runs_closer_than_min_pause_stay_in_one_clip_and_padding_stops_at_pause_middles():
    runs = [(1.0, 2.0), (2.2, 3.0), (3.4, 4.0)]  # 0.2 s pause (kept inside), 0.4 s pause (a cut point)
    segs, rej = cut(runs, max_s=3.5)
    assert rej == []
    assert segs == [Segment(0.9, 3.2, None, 1.8), Segment(3.3, 4.5, None, 0.6)]  # head 0.1 s < half the pause


def test_a_clip_per_stretch_of_speech_between_pauses():
    runs = [(1.0 + 3 * k, 3.0 + 3 * k) for k in range(6)]  # 2 s speech, 1 s pauses, until 18.0
    segs, rej = cut(runs, duration=20.0, max_s=9.0)
    assert rej == []
    # a cut at every pause of at least min_pause_s: sentence-sized clips, padded up to the pauses' middles
    assert [(s.start_s, s.end_s) for s in segs] == [(0.9 + 3 * k, 3.5 + 3 * k) for k in range(6)]


def test_padding_capped_at_zero_duration_and_pause_middle():
    segs, rej = cut([(0.05, 1.5), (1.9, 3.0), (3.3, 5.9)], duration=6.0, max_s=2.9, min_pause=0.3)
    assert rej == []
    assert [(s.start_s, s.end_s) for s in segs] == [(0.0, 1.7), (1.8, 3.15), (3.2, 6.0)]


def test_short_clip_merged_into_neighbour_when_it_fits():
    # a 0.3 s word after a long pause: alone it is a 0.9 s clip; merged into the previous one it fits
    segs, rej = cut([(1.0, 4.0), (5.0, 5.3)], duration=10.0)
    assert rej == []
    assert segs == [Segment(0.9, 5.8, None, 3.3)]


def test_short_clip_rejected_when_no_neighbour_fits():
    segs, rej = cut([(0.5, 14.0), (15.0, 15.3)], duration=20.0)
    assert segs == [Segment(0.4, 14.5, None, 13.5)]
    (seg, why), = rej
    assert why.reason == "too_short" and seg == Segment(14.9, 15.8, None, 0.3)
    assert why.numbers["min_s"] == 1.0 and why.numbers["duration_s"] == pytest.approx(seg.duration_s)


def test_too_short_numbers():
    segs, rej = cut([(5.0, 5.2)], duration=10.0)
    assert segs == []
    (seg, why), = rej
    assert why.reason == "too_short"
    assert seg == Segment(4.9, 5.7, None, 0.2) and why.numbers == {"duration_s": 0.8, "speech_s": 0.2, "min_s": 1.0}


def test_one_run_longer_than_max_s_rejected_too_long():
    segs, rej = cut([(1.0, 3.0), (4.0, 21.0), (22.0, 24.0)], duration=30.0)
    assert len(segs) == 2 and len(rej) == 1
    seg, why = rej[0]
    assert why.reason == "too_long" and why.numbers["speech_s"] == 17.0 and why.numbers["max_s"] == 15.0
    assert seg.start_s == 3.9 and seg.end_s == 21.5


def test_long_block_split_at_its_longest_inner_pause():
    # pauses of 0.1-0.2 s (below min_pause_s): no cut point, but the block is too long, so split at 0.2 s
    runs = [(0.0, 4.0), (4.1, 8.0), (8.2, 12.0), (12.1, 18.0)]
    segs, rej = cut(runs, duration=18.0)
    assert rej == []
    assert [(s.start_s, s.end_s) for s in segs] == [(0.0, 8.1), (8.1, 18.0)]


def test_padding_trimmed_head_first_when_only_the_speech_fits():
    segs, rej = cut([(1.0, 15.8)], duration=20.0, max_s=15.0)
    assert rej == []
    assert segs == [Segment(1.0, 16.0, None, 14.8)]  # 0.4 s too long: the 0.1 s head goes, then 0.3 s of tail


def test_cut_is_deterministic_and_handles_unsorted_overlapping_and_empty_runs():
    runs = [(8.0, 9.5), (1.0, 2.0), (1.5, 3.0), (5.0, 5.0), (-1.0, 0.2), (29.0, 31.0)]
    a = cut(runs, duration=30.0)
    assert a == cut(list(reversed(runs)), duration=30.0)
    assert all(0.0 <= s.start_s < s.end_s <= 30.0 for s in a[0] + [seg for seg, _ in a[1]])
    assert cut([], duration=5.0) == ([], [])


def test_bridge_and_speech_seconds():
    assert bridge([(2.0, 3.0), (0.0, 1.0), (1.2, 1.5)], 0.3) == [(0.0, 1.5), (2.0, 3.0)]
    runs = [(0.0, 1.0), (2.0, 3.0)]
    assert speech_seconds(runs, 0.5, 2.5) == pytest.approx(1.0)
    assert speech_seconds(runs, 5.0, 6.0) == 0.0


def test_runs_from_probabilities_hysteresis_bridging_and_blips():
    fs = 512 / 16000
    p = np.zeros(100, dtype=np.float32)
    p[10:30] = 0.9
    p[30:33] = 0.4  # above the exit threshold 0.35: still speech
    p[40:60] = 0.8  # 7 frames (0.224 s) after: bridged with min_pause 0.3
    p[80:82] = 0.9  # 2 frames = 0.064 s: a blip
    runs = runs_from_probabilities(p, 100 * fs, 0.5, 0.3)
    assert runs == [(pytest.approx(10 * fs), pytest.approx(60 * fs))]
    assert len(runs_from_probabilities(p, 100 * fs, 0.5, 0.1)) == 2


# -- the model on espeak-ng speech --------------------------------------------------------------------

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore every summer.",
    "A journey of a thousand miles begins with one step.",
    "Please call me back when you get home tonight.",
]
PAUSES = [0.6, 1.2, 0.8]


@pytest.fixture(scope="module")
def vad() -> Vad:
    return Vad(threads=1)


@pytest.fixture(scope="module")
def espeak_recording(tmp_path_factory) -> tuple[np.ndarray, list[tuple[float, float]], list[tuple[float, float]]]:
    """Four espeak sentences at 16 kHz with known silences (a -60 dBFS noise floor): wave, sentences, pauses."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    tmp = tmp_path_factory.mktemp("espeak")
    rng = np.random.default_rng(0)
    parts, sentences, pauses, t = [], [], [], 0.0
    lead = 0.5
    parts.append(rng.normal(0, 1e-3, int(lead * VAD_RATE)).astype(np.float32))
    t = lead
    for k, text in enumerate(SENTENCES):
        wav = tmp / f"s{k}.wav"
        subprocess.run(["espeak-ng", "-v", "en", "-w", str(wav), text], check=True, capture_output=True)
        x, sr = sf.read(wav, dtype="float32")
        x = resample(x, sr, VAD_RATE)
        nz = np.flatnonzero(np.abs(x) > 1e-3)  # trim espeak's own leading/trailing silence
        x = x[nz[0]: nz[-1] + 1]
        parts.append(x + rng.normal(0, 1e-3, x.size).astype(np.float32))
        sentences.append((t, t + x.size / VAD_RATE))
        t += x.size / VAD_RATE
        gap = PAUSES[k] if k < len(PAUSES) else 0.7
        parts.append(rng.normal(0, 1e-3, int(gap * VAD_RATE)).astype(np.float32))
        if k < len(PAUSES):
            pauses.append((t, t + gap))
        t += gap
    return np.concatenate(parts), sentences, pauses


def test_speech_runs_cover_the_sentences(vad, espeak_recording):
    wave, sentences, pauses = espeak_recording
    runs = vad.speech_runs(wave, 0.5, 0.3)
    assert len(runs) == len(sentences)
    for (a, b), (s, e) in zip(runs, sentences):
        assert abs(a - s) <= TOL and abs(b - e) <= TOL
        assert speech_seconds(runs, s, e) >= 0.9 * (e - s)


def test_cuts_fall_in_the_known_pauses(vad, espeak_recording):
    wave, sentences, pauses = espeak_recording
    duration = wave.size / VAD_RATE
    runs = vad.speech_runs(wave, 0.5, 0.3)
    segs, rej = cut_segments(runs, duration, 1.0, 5.0, 0.3, 0.1, 0.5)  # max 5 s: one sentence a clip
    assert rej == [] and len(segs) == len(sentences)
    for seg, (s, e) in zip(segs, sentences):
        assert seg.start_s <= s + TOL and seg.end_s >= e - TOL  # the sentence is inside its clip
    for a, b, (ps, pe) in zip(segs, segs[1:], pauses):
        for t in (a.end_s, b.start_s):
            assert ps - TOL <= t <= pe + TOL


def test_segment_recording_with_defaults(vad, espeak_recording):
    wave, sentences, pauses = espeak_recording
    segs, rej, runs = segment_recording(vad, wave, CurateConfig())
    assert rej == [] and segs and runs
    assert segs[0].start_s <= sentences[0][0] and segs[-1].end_s >= sentences[-1][1] - TOL
    for seg in segs:
        for t in (seg.start_s, seg.end_s):
            at_edge = t == 0.0 or t == pytest.approx(wave.size / VAD_RATE)
            assert at_edge or any(ps - TOL <= t <= pe + TOL for ps, pe in pauses) or t <= sentences[0][0] \
                or t >= sentences[-1][1]


def test_sequence_model_gives_the_streaming_models_probabilities(vad, espeak_recording):
    wave = espeak_recording[0][: VAD_RATE * 4]
    streaming = Vad(sequence=False)
    assert vad.sequence and not streaming.sequence
    np.testing.assert_allclose(vad.probabilities(wave), streaming.probabilities(wave), atol=1e-5)


def test_silence_has_no_speech(vad):
    rng = np.random.default_rng(1)
    assert vad.speech_runs(rng.normal(0, 1e-3, VAD_RATE * 2).astype(np.float32)) == []
    assert vad.speech_runs(np.zeros(0, dtype=np.float32)) == []


# -- the demo recordings (acceptance: boundaries within 0.15 s of the known pauses) --------------------


def test_vad_boundaries_on_demo_recordings(vad):
    truth_file = RECORDINGS / "truth.json"
    if not truth_file.exists():
        pytest.skip("no demo recordings")
    truth = json.loads(truth_file.read_text())
    cfg = CurateConfig()
    checked = 0
    for name, rec in truth["recordings"].items():
        wave = load_audio(RECORDINGS / name, target_sr=VAD_RATE).samples
        duration = wave.size / VAD_RATE
        segs, rej, runs = segment_recording(vad, wave, cfg)
        sentences = rec["sentences"]
        # the silence before the first sentence and after the last count as pauses (the file's edges)
        pauses = [[0.0, sentences[0]["start_s"]], *rec["pauses"], [sentences[-1]["end_s"], duration]]
        # a sentence drowned in noise on purpose (-5 dB SNR, to be rejected by DNSMOS) may be cut inside
        noisy = [(p["start_s"], p["end_s"]) for p in rec["planted"] if p["kind"] == "noisy"]
        starts = [t for t in [s.start_s for s in segs] + [s.start_s for s, _ in rej]
                  if not any(a < t < b for a, b in noisy)]
        ends = [t for t in [s.end_s for s in segs] + [s.end_s for s, _ in rej] if not any(a < t < b for a, b in noisy)]
        assert len(segs) >= len(sentences) - len(noisy)  # a clip per sentence (cut at every pause)
        for t in starts:
            assert any(ps - TOL <= t <= pe + TOL for ps, pe in pauses), (name, "start", t)
        for t in ends:
            assert any(ps - TOL <= t <= pe + TOL for ps, pe in pauses), (name, "end", t)
        checked += len(segs)
    assert checked > 0
