"""What the ``indextts-train`` commands share: the common options, loading the run configuration,
running one stage as its own flow run, error lines, and the model-folder helpers of the one-off
commands (``generate``, ``synthesize``).

Loading the run configuration moves the command's log file into ``<run.output_dir>/logs/``;
:func:`fail` ends a command on one ``error:`` line and the log's path (:mod:`flows.cli_logging`).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli_logging import report_error, use_run_folder
from flows.printing import err_console
from indextts_core.config import DEMO_CONFIG, PipelineConfig, load_config, parse_overrides
from indextts_core.errors import InputError

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Run configuration YAML (every section optional); default: the bundled "
                                        "demo's settings.",
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


def load_run_config(config: Path | None, overrides: list[str] | None, flags: dict[str, Any] | None = None,
                    **more: Any) -> PipelineConfig:
    """Defaults <- YAML file <- named flags (config key -> value; None: not given) <- --set overrides.

    Without ``--config`` every command reads the bundled demo's file (:data:`DEMO_CONFIG`, shipped in
    the package), as ``run`` does, and says so in one line on stderr (stdout stays the command's own).
    """
    if config is None:
        config = DEMO_CONFIG
        err_console.print(f"no --config: using the demo's settings ({DEMO_CONFIG})", highlight=False,
                          soft_wrap=True)
    merged = {k: v for k, v in {**(flags or {}), **more}.items() if v is not None}
    set_ = parse_overrides(overrides or [])
    labels = {k: name for k, name in getattr(flags, "names", {}).items() if k in merged and k not in set_}
    cfg = load_config(config, {**merged, **set_}, labels)
    use_run_folder(cfg.run.output_dir)  # the command's log file moves into <run.output_dir>/logs/
    return cfg


def fail(e: Exception) -> typer.Exit:
    """Print ``error: <message>`` and ``full log: <path>`` (the traceback is in that file) and give the
    exit (code 2) for the command to raise."""
    report_error(str(e), e)
    return typer.Exit(code=2)


def prefect_defaults() -> None:
    """Environment defaults for Prefect when run from this CLI (the user's own settings win).

    Without ``PREFECT_API_URL`` this starts the temporary API server the command talks to: one that
    stops with the command, however the command ends (see :mod:`flows.api_server`).
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "indextts_core,tasks")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")  # core logs after a stage flow
    from flows.api_server import start_temporary_api

    try:
        start_temporary_api(float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]))
    except RuntimeError as e:
        raise fail(e) from None


def run_stage(cfg: PipelineConfig, stage: str, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``stage`` as its own flow run (the flow's task, cache, store and MLflow); its result.

    When an earlier command or run already stored this stage's answer for the same code, settings,
    sources and inputs (:mod:`flows.cached_answers`), that is the result: nothing is started.
    """
    from flows.cached_answers import answer, remember

    given = given or {}
    started = time.monotonic()
    known = answer(cfg, stage, given)
    if known is not None:
        err_console.print(f"{stage}: cached, answered in {time.monotonic() - started:.1f} s without a flow run "
                          "(nothing changed since; --set orchestration.cached_answers=false runs it)", highlight=False)
        return known
    prefect_defaults()
    from flows.stage import stage_flow

    summary = stage_flow(cfg, stage, given)
    for row in summary.stages:
        err_console.print(f"{row.stage}: {row.status} in {row.seconds:.1f} s", highlight=False)
    remember(cfg, {stage: summary.results[stage]}, given)
    return summary.results[stage]


def copy_result(cfg: PipelineConfig, result: dict[str, Any], dest: Path, names: list[str] | None = None) -> Path:
    """Copy a stage's stored output (all of it, or ``names``) into the local folder ``dest``."""
    from flows.local_inputs import copy_out, store_for
    from tasks.artifacts import ArtifactRef

    return copy_out(store_for(cfg), ArtifactRef.model_validate(result["artifact"]), dest, cfg.storage.cache_dir, names)


def keep_evidence(stage_dir: Path, output_dir: Path) -> None:
    """Copy a failed stage's rejects and report into the command's output folder (nothing is lost)."""
    for name in ("rejects.jsonl", "report.json", "report.md", "durations.png"):
        if (stage_dir / name).is_file():
            output_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(stage_dir / name, output_dir / name)
            err_console.print(f"kept {output_dir / name}", highlight=False)


def checked_language(code: str, cfg: PipelineConfig | None = None) -> str:
    """``--language`` as the pipeline writes it (``amh`` -> ``am``); an unknown code is an error naming choices
    (and the languages with a text normaliser)."""
    from indextts_core.languages import UnknownLanguage, canonical_language
    from indextts_core.text.frontend import NORMALIZERS

    try:
        return canonical_language(code, cfg.extra_languages if cfg is not None else ())
    except UnknownLanguage as e:
        raise UnknownLanguage(f"{e}. Languages with a text normaliser: {', '.join(sorted(NORMALIZERS))}") from None


def hf_cache_for(model: Path, given: Path | None, cfg: PipelineConfig) -> Path:
    """The folder of encoders and synthesis models for ``model``: given, the model's own ``hf_cache/``, or that
    of the run config's checkpoint (fetched into the store as the download stage does: when the store already
    holds it unchanged at its source, nothing is fetched, and no flow run is started for it)."""
    from indextts_core.layout import HF_CACHE

    if given is not None:
        return given
    if (model / HF_CACHE).is_dir():
        return model / HF_CACHE
    from flows.local_inputs import store_for
    from indextts_core.store.download import fetch_asset
    from indextts_core.store.materialize import materialize_dir

    err_console.print(f"{model} holds no {HF_CACHE}/: using the one of the run config's checkpoint "
                      f"({cfg.download.checkpoint.source})")
    store = store_for(cfg)
    d = cfg.download
    asset = fetch_asset("checkpoint", d.checkpoint, store, hf_cache_dir=d.hf_cache_dir, offline=d.offline,
                        storage=cfg.storage)
    return materialize_dir(store, asset.prefix, cfg.storage.cache_dir) / HF_CACHE


def open_model(model: Path, hf_cache: Path | None, cfg: PipelineConfig, w2v_bert: Path | None = None) -> Any:
    """The model bundle of a checkpoint folder, with its encoders and synthesis models found as above."""
    from indextts_core.model.bundle import open_bundle

    if w2v_bert is not None and hf_cache is None:  # the prompts need only the encoder, and it was given
        return open_bundle(model, w2v_bert)
    return open_bundle(model, w2v_bert, hf_cache=hf_cache_for(model, hf_cache, cfg))


LangCodeOpt = Annotated[str | None, typer.Option(
    help="IndexTTS-2.5: the lang code (<|code|> prefix and language row) as passed to the official inference; "
    "default: the one the fine-tune recorded next to the model's vocabulary, else --language.")]


def read_lines(path: Path) -> list[str]:
    """The non-blank lines of a --lines file; an empty one (or one that is not UTF-8) is an error naming it."""
    try:
        said = [x for x in path.read_text(encoding="utf-8-sig").splitlines() if x.strip()]
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); --lines takes a UTF-8 file with "
                         "one line to say per line") from None
    if not said:
        raise InputError(f"no lines to say in {path}: the file is empty or holds only blank lines")
    return said
