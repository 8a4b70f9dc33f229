"""The curate stage in one call: recordings -> units (new ones only, in parallel) -> decisions -> manifest.

:func:`curate` takes the recordings :func:`~indextts_core.curate.sources.list_recordings` found, processes
those whose unit is not stored yet (:func:`~indextts_core.curate.process.process_recording`, one thread per
recording up to ``curate.workers``; the models are loaded only when there is something to process), then
decides over every recording's unit (:func:`~indextts_core.curate.decide.decide`) and writes the output
folder::

    manifest.jsonl   the kept clips in the manifest schema ingest reads (audio: where the unit stored them)
    rejects.jsonl    every rejected segment or recording: reason, words, numbers, text
    report.json/.md/.html, *.png, listen/   the report and its listening page

A recording removed from the sources is simply not among the units decided over, so its clips leave the
next manifest; its unit stays stored (a recording added back costs nothing).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indextts_core.config import CurateConfig
from indextts_core.curate.decide import JudgeVerdict, decide
from indextts_core.curate.process import Tools, process_recording, unit_name, unit_options
from indextts_core.curate.report import write_report
from indextts_core.curate.types import Recording
from indextts_core.curate.units import UnitStore
from indextts_core.errors import InputError
from indextts_core.utils.fileio import write_jsonl
from indextts_core.utils.progress import track

log = logging.getLogger(__name__)

#: Kept clips copied to the listening page.
LISTEN_KEPT = 12
STEPS = ("decode", "vad", "segment", "write", "asr", "dnsmos")


@dataclass(frozen=True)
class CurateResult:
    """What a curate run made and measured."""

    output_dir: Path
    manifest: Path
    rejects: Path
    recordings: int
    processed: int  # recordings processed by this run
    reused: int  # recordings whose unit an earlier run made
    failed: int  # recordings that could not be read
    kept: int
    rejected: int
    hours_in: float
    hours_kept: float
    rejected_by_reason: dict[str, int]
    judge: JudgeVerdict
    throughput: dict[str, float]  # step -> audio seconds per second of that step (this run's processing)
    report: dict[str, Any]


def _workers(cfg: CurateConfig, pending: int) -> int:
    return max(1, min(pending, cfg.workers or min(4, os.cpu_count() or 1)))


def _process_pending(pending: list[tuple[Recording, str]], cfg: CurateConfig, language: str, units: UnitStore,
                     load_tools: Callable[[], Tools], storage: Any) -> tuple[dict[str, dict], dict[str, str]]:
    """Process and store the recordings without a unit; their records, and the errors of those that failed."""
    records: dict[str, dict] = {}
    errors: dict[str, str] = {}
    if not pending:
        return records, errors
    tools = load_tools()

    def one(item: tuple[Recording, str]) -> dict:
        recording, name = item
        with units.workspace() as work:
            record = process_recording(recording, cfg, language, tools, work, storage)
            units.save(work, name)
        return record

    with ThreadPoolExecutor(max_workers=_workers(cfg, len(pending))) as pool:
        futures = {pool.submit(one, item): item[0] for item in pending}
        for future in track(as_completed(futures), total=len(futures), description="curating recordings"):
            recording = futures[future]
            try:
                records[recording.name] = future.result()
            except InputError as e:  # this recording cannot be used; the others go on
                log.error("%s", e)
                errors[recording.name] = str(e)
    return records, errors


def _throughput(records: Sequence[dict]) -> dict[str, float]:
    audio = sum(r["duration_s"] for r in records)
    out = {}
    for step in STEPS:
        seconds = sum(r["seconds"].get(step, 0.0) for r in records)
        if seconds > 0:
            out[step] = round(audio / seconds, 1)
    total = sum(sum(r["seconds"].values()) for r in records)
    if total > 0:
        out["total"] = round(audio / total, 1)
    return out


def curate(recordings: Sequence[Recording], cfg: CurateConfig, language: str, out_dir: Path, units: UnitStore,
           load_tools: Callable[[], Tools], *, judge: str | None = None, dnsmos: bool = True, storage: Any = None,
           seed: int = 1234, notes: Sequence[str] = ()) -> CurateResult:
    """Curate ``recordings`` into ``out_dir`` (see the module docstring); units are kept in ``units``.

    ``load_tools`` gives the models (called only when a recording needs processing); ``judge``: the ASR
    model's content digest (part of the unit name); ``dnsmos``: whether the tools score DNSMOS (likewise);
    ``notes``: lines the report carries (for example, that the demo's judge is random).  Raises InputError
    when no recording could be read or nothing is kept.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = unit_options(cfg, language, judge, dnsmos)
    names = {r.name: unit_name(r, options) for r in recordings}
    records: dict[str, dict] = {}
    pending: list[tuple[Recording, str]] = []
    for recording in recordings:
        record = units.record(names[recording.name])
        if record is None:
            pending.append((recording, names[recording.name]))
        else:
            records[recording.name] = record
    reused = len(records)
    log.info("curate: %d recording(s), %d already curated, %d to process", len(recordings), reused, len(pending))
    made, errors = _process_pending(pending, cfg, language, units, load_tools, storage)
    records |= made
    ordered = [records[r.name] for r in recordings if r.name in records]
    if not ordered:
        raise InputError("curate: no recording could be read: " + "; ".join(errors.values()))

    speakers = {r.name: r.speaker for r in recordings}  # today's (a changed speaker map needs no reprocessing)
    ordered = [{**record, "speaker": speakers[record["recording"]]} for record in ordered]
    kept, rejected, verdict = decide(ordered, cfg, language)
    manifest = [{
        "id": clip["id"], "audio": units.audio_ref(names[rec["recording"]], clip["file"]), "text": clip["text"],
        "speaker": rec["speaker"], "language": language, "duration": clip["duration"],
        "recording": rec["recording"], "start_s": clip["start_s"], "end_s": clip["end_s"], "method": rec["method"],
        "dnsmos": clip.get("dnsmos"), "cer": clip.get("cer"),
    } for rec, clip in kept]
    rejects: list[dict[str, Any]] = [{
        "recording": name, "start_s": None, "end_s": None, "duration": None, "reason": "unreadable",
        "detail": error, "numbers": {}, "text": None, "audio": None} for name, error in sorted(errors.items())]
    shown: Counter[str] = Counter()

    def example(rec: dict, row: dict, reason: str) -> str | None:
        if "file" not in row or shown[reason] >= cfg.listen_examples:
            return None
        shown[reason] += 1
        rel = f"listen/rejected/{Path(row['file']).name}"
        units.fetch(names[rec["recording"]], row["file"], row["sha256"], out_dir / rel)
        return rel

    for rec in ordered:  # rejected while cutting (too short, overlapping cues, text that did not fit, ...)
        for row in rec["rejected"]:
            rejects.append({"recording": rec["recording"], "start_s": row["start_s"], "end_s": row["end_s"],
                            "duration": row["duration"], "reason": row["reason"], "detail": row["detail"],
                            "numbers": row["numbers"], "text": row.get("text_given"),
                            "audio": example(rec, row, row["reason"])})
    for rec, clip, why in rejected:  # rejected by a gate or as a duplicate
        rejects.append({"recording": rec["recording"], "id": clip["id"], "start_s": clip["start_s"],
                        "end_s": clip["end_s"], "duration": clip["duration"], "reason": why.reason,
                        "detail": why.detail, "numbers": why.numbers, "reasons": clip["reasons"],
                        "text": clip.get("text") or clip.get("text_given"), "transcript": clip.get("transcript"),
                        "audio": example(rec, clip, why.reason)})
    kept_rows = [dict(row) for row in manifest]
    for i in sorted(random.Random(seed).sample(range(len(kept)), min(LISTEN_KEPT, len(kept)))):
        rec, clip = kept[i]
        rel = f"listen/kept/{clip['id']}.flac"
        units.fetch(names[rec["recording"]], clip["file"], clip["sha256"], out_dir / rel)
        kept_rows[i]["listen"] = rel
    write_jsonl(out_dir / "manifest.jsonl", manifest)
    write_jsonl(out_dir / "rejects.jsonl", rejects)

    throughput = _throughput(list(made.values()))
    recording_rows = [{
        "name": r.name, "speaker": r.speaker, "method": r.method, "digest": r.digest,
        "duration_s": records[r.name]["duration_s"] if r.name in records else None,
        "status": "failed" if r.name in errors else "processed" if r.name in made else "reused",
        "error": errors.get(r.name)} for r in recordings]
    settings = {**cfg.model_dump(mode="json"), "language": language,
                "notes": [verdict.note, *notes], "judge": {"cer": verdict.cer, "clips": verdict.clips,
                                                             "trusted": verdict.trusted},
                "throughput_audio_s_per_s": throughput}
    report = write_report(out_dir, kept=kept_rows, rejected=rejects, recordings=recording_rows, settings=settings,
                          seed=seed, listen_kept=LISTEN_KEPT)
    hours_in = sum(r["duration_s"] for r in ordered) / 3600
    result = CurateResult(
        output_dir=out_dir, manifest=out_dir / "manifest.jsonl", rejects=out_dir / "rejects.jsonl",
        recordings=len(recordings), processed=len(made), reused=reused, failed=len(errors), kept=len(manifest),
        rejected=len(rejects), hours_in=round(hours_in, 4),
        hours_kept=round(sum(r["duration"] for r in manifest) / 3600, 4),
        rejected_by_reason=dict(Counter(r["reason"] for r in rejects)), judge=verdict, throughput=throughput,
        report=report)
    log.info("curate: kept %d clip(s) (%.2f h of %.2f h), rejected %d, in %.1f s", result.kept, result.hours_kept,
             result.hours_in, result.rejected, time.perf_counter() - started)
    if not manifest:
        raise InputError(f"curate: every clip was rejected ({dict(result.rejected_by_reason)}); see "
                         f"{out_dir / 'rejects.jsonl'} and {out_dir / 'report.md'}")
    return result
