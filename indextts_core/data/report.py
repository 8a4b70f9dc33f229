"""Dataset report: numbers (JSON), a readable summary (Markdown) and a duration histogram (PNG)."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from indextts_core.utils.fileio import atomic_write, write_json


def _durations(rows: Sequence[dict[str, Any]]) -> list[float]:
    return [float(r["duration"]) for r in rows]


def _summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    d = _durations(rows)
    return {
        "clips": len(rows),
        "seconds": round(sum(d), 3),
        "hours": round(sum(d) / 3600, 4),
        "speakers": len({r["speaker"] for r in rows}),
    }


def dataset_report(
    accepted: Sequence[dict[str, Any]],
    train: Sequence[dict[str, Any]],
    val: Sequence[dict[str, Any]],
    rejects: Sequence[dict[str, Any]],
    rows_read: int,
) -> dict[str, Any]:
    """All the numbers of the report as plain data."""
    d = sorted(_durations(accepted))
    per_language: dict[str, list[dict[str, Any]]] = defaultdict(list)
    per_speaker: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in accepted:
        per_language[r["language"]].append(r)
        per_speaker[r["speaker"]].append(r)
    val_speakers = {r["speaker"] for r in val}
    return {
        "rows_read": rows_read,
        **_summary(accepted),
        "rejected": len(rejects),
        "rejected_by_reason": dict(Counter(r["reason_code"] for r in rejects).most_common()),
        "duration_s": {
            "min": round(d[0], 3) if d else None,
            "median": round(statistics.median(d), 3) if d else None,
            "mean": round(statistics.fmean(d), 3) if d else None,
            "p95": round(d[min(len(d) - 1, int(0.95 * len(d)))], 3) if d else None,
            "max": round(d[-1], 3) if d else None,
        },
        "languages": {lang: _summary(rs) for lang, rs in sorted(per_language.items())},
        "speakers_detail": {
            spk: {**_summary(rs), "languages": sorted({r["language"] for r in rs}), "in_val": spk in val_speakers}
            for spk, rs in sorted(per_speaker.items())
        },
        "splits": {"train": _summary(train), "val": _summary(val)},
    }


def plot_durations(train: Sequence[dict[str, Any]], val: Sequence[dict[str, Any]], path: Path,
                   bounds: tuple[float, float] | None = None) -> None:
    """Stacked histogram of clip durations (train vs validation), with the accepted bounds marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    data = [_durations(train), _durations(val)]
    every = data[0] + data[1]
    bins = 30 if every else 1
    ax.hist(data, bins=bins, stacked=True, label=[f"train ({len(train)})", f"val ({len(val)})"],
            color=["#4C72B0", "#DD8452"])
    if bounds is not None:
        for b in bounds:
            if every and min(every) - 1 <= b <= max(every) + 1:
                ax.axvline(b, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("clip duration (s)")
    ax.set_ylabel("clips")
    ax.set_title(f"{len(every)} clips, {sum(every) / 60:.1f} min")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def report_markdown(report: dict[str, Any], outputs: dict[str, str]) -> str:
    lines = [
        "# Dataset report",
        "",
        f"- rows read: {report['rows_read']}, accepted: {report['clips']}, rejected: {report['rejected']}",
        *([f"- rows that named no language and were given one: "
           f"{', '.join(f'{n} -> {lang}' for lang, n in report['rows_without_language'].items())}"]
          if report.get("rows_without_language") else []),
        *([f"- fields renamed from the manifest's own names: "
           f"{', '.join(f'{k} ({n} rows)' for k, n in report['fields_renamed'].items())}"]
          if report.get("fields_renamed") else []),
        f"- audio: {report['seconds'] / 60:.1f} min ({report['hours']:.3f} h), speakers: {report['speakers']}",
        f"- train: {report['splits']['train']['clips']} clips, val: {report['splits']['val']['clips']} clips",
        "- clip duration (s): " + ", ".join(f"{k} {v}" for k, v in report["duration_s"].items()),
        "",
        "| language | clips | minutes | speakers |",
        "|---|---:|---:|---:|",
    ]
    for lang, s in report["languages"].items():
        lines.append(f"| {lang} | {s['clips']} | {s['seconds'] / 60:.1f} | {s['speakers']} |")
    lines += ["", "| speaker | clips | minutes | languages | in val |", "|---|---:|---:|---|---|"]
    for spk, s in report["speakers_detail"].items():
        lines.append(f"| {spk} | {s['clips']} | {s['seconds'] / 60:.1f} | {', '.join(s['languages'])} | "
                     f"{'yes' if s['in_val'] else 'no'} |")
    if report["rejected_by_reason"]:
        lines += ["", "| rejection reason | rows |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in report["rejected_by_reason"].items()]
    lines += ["", "Outputs:", ""] + [f"- {k}: `{v}`" for k, v in outputs.items()]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], markdown: str, out_dir: Path) -> tuple[Path, Path]:
    json_path, md_path = out_dir / "report.json", out_dir / "report.md"
    write_json(json_path, report)
    with atomic_write(md_path) as f:
        f.write(markdown)
    return json_path, md_path
