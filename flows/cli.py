"""``indextts-train``: one command line for every stage of the pipeline.

Every subcommand reads the same run configuration (``--config run.yaml``, defaults otherwise),
applies its own flags and any ``--set section.key=value`` overrides, and calls the same stage
function the orchestrated flow calls.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from indextts_core.config import ManifestSource, PipelineConfig, dump_config, load_config
from indextts_core.errors import InputError

app = typer.Typer(
    name="indextts-train",
    help="Teach IndexTTS2 a new language: ingest -> corpus -> tokenizer -> preprocess -> pairs -> train -> export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
#: The configuration `run` uses without --config: the bundled demo, training sized for 60 clips.
DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
err_console = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Run configuration YAML (every section optional; defaults work).",
                 exists=False, dir_okay=False),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", metavar="KEY=VALUE",
                 help="Override one config value, e.g. --set train.epochs=3 (repeatable)."),
]


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=False)],
                        force=True)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "matplotlib", "PIL", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _config(config: Path | None, overrides: list[str] | None, **flags: Any) -> PipelineConfig:
    """Defaults <- YAML file <- named flags <- --set overrides."""
    merged = {k: v for k, v in flags.items() if v is not None}
    from indextts_core.config import parse_overrides

    merged.update(parse_overrides(overrides or []))
    return load_config(config, merged)


def _fail(e: Exception) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {e}", markup=True, highlight=False)
    return typer.Exit(code=2)


def print_ingest_report(report: dict[str, Any], metrics: dict[str, Any] | None = None) -> None:
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
    d = report["duration_s"]
    console.print(f"clip durations: min {d['min']} s, median {d['median']} s, max {d['max']} s")


def print_ingest(result: Any) -> None:
    print_ingest_report(json.loads(Path(result.report_json).read_text(encoding="utf-8")))
    if result.rejected:
        console.print(f"rejected rows and reasons: {result.rejects}")


def print_outputs(title: str, outputs: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    table.add_column("what", style="bold")
    table.add_column("where")
    for k, v in outputs.items():
        table.add_row(k, str(v))
    console.print(table)


# --------------------------------------------------------------------------- commands


@app.command()
def run(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    output_dir: Annotated[Path | None, typer.Option(help="Local output folder (run.output_dir).")] = None,
    refresh_cache: Annotated[bool, typer.Option(help="Recompute every stage, ignoring cached results.")] = False,
) -> None:
    """Run the pipeline as the Prefect flow 'finetune' (no --config: configs/demo.yaml, the bundled demo).

    Without PREFECT_API_URL, Prefect starts a temporary local server for the run; with it, the run
    is recorded on that server.  Stages whose inputs did not change are taken from the cache.
    """
    if config is None and DEMO_CONFIG.is_file():
        config = DEMO_CONFIG
        err_console.print(f"no --config: running the demo ({DEMO_CONFIG.relative_to(DEMO_CONFIG.parents[1])})")
    try:
        cfg = _config(config, overrides, **{"run.output_dir": output_dir,
                                             "orchestration.refresh_cache": refresh_cache or None})
    except InputError as e:
        raise _fail(e) from None
    prefect_defaults()
    from flows.finetune import finetune

    try:
        summary = finetune(cfg)
    except InputError as e:
        raise _fail(e) from None
    print_summary(summary)


def prefect_defaults() -> None:
    """Environment defaults for Prefect when run from this CLI (the user's own settings win)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "indextts_core,tasks")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")


def print_summary(summary: Any) -> None:
    results = summary.results
    ingest = results.get("ingest")
    if ingest:
        report = Path(summary.output_dir) / "dataset" / "report.json"
        if report.is_file():
            print_ingest_report(json.loads(report.read_text(encoding="utf-8")), ingest["metrics"])
    tok = results.get("extend-bpe")
    if tok:
        m = tok["metrics"]
        console.print(f"tokenizer: {m['base_size']} -> {m['vocab_size']} pieces (+{m['chars_added']} characters, "
                      f"+{m['pieces_added']} pieces), model rows {m['model_rows']}, base drift {m['base_drift']:.1%}")
    trained = results.get("train")
    if trained:
        m = trained["metrics"]
        if "final.loss" in m:
            console.print(f"training: {m['steps']} steps; validation loss {m.get('baseline.loss', float('nan')):.3f} "
                          f"-> {m['final.loss']:.3f}, mel_top1 {m.get('baseline.mel_top1', float('nan')):.3f} -> "
                          f"{m['final.mel_top1']:.3f}; export verified: {bool(m.get('export_verified'))}; "
                          f"registered version {trained['outputs'].get('registered_version') or '-'}")
    table = Table(title=f"Run {summary.run_name}: {summary.status}")
    for col in ("stage", "status", "s", "output"):
        table.add_column(col)
    for row in summary.stages:
        table.add_row(row.stage, row.status, f"{row.seconds:.1f}", row.output)
    console.print(table)
    print_outputs("Where things are", {
        "run folder": summary.output_dir,
        "summary": str(Path(summary.output_dir) / "summary.md"),
        "artifact store": summary.store,
        "MLflow run": summary.mlflow_link or "",
    })


@app.command()
def download(config: ConfigOpt = None, overrides: SetOpt = None) -> None:
    """Fetch the checkpoint, Wav2Vec2-BERT, semantic codec and dataset into the artifact store."""
    from indextts_core import stages

    try:
        cfg = _config(config, overrides)
        assets = stages.run_download(cfg)
    except InputError as e:
        raise _fail(e) from None
    table = Table(title="Assets")
    for col in ("asset", "files", "MB", "store", "status"):
        table.add_column(col)
    for a in assets.values():
        table.add_row(a.name, str(len(a.files)), f"{a.total_bytes / 1e6:.1f}", a.uri, "reused" if a.reused else "fetched")
    console.print(table)


@app.command()
def ingest(
    manifest: Annotated[list[Path], typer.Option(
        "--manifest", "-m", help="A JSONL manifest, an LJSpeech folder (metadata.csv + wavs/) or a folder of "
        "audio files with same-name .txt transcripts (repeatable).")],
    output_dir: Annotated[Path, typer.Option(help="Where manifest/train/val/rejects and the report go.")] = Path("dataset"),
    format: Annotated[str, typer.Option(help="auto, jsonl, ljspeech or folder.")] = "auto",
    language: Annotated[str | None, typer.Option(help="Language for rows that do not name one (e.g. am).")] = None,
    speaker: Annotated[str | None, typer.Option(help="Speaker for rows that do not name one.")] = None,
    min_duration: Annotated[float | None, typer.Option(help="Reject clips shorter than this (s).")] = None,
    max_duration: Annotated[float | None, typer.Option(help="Reject clips longer than this (s).")] = None,
    val_fraction: Annotated[float | None, typer.Option(help="Share of each speaker's clips held out.")] = None,
    val_speaker: Annotated[list[str] | None, typer.Option(
        "--val-speaker", help="Hold this speaker out entirely, for validation on an unseen voice (repeatable).")]
    = None,
    seed: Annotated[int | None, typer.Option(help="Seed for the train/val split.")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Validate manifests, split train/val per speaker and write the dataset report."""
    from indextts_core.data import ingest, stages

    try:
        cfg = _config(config, overrides, **{
            "ingest.min_duration_s": min_duration, "ingest.max_duration_s": max_duration,
            "ingest.val_fraction": val_fraction, "run.seed": seed, "ingest.val_speakers": val_speaker,
        })
        sources = [ManifestSource(path=str(m), format=format, language=language, speaker=speaker)  # type: ignore[arg-type]
                   for m in manifest]
        cfg.ingest.manifests = sources
        inputs = stages.manifest_inputs(cfg, Path.cwd())
        result = dataset.ingest(inputs, output_dir, stages.cfg.ingest, seed=cfg.run.seed, storage=cfg.storage)
    except (InputError, ValueError) as e:
        raise _fail(e) from None
    print_ingest(result)
    print_outputs("Outputs", {"manifest": result.manifest, "train": result.train, "val": result.val,
                              "rejects": result.rejects, "report": result.report_md, "histogram": result.histogram})


@app.command()
def corpus(
    manifest: Annotated[list[Path], typer.Option("--manifest", "-m", help="Ingested manifest(s) (repeatable).")],
    output_dir: Annotated[Path, typer.Option(help="Where <language>.txt and stats.json go.")] = Path("corpus"),
) -> None:
    """Collect the text of ingested manifests into one corpus file per language, with statistics."""
    from indextts_core.text.corpus import build_corpus

    try:
        from indextts_core.text.frontend import TextFrontend

        result = build_corpus(manifest, output_dir, TextFrontend())
    except (InputError, ValueError, FileNotFoundError) as e:
        raise _fail(e) from None
    table = Table(title="Corpus")
    for col in ("language", "lines", "characters", "unique chars", "file"):
        table.add_column(col)
    for lang, s in result.stats.items():
        table.add_row(lang, str(s["lines"]), str(s["characters"]), str(s["unique_characters"]), s["file"])
    console.print(table)


@app.command("extend-bpe")
def extend_bpe(
    base_model: Annotated[Path, typer.Option(help="The base SentencePiece model (the checkpoint's bpe.model).")],
    manifests: Annotated[list[Path], typer.Option(
        "--manifests", help="JSONL manifest(s) whose 'text' is mined (repeat the flag for several).")],
    output_model: Annotated[Path, typer.Option(help="Where to write the extended model; a .json sidecar (base hash, "
                                               "front-end fingerprint) goes next to it.")],
    target_size: Annotated[int, typer.Option(help="Total vocabulary after extension, base included (e.g. 24000 = "
                                             "12000 base + 12000 new); the model gets target+1 text rows.")] = 24000,
    language: Annotated[list[str] | None, typer.Option(
        "--language", help="Language(s) of the rows to mine (default: the run's language, 'am').")] = None,
    max_base_drift: Annotated[float, typer.Option(help="Largest allowed share of base-language probe sentences whose "
                                                  "segmentation changes (0 = none may change).")] = 0.0,
    min_char_count: Annotated[int, typer.Option(help="Characters seen at least this often get a piece, so they "
                                                "never become <unk>.")] = 1,
    min_piece_count: Annotated[int, typer.Option(help="Longer pieces must be used at least this often in the "
                                                 "corpus; the stage stops early rather than add unused ones.")] = 2,
    probe_text: Annotated[Path | None, typer.Option(help="Base-language sentences for the drift check (default: "
                                                    "the bundled English/Chinese probe).")] = None,
    report_dir: Annotated[Path | None, typer.Option(help="Where report.json/.md/.png go (default: next to the "
                                                    "output model).")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Extend the base tokenizer with the new language's pieces; base ids 0..N-1 stay byte-identical.

    Why extend? Every base token keeps its id (and its trained embedding), so English and Chinese
    keep working while the new language gets characters first, then useful longer pieces.  Text is
    mined after the model's own front-end (normalisation, upper-casing, CJK splitting), so every
    added piece can actually occur at training and inference time.
    """
    from indextts_core import stages
    from indextts_core.io_manifest import read_manifest_texts

    try:
        cfg = _config(config, overrides, **{
            "extend_bpe.target_size": target_size, "extend_bpe.max_base_drift": max_base_drift,
            "extend_bpe.min_char_count": min_char_count, "extend_bpe.min_piece_count": min_piece_count,
            "extend_bpe.probe_text": str(probe_text) if probe_text else None,
            "extend_bpe.languages": language, "extend_bpe.output_name": output_model.name,
        })
        from indextts_core.text.frontend import TextFrontend

        fe = TextFrontend()
        languages = stages.extend_languages(cfg)
        texts = read_manifest_texts(manifests, languages)
        corpus = {lang: [fe(t, lang) for t in lines] for lang, lines in texts.items()}
        out_dir = report_dir or output_model.parent
        result = stages.run_extend_bpe(cfg, base_model, corpus, output_model.parent, fe, report_dir=out_dir)
    except (InputError, ValueError) as e:
        raise _fail(e) from None
    console.print(f"[bold]{result.base_size} -> {result.vocab_size} pieces[/] (+{result.chars_added} characters, "
                  f"+{result.pieces_added} pieces); base ids 0..{result.base_size - 1} unchanged")
    console.print(f"model rows: number_text_tokens={result.vocab_size} -> {result.model_rows} rows in "
                  "text_embedding/text_head")
    console.print(f"base-language drift: {result.base_drift:.2%}; added pieces used on held-out text: "
                  f"{result.heldout_piece_usage:.1%}")
    for lang, st in result.languages.items():
        console.print(f"{lang}: unknown characters {st.unk_char_rate_before:.1%} -> {st.unk_char_rate_after:.1%}, "
                      f"tokens/char {st.tokens_per_char_before:.3f} -> {st.tokens_per_char_after:.3f}")
    if result.note:
        console.print(f"[yellow]note:[/] {result.note}")
    print_outputs("Outputs", {"tokenizer": result.model_path, "sidecar": result.sidecar_path,
                              "report": f"{out_dir / 'report.md'}  {out_dir / 'report.png'}"})


@app.command()
def preprocess(
    manifest: Annotated[Path, typer.Option(help="Ingested manifest (dataset/manifest.jsonl; its train/val split is "
                                           "kept) or any manifest in the platform's schema.")],
    output_dir: Annotated[Path, typer.Option(help="Where train_manifest.jsonl, val_manifest.jsonl, the text ids, "
                                             "rejects, report and (under features/) the feature shards go.")],
    tokenizer: Annotated[Path, typer.Option(help="The (extended) tokenizer the text ids are for.")],
    language: Annotated[str | None, typer.Option(help="Language of rows that do not name one (e.g. am).")] = None,
    checkpoint: Annotated[Path, typer.Option(help="Base checkpoint folder (config.yaml, gpt.pth, "
                                             "wav2vec2bert_stats.pt, hf_cache/...).")] = Path("checkpoints"),
    w2v_bert: Annotated[Path | None, typer.Option(help="Wav2Vec2-BERT folder (default: <checkpoint>/hf_cache/"
                                                  "w2v-bert-2.0).")] = None,
    codec: Annotated[Path | None, typer.Option(help="Semantic codec safetensors (default: <checkpoint>/hf_cache/"
                                               "semantic_codec_model.safetensors).")] = None,
    batch_size: Annotated[str | None, typer.Option(help="Most clips per batch, or 'auto'.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    workers: Annotated[str | None, typer.Option(help="Audio decoding threads, or 'auto' (CPU count).")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Text ids, semantic codes, speaker latents and emotion vectors for every clip.

    Batches are sorted by length and each clip's outputs are trimmed to its own length (a clip gets
    the same numbers alone or in a batch).  The batch size comes from a GPU memory probe on the
    longest clips; on out-of-memory the batch is halved down to one clip, and a clip that does not
    fit alone is rejected with the reason.  Re-running processes only clips whose audio or models
    changed; an interrupted run resumes at the first unfinished unit.  Every clip ends up in an
    index or in rejects.jsonl.
    """
    from indextts_core import stages
    from indextts_core.text.frontend import TextFrontend
    from indextts_core.model.bundle import open_bundle
    from indextts_core.preprocess import preprocess as run_preprocess

    try:
        cfg = _config(config, overrides, **{"preprocess.batch_size": _auto(batch_size),
                                             "preprocess.device": device, "preprocess.workers": _auto(workers),
                                             "language": language})
        bundle = open_bundle(checkpoint, w2v_bert, codec)
        clips = stages.clips_for_manifest(cfg, manifest, language)
        result = run_preprocess(clips, bundle, tokenizer, TextFrontend(), output_dir,
                                opts=stages.preprocess_options(cfg), storage=cfg.storage)
    except (InputError, ValueError) as e:
        raise _fail(e) from None
    report = json.loads(result.report_json.read_text(encoding="utf-8"))
    console.print(f"clips: {result.clips}; indexed: {result.indexed} (train {report['train']}, val {report['val']}); "
                  f"rejected: {result.rejected}" + (f" ({', '.join(f'{k}: {v}' for k, v in result.rejected_by_reason.items())})"
                                                     if result.rejected else ""))
    console.print(f"audio processed now: {result.processed_now}; features reused: {result.reused}; "
                  f"{report['clips_per_second']} clips/s, {report['audio_seconds_per_second']} audio s/s")
    print_outputs("Outputs", {"train": result.train_manifest, "val": result.val_manifest, "rejects": result.rejects,
                              "report": f"{result.report_md}  {result.report_png}"})


def _auto(value: str | None) -> int | str | None:
    if value is None or value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise typer.BadParameter(f"expected a number or 'auto', got {value!r}") from None


@app.command("build-pairs")
def build_pairs_cmd(
    manifest: Annotated[Path, typer.Option(help="Preprocessed index whose clips are the targets "
                                           "(processed_data/train_manifest.jsonl).")],
    output: Annotated[Path, typer.Option(help="Pair file to write (processed_data/GPT_pairs_train.jsonl); a .json "
                                         "and a .md report go next to it.")],
    pairs_per_target: Annotated[int | None, typer.Option(help="Prompts per target, each another clip of the same "
                                                         "speaker.")] = None,
    emotion_source: Annotated[str | None, typer.Option(help="Emotion vector from the prompt, the target, or mix.")]
    = None,
    allow_self_prompt: Annotated[bool, typer.Option(help="Let speakers with a single clip prompt themselves "
                                                    "(otherwise they are reported and skipped).")] = False,
    prompt_manifest: Annotated[list[Path] | None, typer.Option(
        help="Other indexes to draw prompts from (default: train_manifest.jsonl and val_manifest.jsonl next to "
             "--manifest).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the prompt draw.")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Prompt/target pairs: every target is conditioned on other clips of its speaker, never on itself.

    GPT training needs them: a model trained on clips prompted by themselves learns to copy the
    prompt.  The same policy draws fresh prompts every epoch when training with --fresh-prompts.
    """
    from indextts_core import stages
    from indextts_core.preprocess.pairs import build_pairs

    try:
        cfg = _config(config, overrides, **{
            "pairs.pairs_per_target": pairs_per_target, "pairs.emotion_source": emotion_source,
            "pairs.allow_self_prompt": allow_self_prompt or None, "run.seed": seed})
        pool = prompt_manifest if prompt_manifest is not None else [
            p for p in (manifest.parent / "train_manifest.jsonl", manifest.parent / "val_manifest.jsonl") if p.is_file()]
        result = build_pairs(manifest, output, stages.pairing_policy(cfg), pool)
    except (InputError, ValueError, FileNotFoundError) as e:
        raise _fail(e) from None
    st = result.stats
    console.print(f"targets: {st.targets}; pairs: {st.pairs}; speakers: {len(st.per_speaker)}; "
                  f"skipped single-clip speakers: {len(st.skipped_speakers)}")
    for warning in st.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    print_outputs("Outputs", {"pairs": result.path, "report": f"{result.report_md}  {result.report_json}"})


@app.command()
def train(
    train_manifest: Annotated[Path, typer.Option(help="Training pairs (processed_data/GPT_pairs_train.jsonl), or a "
                                                 "preprocessed index manifest (then prompts are drawn every epoch).")],
    tokenizer: Annotated[Path, typer.Option(help="The extended tokenizer the index was made with; the model is "
                                            "resized to its vocabulary.")],
    val_manifest: Annotated[Path | None, typer.Option(help="Validation pairs (processed_data/GPT_pairs_val.jsonl); "
                                                      "without it nothing is validated and the last checkpoint is "
                                                      "exported.")] = None,
    checkpoint: Annotated[Path, typer.Option(help="Base checkpoint folder (config.yaml, gpt.pth, bpe.model, ...), the "
                                             "one preprocess used.")] = Path("checkpoints"),
    output_dir: Annotated[Path, typer.Option(help="Checkpoints, TensorBoard logs (tensorboard --logdir <this>), "
                                             "metrics.jsonl and export/.")] = Path("trained_ckpts"),
    epochs: Annotated[int | None, typer.Option(help="Passes over the training pairs.")] = None,
    resume: Annotated[str | None, typer.Option(help="'auto' (latest.pth in --output-dir, if any) or a checkpoint "
                                               "file, e.g. trained_ckpts/model_step5000.pth.")] = None,
    warm_start: Annotated[bool, typer.Option(help="With --resume <file>: take only its weights (another run's, or a "
                                             "gpt.pth) and start a new run.")] = False,
    val_interval: Annotated[int | None, typer.Option(help="Validate and save a checkpoint every N optimizer steps "
                                                     "(and at each epoch end).")] = None,
    keep_checkpoints: Annotated[int | None, typer.Option(help="model_step{N}.pth files kept (best.pth is never "
                                                         "deleted).")] = None,
    batch_tokens: Annotated[int | None, typer.Option(help="Effective batch in padded tokens per optimizer step, all "
                                                     "GPUs together.")] = None,
    micro_batch_tokens: Annotated[str | None, typer.Option(help="Tokens per forward pass on one device, or 'auto' (a "
                                                           "memory probe on the longest sample).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Peak learning rate of the backbone.")] = None,
    amp: Annotated[str | None, typer.Option(help="auto, bf16, fp16 or off.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    fresh_prompts: Annotated[bool, typer.Option(help="Draw new same-speaker prompts every epoch instead of the pair "
                                                "file's.")] = False,
    gradient_checkpointing: Annotated[bool, typer.Option(help="Trade compute for memory.")] = False,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps.")] = None,
    features: Annotated[Path | None, typer.Option(help="Folder of the feature shards, if not where "
                                                  "preprocess.json says.")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Fine-tune the GPT on the preprocessed pairs; export the best checkpoint in the official layout.

    Batch size, gradient accumulation, loader workers and AMP are chosen automatically: batches are
    built to a token budget from length-sorted samples, micro-batches sized by a GPU memory probe,
    bf16 where the GPU supports it.  An out-of-memory step is re-run with half-size micro-batches
    (same samples).  Base-token rows are frozen for real.  --resume auto continues an interrupted
    run on exactly the next batch; a checkpoint from different inputs is refused.  Multi-GPU:
    torchrun --nproc-per-node N --no-python indextts-train train ... (same flags).
    """
    from indextts_core import stages
    from indextts_core.training import TrainInputs
    from indextts_core.training import train as run_training

    rank = int(os.environ.get("RANK", "0"))
    if rank:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        cfg = _config(config, overrides, **{
            "train.epochs": epochs, "train.resume": resume, "train.warm_start": warm_start or None,
            "train.val_interval": val_interval, "train.keep_checkpoints": keep_checkpoints,
            "train.batch_tokens": batch_tokens, "train.micro_batch_tokens": _auto(micro_batch_tokens),
            "train.learning_rate": learning_rate, "train.amp": amp, "train.device": device,
            "train.fresh_prompts": fresh_prompts or None, "train.gradient_checkpointing": gradient_checkpointing or None,
            "train.max_steps": max_steps,
        })
        inputs = TrainInputs(checkpoint_dir=checkpoint, tokenizer=tokenizer, train=train_manifest, val=val_manifest,
                             output_dir=output_dir, resume=cfg.train.resume, warm_start=cfg.train.warm_start,
                             pairing=stages.pairing_policy(cfg), feature_dir=features)
        result = run_training(inputs, stages.train_options(cfg))
    except InputError as e:
        raise _fail(e) from None
    if rank == 0:
        print_training(result)


def print_training(result: Any) -> None:
    base, final = result.baseline, result.final
    if final:
        table = Table(title=f"Validation: step 0 -> step {result.steps}")
        for col in ("", "loss", "text_loss", "mel_loss", "mel_top1"):
            table.add_column(col, justify="right" if col else "left")
        groups = sorted({k.removeprefix("val/").rpartition("/")[0] for k in final})
        for g in groups:
            prefix = f"val/{g}/" if g else "val/"
            cells = []
            for m in ("loss", "text_loss", "mel_loss", "mel_top1"):
                a, b = base.get(prefix + m), final.get(prefix + m)
                cells.append(f"{a:.3f} -> {b:.3f}" if a is not None and b is not None else
                             (f"{b:.3f}" if b is not None else ""))
            table.add_row(g or "all", *cells)
        console.print(table)
    t = result.throughput
    if t:
        console.print(f"steps: {result.steps}; {t['tokens_per_s']:.0f} tokens/s, {t['samples_per_s']:.1f} samples/s; "
                      f"padding {t['padding_share']:.1%}; best step {result.best_step}")
    outputs = {"checkpoints": result.output_dir, "TensorBoard": f"tensorboard --logdir {result.output_dir}",
               "summary": result.summary_path}
    if result.export_dir:
        outputs["export (official layout)"] = f"{result.export_dir} (strict reload verified: {result.export_verified}; "\
            f"base rows unchanged: {result.base_rows_unchanged})"
    print_outputs("Outputs", outputs)


@app.command()
def normalize(
    text: Annotated[list[str] | None, typer.Argument(help="Text to prepare (default: lines from standard input).")]
    = None,
    language: Annotated[str, typer.Option(help="Language of the text (e.g. am, en, zh).")] = "am",
) -> None:
    """Print text as the tokenizer sees it (the platform's front-end), e.g. for the official inference code."""
    from indextts_core.text.frontend import TextFrontend

    fe = TextFrontend()
    lines = [" ".join(text)] if text else [line.rstrip("\n") for line in sys.stdin]
    for line in lines:
        sys.stdout.write(fe(line, language) + "\n")


@app.command("config")
def show_config(config: ConfigOpt = None, overrides: SetOpt = None) -> None:
    """Print the resolved run configuration as YAML (secrets masked); fails on any invalid field."""
    try:
        cfg = _config(config, overrides)
    except InputError as e:
        raise _fail(e) from None
    sys.stdout.write(dump_config(cfg))


def main() -> None:  # pragma: no cover - console-script shim
    app()


if __name__ == "__main__":  # pragma: no cover - python -m flows.cli (e.g. under torchrun)
    main()
