"""The preprocessing stage as flows: the core stage's steps, its work units spread over a chosen task runner.

The steps are those :func:`indextts_core.preprocess.preprocess` runs (plan, units, index) on the
artifact store's feature set, as tasks (``tasks/preprocess.py``): here the units' runner is a subflow of
unit tasks.  ``preprocess.runner: local`` runs units on this process's threads (``parallel_units`` at a
time; one GPU is best served by one unit at a time), ``dask`` on a Dask cluster (``dask_address``, or a
local cluster of ``dask_workers`` processes), each worker loading the models once.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, unmapped
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from indextts_core.config import PipelineConfig
from tasks.artifacts import ArtifactRef
from tasks.context import RunContext
from flows.runtime import PipelineRun
from indextts_core.text.frontend import TextFrontend
from tasks.artifacts import StageResult
from tasks.preprocess import PreprocessPlan, preprocess_plan_task, preprocess_task, preprocess_unit_task
from tasks.progress import UnitProgress
from tasks.tracking import end_run_if_running

#: The fingerprint of the text front-end every stage shares (part of the text stages' cache keys).
FRONTEND = TextFrontend().fingerprint()["sha256"]


def task_runner(cfg: PipelineConfig) -> Any:
    p = cfg.preprocess
    if p.runner == "dask":
        from prefect_dask import DaskTaskRunner

        if p.dask_address:
            return DaskTaskRunner(address=p.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": p.dask_workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    return ThreadPoolTaskRunner(max_workers=p.parallel_units)


@flow(name="preprocess-units")
def preprocess_units(cfg: PipelineConfig, plan: PreprocessPlan, checkpoint: ArtifactRef, w2v: ArtifactRef | None,
                     codec: ArtifactRef | None, ctx: RunContext) -> list[dict[str, Any]]:
    """Process every unit of the plan; returns one small summary per unit (in the plan's order).

    As units finish, a progress artifact (``preprocess-progress``) and a log line say how far it is."""
    futures = preprocess_unit_task.with_options(retries=cfg.orchestration.retries,
                                                retry_delay_seconds=cfg.orchestration.retry_delay_s).map(
        unmapped(cfg), plan.units, unmapped(plan.featureset), unmapped(checkpoint), unmapped(w2v), unmapped(codec),
        unmapped(plan.stage_run_id), unmapped(ctx))
    report = UnitProgress(len(futures))
    for future in as_completed(futures):
        report.done(future.result())
    return [f.result() for f in futures]


def run_units(cfg: PipelineConfig, plan: PreprocessPlan, checkpoint: ArtifactRef, w2v: ArtifactRef | None,
              codec: ArtifactRef | None, ctx: RunContext) -> list[dict[str, Any]]:
    if not plan.units:
        return []
    return preprocess_units.with_options(task_runner=task_runner(cfg))(cfg, plan, checkpoint, w2v, codec, ctx)


def preprocess_stage(run: PipelineRun, dataset: ArtifactRef, tokenizer: ArtifactRef, checkpoint: ArtifactRef,
                     w2v: ArtifactRef | None, codec: ArtifactRef | None) -> StageResult:
    """The whole preprocess stage: plan, the work units (new audio only, in parallel), the index."""
    models = (checkpoint, w2v, codec)
    started = time.monotonic()
    plan = run.call(preprocess_plan_task, dataset, tokenizer, *models)
    status = "FAILED"
    try:
        units = run_units(run.cfg, plan, *models, run.ctx)  # the expensive part
        result = run.stage(preprocess_task, dataset, tokenizer, *models, FRONTEND, plan, units, since=started)
        status = "FINISHED"
        return result
    finally:
        # the plan's MLflow run is ended by the index task when that runs; when the index comes from the cache
        # (or a step fails first) nothing else ends it: never left RUNNING
        if plan.stage_run_id and run.tracking is not None:
            end_run_if_running(run.tracking, plan.stage_run_id, status, tags={
                "preprocess.index": "from the cache" if status == "FINISHED" else "not built (a step failed)"})
