"""Pairs stage task: prompt/target pairs for train and validation, next to the preprocessed index.

The output folder is a complete ``processed_data``: the index (manifests, text ids, feature
reference) plus ``GPT_pairs_train.jsonl`` and ``GPT_pairs_val.jsonl`` with their reports, so the
trainer needs this one artifact (and the features it points at).
"""

from __future__ import annotations

import shutil
import time

from prefect import task

from indextts_core.preprocess import pairs as core
from indextts_core.config import PipelineConfig
from indextts_core.stages import pairing_policy
from indextts_core.store.objects import open_store
from tasks.artifacts import ArtifactRef, StageResult, fetch_dir, publish_dir
from tasks.context import RunContext
from tasks.policies import STAGE_TASK_OPTIONS, config_subset, stage_cache
from tasks.tracking import stage_run

CONFIG_KEYS = ("run.seed", "pairs.pairs_per_target", "pairs.emotion_source", "pairs.allow_self_prompt")
INDEX_FILES = ("train_manifest.jsonl", "val_manifest.jsonl", "text_ids.safetensors", "preprocess.json")


@task(name="pairs", cache_policy=stage_cache("pairs", core.STAGE_VERSION, CONFIG_KEYS), **STAGE_TASK_OPTIONS)
def pairs_task(cfg: PipelineConfig, index: ArtifactRef, ctx: RunContext) -> StageResult:
    start = time.monotonic()
    store = open_store(cfg.storage.uri, cfg.storage)
    src = fetch_dir(store, index, cfg.storage.cache_dir)
    out = cfg.run.output_dir / "processed_data"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in INDEX_FILES:
        shutil.copy2(src / name, out / name)
    policy = pairing_policy(cfg)
    pool = [out / "train_manifest.jsonl", out / "val_manifest.jsonl"]
    with stage_run(ctx.tracking, "pairs") as run:
        train = core.build_pairs(pool[0], out / "GPT_pairs_train.jsonl", policy, pool)
        val = core.build_pairs(pool[1], out / "GPT_pairs_val.jsonl", policy, pool)
        ref = publish_dir(store, out, "pairs")
        metrics = {"train_pairs": train.stats.pairs, "val_pairs": val.stats.pairs,
                   "train_speakers": len(train.stats.per_speaker), "imbalance": train.stats.imbalance,
                   "skipped_speakers": len(train.stats.skipped_speakers), "seconds": round(time.monotonic() - start, 3)}
        if run is not None:
            run.log_params(config_subset(cfg, CONFIG_KEYS))
            run.log_input("index", index.uri, index.digest, context="training")
            run.log_metrics(metrics)
            for r in (train, val):
                run.log_artifact(r.report_json, "reports")
                run.log_artifact(r.report_md, "reports")
            run.set_tags({"output.uri": ref.uri, "output.digest": ref.digest,
                          "warnings": "; ".join(train.stats.warnings + val.stats.warnings)[:500]})
    return StageResult(stage="pairs", artifact=ref, metrics=metrics,
                       outputs={"train": "GPT_pairs_train.jsonl", "val": "GPT_pairs_val.jsonl"},
                       mlflow_run_id=run.run_id if run else None, flow_run_id=ctx.flow_run_id,
                       seconds=time.monotonic() - start)
