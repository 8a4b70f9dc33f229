"""Voice activity (Silero VAD, its ONNX model run offline) and the cuts that turn speech runs into clips.

* :class:`Vad` loads an ONNX model that ships in the ``silero-vad`` wheel once and runs it over a
  16 kHz mono waveform, 512 samples (32 ms) a frame, carrying the model's recurrent state (by default
  the wheel's sequence model, 512 frames a call, same probabilities as one frame a call); frames are
  turned into speech runs with the package's hysteresis (enter at ``threshold``, leave below
  ``threshold - 0.15``), pauses shorter than ``min_pause_s`` are bridged and blips under 0.1 s dropped.
  No padding is added there: :func:`cut_segments` pads.
* :func:`cut_segments` cuts clips at every pause of at least ``min_pause_s`` (sentence-sized clips), at
  most ``max_s`` long including the head and tail padding; clips shorter than ``min_s`` are merged into a
  neighbour when that fits, else rejected ``too_short``.  A stretch of speech with no such pause that is
  longer than ``max_s`` is split at its longest inner (shorter) pause, recursively; that is why
  :func:`segment_recording` asks the VAD for runs bridged only below 0.1 s and lets :func:`cut_segments`
  do the ``min_pause_s`` grouping.  Speech with no pause at all longer than ``max_s`` is rejected
  ``too_long``.
* :func:`speech_seconds` measures how much of a window is speech (the silence share of a clip cut by
  subtitle times).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from indextts_core.config import CurateConfig
from indextts_core.curate.types import Rejection, Segment

VAD_RATE = 16000
FRAME = 512  # samples per model call at 16 kHz (32 ms)
_CONTEXT = 64  # samples of the previous frame the model sees before each frame
FRAME_S = FRAME / VAD_RATE
MIN_RUN_S = 0.1  # speech runs shorter than this (after bridging) are dropped as blips
INNER_PAUSE_S = 0.1  # segment_recording bridges only pauses shorter than this; cut_segments does the rest
_EXIT_MARGIN = 0.15  # leave speech below threshold - this (Silero's own hysteresis)

Run = tuple[float, float]


SEQUENCE_FRAMES = 512  # frames per call of the sequence model (16.4 s)


def model_path(sequence: bool = True) -> Path:
    """A Silero VAD ONNX model inside the installed ``silero-vad`` package (no download).

    ``sequence``: the model that takes a block of frames per call (same probabilities as the
    frame-by-frame model, far fewer calls); else the streaming one-frame-a-call model.
    """
    name = "silero_vad_16k_sequence.onnx" if sequence else "silero_vad.onnx"
    return Path(str(resources.files("silero_vad.data").joinpath(name)))


class Vad:
    """The Silero VAD model, loaded once; :meth:`speech_runs` may be called from several threads.

    ``threads``: onnxruntime intra-op threads (the model is small; run recordings in parallel rather
    than giving one many threads); ``sequence``: use the packaged block-of-frames model (default) or
    the streaming one; ``model``: another Silero ONNX file of either kind (overrides ``sequence``).
    """

    def __init__(self, threads: int = 1, sequence: bool = True, model: str | Path | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.path = Path(model) if model is not None else model_path(sequence)
        self._session = ort.InferenceSession(str(self.path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.sequence = {i.name for i in self._session.get_inputs()} >= {"input", "h", "c"}

    def probabilities(self, wave_16k: np.ndarray) -> np.ndarray:
        """Speech probability of each 32 ms frame (the last frame zero-padded); float32, one per frame."""
        wave = np.asarray(wave_16k, dtype=np.float32).reshape(-1)
        n = -(-wave.size // FRAME)
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        padded = np.zeros(_CONTEXT + n * FRAME, dtype=np.float32)
        padded[_CONTEXT:_CONTEXT + wave.size] = wave
        # frame i sees the 64 samples before it (zeros for the first) then its own 512
        windows = np.lib.stride_tricks.sliding_window_view(padded, FRAME + _CONTEXT)[::FRAME]
        out = np.empty(n, dtype=np.float32)
        run = self._session.run
        if self.sequence:
            h = np.zeros((1, 1, 128), dtype=np.float32)
            c = np.zeros((1, 1, 128), dtype=np.float32)
            for i in range(0, n, SEQUENCE_FRAMES):
                block = np.ascontiguousarray(windows[i:i + SEQUENCE_FRAMES])
                probs, h, c = run(None, {"input": block, "h": h, "c": c})
                out[i:i + block.shape[0]] = np.asarray(probs).reshape(-1)
            return out
        state = np.zeros((2, 1, 128), dtype=np.float32)
        sr = np.array(VAD_RATE, dtype=np.int64)
        for i in range(n):
            prob, state = run(None, {"input": windows[i][None, :], "state": state, "sr": sr})
            out[i] = prob[0, 0]
        return out

    def speech_runs(
        self, wave_16k: np.ndarray, threshold: float = 0.5, min_pause_s: float = 0.3, min_run_s: float = MIN_RUN_S
    ) -> list[Run]:
        """Speech intervals ``(start_s, end_s)`` of a 16 kHz mono waveform, sorted, unpadded.

        Pauses shorter than ``min_pause_s`` are bridged; runs shorter than ``min_run_s`` (after
        bridging) are dropped.  Times are frame edges (32 ms resolution), ends capped at the duration.
        """
        wave = np.asarray(wave_16k, dtype=np.float32).reshape(-1)
        return runs_from_probabilities(
            self.probabilities(wave), wave.size / VAD_RATE, threshold, min_pause_s, min_run_s
        )


def runs_from_probabilities(
    probs: np.ndarray, duration_s: float, threshold: float, min_pause_s: float, min_run_s: float = MIN_RUN_S
) -> list[Run]:
    """Frame probabilities -> speech runs in seconds (hysteresis, pauses bridged, blips dropped)."""
    exit_below = max(threshold - _EXIT_MARGIN, 0.01)
    frames: list[list[int]] = []
    start: int | None = None
    for i, p in enumerate(np.asarray(probs, dtype=np.float32).tolist()):
        if start is None:
            if p >= threshold:
                start = i
        elif p < exit_below:
            frames.append([start, i])
            start = None
    if start is not None:
        frames.append([start, len(probs)])
    runs = [(a * FRAME_S, min(b * FRAME_S, duration_s)) for a, b in frames]
    return [r for r in bridge(runs, min_pause_s) if r[1] - r[0] >= min_run_s - 1e-9]


def bridge(runs: list[Run], min_pause_s: float) -> list[Run]:
    """Sort runs and join those separated by less than ``min_pause_s`` (overlaps included)."""
    out: list[list[float]] = []
    for a, b in sorted((float(a), float(b)) for a, b in runs if b > a):
        if out and a - out[-1][1] < min_pause_s - 1e-9:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def speech_seconds(runs: list[Run], start_s: float, end_s: float) -> float:
    """Seconds of ``runs`` (assumed not to overlap each other) inside the window ``[start_s, end_s]``."""
    return float(sum(max(0.0, min(b, end_s) - max(a, start_s)) for a, b in runs))


@dataclass(frozen=True)
class _Block:
    """Speech with no pause of ``min_pause_s`` inside: the unit clips are made of."""

    runs: tuple[Run, ...]

    @property
    def start(self) -> float:
        return self.runs[0][0]

    @property
    def end(self) -> float:
        return self.runs[-1][1]

    @property
    def speech(self) -> float:
        return sum(b - a for a, b in self.runs)


def _split_long(block: _Block, too_long) -> list[_Block]:
    """Split a block that ``too_long`` at its longest inner pause, recursively; a block without one stays."""
    if len(block.runs) < 2 or not too_long(block):
        return [block]
    gaps = [block.runs[k + 1][0] - block.runs[k][1] for k in range(len(block.runs) - 1)]
    k = int(np.argmax(gaps))  # first of equal longest: deterministic
    left, right = _Block(block.runs[: k + 1]), _Block(block.runs[k + 1:])
    return _split_long(left, too_long) + _split_long(right, too_long)


def cut_segments(
    runs: list[Run],
    duration_s: float,
    min_s: float,
    max_s: float,
    min_pause_s: float,
    head_s: float,
    tail_s: float,
) -> tuple[list[Segment], list[tuple[Segment, Rejection]]]:
    """Group speech runs into clips; returns ``(segments, rejections)``, both in time order.

    * Runs closer than ``min_pause_s`` stay together (a block); clips are cut only between blocks.
    * A clip spans ``max(first start - head_s, middle of the pause before, 0)`` to
      ``min(last end + tail_s, middle of the pause after, duration_s)`` and holds at most ``max_s``.
    * The blocks are partitioned so that, in order: the fewest clips are rejected, there are the
      most clips (a cut at every pause of at least ``min_pause_s``: sentence-sized clips, each
      holding whole stretches of speech, so text placed on them by count or alignment lines up with
      the pauses a reader makes), and the cuts
      fall at the longest pauses.  A clip under ``min_s`` is thereby merged into a neighbour whenever
      that fits; when it cannot be it is rejected ``too_short``.
    * A block whose own clip exceeds ``max_s`` is split at its longest inner pause (one shorter than
      ``min_pause_s``), recursively; a single run whose speech is longer than ``max_s`` is rejected
      ``too_long``; a single run that fits only without its full padding keeps it trimmed, head first.
    * ``Segment.speech_s``: seconds of runs inside the clip; ``text`` None.  Deterministic.
    """
    clipped = [(max(0.0, a), min(duration_s, b)) for a, b in runs]
    fine = bridge([r for r in clipped if r[1] > r[0]], 1e-9)
    blocks = [_Block(tuple(g)) for g in _group(fine, min_pause_s)]

    def extent(i: int, j: int, bl: list[_Block]) -> tuple[float, float]:
        start = bl[i].start - head_s
        if i > 0:
            start = max(start, (bl[i - 1].end + bl[i].start) / 2)
        end = bl[j].end + tail_s
        if j + 1 < len(bl):
            end = min(end, (bl[j].end + bl[j + 1].start) / 2)
        return max(start, 0.0), min(end, duration_s)

    # split blocks whose clip alone would be too long, at their longest inner pauses
    split: list[_Block] = []
    for k, block in enumerate(blocks):
        def too_long(b: _Block, k: int = k) -> bool:
            s = max(b.start - head_s, (blocks[k - 1].end + blocks[k].start) / 2 if k else 0.0, 0.0)
            e = min(b.end + tail_s, (blocks[k].end + blocks[k + 1].start) / 2 if k + 1 < len(blocks) else duration_s,
                    duration_s)
            return e - s > max_s + 1e-9

        split.extend(_split_long(block, too_long))
    blocks = split
    n = len(blocks)
    if n == 0:
        return [], []

    # best[j]: cost of cutting blocks[:j] into clips; cost = (rejected, clips, -sum of cut pauses)
    inf = (float("inf"), 0.0, 0.0)
    best: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)] + [inf] * n
    prev = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j - 1, -1, -1):
            s, e = extent(i, j - 1, blocks)
            single = i == j - 1
            if e - s > max_s + 1e-9 and not single:
                break  # extents only grow as i decreases
            bad = (blocks[i].end - blocks[i].start > max_s + 1e-9) if single else False
            bad = bad or (e - s < min_s - 1e-9)
            pause = blocks[i].start - blocks[i - 1].end if i > 0 else 0.0
            b = best[i]
            cost = (b[0] + bad, b[1] - 1, b[2] - pause)
            if cost < best[j]:
                best[j], prev[j] = cost, i
    groups: list[tuple[int, int]] = []
    j = n
    while j > 0:
        groups.append((prev[j], j - 1))
        j = prev[j]
    groups.reverse()

    segments: list[Segment] = []
    rejected: list[tuple[Segment, Rejection]] = []
    for i, j in groups:
        s, e = extent(i, j, blocks)
        speech = round(sum(blocks[k].speech for k in range(i, j + 1)), 3)
        span = blocks[j].end - blocks[i].start
        if i == j and e - s > max_s + 1e-9 and span <= max_s + 1e-9:
            excess = e - s - max_s  # trim the padding to fit, head first
            cut_head = min(excess, blocks[i].start - s)
            s, e = s + cut_head, e - (excess - cut_head)
        seg = Segment(round(s, 3), round(e, 3), None, speech)
        if span > max_s + 1e-9:
            rejected.append((seg, Rejection(
                "too_long", f"{span:.2f} s of speech with no pause to cut at, above max_duration_s {max_s:g}",
                {"duration_s": round(e - s, 3), "speech_s": speech, "max_s": max_s})))
        elif e - s < min_s - 1e-9:
            rejected.append((seg, Rejection(
                "too_short", f"{e - s:.2f} s, below min_duration_s {min_s:g}, and no neighbour it fits with",
                {"duration_s": round(e - s, 3), "speech_s": speech, "min_s": min_s})))
        else:
            segments.append(seg)
    return segments, rejected


def _group(runs: list[Run], min_pause_s: float) -> list[list[Run]]:
    """Sorted runs -> lists of runs separated by pauses shorter than ``min_pause_s``."""
    groups: list[list[Run]] = []
    for r in runs:
        if groups and r[0] - groups[-1][-1][1] < min_pause_s - 1e-9:
            groups[-1].append(r)
        else:
            groups.append([r])
    return groups


def segment_recording(
    vad: Vad, wave_16k: np.ndarray, cfg: CurateConfig
) -> tuple[list[Segment], list[tuple[Segment, Rejection]], list[Run]]:
    """VAD then :func:`cut_segments` with the config's limits: ``(segments, rejections, runs)``.

    The runs are bridged only below ``min(INNER_PAUSE_S, cfg.min_pause_s)`` so that a stretch longer
    than ``max_duration_s`` can still be cut at its longest inner pause; they are also what
    :func:`speech_seconds` should be given.
    """
    wave = np.asarray(wave_16k, dtype=np.float32).reshape(-1)
    runs = vad.speech_runs(wave, cfg.vad_threshold, min(INNER_PAUSE_S, cfg.min_pause_s))
    segments, rejected = cut_segments(
        runs, wave.size / VAD_RATE, cfg.min_duration_s, cfg.max_duration_s, cfg.min_pause_s, cfg.head_s, cfg.tail_s
    )
    return segments, rejected, runs
