"""The curate stage's inputs: which recordings there are, their sidecars, speakers and content digests.

Each entry of ``curate.sources`` is a local folder (searched recursively), a local file, or an
``s3://bucket/prefix`` (every object under it, or the one object it names).  A recording is a file
with one of :data:`AUDIO_EXTENSIONS` (case ignored; names starting with ``.`` skipped); files in the
same folder with the same stem are its sidecars: ``.srt``/``.vtt`` subtitles (both is an error),
a ``.txt`` transcript and a ``.json`` sidecar.  Two recordings with the same stem in one folder
would share them, so that is an error too.  A recording's name is its path relative to its source
(a file source: its file name), unique across the sources.

The speaker is looked up in ``curate.speaker_map`` (by name, then file name, then stem), else read
from the sidecar JSON's ``curate.speaker_field``, else it is the file's stem.  The digest is the
sha256 of the audio bytes and then each sidecar's file name and bytes, read in 1 MB blocks, so an
edited subtitle file is new content; the speaker map is not part of it.

:func:`decode_recording` decodes a recording to a mono waveform: the formats ``soundfile`` reads
directly, the others (AAC, video containers) through ``ffmpeg``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from indextts_core.curate.types import Recording
from indextts_core.data.audio import Waveform, decode_audio, load_audio, resample
from indextts_core.errors import AudioDecodeError, InputError
from indextts_core.store.objects import open_store, read_uri_bytes, split_s3_uri

#: What :func:`~indextts_core.data.audio.decode_audio` (libsndfile) reads without help.
SOUNDFILE_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3"})
#: Audio, and video whose audio track is used, that needs ``ffmpeg``.
FFMPEG_EXTENSIONS = frozenset({".m4a", ".aac", ".mp4", ".mkv", ".webm", ".mov", ".avi"})
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS | FFMPEG_EXTENSIONS
SUBTITLE_EXTENSIONS = (".srt", ".vtt")
TRANSCRIPT_EXTENSION = ".txt"
SIDECAR_EXTENSION = ".json"
_BLOCK = 1 << 20

if TYPE_CHECKING:
    from indextts_core.config import CurateConfig


@dataclass(frozen=True)
class _File:
    """A file found under a source: its name relative to the source root, URI and size."""

    rel: str
    uri: str
    size: int


# ---------------------------------------------------------------------------------------------- listing

def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in PurePosixPath(rel).parts)


def _local_files(source: str) -> tuple[list[_File], str | None]:
    """Files of a local folder or the siblings of a local file, and the file's name for a file source."""
    path = Path(source).expanduser()
    if path.is_dir():
        root = path.absolute()
        return [_File(p.relative_to(root).as_posix(), str(p), p.stat().st_size)
                for p in sorted(root.rglob("*")) if p.is_file() and not _hidden(p.relative_to(root).as_posix())], None
    if path.is_file():
        parent = path.absolute().parent
        stem = path.stem
        return [_File(p.name, str(p), p.stat().st_size)
                for p in sorted(parent.iterdir()) if p.is_file() and p.stem == stem], path.name
    raise InputError(f"curate.sources: {source}: no such file or folder")


def _s3_files(source: str, storage: Any) -> tuple[list[_File], str | None]:
    """Objects under an ``s3://`` prefix; or, when it names one object, that object and its siblings."""
    bucket, prefix = split_s3_uri(source)
    store = open_store(f"s3://{bucket}", storage)

    def listing(under: str) -> dict[str, int]:
        found: dict[str, int] = {}
        try:
            for page in store.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=under):
                for obj in page.get("Contents", []):
                    found[obj["Key"]] = int(obj["Size"])
        except Exception as e:  # boto3 raises several types; the store knows what each means
            raise store._error(e, under, "list") from e
        return found

    under = f"{prefix}/" if prefix else ""
    objects = {k: s for k, s in listing(under).items() if not k.endswith("/")}
    if objects:
        return [_File(k[len(under):], f"s3://{bucket}/{k}", s) for k, s in sorted(objects.items())
                if not _hidden(k[len(under):])], None
    if prefix and PurePosixPath(prefix).suffix.lower() in AUDIO_EXTENSIONS:
        folder, _, file_name = prefix.rpartition("/")
        stem = PurePosixPath(file_name).stem
        siblings = listing(f"{folder}/{stem}." if folder else f"{stem}.")
        if prefix in siblings:
            return [_File(k.rpartition("/")[2], f"s3://{bucket}/{k}", s) for k, s in sorted(siblings.items())
                    if PurePosixPath(k).stem == stem], file_name
    raise InputError(f"curate.sources: {source}: no objects found there")


