"""The curate report: what came in, what was kept, what was rejected and why, and a page to listen to both.

:func:`write_report` writes, in one folder (next to the clips, so every path in it is relative):

- ``report.json``: the summary :func:`summarize` returns: hours in (the recordings), kept and rejected
  (per reason, clips and hours), per speaker and per text source (subtitles / transcript / asr), the
  duration, DNSMOS and CER spread of the kept clips, the recordings reused from an earlier run and those
  that failed, the notes the stage passes (an unreliable ASR judge, ...), its settings and the seed;
- ``report.md``: the same as tables, and the listening lists with links to the audio;
- ``report.html``: the tables, the histograms and a listening page: ``listen_kept`` random kept clips
  (drawn with ``seed``) and, per rejection reason, its examples that have audio, each with a player,
  its text and numbers (every text escaped);
- ``durations.png``, ``dnsmos.png``, ``cer.png``: kept against rejected clips, the thresholds marked.  A
  histogram with no value to show is not drawn (an older file of that name is removed) and the report says so.
"""

from __future__ import annotations

import html
import os
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from indextts_core.utils.fileio import atomic_write, write_json

#: The histograms: file name -> (value, axis label, lower threshold setting, upper threshold setting).
HISTOGRAMS = {
    "durations.png": ("duration", "clip duration (s)", "min_duration_s", "max_duration_s"),
    "dnsmos.png": ("dnsmos", "DNSMOS OVRL", "min_dnsmos", None),
    "cer.png": ("cer", "CER of the text against the ASR transcript", None, "max_cer"),
}
#: Why a histogram has nothing to show.
_NOTHING = {"duration": "no clip has a duration", "dnsmos": "no clip has a DNSMOS score (curate.min_dnsmos null?)",
            "cer": "no clip has a CER (no clip with both a given text and a reliable ASR transcript)"}


def _hours(seconds: float) -> float:
    return round(seconds / 3600, 4)


def _total(rows: Sequence[Mapping[str, Any]], key: str = "duration") -> dict[str, Any]:
    seconds = sum(float(r.get(key) or 0.0) for r in rows)
    return {"clips": len(rows), "seconds": round(seconds, 3), "hours": _hours(seconds)}


def _value(row: Mapping[str, Any], name: str) -> float | None:
    """A row's measurement: its own field, else the rejection's numbers (a rejected clip's DNSMOS)."""
    x = row.get(name)
    if x is None:
        x = (row.get("numbers") or {}).get(name)
    return None if x is None else float(x)


def _spread(values: Sequence[float]) -> dict[str, Any]:
    v = sorted(values)
    if not v:
        return {"measured": 0}
    return {"measured": len(v), "min": round(v[0], 3), "median": round(statistics.median(v), 3),
            "mean": round(statistics.fmean(v), 3), "max": round(v[-1], 3)}


def summarize(*, kept: Sequence[Mapping[str, Any]], rejected: Sequence[Mapping[str, Any]],
              recordings: Sequence[Mapping[str, Any]], settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """All the numbers of the report as plain data (``report.json`` adds where its files are)."""
    seconds_in = sum(float(r.get("duration_s") or 0.0) for r in recordings)
    status = Counter(str(r.get("status") or "processed") for r in recordings)
    speaker_of = {r["name"]: r.get("speaker") for r in recordings}
    by_reason: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rejected:
        by_reason[str(r["reason"])].append(r)
    by_speaker: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in kept:
        by_speaker[str(r.get("speaker") or speaker_of.get(r.get("recording")) or "?")].append(r)
    speaker_recordings = Counter(str(r.get("speaker") or "?") for r in recordings)
    methods: dict[str, dict[str, Any]] = {}
    for m in sorted({str(r.get("method")) for r in recordings} | {str(r.get("method")) for r in kept}):
        mine = [r for r in kept if str(r.get("method")) == m]
        methods[m] = {"recordings": sum(str(r.get("method")) == m for r in recordings),
                      "kept_clips": len(mine), "kept_hours": _total(mine)["hours"]}
    return {
        "recordings": {"count": len(recordings), "processed": status.get("processed", 0),
                       "reused": status.get("reused", 0), "failed": sum(bool(r.get("error")) for r in recordings),
                       "seconds": round(seconds_in, 3)},
        "hours_in": _hours(seconds_in),
        "kept": _total(kept),
        "rejected": _total(rejected),
        "rejected_by_reason": {reason: _total(rows) for reason, rows in
                               sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[0]))},
        "speakers": {spk: {**_total(rows), "recordings": speaker_recordings.get(spk, 0)}
                     for spk, rows in sorted(by_speaker.items())},
        "methods": methods,
        "duration_s": _spread([float(r["duration"]) for r in kept if r.get("duration") is not None]),
        "dnsmos": _spread([x for r in kept if (x := _value(r, "dnsmos")) is not None]),
        "cer": _spread([x for r in kept if (x := _value(r, "cer")) is not None]),
        "errors": [{"recording": r["name"], "error": str(r["error"])} for r in recordings if r.get("error")],
        "notes": [str(n) for n in settings.get("notes") or []],
        "settings": {k: v for k, v in settings.items() if k != "notes"},
        "seed": seed,
    }


