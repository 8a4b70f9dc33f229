"""What a stage's output depends on, as plain data: the config fields each stage declares.

Used by the stage tasks' cache key (:class:`tasks.policies.StageCache`), by their MLflow run
parameters, and by the CLI's cached answers (:mod:`flows.cached_answers`), which must compute the
same material without importing Prefect.  So this module imports nothing but pydantic.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

#: The config fields (or whole sections) each stage's output depends on: its cache key and the
#: parameters of its MLflow run.  A section stands for all its fields but its ``NOT_IN_KEY``.
STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "curate": ("language", "curate"),
    "ingest": ("language", "extra_languages", "run.seed", "ingest"),
    "corpus": ("corpus",),
    "extend-bpe": ("language", "run.seed", "extend_bpe"),
    "preprocess": ("preprocess", "ingest.min_duration_s", "ingest.max_duration_s"),
    "pairs": ("run.seed", "pairs"),
    "train": ("run.seed", "pairs", "extend_bpe.output_name", "train"),
    "evaluate": ("run.seed", "generation", "evaluate"),
}


def _dotted(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def stable(value: Any) -> Any:
    """``value`` as plain JSON data for a key: an artifact reference is its content digest."""
    if value is None:
        return None
    if isinstance(value, BaseModel):
        digest = getattr(value, "digest", None)  # an ArtifactRef is identified by its content
        if isinstance(digest, str) and hasattr(value, "prefix"):
            return {"digest": digest}
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): stable(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [stable(v) for v in value]
    return value


def config_subset(cfg: Any, keys: Iterable[str]) -> dict[str, Any]:
    """``{"ingest.min_duration_s": 0.5, ...}``: the named config fields as plain data.

    A key naming a whole section (``"ingest"``) stands for every field of it that is in the cache
    key (all but the section's ``NOT_IN_KEY``), so a field added to a section is keyed by default.
    """
    out: dict[str, Any] = {}
    for k in keys:
        value = _dotted(cfg, k)
        if hasattr(value, "key_fields"):
            out |= {f"{k}.{name}": stable(v) for name, v in value.key_fields().items()}
        else:
            out[k] = stable(value)
    return out


def run_params(cfg: Any, stage: str) -> dict[str, Any]:
    """The config fields a stage's output depends on: its MLflow run's parameters."""
    return config_subset(cfg, STAGE_KEYS.get(stage, ()))
