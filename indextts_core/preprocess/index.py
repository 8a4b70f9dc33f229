"""The index: manifests, text ids, rejects and the report (markdown and length plot) from the unit records."""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from indextts_core.errors import InputError
from indextts_core.model.bundle import ModelBundle
from indextts_core.preprocess.clips import Clip, reject_row
from indextts_core.preprocess.extract import UnitResult
from indextts_core.preprocess.planning import Plan, UnitRecords
from indextts_core.utils.fileio import atomic_write, sha256_file, write_json, write_jsonl


@dataclass
class PreprocessResult:
    output_dir: Path
    train_manifest: Path
    val_manifest: Path
    rejects: Path
    report_json: Path
    report_md: Path
    report_png: Path
    clips: int
    indexed: int
    rejected: int
    processed_now: int  # clips whose audio was processed in this run
    reused: int  # clips whose features came from earlier runs
    rejected_by_reason: dict[str, int]
    units: list[UnitResult]
    report: dict[str, Any] = field(default_factory=dict)  # what report.json holds (the index's content)
    run: dict[str, Any] = field(default_factory=dict)  # this run's work: clips processed, throughput, backoffs


def assemble(clips: Sequence[Clip], p: Plan, records: UnitRecords, out_dir: Path, tokenizer_path: Path,
             frontend_fp: dict[str, Any], units: Sequence[UnitResult], feature_dir_ref: str,
             started: float, base_gpt_sha256: str | None = None,
             base_files: dict[str, str] | None = None) -> PreprocessResult:
    """Write the index, text ids, rejects and report for ``clips`` from the plan and the unit records.

    ``base_gpt_sha256`` (the GPT whose conditioning computed the speaker latents and emotion
    vectors) and ``base_files`` (the other checkpoint files behind the features, by name) go into
    ``preprocess.json``, so training can refuse a different base checkpoint, naming the file.
    ``preprocess.json`` also lists the sha256 each shard had when it was written (``shard_sha256``,
    from the unit records), so whoever reads the shards verifies them by content.
    """
    from safetensors.torch import save_file

    done, done_rejects = records.done, records.rejects
    rows: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
    rejects = list(p.rejects)
    text_ids: list[list[int]] = []
    for clip in clips:
        item = p.texts.get(clip.id)
        if item is None:
            continue  # a text-gate reject, already listed
        key = p.keys[clip.id]
        if key in done_rejects:
            code, _, reason = done_rejects[key].partition(": ")
            rejects.append(reject_row(clip, code, reason))
            continue
        if key not in done:
            raise InputError(f"{clip.id}: audio {clip.audio} has no features after processing (unit missing?)")
        shard, row, code_len, duration = done[key]
        rows[clip.split].append({
            "id": clip.id, "speaker": clip.speaker, "language": clip.language, "text": clip.text,
            "text_frontend": item.frontend_text, "text_row": len(text_ids), "text_len": len(item.ids),
            "shard": shard, "row": row, "code_len": code_len, "duration": duration, "audio_sha256": key,
            "audio": clip.audio, **({"emotion": clip.emotion} if clip.emotion else {}),
            **({"lang": item.lang} if item.lang is not None else {}),
        })
        text_ids.append(item.ids)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards = sorted({r["shard"] for rs in rows.values() for r in rs})
    flat = np.concatenate([np.asarray(t, dtype=np.int64) for t in text_ids]) if text_ids else np.zeros(0, np.int64)
    dtype = torch.int16 if flat.size == 0 or flat.max() < 2**15 else torch.int32
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in text_ids])]).astype(np.int64)
    tmp = out_dir / ".text_ids.safetensors.tmp"
    save_file({"ids": torch.from_numpy(flat).to(dtype), "offsets": torch.from_numpy(offsets)}, str(tmp))
    os.replace(tmp, out_dir / "text_ids.safetensors")
    train_path, val_path = out_dir / "train_manifest.jsonl", out_dir / "val_manifest.jsonl"
    write_jsonl(train_path, rows["train"])
    write_jsonl(val_path, rows["val"])
    rejects_path = out_dir / "rejects.jsonl"
    write_jsonl(rejects_path, rejects)
    write_json(out_dir / "preprocess.json", {
        "format": "indextts-preprocess/1", "feature_dir": feature_dir_ref, "featureset": p.featureset,
        "tokenizer": {"file": tokenizer_path.name, "sha256": sha256_file(tokenizer_path)}, "frontend": frontend_fp,
        "shards": shards, "shard_sha256": {n: records.shard_sha256[n] for n in shards if n in records.shard_sha256},
        "limits": p.limits,
        "base_gpt_sha256": base_gpt_sha256,
        "base_files_sha256": dict(base_files or {}),
    })
    all_rows = rows["train"] + rows["val"]
    reasons = dict(Counter(r["reason_code"] for r in rejects).most_common())
    processed_now = sum(u.processed for u in units if u.seconds > 0)
    audio_seconds = sum(u.audio_seconds for u in units)
    busy = sum(u.seconds for u in units)
    # what the index is (stored with it: the same inputs give the same bytes) ...
    report = {
        "clips": len(clips), "indexed": len(all_rows), "train": len(rows["train"]), "val": len(rows["val"]),
        "rejected": len(rejects), "rejected_by_reason": reasons, "featureset": p.featureset, "limits": p.limits,
        "code_len": _summary([r["code_len"] for r in all_rows]),
        "text_len": _summary([r["text_len"] for r in all_rows]),
    }
    # ... and how this run made it (returned and logged, never stored: it differs from run to run)
    run = {
        "audio_processed_now": processed_now, "units": len(units),
        "features_reused": len(all_rows) - min(processed_now, len(all_rows)),
        "clips_per_second": round(processed_now / busy, 3) if busy else None,
        "audio_seconds_per_second": round(audio_seconds / busy, 3) if busy else None,
        "oom_backoffs": sum(u.backoffs for u in units), "batch_sizes": sorted({u.batch_size for u in units}),
        "seconds": round(time.monotonic() - started, 3),
    }
    report_json, report_md, report_png = out_dir / "report.json", out_dir / "report.md", out_dir / "lengths.png"
    write_json(report_json, report)
    with atomic_write(report_md) as f:
        f.write(_markdown(report))
    _plot_lengths([r["code_len"] for r in all_rows], [r["text_len"] for r in all_rows], p.limits, report_png)
    return PreprocessResult(out_dir, train_path, val_path, rejects_path, report_json, report_md, report_png,
                            len(clips), len(all_rows), len(rejects), processed_now,
                            len(all_rows) - min(processed_now, len(all_rows)), reasons, list(units), report, run)


