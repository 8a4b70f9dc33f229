"""The evaluation report: a markdown table, a plot, and an HTML page to listen to every sample.

``report.md``: per language and group, each metric's mean and 95% interval for the real recordings,
the base model and the fine-tuned one (and any other model evaluated), and the paired difference of
the last model against each other; CER also as excess over the real recordings' CER on the same items,
and the judge's own CER on the real recordings per language, trusted or not (``evaluate.max_judge_cer``:
the CER/WER of a language it is unreliable for are marked, and a caveat says they do not decide), and
the medians and failure counts per model and language (:mod:`~indextts_core.evaluation.robust`).
``plots.png``: the same means with their intervals, one panel per metric.  ``report.html``: the
tables, the plot, and one row per item with audio players for the prompt, the real recording, and
every model's output, with the transcripts, the worst items of the last model first.  Everything refers to
files in the same folder, so the folder can be copied, logged to MLflow or served as it is.
The header names each judge with its revision and licence (a caveat for a non-commercial one); with a
second judge (``evaluate.asr_secondary``) a table compares both judges' CER on the items the first read
above 50% CER, and the HTML shows the second transcript under the first.
The speaking pace (characters per second of speech, and each model's drift against the real recordings) and, with
``evaluate.emotion_prompt``, the emotion transfer table (base and candidate side by side) follow, and the HTML
ends with the emotion probe's samples: each model's neutral and emotional output per item.

(Some 430 lines: the markdown and the HTML render the same sections from one summary, side by side.)
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from indextts_core.evaluation.emotion import EMOTION_ENCODER_LABEL
from indextts_core.evaluation.judges import judges_line, licence_caveats
from indextts_core.evaluation.robust import BAD_CER, worst_first
from indextts_core.evaluation.run import ASR_METRICS, METRICS, REFERENCE, TINY_RANDOM_NOTE
from indextts_core.evaluation.speaker import OWN_ENCODER_LABEL
from indextts_core.utils.fileio import atomic_write, read_jsonl

LABELS = {"cer": "CER", "cer_excess": "CER excess over the recordings", "wer": "WER",
          "last_sentence_cer": "CER of the paragraph's last sentence",
          "speaker_sim": "speaker similarity (the model's own CAMPPlus)",
          "speaker_sim_verifier": "speaker similarity (independent verifier)",
          "dnsmos_ovrl": "DNSMOS overall (P.835 OVRL)", "dnsmos_sig": "DNSMOS signal (P.835 SIG)",
          "dnsmos_bak": "DNSMOS background (P.835 BAK)", "dnsmos_p808": "DNSMOS P.808",
          "duration_ratio": "duration ratio", "stop_failure": "stop failures", "speech_failure": "not speech"}


#: Shorter names for the per-item facts under each audio player.
SHORT = {"chars_per_s": "characters/s",
         "speaker_sim": "similarity (own encoder)", "speaker_sim_verifier": "similarity (verifier)",
         "dnsmos_ovrl": "DNSMOS OVRL", "last_sentence_cer": "last sentence CER"}


def judge_caveats(judge: Mapping[str, Any] | None) -> list[str]:
    """One line per language whose real recordings the judge reads worse than ``max_judge_cer``."""
    if not judge:
        return []
    return [f"judge unreliable for {lang}: CER {judge['reference_cer'][lang]:.2f} on the real recordings "
            f"(> {judge['max_judge_cer']:g}); its CER/WER for {lang} are not used to decide."
            for lang in judge["unreliable"]]


def judge_line(judge: Mapping[str, Any] | None) -> str:
    """The judge's own CER on the real recordings per language, and whether it is trusted."""
    if not judge:
        return ""
    said = ", ".join(f"{lang} {x:.3f} ({'unreliable' if lang in judge['unreliable'] else 'trusted'})"
                     for lang, x in judge["reference_cer"].items())
    return f"The judge's CER on the real recordings: {said}; trusted up to {judge['max_judge_cer']:g}."


def caveats(summary: Mapping[str, Any]) -> list[str]:
    """What a reader must know before the numbers: tiny random models, an unreliable judge, outputs that were
    not speech (not scored)."""
    lines = [TINY_RANDOM_NOTE] if summary.get("tiny_random") else []
    lines += judge_caveats(summary.get("judge"))
    scale = summary.get("speaker_scale") or {}
    if scale and "verifier" not in scale:
        lines.append(f"Speaker similarity is scored only by {OWN_ENCODER_LABEL}, which flatters the model (on "
                     "IndexTTS-2.5 it is the model's speaker input): set download.speaker_verifier for an independent "
                     "verifier.")
    if summary.get("naturalness"):
        lines.append(summary["naturalness"]["note"])
    lines += licence_caveats(summary.get("judges"))
    for model, counts in (summary.get("not_speech") or {}).items():
        if counts:
            said = ", ".join(f"{n} {why}" for why, n in sorted(counts.items()))
            lines.append(f"{model}: {said} output(s) not speech: counted as failures, no CER, WER or speaker "
                         "similarity computed on them.")
    return lines


