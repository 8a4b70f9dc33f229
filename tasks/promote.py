"""Promotion: which registered version is in use, moved only on measured improvement.

* :func:`champion_task` looks up the version the ``champion`` alias points at (and its exported
  folder, recorded on the version at registration), so the evaluation can say both models again.
* :func:`promote_task` decides (:mod:`indextts_core.evaluation.promotion`) and records: the new
  version gets the ``champion`` alias when it beats the incumbent (the champion, or the base model
  when there is none), ``challenger`` otherwise; the decision and its numbers become tags of the
  version (``promotion.*``, ``eval.*``), of the ``promote`` MLflow run, and a Prefect artifact.

With ``promotion.metric: auto`` and an evaluation that could not score a model because its outputs
were not speech (silent or runaway: the demo's tiny random models), the decision falls back to the
validation loss and its reason says why.  So does a decision on CER/WER from a judge that is not trusted:
the judge is judged first (``evaluate.max_judge_cer`` against its CER on the real recordings, per
language); when it is unreliable for the run's language (or every language), validation loss decides
and the reason says "judge unreliable for ..."; when only for other languages, CER over the trusted
languages decides.  Both reasons apply to the demo (silent outputs, a tiny random judge): "cer not
measured: ..." comes first.

On validation loss the candidate's number is the loss of the checkpoint that was exported (the
best one, ``exported.loss``), never the last validation; it is recorded as ``eval.val_loss``.  A missing
or NaN incumbent number (no baseline, a champion without the metric) never promotes: the version
gets ``challenger`` and the reason says why.

Not cached: the registry changes between runs (another run may have promoted a model meanwhile).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from indextts_core.config import PipelineConfig
from indextts_core.evaluation.gates import Gate, base_language_gate, emotion_gate
from indextts_core.evaluation.promotion import Decision, choose_metric, decide, finite_number
from indextts_core.store.objects import open_store
from tasks.artifacts import ArtifactRef, StageResult, is_present
from tasks.context import RunContext
from tasks.policies import STAGE_TASK_OPTIONS
from tasks.tracking import model_version, model_version_by_alias, register_model, set_model_alias, stage_run, \
    tag_model_version
from tasks.train import registered_name


class Champion(BaseModel):
    version: str
    source: str = ""  # where the version points (the exported folder's URI)
    artifact: ArtifactRef | None = None  # its exported folder, when recorded and still in the store
    tags: dict[str, str] = {}


class PromotionResult(BaseModel):
    registered_model: str | None
    version: str | None
    alias: str | None  # the alias the version got (None: no registry)
    decision: dict[str, Any]
    gates: list[dict[str, Any]] = []  # the base-language and emotion gates: status, reason, checks
    mlflow_run_id: str | None = None


@task(name="champion", cache_policy=NO_CACHE, **STAGE_TASK_OPTIONS)
def champion_task(cfg: PipelineConfig, ctx: RunContext) -> Champion | None:
    """The current champion of the run's registered model, or None (no registry, or no champion yet)."""
    if ctx.tracking is None:
        return None
    found = model_version_by_alias(ctx.tracking, registered_name(cfg), cfg.promotion.champion_alias)
    if found is None:
        return None
    artifact = None
    if found["tags"].get("export.ref"):
        artifact = ArtifactRef.model_validate_json(found["tags"]["export.ref"])
        if not is_present(open_store(cfg.storage.uri, cfg.storage), artifact):
            get_run_logger().warning("champion v%s: its export %s is gone from the store; comparing with its "
                                     "recorded numbers", found["version"], artifact.uri)
            artifact = None
    return Champion(version=found["version"], source=found["source"], artifact=artifact, tags=found["tags"])


def exported_loss(trained: StageResult) -> float | None:
    """The validation loss of the checkpoint the training exported (its best one, ``exported.loss``).

    A result recorded before ``exported.*`` existed: its last validation when that was also its best
    step (the exported checkpoint), else None (unknown)."""
    m = trained.metrics
    if "exported.loss" in m:
        return finite_number(m["exported.loss"])
    if m.get("best_step") and m.get("best_step") == m.get("steps"):
        return finite_number(m.get("final.loss"))
    return None


def _decision(cfg: PipelineConfig, trained: StageResult, evaluation: StageResult | None,
              champion: Champion | None) -> Decision:
    metric = choose_metric(cfg.promotion.metric, bool(evaluation and evaluation.data.get("asr")))
    untrusted, trusted = _judge(cfg, evaluation, champion) if metric in ("cer", "wer") else ("", None)
    decision = _decide_on(metric, cfg, trained, evaluation, champion, trusted)
    unscored = _not_speech(evaluation)
    why = []
    if cfg.promotion.metric == "auto" and decision.metric != "val_loss" and unscored and (
            decision.candidate is None or decision.incumbent is None):
        why.append(f"{decision.metric} not measured: {unscored}")
    if untrusted and (trusted is None or why):  # the judge cannot read the languages that matter: they decide nothing
        why.append(untrusted)
    if why:
        fallback = _decide_on("val_loss", cfg, trained, evaluation, champion)
        return replace(fallback, reason=f"{'; '.join(why)}; decided on validation loss instead: {fallback.reason}")
    if untrusted:
        return replace(decision, reason=f"{untrusted}; {metric} over the trusted languages "
                                        f"({', '.join(trusted['languages'])}) only: {decision.reason}")
    return decision


