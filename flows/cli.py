"""``indextts-train``: one command line for every stage of the pipeline.

Every subcommand reads the same run configuration (``--config run.yaml``, defaults otherwise),
applies its own flags and any ``--set section.key=value`` overrides.  ``run`` runs the ``finetune``
flow; each stage command runs that stage's task as a flow run of its own (:mod:`flows.stage`):
the same code, cache, artifact store and MLflow tracking as the flow, with local paths given on
the command line published as the artifacts they are.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from flows.printing import (
    console,
    err_console,
    print_evaluation,
    print_ingest_report,
    print_outputs,
    print_summary,
    print_training,
)
from indextts_core.config import PipelineConfig, dump_config, load_config
from indextts_core.errors import InputError

app = typer.Typer(
    name="indextts-train",
    help="Teach IndexTTS2 a new language: ingest -> corpus -> tokenizer -> preprocess -> pairs -> train -> export -> "
         "evaluate -> promote.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: flag names never truncated, readable at 80 columns
)
#: The configuration `run` uses without --config: the bundled demo, training sized for 60 clips.
DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Run configuration YAML (every section optional; defaults work).",
                 exists=False, dir_okay=False),
]
ModelOpt = Annotated[Path, typer.Option(help="Checkpoint folder: an export (<checkpoints>/export) or the official "
                                              "IndexTTS-2 folder.", exists=True, file_okay=False)]
PromptOpt = Annotated[Path, typer.Option(help="Audio of the voice to speak with.", exists=True, dir_okay=False)]
TextOpt = Annotated[list[str] | None, typer.Option("--text", "-t", metavar="TEXT", help="A line to say (repeatable).")]
HfCacheOpt = Annotated[
    Path | None,
    typer.Option(help="Folder of the encoders and synthesis models (w2v-bert-2.0/, semantic codec, "
                      "campplus_cn_common.bin, bigvgan/); default: <model>/hf_cache, else the run config's "
                      "checkpoint's.", file_okay=False),
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
    err_console.print(f"[bold red]error:[/] {escape(str(e))}", markup=True, highlight=False)
    return typer.Exit(code=2)


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


#: Prefect's loggers that log a failed task or flow run with its traceback.
RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")


class _InputErrorTracebacks(logging.Filter):
    """Drops the traceback of a run that failed on the user's input (an :class:`InputError`), keeping its line.

    Prefect logs a failed task, then its failed flow, each with a traceback of some 200 lines, before
    the command's own ``error:`` line says the same in one.  A bad input is not a bug: its ERROR line
    (which carries the message) is enough.  Any other exception keeps its full traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if isinstance(record.exc_info, tuple) else None
        seen: set[int] = set()
        while exc is not None and id(exc) not in seen:
            if isinstance(exc, InputError):
                record.exc_info, record.exc_text = None, None
                break
            seen.add(id(exc))
            exc = exc.__cause__ or exc.__context__
        return True


_INPUT_ERROR_TRACEBACKS = _InputErrorTracebacks()


def quiet_input_error_tracebacks() -> None:
    """Install :class:`_InputErrorTracebacks` on Prefect's run loggers (once)."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if _INPUT_ERROR_TRACEBACKS not in logger.filters:
            logger.addFilter(_INPUT_ERROR_TRACEBACKS)


def prefect_defaults() -> None:
    """Environment defaults for Prefect when run from this CLI (the user's own settings win).

    Without ``PREFECT_API_URL`` this starts the temporary API server the command talks to: one that
    stops with the command, however the command ends (see :mod:`flows.api_server`).
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "indextts_core,tasks")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")  # core logs after a stage flow
    quiet_input_error_tracebacks()
    from flows.api_server import start_temporary_api

    try:
        start_temporary_api(float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]))
    except RuntimeError as e:
        raise _fail(e) from None


