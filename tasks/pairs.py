"""Pairs stage task: prompt/target pairs for train and validation, next to the preprocessed index.

The output folder is a complete ``processed_data``: the index (manifests, text ids, feature
reference) plus ``GPT_pairs_train.jsonl`` and ``GPT_pairs_val.jsonl`` with their reports, so the
trainer needs this one artifact (and the features it points at).
"""

from __future__ import annotations

import shutil

from indextts_core.config import PipelineConfig
from indextts_core.preprocess import pairs as core
from tasks.artifacts import ArtifactRef, StageResult
from tasks.context import RunContext
from tasks.stage import Stage, stage_task

INDEX_FILES = ("train_manifest.jsonl", "val_manifest.jsonl", "text_ids.safetensors", "preprocess.json")


@stage_task("pairs", core.STAGE_VERSION)
def pairs_task(cfg: PipelineConfig, index: ArtifactRef, ctx: RunContext) -> StageResult:
    with Stage("pairs", cfg, ctx, {"index": index}) as s:
        src = s.fetch(index)
        for name in INDEX_FILES:
            shutil.copy2(src / name, s.out / name)
        policy = core.PairingPolicy(cfg.pairs, seed=cfg.run.seed)
        pool = [s.out / "train_manifest.jsonl", s.out / "val_manifest.jsonl"]
        train = core.build_pairs(pool[0], s.out / "GPT_pairs_train.jsonl", policy, pool)
        val = core.build_pairs(pool[1], s.out / "GPT_pairs_val.jsonl", policy, pool)
        metrics = {"train_pairs": train.stats.pairs, "val_pairs": val.stats.pairs,
                   "train_speakers": len(train.stats.per_speaker), "imbalance": train.stats.imbalance,
                   "skipped_speakers": len(train.stats.skipped_speakers)}
        warnings = train.stats.warnings + val.stats.warnings
        return s.publish(metrics, {"train": "GPT_pairs_train.jsonl", "val": "GPT_pairs_val.jsonl"},
                         reports=[train.report_json, train.report_md, val.report_json, val.report_md],
                         tags={"warnings": "; ".join(warnings)[:500]},
                         data={"warnings": warnings, "targets": train.stats.targets,
                               "skipped_speakers": train.stats.skipped_speakers})