def gates_of(cfg: PipelineConfig, evaluation: StageResult | None) -> list[Gate]:
    """The gates the candidate must pass whatever it gained (:mod:`indextts_core.evaluation.gates`): the base
    languages (``promotion.max_base_regression`` against the base model on ``train.replay_languages``) and the
    emotion transfer (``promotion.max_emotion_loss``), each when configured and the evaluation ran."""
    if evaluation is None or evaluation.data.get("skipped"):
        return []
    p, data = cfg.promotion, evaluation.data
    gates = []
    if p.max_base_regression is not None:
        languages = [lang for lang in cfg.train.replay_languages if lang != cfg.language]
        gates.append(base_language_gate(data.get("by_language") or {}, languages, p.max_base_regression,
                                        untrusted=(data.get("judge") or {}).get("unreliable") or ()))
    if p.max_emotion_loss is not None:
        gates.append(emotion_gate(data.get("emotion"), p.max_emotion_loss))
    return gates


def gated(decision: Decision, gates: list[Gate]) -> Decision:
    """A promotion the gates refuse is no promotion: the refusing gates' reasons come first."""
    refused = [g for g in gates if not g.passed]
    if not decision.promote or not refused:
        return decision
    return replace(decision, promote=False, reason="; ".join(g.reason for g in refused)
                   + f"; without the gate it would have been promoted: {decision.reason}")


def _judge(cfg: PipelineConfig, evaluation: StageResult | None,
           champion: Champion | None) -> tuple[str, dict[str, Any] | None]:
    """Whether the ASR judge may decide: ``(why not, trusted figures)``.

    ``("", None)``: it may (or the evaluation recorded no judge).  The judge judged first: a language whose
    real recordings it reads with a CER above ``evaluate.max_judge_cer`` is unreliable.  When the run's
    language is among them, or every scored language is, the phrase says so and there are no trusted
    figures (fall back); when only other languages are, the figures over the trusted languages
    (``judge["trusted"]``) decide, unless the champion was not evaluated next to the candidate (its recorded
    number covers every language: no like-for-like comparison, so fall back too)."""
    judge = (evaluation.data.get("judge") if evaluation is not None else None) or {}
    unreliable = judge.get("unreliable") or []
    if not unreliable:
        return "", None
    said = ", ".join(f"{lang}: CER {judge['reference_cer'][lang]:.2f}" for lang in unreliable)
    why = (f"judge unreliable for {said} on the real recordings > evaluate.max_judge_cer "
           f"{judge['max_judge_cer']:g}")
    trusted = judge.get("trusted")
    if cfg.language in unreliable or not trusted:
        return why, None
    if champion is not None and "champion" not in trusted["headline"]:
        return why + " (and the recorded champion has no figure over the trusted languages alone)", None
    return why, trusted


def _not_speech(evaluation: StageResult | None) -> str:
    """Which models' outputs were not speech (so not scored), as a phrase; '' when every output was."""
    if evaluation is None:
        return ""
    failed = evaluation.data.get("not_speech") or {}
    return "; ".join(f"{model}: {', '.join(f'{n} {why}' for why, n in sorted(counts.items()))} output(s) not speech"
                     for model, counts in failed.items() if counts)


def _decide_on(metric: str, cfg: PipelineConfig, trained: StageResult, evaluation: StageResult | None,
               champion: Champion | None, figures: dict[str, Any] | None = None) -> Decision:
    """Decide on ``metric``: the evaluation's headline and differences over all items, or ``figures``'
    (the trusted languages' ``headline`` and ``differences``) when given."""
    p = cfg.promotion
    rule = {"min_improvement": p.min_improvement, "require_significant": p.require_significant}
    if metric == "val_loss":
        candidate = exported_loss(trained)
        if champion is not None:
            return decide(metric, candidate, champion.tags.get("eval.val_loss"),
                           f"champion v{champion.version} (recorded)", **rule)
        return decide(metric, candidate, trained.metrics.get("baseline.loss"), "base model", **rule)
    if evaluation is None:
        return decide(metric, None, None, "incumbent", **rule)
    figures = figures or evaluation.data
    headline = figures["headline"]
    candidate = headline.get("fine-tuned", {}).get(metric)
    if champion is not None and "champion" in headline:
        incumbent, name, key = headline["champion"].get(metric), f"champion v{champion.version}", "champion"
    elif champion is not None:
        return decide(metric, candidate, champion.tags.get(f"eval.{metric}"),
                       f"champion v{champion.version} (recorded)", **rule)
    else:
        incumbent, name, key = headline.get("base", {}).get(metric), "base model", "base"
    interval = next((d for d in figures.get("differences", [])
                     if d["model"] == "fine-tuned" and d["versus"] == key and d["metric"] == metric), None)
    return decide(metric, candidate, incumbent, name, interval=interval, **rule)


