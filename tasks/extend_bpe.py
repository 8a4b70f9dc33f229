"""Tokenizer-extension stage task: append the new language's pieces to the base tokenizer."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from prefect import task

from indextts_core.text import extend_bpe as core
from indextts_core.config import PipelineConfig
from indextts_core.text.frontend import TextFrontend
from indextts_core.model.bundle import open_bundle
from indextts_core.stages import extend_languages, read_frontend_corpus, run_extend_bpe
from indextts_core.store.objects import open_store
from tasks.artifacts import ArtifactRef, StageResult, fetch_dir, publish_dir
from tasks.context import RunContext
from tasks.policies import STAGE_TASK_OPTIONS, config_subset, stage_cache
from tasks.tracking import stage_run

CONFIG_KEYS = (
    "language", "run.seed", "extend_bpe.base_model", "extend_bpe.target_size", "extend_bpe.languages",
    "extend_bpe.max_base_drift", "extend_bpe.min_char_count", "extend_bpe.min_piece_count",
    "extend_bpe.heldout_fraction", "extend_bpe.probe_text", "extend_bpe.output_name",
)


@task(name="extend-bpe", cache_policy=stage_cache("extend-bpe", core.STAGE_VERSION, CONFIG_KEYS), **STAGE_TASK_OPTIONS)
def extend_bpe_task(cfg: PipelineConfig, corpus: ArtifactRef, checkpoint: ArtifactRef, frontend: str,
                    ctx: RunContext) -> StageResult:
    """``frontend`` (the front-end fingerprint) is part of the cache key: other text, other tokenizer."""
    start = time.monotonic()
    store = open_store(cfg.storage.uri, cfg.storage)
    corpus_dir = fetch_dir(store, corpus, cfg.storage.cache_dir)
    if cfg.extend_bpe.base_model:
        base_model = Path(cfg.extend_bpe.base_model)
    else:
        base_model = open_bundle(fetch_dir(store, checkpoint, cfg.storage.cache_dir)).tokenizer_path
    out = cfg.run.output_dir / "tokenizer"
    shutil.rmtree(out, ignore_errors=True)
    fe = TextFrontend()
    with stage_run(ctx.tracking, "extend-bpe") as run:
        if run is not None:
            run.log_params(config_subset(cfg, CONFIG_KEYS) | {"frontend": frontend[:16]})
            run.log_input("corpus", corpus.uri, corpus.digest, context="training")
        result = run_extend_bpe(cfg, base_model, read_frontend_corpus(corpus_dir, extend_languages(cfg)), out, fe)
        ref = publish_dir(store, out, "extend-bpe")
        metrics: dict[str, float | int] = {
            "base_size": result.base_size, "vocab_size": result.vocab_size, "model_rows": result.model_rows,
            "chars_added": result.chars_added, "pieces_added": result.pieces_added, "base_drift": result.base_drift,
            "heldout_piece_usage": result.heldout_piece_usage, "stopped_early": int(result.stopped_early),
            "seconds": round(time.monotonic() - start, 3),
        }
        for lang, s in result.languages.items():
            metrics |= {f"{lang}.unk_char_rate_before": s.unk_char_rate_before,
                        f"{lang}.unk_char_rate_after": s.unk_char_rate_after,
                        f"{lang}.tokens_per_char_before": s.tokens_per_char_before,
                        f"{lang}.tokens_per_char_after": s.tokens_per_char_after}
        if run is not None:
            run.log_metrics(metrics)
            for path in (result.report_json, result.report_md, result.report_png, result.sidecar_path):
                run.log_artifact(path, "reports")
            run.log_artifact(result.model_path, "tokenizer")
            run.set_tags({"output.uri": ref.uri, "output.digest": ref.digest, "note": result.note[:500]})
    return StageResult(
        stage="extend-bpe", artifact=ref, metrics=metrics,
        outputs={"tokenizer": result.model_path.name, "sidecar": result.sidecar_path.name, "report": "report.md",
                 "plot": "report.png"},
        mlflow_run_id=run.run_id if run else None, flow_run_id=ctx.flow_run_id, seconds=time.monotonic() - start,
    )
