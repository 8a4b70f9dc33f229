"""One recording -> its candidate clips, each measured: the curate stage's unit of work.

:func:`process_recording` decodes a recording once, finds its speech (Silero VAD), cuts it (at subtitle cue
times, else at pauses), places the given text (cues, or a transcript by :mod:`~indextts_core.curate.align`),
writes every candidate clip (resampled once, loudness-normalised, 16-bit FLAC) and measures it: the share of
clipped samples and of non-speech, DNSMOS, the ASR judge's transcript, the sha256 of its PCM.  Nothing is
decided here: which clips are kept is :mod:`~indextts_core.curate.decide`'s job over all recordings (the
judge's reliability and duplicates are only known there), so a changed threshold never reprocesses audio.

:func:`unit_name` names the result by the recording's content and the options that shape the clips
(:data:`UNIT_FIELDS`, the language, the judge), so it is reused by every later run over the same recording.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from indextts_core.config import CurateConfig
from indextts_core.curate.align import place_transcript
from indextts_core.curate.loudness import prepare_clip
from indextts_core.curate.quality import clipped_share, pcm_digest, to_pcm16
from indextts_core.curate.sources import decode_recording, read_text
from indextts_core.curate.subtitles import fit_cues, parse_subtitles
from indextts_core.curate.types import Recording, Rejection, Segment
from indextts_core.curate.vad import INNER_PAUSE_S, Vad, cut_segments, speech_seconds
from indextts_core.data.audio import resample
from indextts_core.evaluation.ctc import CTCTranscriber
from indextts_core.utils.fileio import sha256_file, write_json
from indextts_core.utils.oom import BackoffEvent, run_with_oom_backoff

log = logging.getLogger(__name__)

#: Bumped when the clips or the measurements a unit holds change meaning (units made before are made again).
STAGE_VERSION = "1"
#: The options that shape a unit's clips (thresholds are applied later, to the measurements: not here).
UNIT_FIELDS = ("min_duration_s", "max_duration_s", "min_pause_s", "head_s", "tail_s", "vad_threshold",
               "sample_rate", "loudness_lufs")
#: Rejected segments per reason and recording whose audio is kept for the report's listening page.
LISTEN_PER_REASON = 5
SAMPLE_RATE_16K = 16000


def unit_options(cfg: CurateConfig, language: str, judge: str | None, dnsmos: bool) -> dict[str, Any]:
    """What a unit's content depends on besides the recording: the stage version, the clip-shaping options,
    the language, the judge (its content digest: a new ASR model re-transcribes) and whether DNSMOS runs."""
    return {"version": STAGE_VERSION, "language": language, "judge": judge, "dnsmos": dnsmos,
            **{name: getattr(cfg, name) for name in UNIT_FIELDS}}


def unit_name(recording: Recording, options: dict[str, Any]) -> str:
    """``<options id>/<recording digest>``: the unit of ``recording`` made with ``options``."""
    opts = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]
    return f"{opts}/{recording.digest[:32]}"


def clip_prefix(recording: Recording) -> str:
    """The clip id prefix of a recording: its name without the extension, made safe for file names."""
    stem = recording.name.rsplit(".", 1)[0]
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", stem).strip("_") or "recording"


class Tools:
    """The models processing needs, loaded once and shared by the worker threads.

    ``transcriber``: the ASR judge (Whisper or CTC; None: no transcripts, no alignment); ``naturalness``: the
    DNSMOS scorer (None: no DNSMOS).  The VAD keeps state between calls, so each thread gets its own.
    """

    def __init__(self, transcriber: Any | None = None, naturalness: Any | None = None,
                 vad_factory: Callable[[], Vad] = Vad, asr_batch_size: int = 8,
                 on_backoff: Callable[[BackoffEvent], None] | None = None):
        self.transcriber, self.naturalness = transcriber, naturalness
        self._vad_factory, self._local = vad_factory, threading.local()
        self.asr_batch_size, self.on_backoff = asr_batch_size, on_backoff
        self._asr_lock = threading.Lock()  # one transcription at a time: the model is shared

    def vad(self) -> Vad:
        vad = getattr(self._local, "vad", None)
        if vad is None:
            vad = self._local.vad = self._vad_factory()
        return vad

    @property
    def can_align(self) -> bool:
        return isinstance(self.transcriber, CTCTranscriber)

    def transcribe(self, waves: Sequence[np.ndarray], language: str) -> list[str]:
        """Transcripts of 16 kHz clips, in batches that halve on GPU out-of-memory errors."""
        if self.transcriber is None or not waves:
            return []
        out: list[str] = []
        batch = self.asr_batch_size
        with self._asr_lock:
            while len(out) < len(waves):
                start = len(out)

                def step(size: int, start: int = start) -> list[str]:
                    return self.transcriber.transcribe(list(waves[start:start + size]), language)

                texts, batch = run_with_oom_backoff(step, batch, on_backoff=self.on_backoff)
                out.extend(texts)
        return out


@dataclass
class _Timer:
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, step: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[step] = round(self.seconds.get(step, 0.0) + now - since, 4)
        return now


def _segments(recording: Recording, cfg: CurateConfig, language: str, tools: Tools, wave16: np.ndarray,
              runs: list[tuple[float, float]], duration_s: float, storage: Any
              ) -> tuple[list[Segment], list[tuple[Segment, Rejection]], dict[str, Any]]:
    """The candidate segments of a recording and the text placed on them, by the recording's method."""
    if recording.subtitles:
        cues = parse_subtitles(read_text(recording.subtitles, storage), recording.subtitles)
        segments, rejected = fit_cues(cues, cfg.min_duration_s, cfg.max_duration_s)
        return segments, rejected, {"method": "subtitles", "placement": {"cues": len(cues)}}
    segments, rejected = cut_segments(runs, duration_s, cfg.min_duration_s, cfg.max_duration_s, cfg.min_pause_s,
                                      cfg.head_s, cfg.tail_s)
    if not recording.transcript:
        return segments, rejected, {"method": "asr"}
    text = read_text(recording.transcript, storage)
    placed, more, info = place_transcript(segments, text, recording.transcript,
                                          transcriber=tools.transcriber if tools.can_align else None,
                                          wave_16k=wave16, language=language, max_s=cfg.max_duration_s)
    return placed, rejected + more, {"method": "transcript", "placement": info}


