"""What the curate steps pass to each other: a recording, a segment of it, a rejection."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Recording:
    """One long recording and the sidecar files paired with it by name.

    ``name``: its path relative to the source it was found in (``book/ch01.flac``), unique in a run;
    ``uri``: a local path or ``s3://`` URI; the sidecars likewise (None when absent); ``digest``: the
    sha256 of the audio bytes and the sidecars' bytes, so an edited subtitle file is new content.
    """

    name: str
    uri: str
    speaker: str
    digest: str
    size: int
    subtitles: str | None = None  # .srt or .vtt
    transcript: str | None = None  # .txt: the whole recording's text
    sidecar: str | None = None  # .json: fields about the recording (speaker, ...)

    @property
    def method(self) -> str:
        """Where its clips' text comes from: ``subtitles``, ``transcript`` or ``asr``."""
        return "subtitles" if self.subtitles else "transcript" if self.transcript else "asr"


@dataclass(frozen=True)
class Segment:
    """A stretch of a recording that may become a clip: times in seconds from its start.

    ``text``: the given text (a subtitle cue, transcript sentences), None where the ASR must supply it;
    ``speech_s``: seconds of detected speech inside it (None when not measured).
    """

    start_s: float
    end_s: float
    text: str | None = None
    speech_s: float | None = None

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Rejection:
    """Why a segment (or a whole recording) is not in the dataset: a reason code, words, the numbers."""

    reason: str  # too_short, too_long, clipping, silence, dnsmos, cer, script, duplicate, near_duplicate, ...
    detail: str
    numbers: dict[str, Any] = field(default_factory=dict)