@task(name="promote", cache_policy=NO_CACHE, **STAGE_TASK_OPTIONS)
def promote_task(cfg: PipelineConfig, trained: StageResult, evaluation: StageResult | None,
                 champion: Champion | None, ctx: RunContext) -> PromotionResult:
    logger = get_run_logger()
    name, version = registered_name(cfg), trained.outputs.get("registered_version")
    if champion is not None and champion.version == version and champion.source == trained.artifact.uri:
        decision = Decision(True, "", None, None, f"champion v{version}",
                            reason=f"version {version} is already the champion (nothing was retrained)")
        return PromotionResult(registered_model=name, version=version, alias=cfg.promotion.champion_alias,
                               decision=decision.as_dict())
    gates = gates_of(cfg, evaluation)
    decision = gated(_decision(cfg, trained, evaluation, champion), gates)
    alias = cfg.promotion.champion_alias if decision.promote else cfg.promotion.challenger_alias
    measured: dict[str, Any] = {"eval.val_loss": exported_loss(trained)}  # the exported checkpoint's, as compared
    if evaluation is not None and not evaluation.data.get("skipped"):
        measured |= {f"eval.{k}": v for k, v in evaluation.data["headline"].get("fine-tuned", {}).items()}
        measured["eval.report"] = evaluation.artifact.uri + "/report.html"
    measured = {k: v for k, v in measured.items() if v is not None}
    run_id = None
    with stage_run(ctx.tracking, "promote") as run:
        if run is not None:
            run_id = run.run_id
            version = this_registry_version(ctx, name, version, trained, run_id, logger)
            run.log_metrics({"promoted": int(decision.promote), **{k: v for k, v in measured.items()
                                                                   if isinstance(v, int | float)}})
            gate_tags = {f"gate.{g.name.split()[0]}": g.status for g in gates} | {
                f"gate.{g.name.split()[0]}.reason": g.reason[:5000] for g in gates}
            run.set_tags(decision.tags() | gate_tags | {"registered_model": name,
                                                        "registered_model.version": version or "", "alias": alias})
            tag_model_version(ctx.tracking, name, version, decision.tags() | gate_tags | measured)
            set_model_alias(ctx.tracking, name, alias, version)
            logger.info("%s version %s -> alias %r: %s", name, version, alias, decision.reason)
            for g in gates:
                logger.info("%s", g.reason)
        else:
            alias = None
            logger.info("promotion (no registry to record it in): %s", decision.reason)
    create_markdown_artifact(key="promotion-decision", description=f"{name} v{version}", markdown=(
        f"# {'Promoted' if decision.promote else 'Not promoted'}: {name} v{version or '-'}\n\n"
        f"- alias: `{alias or '-'}`\n- metric: `{decision.metric}`\n- candidate: {decision.candidate}\n"
        f"- {decision.incumbent_name}: {decision.incumbent}\n- interval of the difference: "
        f"[{decision.low}, {decision.high}]\n- reason: {decision.reason}\n"
        + "".join(f"- {g.reason}\n" for g in gates)))
    return PromotionResult(registered_model=name, version=version, alias=alias, decision=decision.as_dict(),
                           gates=[g.as_dict() | {"status": g.status} for g in gates], mlflow_run_id=run_id)


def this_registry_version(ctx: RunContext, name: str, version: str | None, trained: StageResult, run_id: str,
                          logger: Any) -> str:
    """The version of ``trained``'s export in this run's registry, registered now if it is not there.

    A train result taken from the cache may have been registered in another registry (another
    machine's MLflow store sharing the artifact bucket): this registry then gets its own version,
    pointing at the same export, so the promotion has something to record on.
    """
    assert ctx.tracking is not None
    found = model_version(ctx.tracking, name, version) if version else None
    if found is not None and found["source"] == trained.artifact.uri:
        return str(version)
    new = register_model(ctx.tracking, name, trained.artifact.uri, run_id, description=(
        "registered by the promote step: the training result came from the cache (trained by run "
        f"{trained.mlflow_run_id}, flow run {trained.flow_run_id})"), tags={
        "export.digest": trained.artifact.digest, "export.ref": trained.artifact.model_dump_json(),
        "registered_by": "promote", "trained_by.mlflow_run_id": trained.mlflow_run_id or "",
        "trained_by.flow_run_id": trained.flow_run_id or ""})
    logger.info("%s: the cached training result is not in this registry; registered it as version %s", name, new)
    return new
