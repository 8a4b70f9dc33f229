"""Subtitles (SRT, WebVTT) -> cues -> segments within the clip duration limits.

:func:`parse_subtitles` reads the cues of a ``.srt`` or ``.vtt`` file: their times and their text with
the markup stripped (HTML-like tags, VTT voice/class/timestamp tags, ASS ``{\\an8}`` overrides), entities
unescaped and whitespace collapsed.  Cues left with no text are dropped; a caller that wants to count
them passes a ``dropped`` list, which receives them (their ``text`` empty), and they are logged at
debug level.  A malformed timing line, or a cue that ends at or before its start, raises
:class:`~indextts_core.errors.InputError` naming the file and line.

:func:`fit_cues` turns cues into :class:`~indextts_core.curate.types.Segment` s: overlaps removed,
short neighbours merged, long cues split at sentence ends, and what still does not fit rejected with
its reason (``overlap``, ``too_short``, ``too_long``) and numbers.
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from indextts_core.curate.sentences import split_sentences
from indextts_core.curate.types import Rejection, Segment
from indextts_core.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cue:
    """One subtitle cue: its position in the file (1-based), times in seconds, clean text, and the line
    number of its timing line."""

    index: int
    start_s: float
    end_s: float
    text: str
    line: int


_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{1,2})[,.](\d{1,3})"
_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}(?:\s+.*)?$")
# A line that tries to be a timing line but is not one (a wrong arrow, missing milliseconds, ...).
_TIMING_LIKE = re.compile(r"^\s*\d+:[\d:,.]+\s*(?:-+>?|=>|—|–)\s*\d+:[\d:,.]*\s*$")
_TAG = re.compile(r"<(?:/?[A-Za-z][^<>]*|/?\d[\d:.]*)>")
_ASS_OVERRIDE = re.compile(r"\{\\[^{}]*\}")
_ASS_BREAK = re.compile(r"\\[Nnh]")
_VTT_SKIPPED = re.compile(r"^(?:NOTE|STYLE|REGION)(?:\s|$)")


def clean_cue_text(lines: list[str]) -> str:
    """A cue's text lines as one clean line: markup stripped, entities unescaped, whitespace collapsed."""
    text = " ".join(lines)
    text = _ASS_OVERRIDE.sub("", text)
    text = _ASS_BREAK.sub(" ", text)
    text = _TAG.sub("", text)
    text = html.unescape(text)
    return " ".join(text.split())


def _seconds(groups: tuple[str | None, ...], where: str) -> float:
    hours, minutes, seconds, fraction = (g or "0" for g in groups)
    if int(minutes) >= 60 or int(seconds) >= 60:
        raise InputError(f"{where}: minutes and seconds must be below 60")
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds) + int(fraction) / 10 ** len(fraction)


def _is_vtt(lines: list[str], name: str) -> bool:
    first = next((ln for ln in lines if ln.strip()), "")
    return first.lstrip("\ufeff").startswith("WEBVTT") or PurePosixPath(name).suffix.lower() == ".vtt"


def _blocks(lines: list[str]) -> list[list[tuple[int, str]]]:
    """Runs of non-blank lines, each line with its 1-based number."""
    blocks: list[list[tuple[int, str]]] = []
    current: list[tuple[int, str]] = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            current.append((number, line.rstrip()))
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


@dataclass
class _RawCue:
    start_s: float
    end_s: float
    line: int
    text: list[str] = field(default_factory=list)