def _group(source: str, files: list[_File], only: str | None) -> list[dict[str, Any]]:
    """Recordings (audio files) with their sidecars, as keyword arguments for :class:`Recording` less the
    speaker and digest."""
    by_stem: dict[tuple[str, str], dict[str, list[_File]]] = {}
    for f in files:
        p = PurePosixPath(f.rel)
        by_stem.setdefault((str(p.parent), p.stem), {}).setdefault(p.suffix.lower(), []).append(f)
    found = []
    for (_, stem), by_ext in sorted(by_stem.items()):
        audio = sorted((f for ext, fs in by_ext.items() if ext in AUDIO_EXTENSIONS for f in fs), key=lambda f: f.rel)
        if only is not None:
            audio = [f for f in audio if f.rel == only]
        if not audio:
            continue
        if len(audio) > 1:
            raise InputError(f"curate.sources: {audio[0].uri} and {audio[1].uri} share the stem {stem!r}, so their "
                             "sidecar files would be ambiguous: keep one, or rename the other")
        subtitles = [f for ext in SUBTITLE_EXTENSIONS for f in by_ext.get(ext, [])]
        clashes = [fs for ext in (TRANSCRIPT_EXTENSION, SIDECAR_EXTENSION) if len(fs := by_ext.get(ext, [])) > 1]
        for twins in (subtitles, *clashes):  # ch01.srt and ch01.vtt; ch01.txt and ch01.TXT
            if len(twins) > 1:
                raise InputError(f"curate.sources: {audio[0].uri} has two sidecars of one kind: "
                                 f"{twins[0].uri} and {twins[1].uri}; keep one")
        transcript, sidecar = by_ext.get(TRANSCRIPT_EXTENSION), by_ext.get(SIDECAR_EXTENSION)
        found.append(dict(
            name=audio[0].rel, uri=audio[0].uri, size=audio[0].size,
            subtitles=subtitles[0].uri if subtitles else None,
            transcript=transcript[0].uri if transcript else None,
            sidecar=sidecar[0].uri if sidecar else None,
        ))
    if not found:
        raise InputError(f"curate.sources: {source}: no recordings there (audio or video files: "
                         f"{', '.join(sorted(AUDIO_EXTENSIONS))})")
    return found


# ---------------------------------------------------------------------------------------------- reading

def read_text(uri: str, storage: Any = None) -> str:
    """A text sidecar (local path or ``s3://``) as a string: UTF-8, a byte-order mark dropped."""
    data = read_uri_bytes(uri, storage)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{uri}: not UTF-8 text (byte {e.start}: {data[e.start:e.start + 4]!r}); "
                         "save it as UTF-8") from None


def _chunks(uri: str, storage: Any) -> Iterator[bytes]:
    """The bytes of a local file or ``s3://`` object in blocks of 1 MB."""
    if uri.startswith("s3://"):
        bucket, key = split_s3_uri(uri)
        store = open_store(f"s3://{bucket}", storage)
        try:
            body = store.client.get_object(Bucket=bucket, Key=key)["Body"]
            yield from body.iter_chunks(chunk_size=_BLOCK)
        except Exception as e:
            raise store._error(e, key, "read") from e
        return
    with open(uri, "rb") as f:
        while block := f.read(_BLOCK):
            yield block


def content_digest(audio_uri: str, sidecars: list[str], storage: Any = None) -> str:
    """sha256 over the audio bytes, then each sidecar's file name and bytes (streamed, never all in memory)."""
    h = hashlib.sha256()
    for block in _chunks(audio_uri, storage):
        h.update(block)
    for uri in sidecars:
        h.update(b"\0" + uri.rsplit("/", 1)[-1].encode() + b"\0")
        for block in _chunks(uri, storage):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- speakers

def load_speaker_map(uri: str, storage: Any = None) -> dict[str, str]:
    """``curate.speaker_map``: a ``.json`` object or a ``recording,speaker`` ``.csv`` (optional header row)."""
    suffix = PurePosixPath(uri).suffix.lower()
    if suffix not in (".json", ".csv"):
        raise InputError(f"curate.speaker_map: {uri}: must be a .json or .csv file")
    text = read_text(uri, storage)
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{uri}:{e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(data, dict):
            raise InputError(f"{uri}: a speaker map must be a JSON object (recording -> speaker)")
        for key, value in data.items():
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"{uri}: speaker of {key!r} must be a non-empty string, got {value!r}")
        return {k: v.strip() for k, v in data.items()}
    mapping: dict[str, str] = {}
    for number, row in enumerate(csv.reader(io.StringIO(text)), 1):
        if not row or all(not cell.strip() for cell in row):
            continue
        if number == 1 and [c.strip().lower() for c in row] == ["recording", "speaker"]:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise InputError(f"{uri}:{number}: expected two columns 'recording,speaker', got {row!r}")
        key, speaker = row[0].strip(), row[1].strip()
        if mapping.get(key, speaker) != speaker:
            raise InputError(f"{uri}:{number}: {key!r} is mapped to {mapping[key]!r} above and to {speaker!r} here")
        mapping[key] = speaker
    return mapping


