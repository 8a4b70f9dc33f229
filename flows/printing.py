"""What the ``indextts-train`` commands print: tables and summary lines on the console, from the results.

Markup is off on both consoles: messages carry user text (paths, ``tokens[k]``) that rich would read as
tags.  The few styled lines pass ``markup=True`` and escape what they interpolate
(:func:`rich.markup.escape`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(markup=False)
err_console = Console(stderr=True, markup=False)


def print_curate_report(report: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Hours in, kept and rejected per reason, per speaker; the judge's verdict; the throughput per step."""
    table = Table(title="Curated", show_header=True, header_style="bold")
    for col in ("", "clips", "minutes"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("kept", str(report["kept"]["clips"]), f"{report['kept']['seconds'] / 60:.1f}", style="bold")
    for reason, r in report["rejected_by_reason"].items():
        table.add_row(f"rejected: {reason}", str(r["clips"]), f"{r['seconds'] / 60:.1f}")
    for speaker, r in report["speakers"].items():
        table.add_row(f"speaker {speaker}", str(r["clips"]), f"{r['seconds'] / 60:.1f}")
    console.print(table)
    rec = report["recordings"]
    console.print(f"recordings: {rec['count']} ({rec['processed']} processed, {rec['reused']} already curated, "
                  f"{rec['failed']} unreadable), {report['hours_in'] * 60:.1f} min of audio in", highlight=False)
    for note in report.get("notes") or ():
        console.print(f"note: {note}", highlight=False)
    speed = {k.removeprefix("audio_s_per_s."): v for k, v in metrics.items() if k.startswith("audio_s_per_s.")}
    if speed:
        console.print("audio seconds per second: " + ", ".join(f"{k} {v:g}" for k, v in speed.items()),
                      highlight=False)


def print_ingest_report(report: dict[str, Any]) -> None:
    table = Table(title="Dataset", show_header=True, header_style="bold")
    for col in ("", "clips", "minutes", "speakers"):
        table.add_column(col, justify="right" if col else "left")
    for lang, s in report["languages"].items():
        table.add_row(f"language {lang}", str(s["clips"]), f"{s['seconds'] / 60:.1f}", str(s["speakers"]))
    for split, s in report["splits"].items():
        table.add_row(f"split {split}", str(s["clips"]), f"{s['seconds'] / 60:.1f}", str(s["speakers"]))
    table.add_row("total", str(report["clips"]), f"{report['seconds'] / 60:.1f}", str(report["speakers"]),
                  style="bold")
    console.print(table)
    rejected = f"{report['rejected']} rejected"
    if report["rejected"]:
        reasons = ", ".join(f"{k}: {v}" for k, v in report["rejected_by_reason"].items())
        rejected += f" ({reasons})"
    console.print(f"rows read: {report['rows_read']}, accepted: {report['clips']}, {rejected}")
    if report.get("fields_renamed"):
        console.print("fields renamed from the manifests' own names: " + ", ".join(
            f"{k} ({n} rows)" for k, n in report["fields_renamed"].items()), highlight=False)
    if report.get("rows_without_language"):
        console.print("rows that named no language and were given one: " + ", ".join(
            f"{n} -> {lang}" for lang, n in report["rows_without_language"].items()), highlight=False)
    d = report["duration_s"]
    console.print(f"clip durations: min {d['min']} s, median {d['median']} s, max {d['max']} s")


def print_outputs(title: str, outputs: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    table.add_column("what", style="bold")
    table.add_column("where")
    for k, v in outputs.items():
        table.add_row(k, str(v))
    console.print(table)


def print_summary(summary: Any) -> None:
    results = summary.results
    curated = results.get("curate")
    if curated and curated["data"].get("report"):
        print_curate_report(curated["data"]["report"], curated["metrics"])
    ingest = results.get("ingest")
    if ingest:
        print_ingest_report(ingest["data"]["report"])
    tok = results.get("extend-bpe")
    if tok:
        m = tok["metrics"]
        if "base_size" in m:
            console.print(f"tokenizer: {m['base_size']} -> {m['vocab_size']} pieces (+{m['chars_added']} characters, "
                          f"+{m['pieces_added']} pieces), model rows {m['model_rows']}, base drift "
                          f"{m['base_drift']:.1%}")
        else:  # an IndexTTS-2.5 base: the vocabulary is kept
            console.print(f"tokenizer: {tok['data']['note']}")
    trained = results.get("train")
    if trained:
        m = trained["metrics"]
        if "final.loss" in m:
            console.print(f"training: {m['steps']} steps; validation loss {m.get('baseline.loss', float('nan')):.3f} "
                          f"-> {m['final.loss']:.3f}, mel_top1 {m.get('baseline.mel_top1', float('nan')):.3f} -> "
                          f"{m['final.mel_top1']:.3f}; export verified: {bool(m.get('export_verified'))}; "
                          f"registered version {trained['outputs'].get('registered_version') or '-'}")
        for line in forgetting_lines(m, trained.get("data", {}).get("forgetting")):
            console.print(line, highlight=False)
        print_generation(m)
        print_checkpoints(trained["outputs"].get("checkpoints"))
    if results.get("evaluate"):
        print_evaluation(results["evaluate"]["data"])
    promoted = results.get("promote")
    if promoted:
        d = promoted["decision"]
        console.print(f"promotion: {promoted['registered_model']} v{promoted['version'] or '-'} -> "
                      f"{promoted['alias'] or '-'}: {d['reason']}", highlight=False)
        for gate in promoted.get("gates") or []:  # what the candidate had to keep: base languages, emotion
            console.print(f"  {gate['reason']}", highlight=False)
    table = Table(title=f"Run {summary.run_name}: {summary.status}")
    for col in ("stage", "status", "s", "output"):
        table.add_column(col)
    for row in summary.stages:
        table.add_row(row.stage, row.status, f"{row.seconds:.1f}", row.output)
    console.print(table)
    print_outputs("Where things are", {
        "run folder": summary.output_dir,
        "summary": str(Path(summary.output_dir) / "summary.md"),
        **({"evaluation report": str(Path(summary.output_dir) / "evaluate" / "report.html")}
           if results.get("evaluate") and not results["evaluate"]["data"].get("skipped") else {}),
        "artifact store": summary.store,
        "MLflow run": summary.mlflow_link or "",
    })


def print_generation(m: dict[str, Any]) -> None:
    """Does it speak? The validation decodes of the base model and of the trained one, per language."""
    if "final.gen/stop_rate" not in m:
        return
    groups = [""] + sorted({k.split("/")[1] + "/" for k in m if k.startswith("final.gen/") and k.count("/") == 2})
    for g in groups:
        def pair(name: str, g: str = g) -> str:
            return f"{m.get(f'baseline.gen/{g}{name}', float('nan')):.2f} -> {m[f'final.gen/{g}{name}']:.2f}"
        console.print(f"generation{' ' + g.rstrip('/') if g else ''}: stop rate {pair('stop_rate')}, length ratio "
                      f"{pair('length_ratio')}, repeated 4-grams {pair('repeated_4gram')}", highlight=False)


def print_checkpoints(folder: str | None) -> None:
    """One line: where the training folder is and what it holds (``latest.pth``, ``best.pth``, the
    ``model_stepN.pth`` kept, ``export/``), to resume from or to point ``--model`` at."""
    if not folder:
        return
    path = Path(folder)
    if not path.is_dir():  # trained on another machine (a worker): the store keeps latest.pth and best.pth
        console.print(f"checkpoints: {folder}/ on the machine that trained them (not on this one)", highlight=False,
                      soft_wrap=True)
        return
    steps = sorted((p.name for p in path.glob("model_step*.pth") if p.stem.removeprefix("model_step").isdigit()),
                   key=lambda name: int(name.removeprefix("model_step").removesuffix(".pth")))
    held = [n for n in ("latest.pth", "best.pth") if (path / n).is_file()] + steps
    if (path / "export").is_dir():
        held.append("export/ (the exported model, official layout)")
    console.print(f"checkpoints: {folder}/ holds {', '.join(held) or 'no checkpoint'}", highlight=False,
                  soft_wrap=True)


def print_training(result: dict[str, Any]) -> None:
    m = result["metrics"]
    base = {k.removeprefix("baseline."): v for k, v in m.items() if k.startswith("baseline.")}
    final = {k.removeprefix("final."): v for k, v in m.items() if k.startswith("final.")}
    if final:
        table = Table(title=f"Validation: step 0 -> step {m['steps']}")
        for col in ("", "loss", "text_loss", "mel_loss", "mel_top1"):
            table.add_column(col, justify="right" if col else "left")
        groups = sorted({k.rpartition("/")[0] for k in final if not k.startswith("gen/")})
        for g in groups:
            prefix = f"{g}/" if g else ""
            cells = []
            for name in ("loss", "text_loss", "mel_loss", "mel_top1"):
                a, b = base.get(prefix + name), final.get(prefix + name)
                cells.append(f"{a:.3f} -> {b:.3f}" if a is not None and b is not None else
                             (f"{b:.3f}" if b is not None else ""))
            table.add_row(g or "all", *cells)
        console.print(table)
        print_generation(m)
    if "throughput.tokens_per_s" in m:
        console.print(f"steps: {m['steps']}; {m['throughput.tokens_per_s']:.0f} tokens/s, "
                      f"{m['throughput.samples_per_s']:.1f} samples/s; padding {m['throughput.padding_share']:.1%}; "
                      f"best step {m['best_step']}")
    ckpts = result["outputs"]["checkpoints"]
    print_outputs("Outputs", {
        "checkpoints": ckpts, "TensorBoard": f"{Path(sys.executable).parent / 'tensorboard'} --logdir {ckpts}",
        "export (official layout)": f"{ckpts}/export (strict reload verified: {bool(m.get('export_verified'))}; "
                                    f"base rows unchanged: {bool(m.get('base_rows_unchanged', True))})",
        "registered version": result["outputs"].get("registered_version") or "-",
    })
    print_checkpoints(ckpts)


def forgetting_lines(metrics: dict[str, Any], forgetting: dict[str, Any] | None) -> list[str]:
    """Replay and forgetting after training: the replay share of the tokens, and per replay language its worst rise
    of validation loss above step 0, ALARM when above ``train.forgetting_alarm``."""
    lines = []
    if "replay.token_share" in metrics:
        lines.append(f"replay: {metrics['replay.token_share']:.1%} of each epoch's tokens (mean over epochs)")
    if forgetting:
        said = ", ".join(f"{lang} {f['worst_rise']:+.1%}{' ALARM' if f.get('alarm') else ''}"
                         for lang, f in sorted(forgetting.items()) if f.get("worst_rise") is not None)
        if said:
            lines.append(f"forgetting (worst rise of a base language's validation loss above step 0): {said}")
    return lines


def pace_lines(pace: dict[str, Any] | None) -> list[str]:
    """Speaking pace per language: each model's characters per second and its drift against the recordings."""
    if not pace:
        return []
    languages = sorted({lang for per in pace.values() for lang in per if lang != "all"})
    lines = []
    for lang in languages:
        said = []
        for model, per in pace.items():
            e = per.get(lang)
            if e is None:
                said.append(f"{model} not speech")
                continue
            drift = e.get("pace_drift")
            said.append(f"{model} {e['chars_per_s']:.1f}" + (f" ({drift:+.0%})" if drift is not None else ""))
        lines.append(f"pace {lang} (chars/s, drift vs the recordings): {', '.join(said)}")
    return lines


def emotion_lines(emotion: dict[str, Any] | None) -> list[str]:
    """The emotion probe: how much of the base model's move toward the emotion prompt each model kept."""
    kept = (emotion or {}).get("transfer_kept") or {}
    lines = []
    for model, per in kept.items():
        said = ", ".join(f"{lang} {'not measurable' if x is None else f'{x:.2f}'}" for lang, x in sorted(per.items())
                         if lang != "all")
        if said:
            lines.append(f"emotion transfer kept by {model} (of the base's): {said}")
    return lines


#: The evaluation's columns on the console (the report has every metric).
CONSOLE_METRICS = {"cer": "CER", "cer_excess": "CER excess", "wer": "WER", "speaker_sim": "sim (own)",
                   "speaker_sim_verifier": "sim (verifier)", "dnsmos_ovrl": "DNSMOS", "duration_ratio": "duration",
                   "stop_failure": "stop fail", "speech_failure": "not speech"}


def print_evaluation(data: dict[str, Any]) -> None:
    """The headline numbers of an evaluation: every model over all items, the new model's difference, the pace and
    the emotion transfer kept."""
    from indextts_core.evaluation.report import LABELS, caveats

    if data.get("skipped"):
        err_console.print(f"evaluation skipped: {data['skipped']}", highlight=False)
        return
    for line in caveats(data):
        console.print(f"note: {line}", highlight=False)
    headline = data["headline"]
    metrics = [m for m in CONSOLE_METRICS if any(m in v for v in headline.values())]
    table = Table(title=f"Evaluation (all items; ASR: {data.get('asr') or 'none'})")
    table.add_column("model")
    for m in metrics:
        table.add_column(CONSOLE_METRICS[m], justify="right")
    for name, values in headline.items():
        table.add_row(name, *[f"{values[m]:.3f}" if m in values else "" for m in metrics])
    console.print(table)
    for line in pace_lines(data.get("pace")) + emotion_lines(data.get("emotion")):
        console.print(line, highlight=False)
    for d in data.get("differences", []):
        if d["model"] == "fine-tuned" and d["metric"] in ("cer", "speaker_sim"):
            console.print(f"fine-tuned - {d['versus']}: {LABELS[d['metric']]} {d['mean']:+.3f} "
                          f"[{d['low']:+.3f}, {d['high']:+.3f}]", highlight=False)
