"""Corpus stage task: per-language text from the ingested dataset, also as the tokenizer sees it."""

from __future__ import annotations

from indextts_core.config import PipelineConfig
from indextts_core.text import corpus as core
from indextts_core.text.frontend import TextFrontend
from tasks.artifacts import ArtifactRef, StageResult
from tasks.context import RunContext
from tasks.stage import Stage, stage_task


@stage_task("corpus", core.STAGE_VERSION)
def corpus_task(cfg: PipelineConfig, dataset: ArtifactRef, frontend: str, ctx: RunContext) -> StageResult:
    """``dataset``: the ingest stage's output; ``frontend`` (the front-end fingerprint) is in the cache key."""
    with Stage("corpus", cfg, ctx, {"dataset": dataset}) as s:
        src = s.fetch(dataset)
        splits = ("train", "val") if cfg.corpus.include_val else ("train",)
        result = core.build_corpus([src / f"{split}.jsonl" for split in splits], s.out, TextFrontend())
        metrics = {f"{lang}.{k}": st[k] for lang, st in result.stats.items()
                   for k in ("lines", "characters", "unique_characters")}
        outputs = {lang: p.name for lang, p in result.files.items()}
        outputs |= {f"{lang}.frontend": p.name for lang, p in result.frontend_files.items()} | {"stats": "stats.json"}
        return s.publish(metrics, outputs, reports=["stats.json"], data={"stats": result.stats})