def secondary_table(summary: Mapping[str, Any]) -> tuple[str, list[str], list[list[str]]] | None:
    """The second opinion (``evaluate.asr_secondary``): per model, how many items above 50% CER the second judge
    re-read and both judges' mean CER on them; None without a second judge."""
    second = summary.get("judge_secondary")
    if not second:
        return None
    first = (summary.get("judge") or {}).get("name") or summary.get("asr") or "first judge"
    title = (f"Second opinion: items above {second['above_cer']:.0%} CER under {first}, re-read by "
             f"{second['name']}")
    header = ["model", "items", f"mean CER ({first})", f"mean CER ({second['name']})"]

    def fmt(x: float | None) -> str:
        return "" if x is None else f"{x:.3f}"

    rows = [[m, str(v["items"]), fmt(v["mean_cer_first"]), fmt(v["mean_cer_second"])]
            for m, v in second["by_model"].items()]
    rows.append(["all", str(second["items"]), fmt(second["mean_cer_first"]), fmt(second["mean_cer_second"])])
    return title, header, rows


def robust_tables(summary: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """Medians and failures per model and language (``summary["robust"]``): what a mean hides."""
    entries = summary.get("robust") or []
    if not entries:
        return []
    header = ["model", "language", "items", "scored", "median CER", f"share above {BAD_CER:.0%} CER", "silent",
              "runaway", "stop failures"]

    def fmt(x: float | None, pct: bool = False) -> str:
        return "" if x is None else (f"{x:.0%}" if pct else f"{x:.3f}")

    rows = [[e["model"], e["language"], str(e["items"]), str(e["scored"]), fmt(e["median_cer"]),
             fmt(e["over_half_cer"], pct=True), str(e["silent"]), str(e["runaway"]), str(e["stop_failures"])]
            for e in entries]
    return [("Medians and failures (silent: below the RMS floor or under 0.3 s; runaway: never stopped)",
             header, rows)]


def scale_tables(summary: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """Speaker similarity on a scale, per encoder: per language the real recordings' same-speaker ceiling and
    different-speaker floor, and each model's mean with its place between them (0 = floor, 1 = ceiling)."""
    tables = []

    def fmt(x: float | None) -> str:
        return "" if x is None else f"{x:.3f}"

    for scale in (summary.get("speaker_scale") or {}).values():
        models = [m for m in [REFERENCE, *summary.get("models", [])]
                  if any(m in e.get("models", {}) for e in scale["by_language"].values())]
        header = ["language", "same-speaker ceiling (pairs)", "different-speaker floor (pairs)",
                  *(f"{m}: mean (scaled)" for m in models)]
        rows = []
        for lang, e in scale["by_language"].items():
            cells = []
            for m in models:
                v = e.get("models", {}).get(m)
                cells.append("" if v is None else fmt(v["mean"]) + (f" ({v['scaled']:.2f})" if v["scaled"] is not None
                                                                     else ""))
            rows.append([lang, f"{fmt(e['ceiling']['mean'])} ({e['ceiling']['n']})",
                         f"{fmt(e['floor']['mean'])} ({e['floor']['n']})", *cells])
        if rows:
            named = scale["label"] if scale["name"] in scale["label"] else f"{scale['label']}: {scale['name']}"
            tables.append((f"Speaker similarity scale: {named}", header, rows))
    return tables


def pace_tables(summary: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """Speaking pace per language: the real recordings' and each model's mean characters per second of speech, and
    each model's drift against the recordings on the same items (``summary["pace"]``)."""
    pace = summary.get("pace") or {}
    if not pace:
        return []
    models = [REFERENCE, *summary.get("models", [])]  # every model: one without speech says so
    langs = sorted({lang for m in pace for lang in pace[m]}, key=lambda x: (x == "all", x))
    rows = []
    for lang in langs:
        cells = []
        for m in models:
            e = (pace.get(m) or {}).get(lang)
            if e is None:
                cells.append("no speech to time")
            elif e.get("pace_drift") is None:
                cells.append(f"{e['chars_per_s']:.2f} (n={e['n']})")
            else:
                cells.append(f"{e['chars_per_s']:.2f} (drift {e['pace_drift']:+.1%} on {e['common']}; n={e['n']})")
        rows.append([lang, *cells])
    return [("Speaking pace: characters per second of speech (leading and trailing silence trimmed; drift = the "
             "model's mean over the recordings' on the same items - 1)", ["language", *models], rows)]


#: The emotion probe's figures, as the report names them.
EMOTION_LABELS = {"f0_mean_delta": "F0 mean change (Hz)", "f0_range_delta": "F0 range change (Hz)",
                  "energy_range_delta": "energy range change (dB)",
                  "toward": "toward the prompt's prosody (0 = no closer, 1 = reached)",
                  "emotion_sim_gain": f"emotion similarity gain ({EMOTION_ENCODER_LABEL})"}


def emotion_tables(summary: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The emotion probe: per language the models side by side, each transfer figure's mean (neutral ->
    emotional), the items scored, and each model's transfer kept against the base model's."""
    probe = summary.get("emotion") or {}
    by_model = probe.get("by_model") or {}
    models = [m for m in summary.get("models", []) if m in by_model]
    if not models:
        return []
    langs = sorted({lang for m in models for lang in by_model[m]}, key=lambda x: (x == "all", x))
    kept = probe.get("transfer_kept") or {}
    rows = []
    for lang in langs:
        entries = [by_model[m].get(lang) or {} for m in models]
        rows.append([lang, "items scored (not speech)",
                     *(f"{e.get('scored', 0)} of {e.get('items', 0)} ({e.get('not_speech', 0)})" for e in entries)])
        for f, label in EMOTION_LABELS.items():
            rows.append([lang, label, *("" if e.get(f) is None else f"{e[f]:+.3f}" for e in entries)])
        if kept:
            cells = []
            for m in models:
                x = (kept.get(m) or {}).get(lang)
                cells.append("" if m not in kept else ("not measurable" if x is None else f"{x:.2f}"))
            rows.append([lang, f"transfer kept (toward / {probe.get('baseline')}'s)", *cells])
    return [(f"Emotion transfer (neutral → emotional prompt {probe.get('prompt')})", ["language", "figure", *models],
             rows)]


def _cell(e: Mapping[str, Any] | None) -> str:
    if e is None:
        return ""
    return f"{e['mean']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"


def _grouped(summary: Mapping[str, Any]) -> dict[tuple[str, str], dict[tuple[str, str], Mapping[str, Any]]]:
    out: dict[tuple[str, str], dict[tuple[str, str], Mapping[str, Any]]] = defaultdict(dict)
    for e in summary["table"]:
        out[(e["language"], e["group"])][(e["model"], e["metric"])] = e
    return out


def result_tables(summary: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(title, header, rows)`` per language and group, then all items: what both the markdown and the HTML show."""
    models = [REFERENCE, *summary["models"]]
    last = list(summary["models"])[-1]
    others = [m for m in summary["models"] if m != last]
    diffs = {(d["language"], d["group"], d["versus"], d["metric"]): d for d in summary["differences"]
             if d["model"] == last}
    header = ["metric", *models, *(f"{last} - {o}" for o in others)]
    unreliable = list((summary.get("judge") or {}).get("unreliable") or [])
    tables = []
    for (lang, group), cells in sorted(_grouped(summary).items(), key=lambda kv: (kv[0][0] == "all", kv[0])):
        rows = []
        for metric in METRICS:
            row = [_cell(cells.get((m, metric))) for m in models]
            if not any(row):
                continue
            row += [_cell(diffs.get((lang, group, o, metric))) for o in others]
            label = LABELS[metric] + (" (lower is better)" if METRICS[metric] else "")
            if metric in ASR_METRICS and unreliable and (lang in unreliable or lang == "all"):
                label += (" (judge unreliable)" if lang != "all" else
                          f" (includes judge-unreliable {', '.join(unreliable)})")
            rows.append([label, *row])
        tables.append((f"{lang} / {group}" if lang != "all" else "all items", header, rows))
    return tables


def markdown_report(summary: Mapping[str, Any], title: str = "Evaluation") -> str:
    lines = [f"# {title}", "",
             f"ASR: {summary['asr'] or 'none configured (no CER/WER)'}; items: {summary['evalset']['items']} "
             f"({', '.join(f'{k}: {v}' for k, v in sorted(summary['evalset']['by_language_group'].items()))}); "
             f"mean [95% bootstrap interval]; `{REFERENCE}` = the real recordings.", ""]
    if judges_line(summary.get("judges")):
        lines += [judges_line(summary.get("judges")), ""]
    if judge_line(summary.get("judge")):
        lines += [judge_line(summary.get("judge")), ""]
    if summary.get("naturalness"):
        lines += [f"Naturalness: {summary['naturalness']['source']}.", ""]
    lines += [f"> {line}" for line in caveats(summary)] + ([""] if caveats(summary) else [])
    for name, header, rows in result_tables(summary):
        lines += [f"## {name}", "", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    second = secondary_table(summary)
    for name, header, rows in (scale_tables(summary) + robust_tables(summary) + pace_tables(summary)
                               + emotion_tables(summary) + ([second] if second else [])):
        lines += [f"## {name}", "", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
    return "\n".join(lines)


def plot_report(summary: Mapping[str, Any], dest: Path) -> Path:
    """One panel per metric: means with intervals per language (all groups together) and model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [REFERENCE, *summary["models"]]
    table = [e for e in summary["table"] if e["group"] != "all"]
    metrics = [m for m in METRICS if any(e["metric"] == m for e in table)]
    keys = sorted({(e["language"], e["group"]) for e in table})
    cols = min(4, max(1, len(metrics)))
    rows = max(1, -(-len(metrics) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    width = 0.8 / len(models)
    for ax in axes.flat[len(metrics):]:
        ax.axis("off")
    for ax, metric in zip(axes.flat, metrics):
        cells = {(e["language"], e["group"], e["model"]): e for e in table if e["metric"] == metric}
        for j, model in enumerate(models):
            xs, ys, lo, hi = [], [], [], []
            for i, (lang, group) in enumerate(keys):
                e = cells.get((lang, group, model))
                if e is None:
                    continue
                xs.append(i + (j - (len(models) - 1) / 2) * width)
                ys.append(e["mean"])
                lo.append(e["mean"] - e["low"])
                hi.append(e["high"] - e["mean"])
            if xs:
                ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=model)
        ax.set_xticks(range(len(keys)), [f"{lang}\n{group}" for lang, group in keys], fontsize=8)
        ax.set_title(LABELS[metric] + (" (lower is better)" if METRICS[metric] else ""), fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(dest, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return dest


def _audio(src: str | None) -> str:
    return f'<audio controls preload="none" src="{html.escape(src)}"></audio>' if src else ""


def probe_html(summary: Mapping[str, Any], probe: Sequence[Mapping[str, Any]]) -> str:
    """The emotion probe's samples: the prompt, then per item each model's neutral and emotional output."""
    emotion = summary.get("emotion") or {}
    if not probe or not emotion:
        return ""
    models = [m for m in summary.get("models", []) if any(r["model"] == m for r in probe)]
    by_item: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for r in probe:
        by_item[r["id"]][r["model"]] = r
    head = "".join(f"<th>{html.escape(m)}: neutral</th><th>{html.escape(m)}: emotional</th>" for m in models)
    body = []
    for item_id, cols in by_item.items():
        first = next(iter(cols.values()))
        cells = []
        for m in models:
            r = cols.get(m)
            if r is None:
                cells.append("<td></td><td></td>")
                continue
            for side in ("neutral", "emotional"):
                facts = [] if r.get(f"{side}_not_speech") is None else [f"not speech ({r[f'{side}_not_speech']})"]
                if side == "emotional" and r.get("scored"):
                    facts += [f"toward {r['toward']:+.2f}" if r.get("toward") is not None else "",
                              f"emotion sim. gain {r['emotion_sim_gain']:+.3f}"
                              if r.get("emotion_sim_gain") is not None else ""]
                cells.append(f"<td>{_audio(r[f'{side}_wav'])}<div class='m'>"
                             f"{html.escape(', '.join(f for f in facts if f))}</div></td>")
        body.append(f"<tr><td><b>{html.escape(item_id)}</b> ({html.escape(first['language'])})"
                    f"<div>{html.escape(first['text'])}</div></td>{''.join(cells)}</tr>")
    return (f"<h2>Emotion probe: said without and with the emotion prompt</h2><p>Emotion prompt "
            f"{html.escape(str(emotion.get('prompt')))}: {_audio(emotion.get('prompt_wav'))} Emotion similarity: "
            f"{html.escape(EMOTION_ENCODER_LABEL)} (the model's reading, not an independent judge).</p>"
            f"<table><tr><th>item</th>{head}</tr>{''.join(body)}</table>")


def html_report(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], title: str,
                probe: Sequence[Mapping[str, Any]] = ()) -> str:
    models = list(summary["models"])
    by_item: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for r in rows:
        by_item[r["id"]][r["model"]] = r
    order = worst_first(rows, models[-1]) if models else list(by_item)  # the worst of the last model first
    tables = []
    second = secondary_table(summary)
    for name, header, rows in (result_tables(summary) + scale_tables(summary) + robust_tables(summary)
                               + pace_tables(summary) + emotion_tables(summary) + ([second] if second else [])):
        cells = "".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>" + "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        tables.append(f"<h3>{html.escape(name)}</h3><table><tr>{cells}</table>")
    head = "".join(f"<th>{html.escape(m)}</th>" for m in [REFERENCE, *models])
    items = []
    for item_id in order:
        cols = by_item[item_id]
        any_row = next(iter(cols.values()))
        cells = []
        for m in [REFERENCE, *models]:
            r = cols.get(m)
            if r is None:
                cells.append("<td></td>")
                continue
            facts = [f"{SHORT.get(k) or LABELS[k]} {r[k]:.3f}" for k in ("cer", "last_sentence_cer", "speaker_sim",
                                                                        "speaker_sim_verifier", "dnsmos_ovrl",
                                                                        "duration_ratio", "chars_per_s")
                     if r.get(k) is not None] + ([f"not speech ({r['not_speech']}): not scored"]
                                                 if r.get("not_speech") else [])
            transcript = f"<div class='t'>{html.escape(r['transcript'])}</div>" if r.get("transcript") else ""
            if r.get("cer_secondary") is not None:
                transcript += (f"<div class='t'>second judge (CER {r['cer_secondary']:.3f}): "
                               f"{html.escape(r.get('transcript_secondary') or '')}</div>")
            cells.append(f"<td>{_audio(r['wav'])}<div class='m'>{html.escape(', '.join(facts))}</div>{transcript}</td>")
        items.append(f"<tr><td><b>{html.escape(item_id)}</b> ({html.escape(any_row['language'])}, "
                     f"{html.escape(any_row['group'])})<div>{html.escape(any_row['text'])}</div></td>"
                     f"<td>{_audio(_prompt_path(any_row, summary))}</td>{''.join(cells)}</tr>")
    style = ("body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1em}"
             "td,th{border:1px solid #ccc;padding:4px;vertical-align:top;font-size:13px}.m{color:#555}"
             ".t{color:#036;font-style:italic}audio{width:220px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style>"
            f"</head><body><h1>{html.escape(title)}</h1><p>ASR: {html.escape(str(summary['asr'] or 'none'))}; "
            f"mean [95% bootstrap interval]; <i>reference</i> = the real recordings. "
            f"{html.escape(judges_line(summary.get('judges')))} {html.escape(judge_line(summary.get('judge')))}</p>"
            f"{''.join(f'<p><b>{html.escape(line)}</b></p>' for line in caveats(summary))}{''.join(tables)}"
            f"<img src='plots.png' alt='metrics per language'><h2>Every sample, the worst of "
            f"{html.escape(models[-1] if models else '')} first</h2><table><tr><th>item</th>"
            f"<th>prompt</th>{head}</tr>{''.join(items)}</table>{probe_html(summary, probe)}</body></html>")


def _prompt_path(row: Mapping[str, Any], summary: Mapping[str, Any]) -> str | None:
    return summary.get("prompt_files", {}).get(row["prompt_id"])


def write_report(out_dir: Path, title: str = "Evaluation") -> dict[str, Path]:
    """``report.md``, ``plots.png`` and ``report.html`` from ``evaluation.json`` and ``items.jsonl`` in ``out_dir``."""
    import json

    summary = json.loads((out_dir / "evaluation.json").read_text())
    rows = read_jsonl(out_dir / "items.jsonl")
    prompts = {p.stem: f"audio/prompt/{p.name}" for p in sorted((out_dir / "audio" / "prompt").glob("*"))}
    summary["prompt_files"] = prompts
    md = markdown_report(summary, title)
    with atomic_write(out_dir / "report.md") as f:
        f.write(md)
    plot_report(summary, out_dir / "plots.png")
    with atomic_write(out_dir / "report.html") as f:
        probe = read_jsonl(out_dir / "emotion_probe.jsonl") if (out_dir / "emotion_probe.jsonl").is_file() else []
        f.write(html_report(summary, rows, title, probe))
    return {"markdown": out_dir / "report.md", "plot": out_dir / "plots.png", "html": out_dir / "report.html"}
