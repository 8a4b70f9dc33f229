"""Manifest schema and readers.

A manifest line (JSONL) describes one clip::

    {"id": "spk01_am_001", "audio": "audio/spk01_am_001.flac", "text": "ሰላም ነው?",
     "speaker": "spk01", "language": "am", "duration": 0.95, "emotion": "neutral"}

``audio`` is relative to the manifest's folder, absolute, or an ``s3://`` URI; ``duration``
(seconds) and ``emotion`` (a free label) are optional; other fields are carried through.

Three readers turn inputs into :class:`RawRow` records that remember where each row came from
(file and line), so a rejected row can always be reported precisely:

* :func:`read_jsonl_manifest`: our JSONL schema;
* :func:`read_ljspeech`: a folder with ``metadata.csv`` (``id|text[|normalized text]``) and ``wavs/``;
* :func:`read_audio_folder`: audio files with same-name ``.txt`` transcripts; the speaker is the
  first sub-folder's name.

Readers never drop anything: a line that cannot be parsed becomes a RawRow with an ``error``.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from indextts_core.errors import ManifestError

#: Files a dataset folder's audio is read from (what soundfile decodes).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")

LANGUAGE_PATTERN = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


class ManifestRow(BaseModel):
    """One clip, as the manifest schema defines it.  Unknown fields are kept as extras."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    id: str = Field(min_length=1)
    audio: str = Field(min_length=1)
    text: str
    speaker: str = Field(min_length=1)
    language: str
    duration: float | None = Field(None, gt=0)
    emotion: str | None = None

    @field_validator("language")
    @classmethod
    def _language(cls, v: str, info: ValidationInfo) -> str:
        """ISO 639-1/639-3 (``amh`` -> ``am``), or one of the run's ``extra_languages`` (validation context)."""
        from indextts_core.languages import canonical_language

        if not LANGUAGE_PATTERN.match(v):
            raise ValueError(f"not a language code like 'am' or 'pt-BR': {v!r}")
        return canonical_language(v, (info.context or {}).get("extra_languages", ()))


@dataclass
class RawRow:
    """A record as read, with its provenance.  ``error`` is set when it could not even be parsed."""

    source: str  # the file the row came from
    line: int | None  # 1-based line number, when the format has lines
    data: dict[str, Any] | None
    base_dir: str  # what relative audio paths are relative to
    error: str | None = None
    raw: str | None = None  # the unparsed text, kept for the rejects file
    defaults: dict[str, Any] = field(default_factory=dict)
    field_map: dict[str, str] = field(default_factory=dict)  # our field -> the manifest's own name for it

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}" if self.line is not None else self.source


#: Field names other trainers' manifests use, recognised when the row lacks ours (first match wins).
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "audio": ("audio_path", "wav", "wav_path", "audio_file", "filepath", "path"),
    "speaker": ("speaker_id", "spk", "spk_id", "speaker_name"),
    "text": ("transcript", "transcription", "sentence", "normalized_text"),
    "language": ("lang", "language_code"),
    "id": ("utt_id", "utterance_id", "uid"),
}


def map_fields(raw: RawRow) -> list[str]:
    """Rename the row's own field names to ours, in place: the manifest's ``field_map`` first, then
    :data:`FIELD_ALIASES` for a field the row lacks, then an ``id`` from the audio file's name.  Returns
    what was renamed (``"audio_path -> audio"``), for the report."""
    data = raw.data
    if data is None:
        return []
    used = []
    for ours, theirs in raw.field_map.items():
        if theirs in data and ours not in data:
            data[ours] = data.pop(theirs)
            used.append(f"{theirs} -> {ours}")
    for ours, aliases in FIELD_ALIASES.items():
        if data.get(ours) is None:
            found = next((a for a in aliases if data.get(a) is not None and a not in raw.field_map.values()), None)
            if found is not None:
                data[ours] = data.pop(found)
                used.append(f"{found} -> {ours}")
    if data.get("id") is None and isinstance(data.get("audio"), str) and data["audio"].strip():
        data["id"] = Path(data["audio"]).stem
        used.append("audio file name -> id")
    return used


def parse_row(raw: RawRow, extra_languages: Sequence[str] = ()) -> ManifestRow:
    """Validate a raw record against the schema (filling reader defaults).  Raises ValueError."""
    if raw.error is not None:
        raise ValueError(raw.error)
    assert raw.data is not None
    data = {k: v for k, v in raw.defaults.items() if v is not None}
    data.update({k: v for k, v in raw.data.items() if v is not None or k not in data})
    try:
        return ManifestRow.model_validate(data, context={"extra_languages": tuple(extra_languages)})
    except ValidationError as e:
        problems = []
        for err in e.errors():
            name = ".".join(str(p) for p in err["loc"]) or "row"
            problems.append(f"field '{name}': {err['msg'].lower()}")
        raise ValueError("; ".join(problems)) from None


def read_jsonl_manifest(path: Path, *, language: str | None = None, speaker: str | None = None) -> Iterator[RawRow]:
    """Yield one RawRow per non-blank line of a JSONL manifest."""
    defaults = {"language": language, "speaker": speaker}
    base = str(path.parent.resolve())
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest not found") from None
    with handle:
        for lineno, line, error in text_lines(handle):
            if error is not None:
                yield RawRow(str(path), lineno, None, base, error=error, raw=line, defaults=defaults)
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield RawRow(str(path), lineno, None, base, error=f"invalid JSON: {e.msg} at column {e.colno}",
                             raw=line, defaults=defaults)
                continue
            if not isinstance(obj, dict):
                yield RawRow(str(path), lineno, None, base, error=f"expected a JSON object, got {type(obj).__name__}",
                             raw=line, defaults=defaults)
                continue
            yield RawRow(str(path), lineno, obj, base, defaults=defaults)


