"""The ``scheduled-retrain`` flow: rerun ``finetune`` when the dataset location has new data.

Scheduled by cron (``deployments/prefect.yaml``).  Each run lists the dataset source (nothing is
downloaded) and compares that fingerprint with the one recorded by the last successful retrain of
the same run name and source (kept in the artifact store, so every worker sees it).  Unchanged:
nothing runs.  Changed: ``finetune`` runs as a subflow, and its stages whose inputs did not change
come from the cache, so only the work the new data needs is done.  The new model is evaluated next
to the current champion and takes the ``champion`` alias only if it measurably beats it
(``promotion:``); the decision is in the ``retrain-decision`` artifact.
"""

from __future__ import annotations

from typing import Any

import hashlib
import json
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel

from flows.config_source import read_run_config
from flows.finetune import finetune
from flows.runtime import RunSummary
from indextts_core.config import PipelineConfig
from indextts_core.store.objects import open_store
from tasks.download import dataset_fingerprint_task


class RetrainResult(BaseModel):
    ran: bool
    reason: str
    fingerprint: str
    summary: RunSummary | None = None


def _state_key(cfg: PipelineConfig) -> str:
    source = hashlib.sha256(cfg.ingest.source.model_dump_json().encode()).hexdigest()[:12]
    return f"state/retrain/{cfg.run.name}-{source}.json"


@flow(name="scheduled-retrain", log_prints=True)
def scheduled_retrain(cfg: PipelineConfig = PipelineConfig(), force: bool = False,  # noqa: B008
                      config: str | None = None, overrides: dict[str, Any] | None = None) -> RetrainResult:
    """Check the dataset location; rerun the pipeline only if its content changed (or ``force``).

    Args:
        cfg: The run configuration (the form), used when ``config`` is empty.
        force: Retrain even if the data did not change.
        config: The run YAML to retrain with, read at every run (edits reach the next one): a path
            (relative to the worker's checkout or the image's /opt/indextts-train), an s3:// URI,
            or variable://NAME for a Prefect Variable.
        overrides: Dotted settings applied on top of ``config`` (``{"train.epochs": 1}``), as ``--set`` does.
    """
    logger = get_run_logger()
    if config:
        cfg = read_run_config(config, cfg.storage, overrides)
        logger.info("configuration from %s (run %s)", config, cfg.run.name)
    store = open_store(cfg.storage.uri, cfg.storage)
    key = _state_key(cfg)
    fingerprint = dataset_fingerprint_task(cfg)
    last = store.get_json(key) if store.exists(key) else None
    if last is not None and last["fingerprint"] == fingerprint and not force:
        reason = f"no new data at {cfg.ingest.source.source} since {last['at']} (flow run {last['flow_run_id']})"
        logger.info(reason)
        create_markdown_artifact(key="retrain-decision", markdown=f"# Skipped\n\n{reason}\n")
        return RetrainResult(ran=False, reason=reason, fingerprint=fingerprint)
    reason = "forced" if force and last is not None else ("first run" if last is None else "the dataset changed")
    logger.info("retraining: %s", reason)
    summary = finetune(cfg)
    store.put_json({"fingerprint": fingerprint, "at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "flow_run_id": str(flow_run.id), "stages": {r.stage: r.status for r in summary.stages}}, key)
    promoted = summary.results.get("promote") or {}
    decision = promoted.get("decision", {})
    logger.info("promotion: %s v%s -> %s: %s", promoted.get("registered_model"), promoted.get("version"),
                promoted.get("alias"), decision.get("reason", "-"))
    create_markdown_artifact(key="retrain-decision", markdown=f"# Retrained: {reason}\n\n"
                             f"Promotion: version {promoted.get('version') or '-'} -> `{promoted.get('alias') or '-'}`"
                             f" ({decision.get('reason', 'no promotion step')})\n\n"
                             + json.dumps({r.stage: r.status for r in summary.stages}, indent=1) + "\n")
    return RetrainResult(ran=True, reason=reason, fingerprint=fingerprint, summary=summary)


if __name__ == "__main__":
    scheduled_retrain(PipelineConfig())
