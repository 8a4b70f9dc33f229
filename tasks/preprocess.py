"""Preprocessing stage tasks: plan, work units (run in parallel on the chosen task runner), assemble.

* ``preprocess-plan`` tokenizes and gates the text and lists the audio that still needs features
  (features live in the artifact store under ``features/<feature set>/``, one shard and one record
  per unit, so any worker, machine or later run sees what is done);
* ``preprocess-unit`` processes one unit (skipped if its record and its shard are already in the
  store) and uploads its shard, checks that the store holds the bytes whose sha256 the record
  carries, then uploads the record;
* ``preprocess`` (the stage's cached task) writes the index from the records.

The bundle is opened and the clips tokenized once per process for one stage run: the plan and the
index task share that work (:func:`_prepare`).

GPU out-of-memory inside a unit halves the batch down to one clip; every backoff is recorded on the
stage's MLflow run; a unit that still fails is retried by Prefect from a smaller batch.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from indextts_core import preprocess as core
from indextts_core.config import PipelineConfig
from indextts_core.errors import StorageError
from indextts_core.model.bundle import ModelBundle, open_bundle
from indextts_core.preprocess.planning import record_complete
from indextts_core.store.objects import ArtifactStore, corrupt_message, open_store
from indextts_core.text.frontend import TextFrontend
from indextts_core.text.encoder import open_text_encoder, tokenizer_in
from indextts_core.utils.fileio import read_json, sha256_file
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


def feature_prefix(featureset: str) -> str:
    return f"features/{featureset}"


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


def _models_digest(checkpoint: ArtifactRef, w2v: ArtifactRef | None, codec: ArtifactRef | None) -> dict[str, str]:
    """Model identity from the assets' content digests (no need to hash gigabytes again)."""
    return {"checkpoint": checkpoint.digest, "w2v_bert": w2v.digest if w2v else "", "codec": codec.digest if codec else ""}


def featureset_for(cfg: PipelineConfig, checkpoint: ArtifactRef, w2v: ArtifactRef | None, codec: ArtifactRef | None,
                   hidden_layer: int) -> str:
    """The feature set these assets and settings compute (its features live under ``features/<id>/``)."""
    return core.featureset_id(_models_digest(checkpoint, w2v, codec), cfg.preprocess, hidden_layer)


def _records(store: ArtifactStore, featureset: str) -> core.UnitRecords:
    """The complete units of the feature set in the store (a unit whose shard is gone is not complete)."""
    records = core.UnitRecords()
    keys = store.list(feature_prefix(featureset))
    present = {k.rsplit("/", 1)[-1] for k in keys}
    for key in keys:
        if key.rsplit("/", 1)[-1].startswith("unit-") and key.endswith(".json"):
            record = store.get_json(key)
            if record_complete(record, present=present):
                records.add(record)
    return records


@dataclass
class _Prepared:
    """What the plan and the index both need: the bundle, the clips and their tokenized text."""

    bundle: ModelBundle
    clips: list[core.Clip]
    tokenizer: Path
    texts: dict[str, core.TextItem]
    rejects: list[dict[str, Any]]
    _gpt_sha256: str | None = None

    @property
    def gpt_sha256(self) -> str:
        if self._gpt_sha256 is None:
            self._gpt_sha256 = sha256_file(self.bundle.gpt_path)
        return self._gpt_sha256


_PREPARED: dict[tuple[Any, ...], _Prepared] = {}
_PREPARED_LOCK = threading.Lock()


def _prepare(cfg: PipelineConfig, store: ArtifactStore, dataset: ArtifactRef, tokenizer: ArtifactRef,
             checkpoint: ArtifactRef, w2v: ArtifactRef | None, codec: ArtifactRef | None) -> _Prepared:
    """Open the bundle and tokenize every clip once per process for the same inputs (the plan task
    and the index task of one stage run share it)."""
    from indextts_core.text.extend_bpe import check_frontend

    key = (store.uri, dataset.digest, tokenizer.digest, checkpoint.digest, w2v.digest if w2v else None,
           codec.digest if codec else None, cfg.extend_bpe.output_name, cfg.preprocess.max_unk_share)
    with _PREPARED_LOCK:
        if key in _PREPARED:
            return _PREPARED[key]
        bundle = checkpoint_bundle(cfg, store, checkpoint, w2v, codec)
        ingest_dir = fetch_dir(store, dataset, cfg.storage.cache_dir)
        clips = core.clips_from_manifests({"train": ingest_dir / "train.jsonl", "val": ingest_dir / "val.jsonl"})
        tok_path = tokenizer_in(fetch_dir(store, tokenizer, cfg.storage.cache_dir), cfg.extend_bpe.output_name)
        fe = TextFrontend()
        check_frontend(tok_path, fe.fingerprint())
        encoder = open_text_encoder(tok_path, bundle.is_v25, frontend=fe)
        texts, rejects = core.tokenize(clips, encoder, bundle.gpt_config.max_text_tokens, cfg.preprocess.max_unk_share)
        _PREPARED.clear()  # one stage's worth at a time
        _PREPARED[key] = _Prepared(bundle, clips, tok_path, texts, rejects)
        return _PREPARED[key]