def checkpoint_files_sha256(bundle: ModelBundle) -> dict[str, str]:
    """sha256 of the files in the checkpoint folder, besides gpt.pth, that shaped the features and are
    exported with the model (the Wav2Vec2-BERT statistics): training checks them against its checkpoint."""
    stats = bundle.stats_path
    return {stats.name: sha256_file(stats)} if stats.is_file() else {}


def _summary(values: Sequence[int]) -> dict[str, Any]:
    if not values:
        return {}
    v = sorted(values)
    return {"min": v[0], "median": statistics.median(v), "p95": v[min(len(v) - 1, int(0.95 * len(v)))], "max": v[-1]}


def _markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Preprocessing report", "",
        f"- clips: {r['clips']}; indexed: {r['indexed']} (train {r['train']}, val {r['val']}); "
        f"rejected: {r['rejected']}",
        f"- feature set: `{r['featureset']}`",
        f"- codes per clip: {r['code_len']} (limit max_mel_tokens={r['limits'].get('max_mel_tokens')})",
        f"- text tokens per clip: {r['text_len']} (limit max_text_tokens={r['limits'].get('max_text_tokens')})",
    ]
    if r["rejected_by_reason"]:
        lines += ["", "| rejection reason | clips |", "|---|---:|"] + [
            f"| {k} | {v} |" for k, v in r["rejected_by_reason"].items()]
    return "\n".join(lines) + "\n"


def _plot_lengths(code_lens: Sequence[int], text_lens: Sequence[int], limits: dict[str, int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100)
    for ax, values, limit, title in ((axes[0], code_lens, limits.get("max_mel_tokens"), "semantic codes per clip"),
                                     (axes[1], text_lens, limits.get("max_text_tokens"), "text tokens per clip")):
        ax.hist(values or [0], bins=30, color="#4C72B0")
        if limit:
            ax.axvline(limit, color="#C44E52", linestyle="--", label=f"model limit {limit}")
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("clips")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
