"""Ingest stage task: validate the dataset's manifests, split, report."""

from __future__ import annotations

import shutil
import time

from prefect import task

from indextts_core.data import ingest as core
from indextts_core.config import PipelineConfig
from indextts_core.errors import InputError
from indextts_core.stages import manifest_inputs
from indextts_core.store.objects import open_store
from tasks.artifacts import ArtifactRef, StageResult, fetch_dir, publish_dir
from tasks.context import RunContext
from tasks.policies import STAGE_TASK_OPTIONS, config_subset, stage_cache
from tasks.tracking import stage_run

#: The configuration that determines this stage's output (and so its cache key).
CONFIG_KEYS = (
    "language", "run.seed", "ingest.manifests", "ingest.min_duration_s", "ingest.max_duration_s",
    "ingest.val_fraction", "ingest.val_min_speaker_clips", "ingest.max_rejected_fraction", "ingest.val_speakers",
)
REPORTS = ("report.json", "report.md", "durations.png", "rejects.jsonl")


@task(name="ingest", cache_policy=stage_cache("ingest", core.STAGE_VERSION, CONFIG_KEYS), **STAGE_TASK_OPTIONS)
def ingest_task(cfg: PipelineConfig, dataset: ArtifactRef, ctx: RunContext) -> StageResult:
    start = time.monotonic()
    store = open_store(cfg.storage.uri, cfg.storage)
    root = fetch_dir(store, dataset, cfg.storage.cache_dir)
    out = cfg.run.output_dir / "dataset"
    shutil.rmtree(out, ignore_errors=True)
    with stage_run(ctx.tracking, "ingest") as run:
        if run is not None:
            run.log_params(config_subset(cfg, CONFIG_KEYS))
            run.log_input("dataset", dataset.uri, dataset.digest, context="source")
        try:
            result = core.ingest(manifest_inputs(cfg, root), out, cfg.ingest, seed=cfg.run.seed, storage=cfg.storage,
                                 dataset_root=root, audio_base=store.uri_for(dataset.prefix))
        except InputError:
            if run is not None:  # keep the evidence of a failed run: rejects and report
                for name in REPORTS:
                    if (out / name).is_file():
                        run.log_artifact(out / name, "reports")
            raise
        ref = publish_dir(store, out, "ingest")
        metrics = {
            "rows_read": result.rows_read, "accepted": result.accepted, "rejected": result.rejected,
            "train_clips": result.train_clips, "val_clips": result.val_clips, "hours": result.hours,
            "speakers": result.speakers, "seconds": round(time.monotonic() - start, 3),
            **{f"rejected.{k}": v for k, v in result.rejected_by_reason.items()},
        }
        if run is not None:
            run.log_metrics(metrics)
            for name in REPORTS:
                run.log_artifact(out / name, "reports")
            run.set_tags({"output.uri": ref.uri, "output.digest": ref.digest})
    return StageResult(
        stage="ingest", artifact=ref, metrics=metrics,
        outputs={"manifest": "manifest.jsonl", "train": "train.jsonl", "val": "val.jsonl",
                 "rejects": "rejects.jsonl", "report": "report.md", "histogram": "durations.png"},
        mlflow_run_id=run.run_id if run else None, flow_run_id=ctx.flow_run_id,
        seconds=time.monotonic() - start,
    )