@task(name="preprocess-plan", cache_policy=NO_CACHE, **STAGE_TASK_OPTIONS)
def preprocess_plan_task(cfg: PipelineConfig, dataset: ArtifactRef, tokenizer: ArtifactRef, checkpoint: ArtifactRef,
                         w2v: ArtifactRef | None, codec: ArtifactRef | None, ctx: RunContext) -> PreprocessPlan:
    store = open_store(cfg.storage.uri, cfg.storage)
    prep = _prepare(cfg, store, dataset, tokenizer, checkpoint, w2v, codec)
    bundle, clips, texts, rejects = prep.bundle, prep.clips, prep.texts, prep.rejects
    fset = featureset_for(cfg, checkpoint, w2v, codec, bundle.hidden_layer)
    keys = {cid: item.clip.audio_sha256 or item.clip.audio for cid, item in texts.items()}
    plan = core.make_plan(Path(), fset, texts, rejects, keys, _records(store, fset), cfg.preprocess.unit_clips, {})
    run_id = None
    if plan.units and ctx.tracking is not None:  # one MLflow run for the work, closed by the assemble task
        run = open_stage_run(ctx.tracking, "preprocess")
        run.log_params(run_params(cfg, "preprocess") | {"featureset": fset, "units": len(plan.units)})
        run_id = run.run_id
    get_run_logger().info("preprocess: %d clips, %d units of new audio (feature set %s)", len(clips), len(plan.units),
                          fset)
    return PreprocessPlan(featureset=fset, units=plan.units, clips=len(clips), text_rejects=len(rejects),
                          stage_run_id=run_id)


_MODELS: dict[tuple[str, str], tuple[core.FeatureExtractor, float]] = {}
_MODELS_LOCK = threading.Lock()


def _extractor(bundle: ModelBundle, cfg: PipelineConfig, sample: list[tuple[str, str]]) -> tuple[core.FeatureExtractor, float]:
    """Models loaded once per worker process and device, with the probed batch budget."""
    p = cfg.preprocess
    device = core.resolved_device(p)
    key = (str(bundle.checkpoint_dir), str(device))
    with _MODELS_LOCK:
        if key not in _MODELS:
            torch.set_grad_enabled(False)
            extractor = core.FeatureExtractor(bundle, device, p.cond_max_seconds)
            if core.batch_seconds_setting(p):
                seconds = core.batch_seconds_setting(p)
            elif device.type != "cuda":
                seconds = core.CPU_BATCH_SECONDS
            else:
                limits = {"min_duration_s": cfg.ingest.min_duration_s, "max_duration_s": cfg.ingest.max_duration_s}
                decoded = (core.decode_clip_audio(uri, p, cfg.storage, **limits)[0] for _, uri in sample[:32])
                waves = [w for w in decoded if w is not None]
                seconds = core.probe_batch_seconds(extractor, waves, device)
            _MODELS[key] = (extractor, seconds)
        return _MODELS[key]


@task(name="preprocess-unit", cache_policy=NO_CACHE, **STAGE_TASK_OPTIONS)
def preprocess_unit_task(cfg: PipelineConfig, unit: list[tuple[str, str]], featureset: str, checkpoint: ArtifactRef,
                         w2v: ArtifactRef | None, codec: ArtifactRef | None, stage_run_id: str | None,
                         ctx: RunContext) -> dict[str, Any]:
    store = open_store(cfg.storage.uri, cfg.storage)
    name = core.unit_name([k for k, _ in unit])
    prefix = feature_prefix(featureset)
    if _unit_done(store, prefix, name):
        return {"unit": name, "skipped": True}
    bundle = _unit_bundle(cfg, store, checkpoint, w2v, codec)
    extractor, seconds = _extractor(bundle, cfg, unit)
    opts = cfg.preprocess
    if core.batch_clips(opts):  # a Prefect retry after an out-of-memory at the floor starts from a smaller batch
        opts = opts.model_copy(update={"batch_size": attempt_batch_size(core.batch_clips(opts))})
    else:
        seconds = attempt_batch_size(max(int(seconds), 1))
    run = attach_stage_run(ctx.tracking, stage_run_id, "preprocess") if ctx.tracking and stage_run_id else None
    recorder = OomRecorder(run, get_run_logger())
    with tempfile.TemporaryDirectory(prefix="indextts-unit-") as tmp:
        work = Path(tmp)
        result = core.process_unit(unit, extractor, work, opts, bundle.gpt_config.max_mel_tokens, seconds,
                                   cfg.storage, recorder, min_duration_s=cfg.ingest.min_duration_s,
                                   max_duration_s=cfg.ingest.max_duration_s)
        _upload_unit(store, prefix, work, name)
    return {"unit": name, "skipped": False, "processed": result.processed, "rejected": len(result.rejected),
            "audio_seconds": result.audio_seconds, "seconds": result.seconds, "backoffs": result.backoffs,
            "worker": f"{socket.gethostname()}:{os.getpid()}"}


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


