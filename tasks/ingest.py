"""Ingest stage task: validate the dataset's manifests, split train/val per speaker, report.

Audio held in the artifact store is recorded as ``store:<key>`` (not the store's path or bucket),
so the ingest output, and every digest and cache key downstream of it, stays the same when the
store is moved, mounted elsewhere or copied to another bucket.
"""

from __future__ import annotations

from indextts_core.config import PipelineConfig
from indextts_core.data import ingest as core
from indextts_core.data.ingest import manifest_inputs
from indextts_core.store.objects import store_uri
from tasks.artifacts import ArtifactRef, StageResult
from tasks.context import RunContext
from tasks.stage import Stage, stage_task

REPORTS = ("report.json", "report.md", "durations.png", "rejects.jsonl")


@stage_task("ingest", core.STAGE_VERSION)
def ingest_task(cfg: PipelineConfig, dataset: ArtifactRef, ctx: RunContext) -> StageResult:
    with Stage("ingest", cfg, ctx, {"dataset": dataset}, reports=REPORTS) as s:
        root = s.fetch(dataset)
        result = core.ingest(manifest_inputs(cfg.ingest.manifests, root, cfg.language), s.out, cfg.ingest,
                             seed=cfg.run.seed, storage=cfg.storage, dataset_root=root,
                             audio_base=store_uri(dataset.prefix), extra_languages=cfg.extra_languages)
        metrics = {
            "rows_read": result.rows_read, "accepted": result.accepted, "rejected": result.rejected,
            "train_clips": result.train_clips, "val_clips": result.val_clips, "hours": result.hours,
            "speakers": result.speakers, **{f"rejected.{k}": v for k, v in result.rejected_by_reason.items()},
        }
        return s.publish(metrics, reports=REPORTS, data={"report": result.report},
                         outputs={"manifest": "manifest.jsonl", "train": "train.jsonl", "val": "val.jsonl",
                                  "rejects": "rejects.jsonl", "report": "report.md", "histogram": "durations.png"})
