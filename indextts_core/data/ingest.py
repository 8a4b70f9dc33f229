"""Ingest stage: read manifests, validate every row, split train/val, write the dataset report.

Every input row ends up in exactly one of two files: the accepted ``manifest.jsonl`` or
``rejects.jsonl`` (with file, line and reason).  Checks, in order:

1. the row parses (valid JSON object / CSV columns / transcript present)     ``invalid_row``
2. it matches the schema (id, audio, text, speaker, language, ...)             ``schema``
3. its id was not seen before                                                  ``duplicate_id``
4. its text is non-empty after light cleaning (NFC, whitespace)                ``empty_text``
   and has something to say (a letter or a digit, not only punctuation)      ``no_speakable_text``
5. its audio is inside the dataset (when the dataset is in the artifact store)  ``audio_outside_dataset``
   and exists                                                                  ``audio_missing``
   and can be read (S3 permissions)                                            ``audio_unreadable``
   with working S3 credentials                                                 ``storage_credentials``
6. its audio decodes                                                           ``audio_decode``
7. its decoded duration is within [min_duration_s, max_duration_s]             ``too_short`` / ``too_long``

Outputs in ``out_dir``: ``manifest.jsonl`` (accepted rows, audio as absolute paths or s3 URIs,
measured duration, sample rate and the audio file's sha256), ``train.jsonl``, ``val.jsonl``,
``rejects.jsonl``, ``report.json``, ``report.md`` and ``durations.png``.

A missing or refused S3 credential is a configuration problem, not a property of a row: the rows
it affects are listed in the rejects file with ``storage_credentials`` and the stage then fails
with one :class:`StorageCredentialsError` (an input error: never retried).
"""

from __future__ import annotations

import logging
import os
import threading
import unicodedata
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indextts_core.data.audio import decode_audio
from indextts_core.config import IngestConfig, ManifestSource
from indextts_core.errors import AudioDecodeError, ManifestError, StorageError
from indextts_core.utils.fileio import sha256_bytes, write_jsonl
from indextts_core.data.manifest import RawRow, map_fields, parse_row, read_manifest
from indextts_core.utils.progress import track
from indextts_core.data.report import dataset_report, plot_durations, report_markdown, write_report
from indextts_core.data.split import split_by_speaker
from indextts_core.store.objects import (
    ArtifactStore,
    STORE_SCHEME,
    ObjectNotFoundError,
    StorageCredentialsError,
    open_store,
    read_uri_bytes,
    split_s3_uri,
)
from indextts_core.text.clean import clean_text

log = logging.getLogger(__name__)

#: Bump when the stage's outputs change for the same inputs (invalidates cached results).
STAGE_VERSION = "4"

#: Declared and measured durations may differ by this much before the row is counted as corrected.
_DURATION_TOLERANCE_S = 0.1


@dataclass(frozen=True)
class ManifestInput:
    """One manifest to ingest, already resolved to a local path."""

    path: Path
    format: str = "auto"
    language: str | None = None
    speaker: str | None = None
    fields: dict[str, str] = field(default_factory=dict)  # our field -> the manifest's name for it


def manifest_inputs(manifests: Sequence[ManifestSource], dataset_root: Path, language: str) -> list[ManifestInput]:
    """The configured manifests (``ingest.manifests``), relative paths resolved against ``dataset_root``.

    Rows of a manifest that names no language get ``language`` (the run's).
    """
    inputs = []
    for m in manifests:
        path = Path(m.path)
        inputs.append(ManifestInput(path=path if path.is_absolute() else dataset_root / path, format=m.format,
                                    language=m.language or language, speaker=m.speaker, fields=dict(m.fields)))
    return inputs


@dataclass(frozen=True)
class IngestResult:
    output_dir: Path
    manifest: Path
    train: Path
    val: Path
    rejects: Path
    report_json: Path
    report_md: Path
    histogram: Path
    rows_read: int
    accepted: int
    rejected: int
    train_clips: int
    val_clips: int
    hours: float
    speakers: int
    languages: dict[str, int] = field(default_factory=dict)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)  # what report.json holds


@dataclass
class _Rejection(Exception):
    code: str
    message: str


