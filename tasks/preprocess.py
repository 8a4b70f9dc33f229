"""Preprocessing stage tasks: the core stage's steps (:mod:`indextts_core.preprocess.run`) as Prefect tasks.

The features live in the artifact store (:class:`~indextts_core.preprocess.features.StoredFeatures`,
``features/<feature set>/``, one shard and one record per unit), so any worker, machine or later run
sees what is done:

* ``preprocess-plan`` runs ``plan_units``: the audio that still needs features, cut into units;
* ``preprocess-unit`` runs ``run_unit`` for one unit (skipped, before any model is loaded, if its record
  and its shard are already in the store): the shard and then the record go up, the shard checked by
  content against the record;
* ``preprocess`` (the stage's cached task) runs ``index_features``: the index from the records.

The bundle is opened and the clips tokenized once per process for one stage run (``core.prepare``): the
plan and the index task share that work (:func:`_prepare`).  The feature set is named by the model
assets' digests (:func:`featureset_for`).

GPU out-of-memory inside a unit halves the batch down to one clip; every backoff is recorded on the
stage's MLflow run; a unit that still fails is retried by Prefect from a smaller batch.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from indextts_core import preprocess as core
from indextts_core.config import PipelineConfig, PreprocessConfig
from indextts_core.model.bundle import ModelBundle, open_bundle
from indextts_core.store.objects import ArtifactStore, open_store
from indextts_core.text.frontend import TextFrontend
from indextts_core.text.encoder import tokenizer_in
from tasks.artifacts import ArtifactRef, StageResult, fetch_dir
from tasks.context import RunContext
from tasks.policies import STAGE_TASK_OPTIONS, OomRecorder, attempt_batch_size
from tasks.stage import Stage, run_params, stage_task
from tasks.tracking import attach_stage_run, open_stage_run


class PreprocessPlan(BaseModel):
    featureset: str
    units: list[list[tuple[str, str]]]  # [(audio key, audio URI)] per unit
    clips: int
    text_rejects: int
    stage_run_id: str | None = None


def checkpoint_bundle(cfg: PipelineConfig, store: ArtifactStore, checkpoint: ArtifactRef,
                      w2v: ArtifactRef | None, codec: ArtifactRef | None, campplus: ArtifactRef | None = None,
                      bigvgan: ArtifactRef | None = None) -> ModelBundle:
    """The base checkpoint folder with its encoders and synthesis models (the configured assets, else its
    ``hf_cache/``), local."""
    root = fetch_dir(store, checkpoint, cfg.storage.cache_dir)

    def folder(ref: ArtifactRef | None) -> Path | None:
        return fetch_dir(store, ref, cfg.storage.cache_dir) if ref else None

    def single(ref: ArtifactRef | None, pattern: str) -> Path | None:
        files = sorted(folder(ref).rglob(pattern)) if ref else []  # type: ignore[union-attr]
        return files[0] if files else None

    bigvgan_dir = folder(bigvgan)
    if bigvgan_dir is not None:  # the folder holding config.json (an asset may keep it one level down)
        bigvgan_dir = next((p.parent for p in sorted(bigvgan_dir.rglob("config.json"))), bigvgan_dir)
    return open_bundle(root, folder(w2v), single(codec, "*.safetensors"), campplus_path=single(campplus, "*.bin"),
                       bigvgan_dir=bigvgan_dir)


def featureset_for(cfg: PipelineConfig, checkpoint: ArtifactRef, w2v: ArtifactRef | None, codec: ArtifactRef | None,
                   hidden_layer: int) -> str:
    """The feature set these assets and settings compute (its features live under ``features/<id>/``), named by
    the assets' content digests as the store recorded them (no need to hash gigabytes again)."""
    models = core.model_digests(checkpoint.digest, w2v.digest if w2v else None, codec.digest if codec else None)
    return core.featureset_id(models, cfg.preprocess, hidden_layer)


_PREPARED: dict[tuple[Any, ...], core.Prepared] = {}
_PREPARED_LOCK = threading.Lock()