def plot_histogram(path: Path, kept: Sequence[float], rejected: Sequence[float], *, xlabel: str,
                   bounds: Sequence[float | None] = ()) -> bool:
    """Kept against rejected values, stacked, thresholds dashed; False (nothing written) when both are empty."""
    if not kept and not rejected:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    ax.hist([list(kept), list(rejected)], bins=30, stacked=True, color=["#4C72B0", "#C44E52"],
            label=[f"kept ({len(kept)})", f"rejected ({len(rejected)})"])
    for b in bounds:
        if b is not None:
            ax.axvline(b, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("clips")
    ax.legend()
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return True


def _rel(path: Any, out_dir: Path) -> str | None:
    """An audio path as the report's pages refer to it: relative to ``out_dir`` (URIs as they are)."""
    if not path:
        return None
    p = str(path)
    if "://" in p or not os.path.isabs(p):
        return p
    return os.path.relpath(p, out_dir)


def _fmt(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _numbers(numbers: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k} {_fmt(v)}" for k, v in (numbers or {}).items())


def _span(row: Mapping[str, Any]) -> str:
    return f"{row.get('recording')} {float(row['start_s']):.2f}-{float(row['end_s']):.2f} s"


def _md(x: Any) -> str:
    """A markdown table cell: no line breaks, pipes and markup escaped."""
    return html.escape(" ".join(str(x).split()), quote=False).replace("|", "\\|")


def _tables(summary: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the summary tables, shared by the markdown and the HTML."""
    out = [("Rejected, per reason", ["reason", "clips", "minutes"],
            [[r, str(s["clips"]), f"{s['seconds'] / 60:.2f}"] for r, s in summary["rejected_by_reason"].items()]),
           ("Kept, per speaker", ["speaker", "recordings", "clips", "hours"],
            [[spk, str(s["recordings"]), str(s["clips"]), f"{s['hours']:.3f}"]
             for spk, s in summary["speakers"].items()]),
           ("Per text source", ["method", "recordings", "kept clips", "kept hours"],
            [[m, str(s["recordings"]), str(s["kept_clips"]), f"{s['kept_hours']:.3f}"]
             for m, s in summary["methods"].items()]),
           ("Kept clips", ["measure", "clips", "min", "median", "mean", "max"],
            [[name, str(s["measured"]), *(_fmt(s.get(k, "")) for k in ("min", "median", "mean", "max"))]
             for name, s in (("duration (s)", summary["duration_s"]), ("DNSMOS OVRL", summary["dnsmos"]),
                             ("CER", summary["cer"]))])]
    if summary["errors"]:
        out.append(("Recordings that failed", ["recording", "error"],
                    [[e["recording"], e["error"]] for e in summary["errors"]]))
    return out


def _headline(summary: Mapping[str, Any]) -> list[str]:
    rec, kept, rej = summary["recordings"], summary["kept"], summary["rejected"]
    return [f"recordings: {rec['count']} ({rec['processed']} processed, {rec['reused']} reused from an earlier run, "
            f"{rec['failed']} failed), {summary['hours_in']:.3f} h in",
            f"kept: {kept['clips']} clips, {kept['hours']:.3f} h; rejected: {rej['clips']} clips, {rej['hours']:.3f} h",
            *(f"{name}: not drawn, {why}" for name, why in summary["not_drawn"].items())]


def report_markdown(summary: Mapping[str, Any], listen_kept: Sequence[Mapping[str, Any]],
                    examples: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """``report.md``: the headline, the notes, the tables and the listening lists (links to the audio)."""
    lines = ["# Curate report", "", *(f"- {line}" for line in _headline(summary))]
    if summary["notes"]:
        lines += ["", "Notes:", "", *(f"- **{n}**" for n in summary["notes"])]
    for title, header, rows in _tables(summary):
        lines += ["", f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    lines += ["", f"## Listen: {len(listen_kept)} random kept clips (seed {summary['seed']})", "",
              "| audio | clip | text | numbers |", "|---|---|---|---|"]
    lines += [f"| [{_md(r.get('id', 'audio'))}]({_md(r['audio'])}) | {_md(_span(r))} | {_md(r.get('text') or '')} | "
              f"{_md(_kept_facts(r))} |" for r in listen_kept]
    for reason, rows in examples.items():
        lines += ["", f"## Listen: rejected, {reason}", "", "| audio | clip | text | why | numbers |",
                  "|---|---|---|---|---|"]
        lines += [f"| [audio]({_md(r['audio'])}) | {_md(_span(r))} | {_md(r.get('text') or '')} | "
                  f"{_md(r.get('detail') or '')} | {_md(_numbers(r.get('numbers')))} |" for r in rows]
    outputs = summary.get("outputs") or {}
    lines += ["", "Outputs:", "", *(f"- {k}: `{v}`" for k, v in outputs.items())]
    return "\n".join(lines) + "\n"


def _kept_facts(row: Mapping[str, Any]) -> str:
    facts = [f"{float(row['duration']):.2f} s", f"text from {row.get('method')}", f"speaker {row.get('speaker')}"]
    if row.get("dnsmos") is not None:
        facts.append(f"DNSMOS {float(row['dnsmos']):.2f}")
    if row.get("cer") is not None:
        facts.append(f"CER {float(row['cer']):.3f}")
    return ", ".join(facts)


def _audio(src: str | None) -> str:
    return f'<audio controls preload="none" src="{html.escape(src)}"></audio>' if src else ""


def report_html(summary: Mapping[str, Any], listen_kept: Sequence[Mapping[str, Any]],
                examples: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """``report.html``: the headline, notes, tables, histograms and the listening page."""
    e = html.escape
    parts = [f"<p>{'<br>'.join(e(line) for line in _headline(summary))}</p>"]
    parts += [f"<p><b>{e(n)}</b></p>" for n in summary["notes"]]
    for title, header, rows in _tables(summary):
        parts.append(f"<h2>{e(title)}</h2><table><tr>{''.join(f'<th>{e(c)}</th>' for c in header)}</tr>"
                     + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
                     + "</table>")
    parts += [f"<img src='{e(name)}' alt='{e(name)}'>" for name, drawn in summary["plots"].items() if drawn]
    parts.append(f"<h2>Listen: {len(listen_kept)} random kept clips (seed {summary['seed']})</h2><table>"
                 "<tr><th>audio</th><th>clip</th><th>text</th><th>numbers</th></tr>")
    parts += [f"<tr><td>{_audio(r['audio'])}</td><td>{e(str(r.get('id', '')))}<div class='m'>{e(_span(r))}</div></td>"
              f"<td>{e(r.get('text') or '')}</td><td class='m'>{e(_kept_facts(r))}</td></tr>" for r in listen_kept]
    parts.append("</table>")
    for reason, rows in examples.items():
        parts.append(f"<h2>Listen: rejected, {e(reason)} ({len(rows)} of "
                     f"{summary['rejected_by_reason'][reason]['clips']})</h2><table><tr><th>audio</th><th>clip</th>"
                     "<th>text</th><th>why</th><th>numbers</th></tr>")
        parts += [f"<tr><td>{_audio(r['audio'])}</td><td class='m'>{e(_span(r))}</td>"
                  f"<td>{e(r.get('text') or '')}</td><td>{e(r.get('detail') or '')}</td>"
                  f"<td class='m'>{e(_numbers(r.get('numbers')))}</td></tr>" for r in rows]
        parts.append("</table>")
    style = ("body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:.5em 0}"
             "td,th{border:1px solid #ccc;padding:4px 6px;vertical-align:top;text-align:left}"
             ".m{color:#555;font-size:90%}img{max-width:700px;display:block;margin:.5em 0}audio{width:220px}")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Curate report</title>"
            f"<style>{style}</style></head><body><h1>Curate report</h1>{''.join(parts)}</body></html>\n")


def write_report(out_dir: Path, *, kept: Sequence[dict], rejected: Sequence[dict], recordings: Sequence[dict],
                 settings: dict, seed: int, listen_kept: int = 12) -> dict:
    """Write ``report.json``, ``report.md``, ``report.html`` and the histograms to ``out_dir``; the summary.

    ``kept``: the manifest rows plus ``duration``, ``recording``, ``start_s``, ``end_s``, ``dnsmos`` and
    ``cer`` (None when not measured) and ``method``; ``rejected``: ``recording``, ``start_s``, ``end_s``,
    ``duration``, ``reason``, ``detail``, ``numbers``, ``text`` (or None) and ``audio`` (a kept example of
    the rejected audio, or None); ``recordings``: ``name``, ``speaker``, ``duration_s``, ``method``,
    ``digest``, ``status`` (``processed`` / ``reused``) and any ``error``; ``settings``: the stage's options
    (the thresholds are drawn on the histograms) and ``notes``, lines every reader must see.  Audio paths
    are written relative to ``out_dir`` (absolute local paths are made so).  Kept rows with a ``listen`` path
    (audio the caller copied next to the report) are the listening page's kept clips; without any, ``listen_kept``
    rows are drawn with ``seed``.  Every file is written atomically.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(kept=kept, rejected=rejected, recordings=recordings, settings=settings, seed=seed)
    summary["plots"], summary["not_drawn"] = {}, {}
    for name, (field, label, low, high) in HISTOGRAMS.items():
        values = [[x for r in rows if (x := _value(r, field)) is not None] for rows in (kept, rejected)]
        drawn = plot_histogram(out_dir / name, values[0], values[1], xlabel=label,
                               bounds=[settings.get(k) if k else None for k in (low, high)])
        summary["plots"][name] = drawn
        if not drawn:
            (out_dir / name).unlink(missing_ok=True)
            summary["not_drawn"][name] = _NOTHING[field]
    if any("listen" in r for r in kept):  # the caller chose them and copied their audio here (``listen``)
        listen = [{**r, "audio": _rel(r["listen"], out_dir)} for r in kept if "listen" in r]
    else:
        rng = random.Random(seed)
        chosen = sorted(rng.sample(range(len(kept)), min(max(listen_kept, 0), len(kept))))
        listen = [{**kept[i], "audio": _rel(kept[i].get("audio"), out_dir)} for i in chosen]
    examples: dict[str, list[dict]] = {}
    for r in rejected:
        if r.get("audio"):
            examples.setdefault(str(r["reason"]), []).append({**r, "audio": _rel(r["audio"], out_dir)})
    examples = {reason: examples[reason] for reason in summary["rejected_by_reason"] if reason in examples}
    summary["listening"] = {"kept": [str(r.get("id")) for r in listen],
                            "rejected": {reason: len(rows) for reason, rows in examples.items()}}
    summary["outputs"] = {"json": "report.json", "markdown": "report.md", "html": "report.html",
                          **{name: name for name, drawn in summary["plots"].items() if drawn}}
    write_json(out_dir / "report.json", summary)
    with atomic_write(out_dir / "report.md") as f:
        f.write(report_markdown(summary, listen, examples))
    with atomic_write(out_dir / "report.html") as f:
        f.write(report_html(summary, listen, examples))
    return summary