def _reject_record(raw: RawRow, code: str, message: str, clip_id: str | None = None) -> dict[str, Any]:
    return {
        "source": raw.source,
        "line": raw.line,
        "id": clip_id if clip_id is not None else (raw.data or {}).get("id"),
        "reason_code": code,
        "reason": message,
        "row": raw.data if raw.data is not None else raw.raw,
    }


def _resolve_audio(audio: str, base_dir: str) -> str:
    if audio.startswith(("s3://", STORE_SCHEME)) or os.path.isabs(audio):
        return audio
    return str(Path(base_dir, audio).resolve())


class _AudioReader:
    """Reads clips from local paths and ``s3://`` URIs: one S3 client per bucket, shared by the threads.

    A credentials problem is remembered per bucket, so the other rows of that bucket are rejected
    at once instead of each searching for credentials again.
    """

    def __init__(self, storage: Any):
        self.storage = storage
        self.credential_errors: dict[str, str] = {}  # bucket -> the first error's message
        self._stores: dict[str, ArtifactStore] = {}
        self._lock = threading.Lock()

    def _store(self, bucket: str) -> ArtifactStore:
        with self._lock:  # boto3 sessions are not thread-safe to create; their clients are to use
            if bucket not in self._stores:
                self._stores[bucket] = open_store(f"s3://{bucket}", self.storage)
            return self._stores[bucket]

    def read(self, uri: str) -> bytes:
        if uri.startswith(STORE_SCHEME):  # a clip the run's store holds already (the curate stage's)
            return read_uri_bytes(uri, self.storage)
        if not uri.startswith("s3://"):
            return Path(uri).read_bytes()
        bucket, key = split_s3_uri(uri)
        known = self.credential_errors.get(bucket)
        if known is not None:
            raise _Rejection("storage_credentials", known)
        try:
            return self._store(bucket).get_bytes(key)
        except StorageCredentialsError as e:
            self.credential_errors.setdefault(bucket, str(e))
            raise _Rejection("storage_credentials", str(e)) from None
        except StorageError as e:
            if e.transient:  # an outage: the stage fails and is retried, no row is blamed
                raise
            raise _Rejection("audio_unreadable", str(e)) from None


def _check_audio(uri: str, opts: IngestConfig, reader: _AudioReader) -> dict[str, Any]:
    """Read, hash and decode one clip.  Raises _Rejection with the reason."""
    try:
        data = reader.read(uri)
    except (ObjectNotFoundError, IsADirectoryError, FileNotFoundError):
        raise _Rejection("audio_missing", f"audio not found: {uri}") from None
    except PermissionError as e:
        raise _Rejection("audio_unreadable", f"audio not readable: {uri} ({e.strerror})") from None
    try:
        wav = decode_audio(data, name=uri)
    except AudioDecodeError as e:
        raise _Rejection("audio_decode", str(e)) from None
    if wav.duration < opts.min_duration_s:
        raise _Rejection("too_short", f"{wav.duration:.2f} s is below min_duration_s={opts.min_duration_s}")
    if wav.duration > opts.max_duration_s:
        raise _Rejection("too_long", f"{wav.duration:.2f} s is above max_duration_s={opts.max_duration_s}")
    return {
        "duration": round(wav.duration, 4),
        "sample_rate": wav.sample_rate,
        "channels": wav.channels,
        "audio_sha256": sha256_bytes(data),
    }


def _rebase(accepted: list[dict[str, Any]], rejects: list[dict[str, Any]], root: Path, base: str) -> None:
    def rel(path: str) -> str | None:
        p = Path(path)
        return p.relative_to(root).as_posix() if p.is_absolute() and p.is_relative_to(root) else None

    for r in accepted:
        audio = rel(r["audio"])
        if audio is not None:
            r["audio"] = f"{base}/{audio}"
        file, _, line = r["source"].rpartition(":")
        r["source"] = f"{rel(file) or file}:{line}"
    prefix = f"{root}/"
    for r in rejects:
        file, _, line = r["source"].rpartition(":") if ":" in r["source"] else (r["source"], "", "")
        r["source"] = f"{rel(file) or file}:{line}" if line else (rel(r["source"]) or r["source"])
        r["reason"] = r["reason"].replace(prefix, "")  # files named relative to the dataset, not this machine