def _prepare(cfg: PipelineConfig, store: ArtifactStore, dataset: ArtifactRef, tokenizer: ArtifactRef,
             checkpoint: ArtifactRef, w2v: ArtifactRef | None, codec: ArtifactRef | None) -> core.Prepared:
    """Open the bundle and tokenize every clip once per process for the same inputs (the plan task
    and the index task of one stage run share it)."""
    key = (store.uri, dataset.digest, tokenizer.digest, checkpoint.digest, w2v.digest if w2v else None,
           codec.digest if codec else None, cfg.extend_bpe.output_name, cfg.preprocess.max_unk_share)
    with _PREPARED_LOCK:
        if key in _PREPARED:
            return _PREPARED[key]
        bundle = checkpoint_bundle(cfg, store, checkpoint, w2v, codec)
        ingest_dir = fetch_dir(store, dataset, cfg.storage.cache_dir)
        clips = core.clips_from_manifests({"train": ingest_dir / "train.jsonl", "val": ingest_dir / "val.jsonl"})
        tok_path = tokenizer_in(fetch_dir(store, tokenizer, cfg.storage.cache_dir), cfg.extend_bpe.output_name)
        _PREPARED.clear()  # one stage's worth at a time
        _PREPARED[key] = core.prepare(clips, bundle, tok_path, TextFrontend(), cfg.preprocess, cfg.storage)
        return _PREPARED[key]


@task(name="preprocess-plan", cache_policy=NO_CACHE, **STAGE_TASK_OPTIONS)
def preprocess_plan_task(cfg: PipelineConfig, dataset: ArtifactRef, tokenizer: ArtifactRef, checkpoint: ArtifactRef,
                         w2v: ArtifactRef | None, codec: ArtifactRef | None, ctx: RunContext) -> PreprocessPlan:
    store = open_store(cfg.storage.uri, cfg.storage)
    prep = _prepare(cfg, store, dataset, tokenizer, checkpoint, w2v, codec)
    features = core.StoredFeatures(store, featureset_for(cfg, checkpoint, w2v, codec, prep.bundle.hidden_layer))
    plan = core.plan_units(prep, features, cfg.preprocess.unit_clips)
    run_id = None
    if plan.units and ctx.tracking is not None:  # one MLflow run for the work, closed by the assemble task
        run = open_stage_run(ctx.tracking, "preprocess")
        run.log_params(run_params(cfg, "preprocess") | {"featureset": plan.featureset, "units": len(plan.units)})
        run_id = run.run_id
    get_run_logger().info("preprocess: %d clips, %d units of new audio (feature set %s)", len(prep.clips),
                          len(plan.units), plan.featureset)
    return PreprocessPlan(featureset=plan.featureset, units=plan.units, clips=len(prep.clips),
                          text_rejects=len(prep.rejects), stage_run_id=run_id)


def _unit_work(cfg: PipelineConfig, features: core.FeatureStore, bundle: ModelBundle, opts: PreprocessConfig,
               on_backoff: OomRecorder | None = None) -> core.UnitWork:
    """The core's :class:`~indextts_core.preprocess.run.UnitWork` for this configuration (``opts``: the
    ``preprocess:`` section as this attempt runs it)."""
    return core.UnitWork(features=features, cfg=opts, bundle=bundle, min_duration_s=cfg.ingest.min_duration_s,
                         max_duration_s=cfg.ingest.max_duration_s, storage=cfg.storage, on_backoff=on_backoff)


_MODELS: dict[tuple[str, str], tuple[core.Extract, float]] = {}
_MODELS_LOCK = threading.Lock()


def _extraction(work: core.UnitWork, sample: core.Unit) -> tuple[core.Extract, float]:
    """The models and the probed batch budget, loaded once per worker process and device."""
    key = (str(work.bundle.checkpoint_dir), str(core.resolved_device(work.cfg)))
    with _MODELS_LOCK:
        if key not in _MODELS:
            torch.set_grad_enabled(False)
            _MODELS[key] = core.load_extraction(work, sample)
        return _MODELS[key]


def _attempt(opts: PreprocessConfig, seconds: float) -> tuple[PreprocessConfig, float]:
    """The batch limits of this attempt: a Prefect retry after an out-of-memory at the floor starts smaller."""
    if core.batch_clips(opts):
        return opts.model_copy(update={"batch_size": attempt_batch_size(core.batch_clips(opts))}), seconds
    return opts, attempt_batch_size(max(int(seconds), 1))


