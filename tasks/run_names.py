"""What the MLflow runs are called: the stage (or flow), the settings that tell its runs apart, the language."""

from __future__ import annotations

from typing import Any

from indextts_core.config import PipelineConfig


#: The settings that tell runs apart in the MLflow run list, per stage: (config path, short name).
LABELS: dict[str, tuple[tuple[str, str], ...]] = {
    "extend-bpe": (("extend_bpe.target_size", "vocab"),),
    "pairs": (("pairs.pairs_per_target", "ppt"),),
    "train": (("train.learning_rate", "lr"), ("train.epochs", "ep"), ("train.batch_tokens", "bt")),
    "evaluate": (("evaluate.max_items", "items"),),
}


#: Every stage that opens an MLflow run.
STAGE_NAMES = ("download", "ingest", "corpus", "extend-bpe", "preprocess", "pairs", "train", "evaluate", "promote")


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def stage_run_name(cfg: PipelineConfig, stage: str) -> str:
    """``train · lr=0.001 · ep=3 · bt=1024 · am``: the stage, the settings that tell its runs apart, the language."""
    parts = [stage]
    for path, short in LABELS.get(stage, ()):
        value: Any = cfg
        for name in path.split("."):
            value = getattr(value, name)
        parts.append(f"{short}={_short(value)}")
    return " · ".join([*parts, cfg.language])


def parent_run_name(cfg: PipelineConfig, flow_name: str) -> str:
    """``demo · finetune · lr=0.001 · ep=3 · bt=1024 · am``: the run, the flow, and the settings that tell its
    runs apart (the training's for the whole pipeline, the stage's for a one-stage flow), the language."""
    labels = stage_run_name(cfg, "train" if flow_name == "finetune" else flow_name).split(" · ")[1:]
    return " · ".join([cfg.run.name, flow_name, *labels])