def ingest(
    inputs: Sequence[ManifestInput],
    out_dir: Path,
    cfg: IngestConfig | None = None,
    *,
    seed: int = 1234,
    storage: Any | None = None,
    dataset_root: Path | None = None,
    audio_base: str | None = None,
    extra_languages: Sequence[str] = (),
) -> IngestResult:
    """Validate, split and report on the rows of ``inputs``; write everything to ``out_dir``.

    ``cfg`` is the ``ingest:`` section of the run configuration (its manifests and source are
    already resolved into ``inputs``); ``seed`` draws the train/val split.
    ``storage`` (a StorageConfig) supplies credentials for ``s3://`` audio URIs.  With
    ``dataset_root`` (the local copy of a dataset held in the artifact store) and ``audio_base``
    (that dataset's URI in the store), audio under the root is written as its store URI and row
    sources relative to the root, so the outputs do not depend on where this machine keeps its copy
    and any worker can read the audio.  Raises
    :class:`ManifestError` when a manifest cannot be read, when nothing is accepted, or when the
    share of rejected rows exceeds ``cfg.max_rejected_fraction`` (the rejects file is written
    first either way).
    """
    opts = cfg or IngestConfig()
    root = Path(dataset_root).resolve() if dataset_root is not None and audio_base is not None else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    raws: list[RawRow] = []
    for inp in inputs:
        for raw in read_manifest(inp.path, inp.format, language=inp.language, speaker=inp.speaker):
            raw.field_map = dict(inp.fields)
            raws.append(raw)

    rejects: list[dict[str, Any]] = []
    candidates: list[tuple[RawRow, dict[str, Any]]] = []
    first_seen: dict[str, str] = {}
    defaulted: dict[str, int] = {}  # rows that named no language -> the language they were given
    renamed: Counter[str] = Counter()  # "their field -> ours" -> rows
    for raw in raws:
        renamed.update(map_fields(raw))
        if raw.error is not None:
            rejects.append(_reject_record(raw, "invalid_row", f"{raw.where}: {raw.error}"))
            continue
        if raw.data is not None and raw.data.get("language") in (None, "") and raw.defaults.get("language"):
            defaulted[raw.defaults["language"]] = defaulted.get(raw.defaults["language"], 0) + 1
        try:
            row = parse_row(raw, extra_languages)
        except ValueError as e:
            rejects.append(_reject_record(raw, "schema", f"{raw.where}: {e}"))
            continue
        if row.id in first_seen:
            rejects.append(_reject_record(raw, "duplicate_id", f"{raw.where}: duplicate id {row.id!r} "
                                          f"(first seen at {first_seen[row.id]})", row.id))
            continue
        first_seen[row.id] = raw.where
        text = clean_text(row.text)
        if not text:
            rejects.append(_reject_record(raw, "empty_text", f"{raw.where}: text is empty after cleaning", row.id))
            continue
        if not any(unicodedata.category(ch)[0] in "LN" for ch in text):
            rejects.append(_reject_record(raw, "no_speakable_text", f"{raw.where}: text {text!r} has no letters or "
                                          "digits (nothing to say)", row.id))
            continue
        record = row.model_dump(exclude_none=True)
        record.update(text=text, audio=_resolve_audio(row.audio, raw.base_dir), source=raw.where)
        if root is not None and not record["audio"].startswith(("s3://", STORE_SCHEME)) \
                and not Path(record["audio"]).resolve().is_relative_to(root):
            rejects.append(_reject_record(raw, "audio_outside_dataset", f"{raw.where}: audio {row.audio} is outside "
                                          "the dataset folder, so it is not in the artifact store and a worker on "
                                          "another machine cannot read it: put it under the dataset folder (a path "
                                          "relative to the manifest) or give an s3:// URI", row.id))
            continue
        candidates.append((raw, record))

    workers = opts.workers or os.cpu_count() or 1
    reader = _AudioReader(storage)
    accepted: list[dict[str, Any]] = []
    corrected = 0

    def check(item: tuple[RawRow, dict[str, Any]]) -> tuple[RawRow, dict[str, Any], dict[str, Any] | _Rejection]:
        raw, record = item
        try:
            return raw, record, _check_audio(record["audio"], opts, reader)
        except _Rejection as r:
            return raw, record, r

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(check, candidates)
        for raw, record, outcome in track(results, total=len(candidates), description="checking audio"):
            if isinstance(outcome, _Rejection):
                rejects.append(_reject_record(raw, outcome.code, f"{raw.where}: {outcome.message}", record["id"]))
                continue
            declared = record.get("duration")
            if declared is not None and abs(declared - outcome["duration"]) > _DURATION_TOLERANCE_S:
                corrected += 1
                log.warning("%s: declared duration %.2f s, decoded %.2f s; using the decoded one",
                            raw.where, declared, outcome["duration"])
            record.update(outcome)
            accepted.append(record)

    if dataset_root is not None and audio_base is not None:
        _rebase(accepted, rejects, Path(dataset_root).resolve(), audio_base.rstrip("/"))
    missing = sorted(set(opts.val_speakers) - {r["speaker"] for r in accepted})
    if missing:
        raise ManifestError(f"ingest.val_speakers: {', '.join(missing)} not among the accepted rows' speakers")
    train, val = split_by_speaker(accepted, opts.val_fraction, opts.val_min_speaker_clips, seed,
                                  opts.val_speakers)
    paths = {name: out_dir / f"{name}.jsonl" for name in ("manifest", "train", "val", "rejects")}
    write_jsonl(paths["manifest"], accepted)
    write_jsonl(paths["train"], train)
    write_jsonl(paths["val"], val)
    write_jsonl(paths["rejects"], rejects)

    report = dataset_report(accepted, train, val, rejects, rows_read=len(raws))
    report["rows_without_language"] = defaulted
    report["fields_renamed"] = dict(renamed)
    if defaulted:
        log.warning("rows without a language got the run's: %s (name each row's language to be sure)",
                    ", ".join(f"{n} -> {lang}" for lang, n in defaulted.items()))
    report["duration_corrected"] = corrected
    report["bounds_s"] = [opts.min_duration_s, opts.max_duration_s]
    histogram = out_dir / "durations.png"
    plot_durations(train, val, histogram, bounds=(opts.min_duration_s, opts.max_duration_s))
    outputs = {k: v.name for k, v in paths.items()} | {"histogram": histogram.name}  # no machine paths
    json_path, md_path = write_report(report, report_markdown(report, outputs), out_dir)

    if rejects:
        log.warning("%d of %d rows rejected (see %s)", len(rejects), len(raws), paths["rejects"])
    if reader.credential_errors:
        bucket, first = next(iter(reader.credential_errors.items()))
        n = report["rejected_by_reason"].get("storage_credentials", 0)
        raise StorageCredentialsError(
            f"{n} row(s) read audio from S3 ({', '.join(f's3://{b}' for b in reader.credential_errors)}) and the "
            f"credentials were missing or refused: {first}. Those rows are listed in {paths['rejects']}; fix the "
            "credentials and run again")
    if not accepted:
        raise ManifestError(f"no usable rows: all {len(raws)} rows were rejected; reasons in {paths['rejects']}")
    if len(rejects) > opts.max_rejected_fraction * len(raws):
        raise ManifestError(
            f"{len(rejects)} of {len(raws)} rows rejected ({len(rejects) / len(raws):.0%}), above "
            f"max_rejected_fraction={opts.max_rejected_fraction}; reasons in {paths['rejects']}"
        )
    return IngestResult(
        output_dir=out_dir, manifest=paths["manifest"], train=paths["train"], val=paths["val"],
        rejects=paths["rejects"], report_json=json_path, report_md=md_path, histogram=histogram,
        rows_read=len(raws), accepted=len(accepted), rejected=len(rejects),
        train_clips=len(train), val_clips=len(val), hours=report["hours"], speakers=report["speakers"],
        languages={k: v["clips"] for k, v in report["languages"].items()},
        rejected_by_reason=report["rejected_by_reason"], report=report,
    )