def text_lines(handle: BinaryIO) -> Iterator[tuple[int, str, str | None]]:
    """``(line number, text, error)`` per line of a binary file, each line decoded on its own.

    A UTF-8 byte-order mark at the start is dropped; a line that is not UTF-8 comes back with an
    error naming the byte within the line (the rest of the file is still read).
    """
    for lineno, data in enumerate(handle, start=1):
        data = data.rstrip(b"\r\n")
        if lineno == 1 and data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        try:
            yield lineno, data.decode("utf-8"), None
        except UnicodeDecodeError as e:
            yield lineno, data.decode("utf-8", errors="replace"), f"not UTF-8 text ({e.reason} at byte {e.start + 1} " \
                "of the line)"


def read_ljspeech(root: Path, *, language: str | None = None, speaker: str | None = None) -> Iterator[RawRow]:
    """Yield rows of an LJSpeech-style folder: ``metadata.csv`` with ``id|text|normalized`` and ``wavs/<id>.wav``.

    The normalized column is used when it is present and non-empty (numbers already spelled out).
    The speaker defaults to the folder's name.
    """
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise ManifestError(f"{root}: not an LJSpeech folder (no metadata.csv)")
    defaults = {"language": language, "speaker": speaker or root.resolve().name}
    base = str(root.resolve())
    with open(meta, "rb") as f:
        for lineno, line, error in text_lines(f):
            if error is not None:
                yield RawRow(str(meta), lineno, None, base, error=error, raw=line, defaults=defaults)
                continue
            if not line.strip():
                continue
            cols = next(csv.reader([line], delimiter="|", quoting=csv.QUOTE_NONE))
            if len(cols) < 2 or not cols[0].strip():
                yield RawRow(str(meta), lineno, None, base, error=f"expected 'id|text[|normalized]', got {len(cols)} column(s)",
                             raw=line, defaults=defaults)
                continue
            clip_id = cols[0].strip()
            text = cols[2] if len(cols) > 2 and cols[2].strip() else cols[1]
            yield RawRow(str(meta), lineno, {"id": clip_id, "audio": f"wavs/{clip_id}.wav", "text": text}, base,
                         defaults=defaults)


def read_audio_folder(root: Path, *, language: str | None = None, speaker: str | None = None) -> Iterator[RawRow]:
    """Yield rows for audio files with same-name ``.txt`` transcripts under ``root``.

    ``root/<speaker>/.../<clip>.wav`` gets speaker ``<speaker>``; files directly in ``root`` get
    the ``speaker`` default (or the folder's name).  An audio file without a transcript, or a
    transcript without audio, becomes a row with an error, so it is reported, not lost.
    """
    if not root.is_dir():
        raise ManifestError(f"{root}: not a folder")
    base = str(root.resolve())
    root_speaker = speaker or root.resolve().name
    files = sorted(p for p in root.rglob("*") if p.is_file())
    audio = {p.with_suffix(""): p for p in files if p.suffix.lower() in AUDIO_EXTENSIONS}
    texts = {p.with_suffix(""): p for p in files if p.suffix.lower() == ".txt"}
    for stem in sorted(set(audio) | set(texts)):
        rel = stem.relative_to(root)
        clip_speaker = rel.parts[0] if len(rel.parts) > 1 else root_speaker
        defaults = {"language": language, "speaker": clip_speaker}
        clip_id = rel.as_posix().replace("/", "_")
        if stem not in texts:
            yield RawRow(str(audio[stem]), None, None, base, error="no transcript (.txt file with the same name)",
                         defaults=defaults)
            continue
        if stem not in audio:
            yield RawRow(str(texts[stem]), None, None, base, error="transcript without an audio file", defaults=defaults)
            continue
        try:
            text = texts[stem].read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            yield RawRow(str(texts[stem]), None, None, base, error=f"transcript is not UTF-8 ({e.reason})",
                         defaults=defaults)
            continue
        yield RawRow(str(texts[stem]), None,
                     {"id": clip_id, "audio": audio[stem].relative_to(root).as_posix(), "text": text}, base,
                     defaults=defaults)


def detect_format(path: Path) -> str:
    """``jsonl`` for a file, ``ljspeech`` for a folder with metadata.csv, else ``folder``."""
    if path.is_file():
        return "jsonl"
    if (path / "metadata.csv").is_file():
        return "ljspeech"
    if path.is_dir():
        return "folder"
    raise ManifestError(f"{path}: manifest not found")


def read_manifest(path: Path, fmt: str = "auto", *, language: str | None = None,
                  speaker: str | None = None) -> Iterator[RawRow]:
    """Read any supported manifest format (``auto`` detects it from ``path``)."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    readers = {"jsonl": read_jsonl_manifest, "ljspeech": read_ljspeech, "folder": read_audio_folder}
    if fmt not in readers:
        raise ManifestError(f"{path}: unknown manifest format {fmt!r} (use one of {', '.join(readers)})")
    return readers[fmt](path, language=language, speaker=speaker)