def _unit_done(store: ArtifactStore, prefix: str, name: str) -> bool:
    """The unit's record is in the store, and so is its shard (one deleted as damaged is made again)."""
    key = f"{prefix}/{name}.json"
    if not store.exists(key):
        return False
    record = store.get_json(key)
    return not record.get("shard") or store.exists(f"{prefix}/{record['shard']}")


def _upload_unit(store: ArtifactStore, prefix: str, work: Path, name: str) -> None:
    """Upload the unit's shard, check that the store got the bytes the record's sha256 describes, then the record."""
    record = read_json(work / f"{name}.json")
    if record.get("shard"):
        key = f"{prefix}/{record['shard']}"
        got = store.put_file(work / record["shard"], key).sha256
        if record.get("shard_sha256") and got != record["shard_sha256"]:  # changed on this disk before upload
            store.delete(key)
            raise StorageError(corrupt_message(f"{work / record['shard']} (uploading to {store.uri_for(key)})", got,
                                               record["shard_sha256"], "the unit is retried"), transient=True)
    store.put_file(work / f"{name}.json", f"{prefix}/{name}.json")  # last: the unit is now complete


@stage_task("preprocess", core.STAGE_VERSION, ignore=("cfg", "ctx", "plan", "units"))
def preprocess_task(cfg: PipelineConfig, dataset: ArtifactRef, tokenizer: ArtifactRef, checkpoint: ArtifactRef,
                    w2v: ArtifactRef | None, codec: ArtifactRef | None, frontend: str, plan: PreprocessPlan,
                    units: list[dict[str, Any]], ctx: RunContext) -> StageResult:
    """Assemble the index from the unit records (the cached stage; ``plan``/``units`` are not in the key)."""
    inputs = {"dataset": dataset, "tokenizer": tokenizer, "checkpoint": checkpoint, "w2v_bert": w2v, "codec": codec}
    with Stage("preprocess", cfg, ctx, inputs, run_id=plan.stage_run_id, tags={"featureset": plan.featureset}) as s:
        prep = _prepare(cfg, s.store, dataset, tokenizer, checkpoint, w2v, codec)
        bundle, clips, texts, rejects = prep.bundle, prep.clips, prep.texts, prep.rejects
        keys = {cid: item.clip.audio_sha256 or item.clip.audio for cid, item in texts.items()}
        records = _records(s.store, plan.featureset)
        limits = {"max_text_tokens": bundle.gpt_config.max_text_tokens,
                  "max_mel_tokens": bundle.gpt_config.max_mel_tokens}
        p = core.make_plan(Path(), plan.featureset, texts, rejects, keys, records, 10**9, limits)
        done = [core.UnitResult(u["unit"], u["processed"], {}, u["audio_seconds"], u["seconds"], 1, 0, u["backoffs"])
                for u in units if not u.get("skipped")]
        result = core.assemble(clips, p, records, s.out, prep.tokenizer, TextFrontend().fingerprint(), done,
                               f"store:{feature_prefix(plan.featureset)}", s.started, base_gpt_sha256=prep.gpt_sha256,
                               base_files=core.checkpoint_files_sha256(prep.bundle))
        numbers = result.report | result.run
        metrics = {k: numbers[k] for k in ("clips", "indexed", "train", "val", "rejected", "audio_processed_now",
                                           "features_reused", "oom_backoffs") if numbers.get(k) is not None}
        metrics |= {k: numbers[k] for k in ("clips_per_second", "audio_seconds_per_second") if numbers.get(k)}
        metrics |= {f"rejected.{k}": v for k, v in result.rejected_by_reason.items()}
        metrics["units_run"] = len(done)
        metrics["unit_workers"] = len({u["worker"] for u in units if not u.get("skipped")})
        return s.publish(metrics, reports=[result.report_json, result.report_md, result.report_png, result.rejects],
                         tags={"featureset": plan.featureset}, data={"featureset": plan.featureset},
                         outputs={"train": "train_manifest.jsonl", "val": "val_manifest.jsonl",
                                  "rejects": "rejects.jsonl", "report": "report.md", "plot": "lengths.png"})
