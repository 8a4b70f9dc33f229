"""Corpus stage task: per-language text from the ingested dataset."""

from __future__ import annotations

import shutil
import time

from prefect import task

from indextts_core.text import corpus as core
from indextts_core.config import PipelineConfig
from indextts_core.text.frontend import TextFrontend
from indextts_core.store.objects import open_store
from tasks.artifacts import ArtifactRef, StageResult, fetch_dir, publish_dir
from tasks.context import RunContext
from tasks.policies import STAGE_TASK_OPTIONS, config_subset, stage_cache
from tasks.tracking import stage_run

CONFIG_KEYS = ("corpus.include_val",)


@task(name="corpus", cache_policy=stage_cache("corpus", core.STAGE_VERSION, CONFIG_KEYS), **STAGE_TASK_OPTIONS)
def corpus_task(cfg: PipelineConfig, dataset: ArtifactRef, frontend: str, ctx: RunContext) -> StageResult:
    """``frontend`` (the front-end fingerprint) is part of the cache key: other front-end, other text."""
    start = time.monotonic()
    store = open_store(cfg.storage.uri, cfg.storage)
    src = fetch_dir(store, dataset, cfg.storage.cache_dir)
    manifests = [src / "train.jsonl", src / "val.jsonl"] if cfg.corpus.include_val else [src / "train.jsonl"]
    out = cfg.run.output_dir / "corpus"
    shutil.rmtree(out, ignore_errors=True)
    with stage_run(ctx.tracking, "corpus") as run:
        if run is not None:
            run.log_params(config_subset(cfg, CONFIG_KEYS))
            run.log_input("dataset", dataset.uri, dataset.digest, context="source")
        result = core.build_corpus(manifests, out, TextFrontend())
        ref = publish_dir(store, out, "corpus")
        metrics = {f"{lang}.{k}": s[k] for lang, s in result.stats.items() for k in ("lines", "characters",
                                                                                     "unique_characters")}
        metrics["seconds"] = round(time.monotonic() - start, 3)
        if run is not None:
            run.log_metrics(metrics)
            run.log_artifact(result.stats_path, "reports")
            run.set_tags({"output.uri": ref.uri, "output.digest": ref.digest})
    return StageResult(
        stage="corpus", artifact=ref, metrics=metrics,
        outputs={lang: p.name for lang, p in result.files.items()}
        | {f"{lang}.frontend": p.name for lang, p in result.frontend_files.items()} | {"stats": "stats.json"},
        mlflow_run_id=run.run_id if run else None, flow_run_id=ctx.flow_run_id,
        seconds=time.monotonic() - start,
    )
