"""The stage graph: which task makes each stage's output from which inputs, declared once.

:class:`StageGraph` is walked by the ``finetune`` flow (:mod:`flows.finetune`, every stage in
pipeline order) and by the one-stage flow every CLI stage command runs (:mod:`flows.stage`).  A new
stage is one entry in :data:`STAGES` and one branch in :meth:`StageGraph._run`.
"""

from __future__ import annotations

from typing import Any

from flows.evaluate import current_champion, evaluate_stage
from flows.preprocess import FRONTEND, preprocess_stage
from flows.runtime import PipelineRun
from tasks.artifacts import ArtifactRef, StageResult
from tasks.corpus import corpus_task
from tasks.curate import curate_task
from tasks.download import DownloadResult, download_task
from tasks.extend_bpe import extend_bpe_task
from tasks.ingest import ingest_task
from tasks.pairs import pairs_task
from tasks.promote import Champion
from tasks.train import resumes_a_file, train_task

#: The stages a command can run, in pipeline order.
STAGES = ("download", "curate", "ingest", "corpus", "extend-bpe", "preprocess", "pairs", "train", "evaluate")


class StageGraph:
    """The pipeline's stages and what each one takes, declared once: walked by the ``finetune`` flow
    (every stage in order) and by each stage command (one stage and, cached or anew, what it needs).

    Each input is the given artifact (a command's local path, published), else the result of the stage
    that makes it; a stage runs at most once per graph.
    """

    def __init__(self, run: PipelineRun, given: dict[str, ArtifactRef] | None = None):
        self.run, self.given = run, dict(given or {})
        self._assets: DownloadResult | None = None
        self._done: dict[str, StageResult] = {}
        self._champion: tuple[Champion | None] | None = None

    def champion(self) -> Champion | None:
        """The registered model's current champion, looked up once (the evaluation and promotion share it)."""
        if self._champion is None:
            self._champion = (current_champion(self.run),)
        return self._champion[0]

    def asset(self, name: str) -> ArtifactRef | None:
        if name in self.given:
            return self.given[name]
        if self._assets is None:
            self._assets = self.run.stage(download_task)
        return self._assets.get(name)

    def applies(self, stage: str) -> bool:
        """Whether the pipeline runs ``stage``: curate only when it has sources (``curate.sources``)."""
        return stage != "curate" or bool(self.run.cfg.curate.sources)

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
        if stage == "curate":
            return run.stage(curate_task, self.asset("asr"))
        if stage == "ingest":  # the curated recordings when there are any, else the dataset
            dataset = self.given.get("dataset") or (self.artifact("curate") if self.applies("curate")
                                                    else self.asset("dataset"))
            return run.stage(ingest_task, dataset)
        if stage == "corpus":
            return run.stage(corpus_task, self.artifact("ingest"), FRONTEND)
        if stage == "extend-bpe":
            return run.stage(extend_bpe_task, self.artifact("corpus"), checkpoint(), FRONTEND)
        if stage == "preprocess":
            return preprocess_stage(run, self.artifact("ingest"), self.artifact("extend-bpe"), checkpoint(),
                                    self.asset("w2v_bert"), self.asset("semantic_codec"))
        if stage == "pairs":
            return run.stage(pairs_task, self.artifact("preprocess"))
        if stage == "train":  # resuming from a given checkpoint file asks for training: never the cached result
            return run.stage(train_task, self.artifact("pairs"), self.artifact("extend-bpe"), checkpoint(),
                             self.asset("w2v_bert"), self.asset("semantic_codec"), self.asset("campplus"),
                             self.asset("bigvgan"), refresh=resumes_a_file(run.cfg))
        if stage == "evaluate":
            return evaluate_stage(run, self.artifact("train"), checkpoint(), self.artifact("pairs"),
                                  self.asset("w2v_bert"), self.asset("semantic_codec"), self.asset("asr"),
                                  self.champion(), self.asset("campplus"), self.asset("bigvgan"),
                                  self.asset("speaker_verifier"))
        raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