def _sidecar_fields(uri: str, storage: Any) -> dict[str, Any]:
    try:
        data = json.loads(read_text(uri, storage))
    except json.JSONDecodeError as e:
        raise InputError(f"{uri}:{e.lineno}: sidecar is not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise InputError(f"{uri}: a sidecar must be a JSON object")
    return data


def _speaker(found: dict[str, Any], mapping: dict[str, str], field: str, storage: Any) -> str:
    path = PurePosixPath(found["name"])
    for key in (found["name"], path.name, path.stem):
        if key in mapping:
            return mapping[key]
    if found["sidecar"]:
        value = _sidecar_fields(found["sidecar"], storage).get(field)
        if value is not None:
            if not isinstance(value, (str, int)) or isinstance(value, bool) or not str(value).strip():
                raise InputError(f"{found['sidecar']}: field {field!r} must name a speaker, got {value!r}")
            return str(value).strip()
    return path.stem


# ---------------------------------------------------------------------------------------------- recordings

def list_recordings(cfg: CurateConfig, storage: Any = None) -> list[Recording]:
    """Every recording of ``cfg.sources`` (a :class:`~indextts_core.config.CurateConfig`), sorted by name.

    ``storage`` (a :class:`~indextts_core.config.StorageConfig`) gives the S3 endpoint and credentials.
    Raises :class:`InputError` for a source that is missing or holds no recording, two sources giving
    the same name, ambiguous sidecars, a bad speaker map or sidecar.
    """
    mapping = load_speaker_map(cfg.speaker_map, storage) if cfg.speaker_map else {}
    seen: dict[str, str] = {}
    recordings = []
    for source in cfg.sources:
        files, only = _s3_files(source, storage) if source.startswith("s3://") else _local_files(source)
        for found in _group(source, files, only):
            if found["name"] in seen:
                raise InputError(f"curate.sources: two recordings named {found['name']!r}: {seen[found['name']]} "
                                 f"and {found['uri']}")
            seen[found["name"]] = found["uri"]
            sidecars = [u for u in (found["subtitles"], found["transcript"], found["sidecar"]) if u]
            recordings.append(Recording(
                speaker=_speaker(found, mapping, cfg.speaker_field, storage),
                digest=content_digest(found["uri"], sidecars, storage), **found))
    return sorted(recordings, key=lambda r: r.name)


# ---------------------------------------------------------------------------------------------- decoding

def decode_recording(rec: Recording, storage: Any = None, sample_rate: int | None = None) -> Waveform:
    """A recording's audio as mono float32, resampled to ``sample_rate`` when given."""
    suffix = PurePosixPath(rec.uri).suffix.lower()
    if suffix in SOUNDFILE_EXTENSIONS:
        source: str | bytes = read_uri_bytes(rec.uri, storage) if rec.uri.startswith("s3://") else rec.uri
        return load_audio(source, sample_rate, name=rec.uri)
    wav = _with_local_copy(rec.uri, storage, _ffmpeg_decode)
    if sample_rate is None or sample_rate == wav.sample_rate:
        return wav
    return Waveform(resample(wav.samples, wav.sample_rate, sample_rate), sample_rate, wav.channels)


def _with_local_copy(uri: str, storage: Any, use: Callable[[str, str], Waveform]) -> Waveform:
    """``use(local path, uri)``, downloading an ``s3://`` object to a temporary file first."""
    if not uri.startswith("s3://"):
        return use(uri, uri)
    bucket, key = split_s3_uri(uri)
    with tempfile.TemporaryDirectory(prefix="curate-") as tmp:
        local = open_store(f"s3://{bucket}", storage).get_file(key, Path(tmp) / key.rsplit("/", 1)[-1])
        return use(str(local), uri)


def _ffmpeg_decode(path: str, uri: str) -> Waveform:
    """The first audio track of ``path`` as mono WAV through ffmpeg, decoded at its own rate."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise InputError(f"{uri}: decoding {PurePosixPath(uri).suffix} needs ffmpeg, which is not installed: "
                         "install ffmpeg (apt-get install ffmpeg, brew install ffmpeg, conda install ffmpeg)")
    if not os.path.isfile(path):
        raise AudioDecodeError(f"{uri}: audio file not found")
    cmd = [ffmpeg, "-nostdin", "-v", "error", "-i", path, "-vn", "-ac", "1", "-f", "wav", "-"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
        raise AudioDecodeError(f"{uri}: ffmpeg cannot decode it: {lines[-1] if lines else f'exit {proc.returncode}'}")
    return decode_audio(proc.stdout, name=uri)
