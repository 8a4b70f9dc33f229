"""Evaluation and promotion as steps of a flow: find the champion, say and score, decide.

The champion is evaluated again next to the new model (the same items, the same seeds) unless it
is the very same export; the base model always is (``evaluate.compare_base``).  The promotion step
runs after every training, with or without an evaluation (then on validation loss).
"""

from __future__ import annotations

from flows.runtime import PipelineRun
from tasks.artifacts import ArtifactRef, StageResult
from tasks.evaluate import evaluate_task, sentences_digest
from tasks.promote import Champion, PromotionResult, champion_task, promote_task


def current_champion(run: PipelineRun) -> Champion | None:
    return run.call(champion_task)


def evaluate_stage(run: PipelineRun, model: ArtifactRef, checkpoint: ArtifactRef, pairs: ArtifactRef,
                   w2v: ArtifactRef | None, codec: ArtifactRef | None, asr: ArtifactRef | None,
                   champion: Champion | None, campplus: ArtifactRef | None = None,
                   bigvgan: ArtifactRef | None = None, verifier: ArtifactRef | None = None) -> StageResult:
    """The ``evaluate`` stage; ``verifier``: the independent speaker verifier asset (``download.speaker_verifier``)."""
    other = champion.artifact if champion is not None else None
    if other is not None and other.digest == model.digest:
        other = None  # the champion is this model: nothing to compare
    return run.stage(evaluate_task, model, checkpoint, pairs, w2v, codec, asr, other, sentences_digest(run.cfg),
                     campplus, bigvgan, verifier)


def promote_stage(run: PipelineRun, trained: StageResult, evaluation: StageResult | None,
                  champion: Champion | None) -> PromotionResult:
    return run.stage(promote_task, trained, evaluation, champion)