def _run_stage(cfg: PipelineConfig, stage: str, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``stage`` as its own flow run (the flow's task, cache, store and MLflow); its result."""
    prefect_defaults()
    from flows.stage import stage_flow

    summary = stage_flow(cfg, stage, given or {})
    for row in summary.stages:
        err_console.print(f"{row.stage}: {row.status} in {row.seconds:.1f} s", highlight=False)
    return summary.results[stage]


def _copy_result(cfg: PipelineConfig, result: dict[str, Any], dest: Path, names: list[str] | None = None) -> Path:
    from flows.local_inputs import copy_out, store_for
    from tasks.artifacts import ArtifactRef

    return copy_out(store_for(cfg), ArtifactRef.model_validate(result["artifact"]), dest, cfg.storage.cache_dir, names)


@app.command()
def download(
    output_dir: Annotated[Path | None, typer.Option(
        help="Also lay the models out here as the official code expects them: the checkpoint's files at the top, "
             "the encoders, CAMPPlus and BigVGAN in hf_cache/ (the seed's checkpoints/ folder).",
        file_okay=False)] = None,
    pin: Annotated[bool, typer.Option(
        help="Write the commit each hub revision (a branch or tag such as main) named into the --config file, "
        "so later runs fetch exactly these files.")] = False,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Fetch the checkpoint, encoders, synthesis models and dataset into the artifact store (and, with
    --output-dir, a folder laid out as the official code expects it)."""
    from flows.local_inputs import lay_out_checkpoint

    lacking: list[str] = []
    try:
        if pin and config is None:
            raise InputError("--pin writes the commits into the run's YAML: give it with --config")
        cfg = _config(config, overrides)
        result = _run_stage(cfg, "download")
        if output_dir is not None:
            lacking = lay_out_checkpoint(cfg, result["assets"], output_dir)
        if pin:
            assert config is not None
            _pin(config, cfg, result.get("commits") or {})
    except InputError as e:
        raise _fail(e) from None
    table = Table(title="Assets")
    for col in ("asset", "store", "status"):
        table.add_column(col)
    for name, ref in result["assets"].items():
        table.add_row(name, ref["uri"], "reused" if result["reused"][name] else "fetched")
    console.print(table)
    if output_dir is not None:
        console.print(f"checkpoint folder: {output_dir}", highlight=False)
        if lacking:
            err_console.print(f"{output_dir}: the official inference also needs {', '.join(lacking)}; set the "
                              "download sources that provide them (docs/real-run.md)", highlight=False)


def _pin(config: Path, cfg: PipelineConfig, commits: dict[str, str]) -> None:
    """Replace each hub revision that is not a commit in ``config`` by the commit it named, in place."""
    from indextts_core.store.download import COMMIT_RE, configured_assets, pin_config_text
    from indextts_core.utils.fileio import atomic_write

    sources = configured_assets(cfg)
    found = {n: (src.revision or "", commits[n]) for n, src in sources.items()
             if n in commits and src.revision and not COMMIT_RE.fullmatch(src.revision)}
    if not found:
        console.print(f"{config}: every hub source is already pinned to a commit", highlight=False)
        return
    text, left = pin_config_text(config.read_text(encoding="utf-8"), found, {n: s.source for n, s in sources.items()})
    with atomic_write(config) as f:
        f.write(text)
    for name, (given, commit) in found.items():
        if name not in left:
            console.print(f"{config}: {name} {sources[name].source} {given} -> {commit}", highlight=False)
    for name in left:  # a --set override, or a layout the line editor does not know
        err_console.print(f"{config}: could not edit {name} in place; set {name}: {{source: {sources[name].source}, "
                          f"revision: {found[name][1]}}}", highlight=False)


@app.command()
def ingest(
    manifest: Annotated[list[Path] | None, typer.Option(
        "--manifest", "-m", help="JSONL manifest, LJSpeech folder or folder of audio + .txt (repeatable; "
        "default: the config's ingest.manifests).")] = None,
    output_dir: Annotated[Path, typer.Option(help="Where manifest/train/val/rejects and the report go.")]
    = Path("dataset"),
    format: Annotated[str, typer.Option(help="auto, jsonl, ljspeech or folder.")] = "auto",
    language: Annotated[str | None, typer.Option(help="Language of rows that name none (e.g. am).")] = None,
    speaker: Annotated[str | None, typer.Option(help="Speaker of rows that name none.")] = None,
    min_duration: Annotated[float | None, typer.Option(help="Reject shorter clips (s).")] = None,
    max_duration: Annotated[float | None, typer.Option(help="Reject longer clips (s).")] = None,
    val_fraction: Annotated[float | None, typer.Option(help="Share of each speaker's clips held out.")] = None,
    val_speaker: Annotated[list[str] | None, typer.Option(
        "--val-speaker", help="Hold this speaker out entirely (repeatable).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the train/val split.")] = None,
    field: Annotated[list[str] | None, typer.Option(
        "--field", metavar="OURS=THEIRS", help="The manifests' own name for a field, e.g. --field audio=audio_path "
        "(repeatable; common names such as audio_path and speaker_id are recognised anyway).")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Validate manifests, split train/val per speaker, write the dataset report (stage 'ingest')."""
    from flows.local_inputs import store_for, use_manifests

    try:
        cfg = _config(config, overrides, **{
            "ingest.min_duration_s": min_duration, "ingest.max_duration_s": max_duration,
            "ingest.val_fraction": val_fraction, "run.seed": seed, "ingest.val_speakers": val_speaker,
        })
        pairs = [f.partition("=") for f in field or []]
        bad = [f for f, (ours, eq, theirs) in zip(field or [], pairs) if not (eq and ours and theirs)]
        if bad:
            raise InputError(f"--field {bad[0]!r}: expected OURS=THEIRS, e.g. --field audio=audio_path")
        fields = {ours.strip(): theirs.strip() for ours, _, theirs in pairs}
        if manifest:
            use_manifests(cfg, manifest, store_for(cfg), format, language, speaker, raw=True, fields=fields)
        elif fields:
            for m in cfg.ingest.manifests:
                m.fields = {**m.fields, **fields}
        try:
            result = _run_stage(cfg, "ingest")
        except InputError:
            _keep_evidence(cfg.run.output_dir / "ingest", output_dir)  # rejects and report of a failed run
            raise
        _copy_result(cfg, result, output_dir)
    except (InputError, ValueError) as e:
        raise _fail(e) from None
    print_ingest_report(result["data"]["report"])
    if result["metrics"].get("rejected"):
        console.print(f"rejected rows and reasons: {output_dir / 'rejects.jsonl'}")
    print_outputs("Outputs", {k: output_dir / v for k, v in result["outputs"].items()})


def _keep_evidence(stage_dir: Path, output_dir: Path) -> None:
    for name in ("rejects.jsonl", "report.json", "report.md", "durations.png"):
        if (stage_dir / name).is_file():
            output_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(stage_dir / name, output_dir / name)
            err_console.print(f"kept {output_dir / name}", highlight=False)


@app.command()
def corpus(
    manifest: Annotated[list[Path] | None, typer.Option(
        "--manifest", "-m", help="Ingested manifest (dataset/manifest.jsonl) or raw manifest(s) (repeatable; "
        "default: the config's dataset).")] = None,
    output_dir: Annotated[Path, typer.Option(help="Where <language>.txt and stats.json go.")] = Path("corpus"),
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Collect the dataset's text, one file per language, with statistics (stage 'corpus')."""
    from flows.local_inputs import store_for, use_manifests

    try:
        cfg = _config(config, overrides)
        given = use_manifests(cfg, manifest, store_for(cfg)) if manifest else {}
        result = _run_stage(cfg, "corpus", given)
        _copy_result(cfg, result, output_dir)
    except (InputError, ValueError, FileNotFoundError) as e:
        raise _fail(e) from None
    table = Table(title="Corpus")
    for col in ("language", "lines", "characters", "unique chars", "file"):
        table.add_column(col)
    for lang, s in result["data"]["stats"].items():
        table.add_row(lang, str(s["lines"]), str(s["characters"]), str(s["unique_characters"]),
                      str(output_dir / s["file"]))
    console.print(table)


@app.command("extend-bpe")
def extend_bpe(
    base_model: Annotated[Path | None, typer.Option(
        help="Base SentencePiece model (default: the checkpoint's bpe.model).")] = None,
    manifests: Annotated[list[Path] | None, typer.Option(
        "--manifests", help="Manifest(s) whose text is mined: dataset/manifest.jsonl or raw ones (repeatable; "
        "default: the config's dataset).")] = None,
    output_model: Annotated[Path, typer.Option(
        help="Extended model to write; its .json sidecar and reports go next to it.")]
    = Path("tokenizers/extended_bpe.model"),
    target_size: Annotated[int | None, typer.Option(
        help="Total vocabulary after extension, base included (e.g. 24000).")] = None,
    language: Annotated[list[str] | None, typer.Option(
        "--language", help="Language(s) to mine (default: the run's language).")] = None,
    max_base_drift: Annotated[float | None, typer.Option(
        help="Largest share of base probe sentences whose segmentation may change.")] = None,
    min_char_count: Annotated[int | None, typer.Option(
        help="Characters seen this often get a piece (never <unk>).")] = None,
    min_piece_count: Annotated[int | None, typer.Option(
        help="Longer pieces must be used this often in the corpus.")] = None,
    probe_text: Annotated[Path | None, typer.Option(
        help="Base-language sentences for the drift check.")] = None,
    report_dir: Annotated[Path | None, typer.Option(
        help="Where report.json/.md/.png go (default: next to the model).")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Extend the base tokenizer with the new language's pieces; base ids stay byte-identical.

    Why extend? Every base token keeps its id (and its trained embedding), so English and Chinese
    keep working while the new language gets characters first, then useful longer pieces.  Text is
    mined after the model's own front-end, through the corpus stage, as in the flow.
    """
    from flows.local_inputs import publish_files, store_for, use_manifests

    try:
        cfg = _config(config, overrides, **{
            "extend_bpe.target_size": target_size, "extend_bpe.max_base_drift": max_base_drift,
            "extend_bpe.min_char_count": min_char_count, "extend_bpe.min_piece_count": min_piece_count,
            "extend_bpe.probe_text": str(probe_text) if probe_text else None,
            "extend_bpe.languages": language, "extend_bpe.output_name": output_model.name,
        })
        store = store_for(cfg)
        given = use_manifests(cfg, manifests, store) if manifests else {}
        if base_model is not None:  # the base tokenizer alone stands for the checkpoint here
            cfg.extend_bpe.base_model = str(base_model.resolve())
            given["checkpoint"] = publish_files(store, {base_model.name: base_model}, "asset:checkpoint")
        result = _run_stage(cfg, "extend-bpe", given)
        if result["metrics"].get("base_size") is None:  # a 2.5 .tiktoken base: kept under its official name
            outputs = result.get("outputs") or {}
            _copy_result(cfg, result, output_model.parent, [outputs.get("tokenizer", "x"), outputs.get("sidecar", "x")])
            _copy_result(cfg, result, report_dir or output_model.parent, ["report.json", "report.md"])
        else:
            _copy_result(cfg, result, output_model.parent, [output_model.name, output_model.with_suffix(".json").name])
            reports = report_dir or output_model.parent
            _copy_result(cfg, result, reports, ["report.json", "report.md", "report.png"])
    except (InputError, ValueError) as e:
        raise _fail(e) from None
    m = result["metrics"]
    if "base_size" not in m:  # an IndexTTS-2.5 base (a .tiktoken vocabulary): kept and measured
        console.print(result["data"]["note"])
        return
    console.print(f"[bold]{m['base_size']} -> {m['vocab_size']} pieces[/] (+{m['chars_added']} characters, "
                  f"+{m['pieces_added']} pieces); base ids 0..{m['base_size'] - 1} unchanged", markup=True)
    console.print(f"model rows: number_text_tokens={m['vocab_size']} -> {m['model_rows']} rows in "
                  "text_embedding/text_head")
    console.print(f"base-language drift: {m['base_drift']:.2%}; added pieces used on held-out text: "
                  f"{m['heldout_piece_usage']:.1%}")
    for lang in sorted({k.split(".")[0] for k in m if k.endswith(".unk_char_rate_before")}):
        console.print(f"{lang}: unknown characters {m[lang + '.unk_char_rate_before']:.1%} -> "
                      f"{m[lang + '.unk_char_rate_after']:.1%}, tokens/char {m[lang + '.tokens_per_char_before']:.3f}"
                      f" -> {m[lang + '.tokens_per_char_after']:.3f}")
    if result["data"].get("note"):
        console.print(f"[yellow]note:[/] {escape(str(result['data']['note']))}", markup=True)
    print_outputs("Outputs", {"tokenizer": output_model, "sidecar": output_model.with_suffix(".json"),
                              "report": f"{reports / 'report.md'}  {reports / 'report.png'}"})


@app.command()
def preprocess(
    manifest: Annotated[Path | None, typer.Option(
        help="Ingested manifest (dataset/manifest.jsonl; its split is kept) or a raw one (default: the "
        "config's dataset).")] = None,
    output_dir: Annotated[Path, typer.Option(
        help="Where the index goes (train/val manifests, text ids, rejects, report).")] = Path("processed_data"),
    tokenizer: Annotated[Path | None, typer.Option(
        help="The (extended) tokenizer (default: the extend-bpe stage's).")] = None,
    language: Annotated[str | None, typer.Option(help="Language of rows that name none (e.g. am).")] = None,
    checkpoint: Annotated[str | None, typer.Option(
        help="Base checkpoint folder (default: the config's download.checkpoint).")] = None,
    w2v_bert: Annotated[Path | None, typer.Option(
        help="Wav2Vec2-BERT folder (default: <checkpoint>/hf_cache/w2v-bert-2.0).")] = None,
    codec: Annotated[Path | None, typer.Option(
        help="Semantic codec safetensors (default: <checkpoint>/hf_cache/...).")] = None,
    batch_size: Annotated[str | None, typer.Option(help="Most clips per batch, or 'auto'.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    workers: Annotated[str | None, typer.Option(help="Audio decoding threads, or 'auto'.")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Text ids, semantic codes, speaker latents and emotion vectors for every clip.

    The same stage as the flow's: features live in the artifact store, keyed by audio and models,
    so only clips never seen with these models are processed; an interrupted run resumes at the
    first unfinished unit.  Batches are sorted by length, sized by a GPU memory probe, halved on
    out-of-memory; every clip ends up in the index or in rejects.jsonl.
    """
    from flows.local_inputs import store_for, tokenizer_artifact, use_checkpoint, use_manifests

    try:
        cfg = _config(config, overrides, **{"preprocess.batch_size": _auto(batch_size),
                                             "preprocess.device": device, "preprocess.workers": _auto(workers),
                                             "language": language})
        store = store_for(cfg)
        if checkpoint is not None or w2v_bert is not None or codec is not None:
            base = checkpoint or (cfg.download.checkpoint.source if cfg.download.checkpoint else "tiny://0")
            use_checkpoint(cfg, base, w2v_bert, codec)
        given = use_manifests(cfg, [manifest], store, language=language) if manifest else {}
        if tokenizer is not None:
            cfg.extend_bpe.output_name = tokenizer.name
            given["extend-bpe"] = tokenizer_artifact(store, tokenizer)
        result = _run_stage(cfg, "preprocess", given)
        _copy_result(cfg, result, output_dir)
    except (InputError, ValueError) as e:
        raise _fail(e) from None
    m = result["metrics"]
    rejected = {k.removeprefix("rejected."): v for k, v in m.items() if k.startswith("rejected.")}
    console.print(f"clips: {m['clips']}; indexed: {m['indexed']} (train {m['train']}, val {m['val']}); "
                  f"rejected: {m['rejected']}" + (f" ({', '.join(f'{k}: {v}' for k, v in rejected.items())})"
                                                   if m["rejected"] else ""))
    console.print(f"audio processed now: {m.get('audio_processed_now', 0)}; features reused: "
                  f"{m.get('features_reused', 0)}")
    print_outputs("Outputs", {k: output_dir / v for k, v in result["outputs"].items()})


@app.command("import")
def import_(
    files: Annotated[list[Path], typer.Argument(
        help="The community trainer's processed_data/*_manifest.jsonl and/or GPT_pairs_*.jsonl files.")],
    manifest: Annotated[Path | None, typer.Option(
        "--manifest", "-m", help="The raw manifest those were made from (audio, text, speaker, language by id; "
        "default: what the community rows carry).")] = None,
    checkpoint: Annotated[str | None, typer.Option(
        help="The base checkpoint folder the run uses (default: the config's download.checkpoint).")] = None,
    output_dir: Annotated[Path, typer.Option(help="Where manifest.jsonl and import-report.json go.")]
    = Path("imported"),
    spot_checks: Annotated[int, typer.Option(help="Clips recomputed and compared before anything is reused.")] = 8,
    field: Annotated[list[str] | None, typer.Option(
        "--field", metavar="OURS=THEIRS", help="The raw manifest's own name for a field (repeatable).")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Bring a community trainer's processed features (JarodMica/AM layout) into the pipeline.

    A seeded sample of clips is recomputed with the base checkpoint and compared (codes exactly,
    conditioning and emotion vectors by cosine); only if they match are the features stored where
    preprocess finds them, so it computes only what is missing.  Otherwise nothing is reused and
    preprocess recomputes everything (the report says why: another base model, the padded-codes
    bug of batch sizes above 1, ...).  Then: indextts-train run --set ingest.manifests=... or
    ingest --manifest <output-dir>/manifest.jsonl, preprocess, build-pairs, train.
    """
    from flows.importing import import_community
    from flows.local_inputs import use_checkpoint

    try:
        cfg = _config(config, overrides)
        pairs_ = [f.partition("=") for f in field or []]
        bad = [f for f, (ours, eq, theirs) in zip(field or [], pairs_) if not (eq and ours and theirs)]
        if bad:
            raise InputError(f"--field {bad[0]!r}: expected OURS=THEIRS, e.g. audio=audio_path")
        if checkpoint is not None:
            use_checkpoint(cfg, checkpoint)
        assets = _run_stage(cfg, "download")["assets"]
        out = import_community(cfg, assets, files, manifest, output_dir, spot_checks=spot_checks,
                               fields={ours: theirs for ours, _, theirs in pairs_})
    except (InputError, ValueError) as e:
        raise _fail(e) from None
    r = out.report
    check = r.spot_check
    if check is not None:
        console.print(check.table(), highlight=False)
    console.print(f"clips: {r.read} read, {r.complete} complete, {r.incomplete} incomplete, {r.no_audio} without "
                  f"audio; imported: {r.imported}; left to preprocess: {r.recompute}; rejected rows: {r.rejected}",
                  highlight=False)
    if r.reason:
        console.print(f"[bold]{escape(str(r.reason))}[/]", markup=True)
    if out.without_text:
        err_console.print(f"{len(out.without_text)} clip(s) have no text (give --manifest with the raw rows): "
                          f"{', '.join(out.without_text[:5])}", highlight=False)
    print_outputs("Outputs", {"manifest (for ingest)": f"{out.manifest} ({out.rows} rows)",
                              "report": out.report_path, "feature set": out.featureset})


def _auto(value: str | None) -> int | str | None:
    if value is None or value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise typer.BadParameter(f"expected a number or 'auto', got {value!r}") from None


def pairs(
    manifest: Annotated[Path | None, typer.Option(
        help="An index manifest (processed_data/train_manifest.jsonl; default: the preprocess stage's).")] = None,
    output: Annotated[Path | None, typer.Option(
        help="Pair file to write (processed_data/GPT_pairs_train.jsonl); the other split's pairs, the index and "
        "the reports go next to it.")] = None,
    pairs_per_target: Annotated[int | None, typer.Option(help="Prompts per target (same speaker).")] = None,
    emotion_source: Annotated[str | None, typer.Option(help="Emotion from the prompt, target or mix.")] = None,
    allow_self_prompt: Annotated[bool, typer.Option(help="Let single-clip speakers prompt themselves.")] = False,
    seed: Annotated[int | None, typer.Option(help="Seed of the prompt draw.")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Prompt/target pairs for train and validation: each target is prompted by other clips of its speaker.

    GPT training needs them: a model trained on clips prompted by themselves learns to copy the
    prompt.  Both pair files are written in one go (GPT_pairs_train.jsonl, GPT_pairs_val.jsonl).
    """
    from flows.local_inputs import index_artifact, store_for

    try:
        cfg = _config(config, overrides, **{
            "pairs.pairs_per_target": pairs_per_target, "pairs.emotion_source": emotion_source,
            "pairs.allow_self_prompt": allow_self_prompt or None, "run.seed": seed})
        given = {"preprocess": index_artifact(store_for(cfg), manifest)} if manifest else {}
        result = _run_stage(cfg, "pairs", given)
        dest = output.parent if output else (manifest.parent if manifest else Path("processed_data"))
        _copy_result(cfg, result, dest)
        split = "val" if manifest is not None and manifest.name.startswith("val") else "train"
        written = dest / f"GPT_pairs_{split}.jsonl"
        if output is not None and output.resolve() != written.resolve():
            shutil.copyfile(written, output)
            written = output
    except (InputError, ValueError, FileNotFoundError) as e:
        raise _fail(e) from None
    m = result["metrics"]
    console.print(f"pairs: {m[f'{split}_pairs']} ({split}); train pairs: {m['train_pairs']}, val pairs: "
                  f"{m['val_pairs']}; speakers: {m['train_speakers']}; skipped single-clip speakers: "
                  f"{m['skipped_speakers']}")
    for warning in result["data"].get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(str(warning))}", markup=True)
    print_outputs("Outputs", {"pairs": written, "train pairs": dest / "GPT_pairs_train.jsonl",
                              "val pairs": dest / "GPT_pairs_val.jsonl"})


app.command("pairs")(pairs)
app.command("build-pairs", help="The seed's name for 'pairs' (same command).")(pairs)


@app.command()
def train(
    train_manifest: Annotated[Path | None, typer.Option(
        help="Training pairs (processed_data/GPT_pairs_train.jsonl; default: the pairs stage's).")] = None,
    tokenizer: Annotated[Path | None, typer.Option(
        help="The extended tokenizer the index was made with (default: the extend-bpe stage's).")] = None,
    val_manifest: Annotated[Path | None, typer.Option(
        help="Validation pairs (processed_data/GPT_pairs_val.jsonl).")] = None,
    checkpoint: Annotated[str | None, typer.Option(
        help="Base checkpoint folder, the one preprocess used (default: the config's).")] = None,
    output_dir: Annotated[Path | None, typer.Option(
        help="Checkpoints, TensorBoard logs, metrics.jsonl and export/ (default: "
        "run.output_dir/trained_ckpts/<key>).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the training pairs.")] = None,
    resume: Annotated[str | None, typer.Option(
        help="'auto' (latest.pth in the output folder) or a checkpoint file.")] = None,
    warm_start: Annotated[bool, typer.Option(
        help="With --resume <file>: start a new run from its weights (a community trainer's latest.pth or "
        "model_stepN.pth also gives its step count and, where shapes match, its optimizer state).")] = False,
    val_interval: Annotated[int | None, typer.Option(help="Validate and save every N steps.")] = None,
    keep_checkpoints: Annotated[int | None, typer.Option(help="model_step{N}.pth files kept.")] = None,
    batch_tokens: Annotated[int | None, typer.Option(help="Padded tokens per optimizer step.")] = None,
    micro_batch_tokens: Annotated[str | None, typer.Option(help="Tokens per forward pass, or 'auto'.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Peak learning rate of the backbone.")] = None,
    amp: Annotated[str | None, typer.Option(help="auto, bf16, fp16 or off.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    fresh_prompts: Annotated[bool, typer.Option(help="New same-speaker prompts every epoch.")] = False,
    gradient_checkpointing: Annotated[bool, typer.Option(help="Trade compute for memory.")] = False,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps.")] = None,
    lora_rank: Annotated[int | None, typer.Option(
        help="LoRA adapters of this rank on the GPT stack instead of full fine-tuning (0: off); merged into the "
        "exported gpt.pth. Alpha, dropout and targets: --set train.lora_alpha=... etc.")] = None,
    features: Annotated[Path | None, typer.Option(
        help="Folder of the feature shards, when the pairs' features live in the artifact store (torchrun by hand: "
        "every node needs them locally).")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Fine-tune the GPT on the pairs; export the best checkpoint in the official layout.

    Batch size, accumulation, loader workers and AMP are chosen automatically; an out-of-memory
    step is re-run with half-size micro-batches; base-token rows are frozen for real.  --resume
    auto continues an interrupted run on exactly the next batch.  Multi-GPU: set
    train.nproc_per_node (default: one process per GPU), or run each rank yourself with
    torchrun --nproc-per-node N --no-python indextts-train train ... (then nothing is tracked).
    """
    from flows.local_inputs import pairs_artifact, store_for, tokenizer_artifact, use_checkpoint

    try:
        cfg = _config(config, overrides, **{
            "train.epochs": epochs, "train.resume": resume, "train.warm_start": warm_start or None,
            "train.val_interval": val_interval, "train.keep_checkpoints": keep_checkpoints,
            "train.batch_tokens": batch_tokens, "train.micro_batch_tokens": _auto(micro_batch_tokens),
            "train.learning_rate": learning_rate, "train.amp": amp, "train.device": device,
            "train.fresh_prompts": fresh_prompts or None, "train.gradient_checkpointing": gradient_checkpointing or None,
            "train.max_steps": max_steps, "train.checkpoint_dir": str(output_dir) if output_dir else None,
            "train.lora_rank": lora_rank,
        })
        if "LOCAL_RANK" in os.environ:  # one rank of a torchrun job: the core trainer, nothing else
            return _train_rank(cfg, train_manifest, val_manifest, tokenizer, checkpoint, features)
        store = store_for(cfg)
        if checkpoint is not None:
            use_checkpoint(cfg, checkpoint)
        given = {}
        if train_manifest is not None:
            given["pairs"] = pairs_artifact(store, train_manifest, val_manifest)
        if tokenizer is not None:
            cfg.extend_bpe.output_name = tokenizer.name
            given["extend-bpe"] = tokenizer_artifact(store, tokenizer)
        result = _run_stage(cfg, "train", given)
    except InputError as e:
        raise _fail(e) from None
    print_training(result)


def _train_rank(cfg: PipelineConfig, train_manifest: Path | None, val_manifest: Path | None,
                tokenizer: Path | None, checkpoint: str | None, features: Path | None) -> None:
    """Under torchrun every rank runs the core trainer on local files (the train stage starts this)."""
    from indextts_core.preprocess.pairs import PairingPolicy
    from indextts_core.store.objects import read_uri_bytes
    from indextts_core.training import TrainInputs
    from indextts_core.training import train as run_training

    if train_manifest is None or tokenizer is None or checkpoint is None or cfg.train.checkpoint_dir is None:
        raise InputError("under torchrun, train needs --train-manifest, --tokenizer, --checkpoint and --output-dir")
    if int(os.environ.get("RANK", "0")):
        logging.getLogger().setLevel(logging.WARNING)
    inputs = TrainInputs(checkpoint_dir=Path(checkpoint), tokenizer=tokenizer, train=train_manifest,
                         val=val_manifest, output_dir=cfg.train.checkpoint_dir, resume=cfg.train.resume,
                         warm_start=cfg.train.warm_start, pairing=PairingPolicy(cfg.pairs, seed=cfg.run.seed),
                         feature_dir=features, read_audio=lambda uri: read_uri_bytes(uri, cfg.storage))
    result = run_training(inputs, cfg.train, seed=cfg.run.seed)
    if int(os.environ.get("RANK", "0")) == 0:  # only rank 0 reports
        metrics: dict[str, Any] = {"steps": result.steps, "best_step": result.best_step or 0,
                                   "export_verified": int(result.export_verified),
                                   **{f"throughput.{k}": v for k, v in result.throughput.items()},
                                   **{f"baseline.{k.removeprefix('val/')}": v for k, v in result.baseline.items()},
                                   **{f"final.{k.removeprefix('val/')}": v for k, v in result.final.items()}}
        if result.base_rows_unchanged is not None:
            metrics["base_rows_unchanged"] = int(result.base_rows_unchanged)
        print_training({"metrics": metrics, "outputs": {"checkpoints": str(result.output_dir)}})


@app.command()
def evaluate(
    model: Annotated[Path | None, typer.Option(
        help="Checkpoint folder to evaluate: an export or the official folder (default: the train stage's export).",
        exists=True, file_okay=False)] = None,
    data: Annotated[Path | None, typer.Option(
        help="Folder with train_manifest.jsonl and val_manifest.jsonl (processed_data: a preprocess or pairs "
             "output; default: the pairs stage's).", exists=True, file_okay=False)] = None,
    checkpoint: Annotated[str | None, typer.Option(
        help="Base checkpoint folder: compared with, and the source of the synthesis models and encoders "
             "(default: the config's).")] = None,
    asr_model: Annotated[Path | None, typer.Option(
        help="Local Whisper folder (Hugging Face layout) for CER/WER (default: evaluate.asr_model, else "
             "download.asr).", exists=True, file_okay=False)] = None,
    sentences: Annotated[Path | None, typer.Option(
        help="Extra sentences to say: one per line, '<language><TAB><text>' or text in the run's language.",
        exists=True, dir_okay=False)] = None,
    max_items: Annotated[int | None, typer.Option(help="Most items per language and group.")] = None,
    compare_base: Annotated[bool, typer.Option(help="Also evaluate the base checkpoint.")] = True,
    output_dir: Annotated[Path | None, typer.Option(
        help="Copy the report folder here (default: run.output_dir/evaluate).", file_okay=False)] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Does the model speak the language? Say held-out sentences with each speaker's voice and score them.

    The model, the base checkpoint and the current champion (MLflow alias) say the same items with
    the same seeds: held-out clips of trained and of unseen speakers, prompted with another clip of
    the speaker, plus --sentences.  Scores per language, with 95% intervals: CER/WER from Whisper
    (language forced), speaker similarity (CAMPPlus), duration ratio, stop failures; the real
    recordings are scored too.  Writes report.html (every sample playable), report.md, plots.png,
    evaluation.json and items.jsonl.
    """
    from flows.local_inputs import publish_files, store_for, use_checkpoint

    try:
        cfg = _config(config, overrides, **{
            "evaluate.asr_model": str(asr_model) if asr_model else None,
            "evaluate.sentences": str(sentences) if sentences else None, "evaluate.max_items": max_items,
            "evaluate.compare_base": None if compare_base else False})
        store = store_for(cfg)
        if checkpoint is not None:
            use_checkpoint(cfg, checkpoint)
        given = {}
        if model is not None:
            from indextts_core.model.bundle import HF_CACHE

            given["train"] = publish_files(store, {p.relative_to(model).as_posix(): p for p in sorted(model.rglob("*"))
                                                   if p.is_file() and HF_CACHE.name not in p.relative_to(model).parts},
                                           "train")
        if data is not None:
            files = {n: data / n for n in ("train_manifest.jsonl", "val_manifest.jsonl")}
            missing = [str(p) for p in files.values() if not p.is_file()]
            if missing:
                raise InputError(f"{', '.join(missing)}: not found (--data takes a preprocess or pairs output folder)")
            given["pairs"] = publish_files(store, files, "pairs")
        result = _run_stage(cfg, "evaluate", given)
        dest = _copy_result(cfg, result, output_dir) if output_dir else cfg.run.output_dir / "evaluate"
    except InputError as e:
        raise _fail(e) from None
    print_evaluation(result["data"])
    if result["data"].get("skipped"):
        raise typer.Exit(1)
    print_outputs("Evaluation", {"report": str(dest / "report.html"), "table": str(dest / "report.md"),
                                 "seconds": f"{result['metrics']['eval_seconds']:.1f}"})


def checked_language(code: str, cfg: PipelineConfig | None = None) -> str:
    """``--language`` as the pipeline writes it (``amh`` -> ``am``); an unknown code is an error naming choices
    (and the languages with a text normaliser)."""
    from indextts_core.languages import UnknownLanguage, canonical_language
    from indextts_core.text.frontend import NORMALIZERS

    try:
        return canonical_language(code, cfg.extra_languages if cfg is not None else ())
    except UnknownLanguage as e:
        raise UnknownLanguage(f"{e}. Languages with a text normaliser: {', '.join(sorted(NORMALIZERS))}") from None


def _hf_cache(model: Path, given: Path | None, cfg: PipelineConfig) -> Path:
    """The folder of encoders and synthesis models for ``model``: given, the model's own ``hf_cache/``, or that
    of the run config's checkpoint (through the download stage, as preprocessing got them)."""
    from indextts_core.model.bundle import HF_CACHE

    if given is not None:
        return given
    if (model / HF_CACHE).is_dir():
        return model / HF_CACHE
    from flows.local_inputs import store_for
    from tasks.artifacts import ArtifactRef, fetch_dir

    err_console.print(f"{model} holds no {HF_CACHE}/: using the one of the run config's checkpoint")
    assets = _run_stage(cfg, "download")["assets"]
    return fetch_dir(store_for(cfg), ArtifactRef.model_validate(assets["checkpoint"]), cfg.storage.cache_dir) \
        / HF_CACHE


def _open_model(model: Path, hf_cache: Path | None, cfg: PipelineConfig, w2v_bert: Path | None = None) -> Any:
    from indextts_core.model.bundle import open_bundle

    if w2v_bert is not None and hf_cache is None:  # the prompts need only the encoder, and it was given
        return open_bundle(model, w2v_bert)
    return open_bundle(model, w2v_bert, hf_cache=_hf_cache(model, hf_cache, cfg))


LangCodeOpt = Annotated[str | None, typer.Option(
    help="IndexTTS-2.5: the lang code (<|code|> prefix and language row) as passed to the official inference; "
    "default: the one the fine-tune recorded next to the model's vocabulary, else --language.")]


def _read_lines(path: Path) -> list[str]:
    """The non-blank lines of a --lines file; an empty one (or one that is not UTF-8) is an error naming it."""
    try:
        said = [x for x in path.read_text(encoding="utf-8-sig").splitlines() if x.strip()]
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); --lines takes a UTF-8 file with "
                         "one line to say per line") from None
    if not said:
        raise InputError(f"no lines to say in {path}: the file is empty or holds only blank lines")
    return said


@app.command()
def generate(
    model: ModelOpt,
    speaker_prompt: PromptOpt,
    text: TextOpt = None,
    lines: Annotated[Path | None, typer.Option(help="A UTF-8 file with one line to say per line.", exists=True,
                                               dir_okay=False)] = None,
    language: Annotated[str, typer.Option(help="Language of the text (selects the front-end's normaliser).")]
    = "am",
    lang_code: LangCodeOpt = None,
    emotion_prompt: Annotated[Path | None, typer.Option(help="Audio whose emotion to use (default: the speaker "
                                                              "prompt's).", exists=True, dir_okay=False)] = None,
    emo_alpha: Annotated[float | None, typer.Option(help="Share of the emotion prompt's emotion, 0..1 (default: "
                                                         "generation.emo_alpha).")] = None,
    output_dir: Annotated[Path, typer.Option(help="Where codes.jsonl, latents.safetensors and generate.json go.")]
    = Path("generated"),
    w2v_bert: Annotated[Path | None, typer.Option(help="Wav2Vec2-BERT 2.0 folder for the prompts (default: "
                                                       "in --hf-cache).", file_okay=False)] = None,
    hf_cache: HfCacheOpt = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Say lines of text with a fine-tuned (or the official) GPT: semantic codes and the s2mel latent per line.

    Decoding follows infer_v2 (its defaults; change them with --set generation.<option>=...), text goes
    through the training front-end and the folder's tokenizer.
    """
    import torch

    from indextts_core.generation.run import generate_lines

    try:
        cfg = _config(config, overrides, **{"generation.emo_alpha": emo_alpha})
        if not text and lines is None:
            raise InputError("nothing to say: give --text or --lines")
        said = list(text or [])
        where = "--text"
        if lines is not None:
            said += _read_lines(lines)
            where = str(lines) if not text else "--text/--lines"
        language = checked_language(language, cfg)
        bundle = _open_model(model, hf_cache, cfg, w2v_bert)
        dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        result = generate_lines(bundle, said, language, speaker_prompt, output_dir, cfg.generation,
                                emotion_prompt=emotion_prompt, device=dev, where=where, lang_code=lang_code)
    except (InputError, ValueError) as e:
        raise _fail(e) from None
    print_outputs("Generated", {
        "lines": f"{result.lines} ({result.stopped} stopped before generation.max_mel_tokens)",
        "codes": f"{result.codes} in {result.seconds:.1f} s",
        "codes.jsonl": str(output_dir / "codes.jsonl"), "latents": str(output_dir / "latents.safetensors"),
    })


@app.command()
def synthesize(
    model: ModelOpt,
    speaker_prompt: PromptOpt,
    text: TextOpt = None,
    lines: Annotated[Path | None, typer.Option(help="A UTF-8 file with one line to say per line (one wav each).",
                                               exists=True, dir_okay=False)] = None,
    language: Annotated[str, typer.Option(help="Language of the text (selects the front-end's normaliser).")]
    = "am",
    lang_code: LangCodeOpt = None,
    emotion_prompt: Annotated[Path | None, typer.Option(help="Audio whose emotion to use (default: the speaker "
                                                              "prompt's).", exists=True, dir_okay=False)] = None,
    emo_alpha: Annotated[float | None, typer.Option(help="Share of the emotion prompt's emotion, 0..1.")] = None,
    out: Annotated[Path | None, typer.Option(help="The wav file, for a single --text (default: "
                                                  "<output-dir>/line1.wav).", dir_okay=False)] = None,
    output_dir: Annotated[Path, typer.Option(help="Where line<N>.wav and synthesize.json go.")] = Path("synthesized"),
    diffusion_steps: Annotated[int, typer.Option(help="Flow-matching steps (infer_v2: 25).")] = 25,
    cfg_rate: Annotated[float, typer.Option(help="Classifier-free guidance rate (infer_v2: 0.7).")] = 0.7,
    interval_silence: Annotated[int, typer.Option(help="Silence between segments, ms (infer_v2: 200).")] = 200,
    hf_cache: HfCacheOpt = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Speak lines of text as 22.05 kHz wav files: GPT codes, S2Mel and BigVGAN, as infer_v2 runs them.

    Decoding follows infer_v2 (change it with --set generation.<option>=...; generation.seed fixes the
    random stream); long lines are cut into infer_v2's segments and joined with silence.
    """
    import torch

    from indextts_core.synthesis.run import synthesize_lines

    try:
        cfg = _config(config, overrides, **{"generation.emo_alpha": emo_alpha})
        said = list(text or [])
        if lines is not None:
            said += _read_lines(lines)
        if not said:
            raise InputError("nothing to say: give --text or --lines")
        if out is not None and len(said) != 1:
            raise InputError(f"--out names one file but there are {len(said)} lines: use --output-dir")
        outputs = [out] if out is not None else [output_dir / f"line{n}.wav" for n in range(1, len(said) + 1)]
        language = checked_language(language, cfg)
        bundle = _open_model(model, hf_cache, cfg)
        dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        result = synthesize_lines(bundle, said, language, speaker_prompt, outputs, cfg.generation,
                                  emotion_prompt=emotion_prompt, device=dev, diffusion_steps=diffusion_steps,
                                  cfg_rate=cfg_rate, interval_silence_ms=interval_silence, lang_code=lang_code,
                                  report=(out.parent if out is not None else output_dir) / "synthesize.json")
    except (InputError, ValueError) as e:
        raise _fail(e) from None
    print_outputs("Synthesized", {
        "audio": f"{len(result.wavs)} file(s), {result.audio_seconds:.1f} s in {result.seconds:.1f} s",
        "wav": str(result.wavs[0]) if len(result.wavs) == 1 else str(output_dir),
    })


@app.command()
def normalize(
    text: Annotated[list[str] | None, typer.Argument(help="Text to prepare (default: lines from standard input).")]
    = None,
    language: Annotated[str, typer.Option(help="Language of the text (e.g. am, en, zh).")] = "am",
) -> None:
    """Print text as the tokenizer sees it (the platform's front-end), e.g. for the official inference code."""
    from indextts_core.text.frontend import TextFrontend

    try:
        language = checked_language(language)
    except InputError as e:
        raise _fail(e) from None
    fe = TextFrontend()
    lines = [" ".join(text)] if text else [line.rstrip("\n") for line in sys.stdin]
    for line in lines:
        sys.stdout.write(fe(line, language) + "\n")


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="MLflow UI port.")] = 5000,
    tensorboard_port: Annotated[int, typer.Option(help="TensorBoard port.")] = 6006,
    tensorboard: Annotated[bool, typer.Option(help="Also start TensorBoard on the run's training folders.")] = True,
    logdir: Annotated[Path | None, typer.Option(
        help="TensorBoard's folder (default: the folder that holds run.output_dir, so every run shows).")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Open the run's MLflow UI (one worker, on its tracking store) and TensorBoard; Ctrl-C stops both."""
    from flows.ui import start_services, stop_services, wait_ready

    try:
        cfg = _config(config, overrides)
        services = start_services(cfg, port, tensorboard_port if tensorboard else None, logdir)
    except InputError as e:
        raise _fail(e) from None
    stop = False

    def request_stop(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    try:
        ready = wait_ready(services)
        for s in services:
            console.print(f"{s.name}: {s.url}  (ready in {ready[s.name]} s)", highlight=False)
        console.print("Ctrl-C stops both", highlight=False)
        while not stop and all(s.proc.poll() is None for s in services):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except RuntimeError as e:
        stop_services(services)
        raise _fail(e) from None
    stop_services(services)


@app.command()
def verify(config: ConfigOpt = None, overrides: SetOpt = None) -> None:
    """Read every file the artifact store records a sha256 for, in full, and check it (exit 1 on any problem).

    Stages already check by content what they consume; this full pass also finds damage in what no
    run has read lately (directory manifests, the mirrored training checkpoints, feature shards).
    """
    from indextts_core.store.objects import open_store, verify_store

    try:
        cfg = _config(config, overrides)
        store = open_store(cfg.storage.uri, cfg.storage)
        start = time.monotonic()
        problems = verify_store(store)
    except InputError as e:
        raise _fail(e) from None
    seconds = time.monotonic() - start
    for line in problems:
        err_console.print(f"damaged: {line}", highlight=False, soft_wrap=True)
    console.print(f"{store.uri}: {len(problems)} problem(s); checked in {seconds:.1f} s", highlight=False,
                  soft_wrap=True)
    if problems:
        raise typer.Exit(code=1)


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