@task(name="preprocess-unit", cache_policy=NO_CACHE, **STAGE_TASK_OPTIONS)
def preprocess_unit_task(cfg: PipelineConfig, unit: list[tuple[str, str]], featureset: str, checkpoint: ArtifactRef,
                         w2v: ArtifactRef | None, codec: ArtifactRef | None, stage_run_id: str | None,
                         ctx: RunContext) -> dict[str, Any]:
    features = core.StoredFeatures(open_store(cfg.storage.uri, cfg.storage), featureset)
    name = core.unit_name([k for k, _ in unit])
    if features.unit_done(name):
        return {"unit": name, "skipped": True}
    bundle = _unit_bundle(cfg, features.store, checkpoint, w2v, codec)
    extract, seconds = _extraction(_unit_work(cfg, features, bundle, cfg.preprocess), unit)
    opts, seconds = _attempt(cfg.preprocess, seconds)
    run = attach_stage_run(ctx.tracking, stage_run_id, "preprocess") if ctx.tracking and stage_run_id else None
    work = _unit_work(cfg, features, bundle, opts, OomRecorder(run, get_run_logger()))
    result = core.run_unit(unit, work, extract, seconds)
    return _summary(result)


def _summary(result: core.UnitResult) -> dict[str, Any]:
    """What a unit task returns (JSON): its result, the rejected clips counted, and the worker that ran it."""
    return asdict(result) | {"unit": result.name, "skipped": False, "rejected": len(result.rejected),
                             "worker": f"{socket.gethostname()}:{os.getpid()}"}


def _unit_result(summary: dict[str, Any]) -> core.UnitResult:
    """A unit task's :func:`_summary` back as the core's result (the rejected clips are in the unit's record)."""
    return core.UnitResult(summary["unit"], summary["processed"], {}, summary["audio_seconds"], summary["seconds"],
                           summary["batches"], summary["batch_size"], summary["backoffs"])


_UNIT_BUNDLES: dict[tuple[Any, ...], ModelBundle] = {}


def _unit_bundle(cfg: PipelineConfig, store: ArtifactStore, checkpoint: ArtifactRef, w2v: ArtifactRef | None,
                 codec: ArtifactRef | None) -> ModelBundle:
    """The bundle once per worker process: its files are verified by content when first fetched, and the
    models loaded from them stay loaded (``_MODELS``), so later units do not hash gigabytes again."""
    key = (store.uri, checkpoint.digest, w2v.digest if w2v else None, codec.digest if codec else None)
    with _MODELS_LOCK:
        if key not in _UNIT_BUNDLES:
            _UNIT_BUNDLES.clear()
            _UNIT_BUNDLES[key] = checkpoint_bundle(cfg, store, checkpoint, w2v, codec)
        return _UNIT_BUNDLES[key]


@stage_task("preprocess", core.STAGE_VERSION, ignore=("cfg", "ctx", "plan", "units"))
def preprocess_task(cfg: PipelineConfig, dataset: ArtifactRef, tokenizer: ArtifactRef, checkpoint: ArtifactRef,
                    w2v: ArtifactRef | None, codec: ArtifactRef | None, frontend: str, plan: PreprocessPlan,
                    units: list[dict[str, Any]], ctx: RunContext) -> StageResult:
    """Assemble the index from the unit records (the cached stage; ``plan``/``units`` are not in the key)."""
    inputs = {"dataset": dataset, "tokenizer": tokenizer, "checkpoint": checkpoint, "w2v_bert": w2v, "codec": codec}
    with Stage("preprocess", cfg, ctx, inputs, run_id=plan.stage_run_id, tags={"featureset": plan.featureset}) as s:
        prep = _prepare(cfg, s.store, dataset, tokenizer, checkpoint, w2v, codec)
        ran = [u for u in units if not u.get("skipped")]
        result = core.index_features(prep, core.StoredFeatures(s.store, plan.featureset), s.out,
                                     [_unit_result(u) for u in ran], s.started)
        numbers = result.report | result.run
        metrics = {k: numbers[k] for k in ("clips", "indexed", "train", "val", "rejected", "audio_processed_now",
                                           "features_reused", "oom_backoffs") if numbers.get(k) is not None}
        metrics |= {k: numbers[k] for k in ("clips_per_second", "audio_seconds_per_second") if numbers.get(k)}
        metrics |= {f"rejected.{k}": v for k, v in result.rejected_by_reason.items()}
        metrics["units_run"] = len(ran)
        metrics["unit_workers"] = len({u["worker"] for u in ran})
        return s.publish(metrics, reports=[result.report_json, result.report_md, result.report_png, result.rejects],
                         tags={"featureset": plan.featureset}, data={"featureset": plan.featureset},
                         outputs={"train": "train_manifest.jsonl", "val": "val_manifest.jsonl",
                                  "rejects": "rejects.jsonl", "report": "report.md", "plot": "lengths.png"})
