"""One stage of the pipeline as a flow run of its own: what each stage command of the CLI runs.

``indextts-train preprocess ...`` runs the same preprocess task as the ``finetune`` flow, with the
same cache, artifact store and MLflow tracking (a parent run named after the stage, a child run
for each stage that ran).  Its inputs come from two places:

* **given**: artifacts the command published from local paths (``--manifest``, ``--tokenizer``,
  ...), content-addressed, so a folder that holds what an earlier stage produced is that stage's
  artifact, whichever way it was made;
* **upstream**: every input not given is produced by the stages before it, exactly as the flow
  does (each one cached: what a previous run or command computed is reused, not recomputed).

So a stage run from the command line and the whole flow share their artifacts in both directions.
"""

from __future__ import annotations

from prefect import flow

from flows.graph import STAGES, StageGraph
from flows.runtime import PipelineRun, RunSummary
from indextts_core.config import PipelineConfig
from tasks.artifacts import ArtifactRef


@flow(name="stage", log_prints=True)
def stage_flow(cfg: PipelineConfig, stage: str, given: dict[str, ArtifactRef] | None = None) -> RunSummary:
    """Run one stage of the pipeline (and, from the cache or anew, the stages it needs)."""
    with PipelineRun(cfg, flow_name=stage) as run:
        StageGraph(run, given).result(stage)
        return run.finish()


__all__ = ["STAGES", "stage_flow"]