def _write_clip(path: Path, samples: np.ndarray, sample_rate: int) -> tuple[str, str]:
    """Write 16-bit FLAC; the sha256 of the PCM written (:func:`pcm_digest`) and of the file."""
    pcm = to_pcm16(np.clip(samples, -1.0, 1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, pcm, sample_rate, format="FLAC", subtype="PCM_16")
    return pcm_digest(pcm), sha256_file(path)


def process_recording(recording: Recording, cfg: CurateConfig, language: str, tools: Tools, work: Path,
                      storage: Any = None) -> dict[str, Any]:
    """Cut and measure ``recording``; write its clips under ``work/clips/`` and return the unit record.

    The record (also written as ``work/unit.json``) lists every candidate clip with its measurements and
    every segment rejected while cutting, with its reason and numbers.
    """
    timer, t = _Timer(), time.perf_counter()
    wave = decode_recording(recording, storage)
    wave16 = resample(wave.samples, wave.sample_rate, SAMPLE_RATE_16K)
    duration_s = len(wave.samples) / wave.sample_rate
    t = timer.add("decode", t)
    # bridged only below 0.1 s, so a stretch longer than max_duration_s can be cut at its longest inner pause
    runs = tools.vad().speech_runs(wave16, cfg.vad_threshold, min(INNER_PAUSE_S, cfg.min_pause_s))
    t = timer.add("vad", t)
    segments, cut_rejects, placement = _segments(recording, cfg, language, tools, wave16, runs, duration_s, storage)
    t = timer.add("segment", t)

    prefix, clips, waves16 = clip_prefix(recording), [], []
    for i, seg in enumerate(segments):
        a, b = int(round(seg.start_s * wave.sample_rate)), int(round(seg.end_s * wave.sample_rate))
        raw = wave.samples[a:b]
        out, loudness = prepare_clip(raw, wave.sample_rate, cfg.sample_rate, cfg.loudness_lufs)
        clip_id = f"{prefix}_{i:04d}"
        pcm_sha, file_sha = _write_clip(work / "clips" / f"{clip_id}.flac", out, cfg.sample_rate)
        gain = 10.0 ** (float(loudness.get("gain_db") or 0.0) / 20.0)
        waves16.append(wave16[int(seg.start_s * SAMPLE_RATE_16K):int(seg.end_s * SAMPLE_RATE_16K)] * gain)
        clips.append({
            "id": clip_id, "file": f"clips/{clip_id}.flac", "sha256": file_sha, "pcm_sha256": pcm_sha,
            "start_s": round(seg.start_s, 3), "end_s": round(seg.end_s, 3),
            "duration": round(len(out) / cfg.sample_rate, 3),
            "text_given": seg.text, "speech_s": round(speech_seconds(runs, seg.start_s, seg.end_s), 3),
            "clipped": clipped_share(raw), "loudness": loudness,
        })
    t = timer.add("write", t)
    for clip, text in zip(clips, tools.transcribe(waves16, language)):
        clip["transcript"] = text
    t = timer.add("asr", t)
    if tools.naturalness is not None:
        for clip, w in zip(clips, waves16):
            clip["dnsmos"] = tools.naturalness.score(w)["dnsmos_ovrl"] if len(w) else None
    t = timer.add("dnsmos", t)

    rejected, kept_audio = [], {}
    for seg, rejection in cut_rejects:
        row = {"start_s": round(seg.start_s, 3), "end_s": round(seg.end_s, 3), "duration": round(seg.duration_s, 3),
               "text_given": seg.text, "reason": rejection.reason, "detail": rejection.detail,
               "numbers": rejection.numbers}
        n = kept_audio.get(rejection.reason, 0)
        if 0.2 <= seg.duration_s <= 60.0 and n < LISTEN_PER_REASON:
            a, b = int(round(seg.start_s * wave.sample_rate)), int(round(seg.end_s * wave.sample_rate))
            out, _ = prepare_clip(wave.samples[a:b], wave.sample_rate, cfg.sample_rate, cfg.loudness_lufs)
            name = f"rejected/{prefix}_{rejection.reason}_{n}.flac"
            _, row["sha256"] = _write_clip(work / name, out, cfg.sample_rate)
            row["file"], kept_audio[rejection.reason] = name, n + 1
        rejected.append(row)
    timer.add("write", t)

    record = {
        "recording": recording.name, "digest": recording.digest, "speaker": recording.speaker,
        "method": placement["method"], "placement": placement.get("placement", {}), "language": language,
        "duration_s": round(duration_s, 3), "source_sample_rate": wave.sample_rate,
        "speech_s": round(sum(e - s for s, e in runs), 3), "sample_rate": cfg.sample_rate,
        "clips": clips, "rejected": rejected, "seconds": timer.seconds,
    }
    write_json(work / "unit.json", record)
    return record