def parse_subtitles(text: str, name: str, dropped: list[Cue] | None = None) -> list[Cue]:
    """The cues of an SRT or WebVTT file's text, sorted by start time.

    WebVTT is recognised by its ``WEBVTT`` header or a ``.vtt`` name; its ``NOTE``, ``STYLE`` and
    ``REGION`` blocks are skipped and cue settings after the times ignored.  Times are
    ``HH:MM:SS,mmm``, ``HH:MM:SS.mmm`` or ``MM:SS.mmm``.  A block without a timing line continues the
    previous cue's text (a blank line inside a cue).  ``Cue.index`` is the cue's position in the file
    (1-based, dropped cues counted), not the number an SRT file writes.  Cues with no text left after
    cleaning go to ``dropped`` (when given) instead of the result.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").removeprefix("\ufeff").split("\n")
    vtt = _is_vtt(lines, name)
    raw: list[_RawCue] = []
    for b, block in enumerate(_blocks(lines)):
        first_no, first = block[0]
        if vtt and ((b == 0 and first.startswith("WEBVTT")) or _VTT_SKIPPED.match(first)):
            continue
        timing_at = [i for i, (_, ln) in enumerate(block) if "-->" in ln]
        if not timing_at:
            bad = next(((no, ln) for no, ln in block if _TIMING_LIKE.match(ln)), None)
            if bad is not None:
                raise InputError(f"{name}:{bad[0]}: malformed timing line {bad[1].strip()!r} "
                                 "(expected 'HH:MM:SS,mmm --> HH:MM:SS,mmm')")
            if len(block) >= 2 and block[0][1].strip().isdigit():
                raise InputError(f"{name}:{block[1][0]}: expected the timing line of cue {block[0][1].strip()}, "
                                 f"got {block[1][1].strip()!r}")
            if not raw:
                raise InputError(f"{name}:{first_no}: expected a cue (a 'start --> end' timing line), "
                                 f"got {first.strip()!r}")
            raw[-1].text += [ln for _, ln in block]
            continue
        before = [ln for _, ln in block[:timing_at[0]]]
        if before and (vtt or before[-1].strip().isdigit()):
            before.pop()  # the cue's number (SRT) or identifier (WebVTT)
        if before:  # the previous cue's text went on after a blank line
            if not raw:
                raise InputError(f"{name}:{first_no}: expected a cue (a 'start --> end' timing line), "
                                 f"got {first.strip()!r}")
            raw[-1].text += before
        for i, (no, ln) in enumerate(block[timing_at[0]:], timing_at[0]):
            if "-->" not in ln:
                raw[-1].text.append(ln)
                continue
            m = _TIMING.match(ln)
            if m is None:
                raise InputError(f"{name}:{no}: malformed timing line {ln.strip()!r} "
                                 "(expected 'HH:MM:SS,mmm --> HH:MM:SS,mmm')")
            where = f"{name}:{no}"
            start, end = _seconds(m.groups()[:4], where), _seconds(m.groups()[4:], where)
            if end <= start:
                raise InputError(f"{where}: the cue ends ({end:.3f} s) at or before its start ({start:.3f} s)")
            if i > timing_at[0] and raw[-1].text and raw[-1].text[-1].strip().isdigit():
                raw[-1].text.pop()  # the next cue's number, when the blank line before it is missing
            raw.append(_RawCue(start, end, no))
    cues: list[Cue] = []
    for index, rc in enumerate(raw, 1):
        cue = Cue(index, rc.start_s, rc.end_s, clean_cue_text(rc.text), rc.line)
        if cue.text:
            cues.append(cue)
        elif dropped is not None:
            dropped.append(cue)
    if len(cues) < len(raw):
        log.debug("%s: %d cue(s) without text dropped", name, len(raw) - len(cues))
    return sorted(cues, key=lambda c: (c.start_s, c.end_s, c.index))


# ---------------------------------------------------------------------------------------------- fitting

#: Where a sentence ends: Latin/Ethiopic/CJK full stops, question and exclamation marks.  The ASCII ones


@dataclass
class _Piece:
    start_s: float
    end_s: float
    text: str
    cues: list[Cue]

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def segment(self) -> Segment:
        return Segment(round(self.start_s, 3), round(self.end_s, 3), self.text, None)

    def numbers(self, **extra: object) -> dict[str, object]:
        return {"duration_s": round(self.duration_s, 3), "start_s": round(self.start_s, 3),
                "end_s": round(self.end_s, 3), "cues": [c.index for c in self.cues],
                "lines": [c.line for c in self.cues], **extra}

    def label(self) -> str:
        if len(self.cues) == 1:
            return f"cue {self.cues[0].index} (line {self.cues[0].line})"
        return f"cues {self.cues[0].index}-{self.cues[-1].index} (lines {self.cues[0].line}-{self.cues[-1].line})"


def fit_cues(cues: list[Cue], min_s: float, max_s: float,
             max_gap_s: float = 1.0) -> tuple[list[Segment], list[tuple[Segment, Rejection]]]:
    """Cues -> segments of ``min_s``..``max_s`` seconds, and the rejected parts with their reasons.

    1. Overlaps: a cue that starts before the previous one ends cuts the previous one's end to its
       start; a cue inside another (or starting with it and ending sooner) is rejected ``overlap``.
    2. A segment shorter than ``min_s`` is merged with the following one, else the preceding one, when
       the gap between them is at most ``max_gap_s`` and the merged segment at most ``max_s`` (texts
       joined with a space; repeated while it is still short).
    3. A segment longer than ``max_s`` is split at sentence ends, each sentence's time proportional to
       its characters; the cut points are chosen to reject the least audio, then to make the fewest and
       most even pieces.  A piece still longer than ``max_s`` (one long sentence) is rejected ``too_long``.
    4. What is still shorter than ``min_s`` is rejected ``too_short``.

    Segments carry ``text`` and ``speech_s=None``; times are rounded to milliseconds.  Both lists are
    sorted by start time.
    """
    if not 0 < min_s < max_s or max_gap_s < 0:
        raise ValueError(f"fit_cues: need 0 < min_s < max_s and max_gap_s >= 0 (got {min_s}, {max_s}, {max_gap_s})")
    rejected: list[tuple[Segment, Rejection]] = []
    pieces = _remove_overlaps(sorted(cues, key=lambda c: (c.start_s, c.end_s, c.index)), rejected)
    pieces = _merge_short(pieces, min_s, max_s, max_gap_s)
    kept: list[Segment] = []
    for piece in pieces:
        for part in _split_long(piece, min_s, max_s) if piece.duration_s > max_s else [piece]:
            if part.duration_s > max_s + 1e-9:
                rejected.append((part.segment(), Rejection(
                    "too_long", f"{part.label()} lasts {part.duration_s:.2f} s, above max_duration_s {max_s:g}, "
                    "with no sentence end to split it at", part.numbers(max_s=max_s))))
            elif part.duration_s < min_s - 1e-9:
                rejected.append((part.segment(), Rejection(
                    "too_short", f"{part.label()} lasts {part.duration_s:.2f} s, below min_duration_s {min_s:g}, "
                    f"and no neighbour within {max_gap_s:g} s could take it", part.numbers(min_s=min_s))))
            else:
                kept.append(part.segment())
    rejected.sort(key=lambda r: (r[0].start_s, r[0].end_s))
    return kept, rejected


def _remove_overlaps(cues: list[Cue], rejected: list[tuple[Segment, Rejection]]) -> list[_Piece]:
    pieces: list[_Piece] = []
    for cue in cues:
        piece = _Piece(cue.start_s, cue.end_s, cue.text, [cue])
        prev = pieces[-1] if pieces else None
        if prev is None or cue.start_s >= prev.end_s:
            pieces.append(piece)
            continue
        if cue.end_s <= prev.end_s:  # inside the previous one
            inner, outer = piece, prev
        elif cue.start_s <= prev.start_s:  # starts with it and outlasts it: the previous one is inside
            inner, outer = prev, piece
            pieces[-1] = piece
        else:
            prev.end_s = cue.start_s
            pieces.append(piece)
            continue
        rejected.append((inner.segment(), Rejection(
            "overlap", f"{inner.label()} lies inside {outer.label()}",
            inner.numbers(inside_cue=outer.cues[0].index, inside_line=outer.cues[0].line))))
    return pieces


def _merge(a: _Piece, b: _Piece) -> _Piece:
    return _Piece(a.start_s, b.end_s, f"{a.text} {b.text}", a.cues + b.cues)


def _merge_short(pieces: list[_Piece], min_s: float, max_s: float, max_gap_s: float) -> list[_Piece]:
    def fits(a: _Piece, b: _Piece) -> bool:
        return b.start_s - a.end_s <= max_gap_s + 1e-9 and b.end_s - a.start_s <= max_s + 1e-9

    out: list[_Piece] = []
    i = 0
    while i < len(pieces):
        cur = pieces[i]
        i += 1
        while cur.duration_s < min_s and i < len(pieces) and fits(cur, pieces[i]):
            cur = _merge(cur, pieces[i])
            i += 1
        if cur.duration_s < min_s and out and fits(out[-1], cur):
            out[-1] = _merge(out[-1], cur)
        else:
            out.append(cur)
    return out


def _split_long(piece: _Piece, min_s: float, max_s: float) -> list[_Piece]:
    """``piece`` cut at sentence ends into the pieces that reject the least audio, fewest and most even."""
    sentences = split_sentences(piece.text)
    if len(sentences) < 2:
        return [piece]
    total = sum(len(s) for s in sentences)
    bounds = [piece.start_s]
    for s in sentences:
        bounds.append(bounds[-1] + piece.duration_s * len(s) / total)
    bounds[-1] = piece.end_s
    n = len(sentences)
    # best[j]: (rejected seconds, pieces, sum of squared durations) of the best cut of sentences[:j]
    best: list[tuple[float, int, float] | None] = [(0.0, 0, 0.0)] + [None] * n
    back = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            prior = best[i]
            assert prior is not None
            d = bounds[j] - bounds[i]
            lost = d if d > max_s + 1e-9 or d < min_s - 1e-9 else 0.0
            cost = (round(prior[0] + lost, 6), prior[1] + 1, prior[2] + d * d)
            if best[j] is None or cost < best[j]:  # type: ignore[operator]
                best[j], back[j] = cost, i
    cuts, j = [], n
    while j > 0:
        cuts.append((back[j], j))
        j = back[j]
    return [_Piece(bounds[i], bounds[j], " ".join(sentences[i:j]), piece.cues) for i, j in reversed(cuts)]
