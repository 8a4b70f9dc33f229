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

from typing import Any

from prefect import flow

from flows.evaluate import current_champion, evaluate_stage
from flows.preprocess import FRONTEND, preprocess_stage
from flows.runtime import PipelineRun, RunSummary
from indextts_core.config import PipelineConfig
from tasks.artifacts import ArtifactRef, StageResult
from tasks.corpus import corpus_task
from tasks.download import DownloadResult, download_task
from tasks.extend_bpe import extend_bpe_task
from tasks.ingest import ingest_task
from tasks.pairs import pairs_task
from tasks.train import train_task

#: The stages a command can run, in pipeline order.
STAGES = ("download", "ingest", "corpus", "extend-bpe", "preprocess", "pairs", "train", "evaluate")


class Upstream:
    """Each stage's inputs: the given artifact, else the result of the stage that makes it."""

    def __init__(self, run: PipelineRun, given: dict[str, ArtifactRef]):
        self.run, self.given = run, given
        self._assets: DownloadResult | None = None
        self._done: dict[str, StageResult] = {}

    def asset(self, name: str) -> ArtifactRef | None:
        if name in self.given:
            return self.given[name]
        if self._assets is None:
            self._assets = self.run.stage(download_task)
        return self._assets.get(name)

    def artifact(self, stage: str) -> ArtifactRef:
        return self.given[stage] if stage in self.given else self.result(stage).artifact

    def result(self, stage: str) -> Any:
        """Run ``stage`` (its missing inputs first); its result."""
        if stage == "download":
            self.asset("checkpoint")
            return self._assets
        if stage not in self._done:
            self._done[stage] = self._run(stage)
        return self._done[stage]

    def _run(self, stage: str) -> StageResult:
        run, checkpoint = self.run, lambda: self.asset("checkpoint")
        if stage == "ingest":
            return run.stage(ingest_task, self.asset("dataset"))
        if stage == "corpus":
            return run.stage(corpus_task, self.artifact("ingest"), FRONTEND)
        if stage == "extend-bpe":
            return run.stage(extend_bpe_task, self.artifact("corpus"), checkpoint(), FRONTEND)
        if stage == "preprocess":
            return preprocess_stage(run, self.artifact("ingest"), self.artifact("extend-bpe"), checkpoint(),
                                    self.asset("w2v_bert"), self.asset("semantic_codec"))
        if stage == "pairs":
            return run.stage(pairs_task, self.artifact("preprocess"))
        if stage == "train":
            return run.stage(train_task, self.artifact("pairs"), self.artifact("extend-bpe"), checkpoint(),
                             self.asset("w2v_bert"), self.asset("semantic_codec"), self.asset("campplus"),
                             self.asset("bigvgan"))
        if stage == "evaluate":
            return evaluate_stage(run, self.artifact("train"), checkpoint(), self.artifact("pairs"),
                                  self.asset("w2v_bert"), self.asset("semantic_codec"), self.asset("asr"),
                                  current_champion(run), self.asset("campplus"), self.asset("bigvgan"))
        raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")


@flow(name="stage", log_prints=True)
def stage_flow(cfg: PipelineConfig, stage: str, given: dict[str, ArtifactRef] | None = None) -> RunSummary:
    """Run one stage of the pipeline (and, from the cache or anew, the stages it needs)."""
    with PipelineRun(cfg, flow_name=stage) as run:
        Upstream(run, dict(given or {})).result(stage)
        return run.finish()
