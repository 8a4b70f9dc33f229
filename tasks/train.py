"""Train stage task: fine-tune the GPT on the pairs, export the best checkpoint, register it in MLflow.

The training folder is ``<run.output_dir>/<train.output_name>/<key>/`` where ``key`` hashes the
inputs and settings: a Prefect retry, or the same flow run again after a crash, resumes that run
on exactly its next batch (``resume auto``), while new data or new settings start a new folder.
Each checkpoint's ``latest.pth`` (and ``best.pth`` when it changes) is mirrored to the artifact
store (``train/<key>/``, with their sha256 in ``checkpoints.json``), so a worker on a fresh machine
(a Kubernetes pod, a spot instance) resumes from there, after checking both files by content, and
exports the same best checkpoint the original machine would have.  The feature shards are checked
by content against the hashes preprocessing recorded before training reads them.

On a machine with several GPUs (``train.nproc_per_node``, default one process per GPU) the stage
runs the core trainer under torchrun (``python -m indextts_core.training.launch``, from a spec it
writes) and reads its results back; the step metrics then reach MLflow when training ends.

Outputs: the exported checkpoint folder (official layout) as the stage artifact; the step and
validation metrics, the run's reports and the lineage on the stage's MLflow run; a new version of
the registered model (``train.registered_model``, default ``indextts2-<language>``) pointing at
the exported folder, tagged with the base checkpoint, tokenizer, data index, config and flow run.
The forgetting alarm (``train.forgetting_alarm``) shows as the tag ``forgetting.alarm`` (the replay
languages that alarmed, comma-separated; empty when none), the ``forgetting/<lang>`` metrics, and
the ``forgetting`` / ``alarm`` columns of the Prefect validation table.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import get_run_logger

from indextts_core.config import PipelineConfig, TrainConfig
from indextts_core.errors import InputError
from indextts_core.preprocess.pairs import PairingPolicy
from indextts_core.preprocess.shards import SHARD_REMEDY, recorded_shard_hashes
from indextts_core.store.objects import CHECKPOINT_RECORD, ArtifactStore, ObjectInfo, read_uri_bytes
from indextts_core.training import STAGE_VERSION, TrainInputs, TrainResult, train
from indextts_core.text.encoder import tokenizer_in
from indextts_core.training.metrics import read_metrics
from indextts_core.utils.fileio import read_json, sha256_file
from tasks.artifacts import ArtifactRef, StageResult
from tasks.context import RunContext
from tasks.preprocess import checkpoint_bundle
from tasks.progress import TrainingReport, _best_effort, validation_rows
from tasks.stage import Stage, run_params, stage_task
from tasks.tracking import MlflowMetricSink, register_model

log = logging.getLogger(__name__)


def run_key(cfg: PipelineConfig, *refs: ArtifactRef) -> str:
    """Names the training folder: the settings that change the weights, the input digests, the version."""
    ident = {"config": run_params(cfg, "train"), "inputs": [r.digest for r in refs], "version": STAGE_VERSION}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def feature_folder(store: ArtifactStore, index_dir: Path, cache_dir: Path | None) -> Path | None:
    """A local folder with the shards the index uses (the store folder itself when the store is local).

    From S3, every shard is fetched into the cache and checked by content against the sha256 the
    index recorded (a cached copy that no longer matches is fetched again, a download that does
    not match is refused).  The shards of a local store are checked when training opens them
    (:class:`~indextts_core.training.data.TrainingSet`): each is read once, by the one that uses it.
    """
    meta = read_json(index_dir / "preprocess.json")
    ref = meta["feature_dir"]
    if not ref.startswith("store:"):
        return None
    prefix = ref.removeprefix("store:")
    local = store.local_path(prefix)
    if local is not None:
        return local
    from indextts_core.store.objects import default_cache_dir

    dest = Path(cache_dir or default_cache_dir()) / "features" / prefix.rsplit("/", 1)[-1]
    hashes = recorded_shard_hashes(meta)
    if hashes is None:
        log.warning("%s: written before feature shards were hashed; its shards are checked against the sha256 the "
                    "store recorded at upload only", index_dir / "preprocess.json")
    for name in meta.get("shards", []):
        _fetch_shard(store, f"{prefix}/{name}", dest / name, (hashes or {}).get(name))
    return dest


def _fetch_shard(store: ArtifactStore, key: str, path: Path, sha256: str | None) -> None:
    """``path`` holds the shard ``key`` with the content ``sha256`` names (default: the store's recorded hash)."""
    want = sha256 or store.info(key).sha256
    if path.is_file() and sha256_file(path) == want:
        return
    store.get_file_verified(key, path, want, SHARD_REMEDY)


class CheckpointMirror:
    """The store's copy of a training run's ``latest.pth`` and ``best.pth`` (``train/<key>/``), with their hashes.

    After each file is uploaded, ``checkpoints.json`` records ``{name: {size, sha256, step}}``, the
    sha256 computed while the file was written to the store (no second read).  A worker on a fresh
    machine fetches both files and checks each against that record before resuming or exporting
    from it.  Not covered: the instant between a file's upload and its record's (a run killed
    exactly then leaves a record that names the previous file: the fetch refuses it as damaged).
    """

    NAMES = ("latest.pth", "best.pth")

    def __init__(self, store: ArtifactStore, key: str):
        self.store, self.prefix = store, f"train/{key}"
        self.record_key = f"{self.prefix}/{CHECKPOINT_RECORD}"
        self._record: dict[str, dict[str, Any]] | None = None

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def record(self) -> dict[str, dict[str, Any]]:
        """The recorded hashes (read from the store once)."""
        if self._record is None:
            self._record = self.store.get_json(self.record_key) if self.store.exists(self.record_key) else {}
        return self._record

    def has_latest(self) -> bool:
        return self.store.exists(self.key("latest.pth"))

    def push(self, out: Path, is_best: bool, step: int | None) -> None:
        """Mirror ``best.pth`` (when it changed: first, so the store never holds a latest newer than the best it
        names) and ``latest.pth``, recording each one's hash right after its upload.

        A local store keeps hard links of the training folder's files (which training replaces by renaming,
        never rewrites), not copies.  When ``latest.pth`` is the very file just mirrored as ``best.pth``, the
        store's best is linked (S3: copied on the server) under the second name: read and uploaded once.
        """
        before: tuple[str, ObjectInfo] | None = None  # the name mirrored just before, and what was stored
        for name in (("best.pth",) if is_best else ()) + ("latest.pth",):
            if before is not None and self._same_file(out / before[0], out / name):
                self.store.copy_object(self.key(before[0]), self.key(name))
                info = before[1]
            else:
                info = self.store.put_file(out / name, self.key(name), link=True)
                before = (name, info)
            self.record()[name] = {"size": info.size, "sha256": info.sha256, "step": step}
            self.store.put_json(self.record(), self.record_key)

    @staticmethod
    def _same_file(a: Path, b: Path) -> bool:
        """Whether ``a`` and ``b`` name one file (hard links of it), so they hold the same bytes."""
        try:
            return a.samefile(b)
        except FileNotFoundError:
            return False

    def pull(self, out: Path) -> None:
        """Fetch the mirrored checkpoints into ``out``, each checked by content against its recorded sha256.

        Raises :class:`~indextts_core.store.objects.CorruptArtifactError` naming the store key on a
        mismatch (the damaged copy is not left in ``out``).  A mirror written before hashes were
        recorded is fetched with a warning that it is unverified.  From a local store each file is a
        hard link of the stored one (checked while linked: one read), not a copy.
        """
        self._record = None  # what the store says now
        remedy = (f"refusing to resume from it. If the machine that trained this run still has its training folder, "
                  f"run there; otherwise delete {self.store.uri_for(self.prefix)} from the store (or run with "
                  "--refresh-cache) to train this run anew")
        fetched: dict[str, Path] = {}
        try:
            for name in self.NAMES:
                key, part = self.key(name), out / f".{name}.fetching"
                if not self.store.exists(key):
                    continue
                entry = self.record().get(name)
                if entry is None:
                    log.warning("%s: mirrored before checkpoint hashes were recorded; used unverified",
                                self.store.uri_for(key))
                    self.store.get_file(key, part)
                else:
                    self.store.get_file_verified(key, part, entry["sha256"], remedy, link=True)
                fetched[name] = part
            for name, part in fetched.items():  # both verified: only now do they become the run's checkpoints
                part.replace(out / name)
        finally:
            for part in fetched.values():
                part.unlink(missing_ok=True)


def mark_forgetting(rows: list[dict[str, Any]], metrics: Mapping[str, float]) -> list[dict[str, Any]]:
    """The validation table's rows with the forgetting alarm: on each replay language's row its rise above the
    step-0 baseline (``forgetting``) and ``alarm`` (``ALARM`` or empty); the other rows get the columns empty."""
    if not any(k.startswith("forgetting/") for k in metrics):
        return rows
    for row in rows:
        rise = metrics.get(f"forgetting/{row['group']}")
        row["forgetting"] = f"{rise:+.1%}" if rise is not None else ""
        row["alarm"] = "ALARM" if metrics.get(f"forgetting/alarm/{row['group']}") else ""
    return rows


class ValidationReport(TrainingReport):
    """The train stage's Prefect report: progress, and a validation table that marks the forgetting alarm."""

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        rows = mark_forgetting(validation_rows(metrics, step), metrics)
        if not rows:
            return
        from prefect.artifacts import create_table_artifact

        _best_effort("validation", create_table_artifact, rows, key=f"{self.key}-validation",
                     description=f"validation at step {step} (per language and speaker group; forgetting: a replay "
                     "language's loss above its step-0 baseline)")


def result_tags(result: TrainResult) -> dict[str, str]:
    """The run's tags from its result: ``forgetting.alarm``, the replay languages that alarmed ("" when none)."""
    return {"forgetting.alarm": ",".join(result.alarmed)}


def result_metrics(result: TrainResult) -> dict[str, float]:
    """The run's forgetting and replay numbers as stage metrics (each replay language's worst rise, each epoch's
    replay token share)."""
    out: dict[str, float] = {f"forgetting.{lang}.worst_rise": f["worst_rise"] for lang, f in result.forgetting.items()}
    if result.replay and result.replay[0]["replay_available"]:
        out["replay.token_share"] = sum(m["token_share"] for m in result.replay) / len(result.replay)
    return out


def processes(cfg: PipelineConfig) -> int:
    n = cfg.train.nproc_per_node
    if n == "auto":
        import torch

        n = torch.cuda.device_count() if cfg.train.device != "cpu" and torch.cuda.is_available() else 1
    return max(1, int(n))


def resumes_a_file(cfg: PipelineConfig) -> bool:
    """``train.resume`` names a checkpoint file (not None, not ``auto``): the stage must train from it, so the flow
    never takes its result from the cache (the resume setting is not in the cache key: it does not change the
    weights an exact resume arrives at, but a run the user asked for must run, or fail saying why)."""
    return cfg.train.resume not in (None, "auto")


def stage_settings(cfg: PipelineConfig) -> TrainConfig:
    """The ``train`` settings the stage trains with: ``resume`` is ``auto`` unless set, so a retry (or the same flow
    run again) continues the run in its folder."""
    return cfg.train.model_copy(update={"resume": cfg.train.resume or "auto"})


def train_distributed(cfg: PipelineConfig, inputs: TrainInputs, nproc: int, on_checkpoint: Any,
                      sinks: list[Any]) -> TrainResult:
    """Run the core trainer under torchrun on this machine (:mod:`indextts_core.training.launch`, one process per
    GPU); metrics reach ``sinks`` afterwards."""
    from indextts_core.training.launch import write_spec

    logger = logging.getLogger(__name__)
    out = Path(inputs.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = write_spec(out / "launch.json", inputs, stage_settings(cfg), cfg.run.seed, cfg.storage)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "indextts_core.training.launch", str(spec)]
    logger.info("training with %d processes: %s", nproc, " ".join(cmd))
    proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parent.parent, check=False)
    if (out / "latest.pth").is_file():
        on_checkpoint(out / "latest.pth", None, (out / "best.pth").is_file())
    if proc.returncode != 0:
        raise RuntimeError(f"distributed training exited with code {proc.returncode} (see the log above); a retry "
                           "resumes from the last checkpoint")
    for sink in sinks:
        for row in read_metrics(out / "metrics.jsonl"):
            step = int(row.pop("step"))
            sink.log(row, step)
        sink.close()
    return TrainResult.from_summary(out / "train_summary.json")


@stage_task("train", STAGE_VERSION, ignore=("cfg", "ctx", "w2v", "codec", "campplus", "bigvgan"))
def train_task(cfg: PipelineConfig, pairs: ArtifactRef, tokenizer: ArtifactRef, checkpoint: ArtifactRef,
               w2v: ArtifactRef | None = None, codec: ArtifactRef | None = None, campplus: ArtifactRef | None = None,
               bigvgan: ArtifactRef | None = None, *, ctx: RunContext) -> StageResult:
    """``w2v`` / ``codec`` / ``campplus`` / ``bigvgan``: the encoder and synthesis assets, for the audio samples
    only (not part of the cache key: they do not change the weights)."""
    logger = get_run_logger()
    key = run_key(cfg, pairs, tokenizer, checkpoint)
    out = cfg.train.checkpoint_dir or cfg.run.output_dir / cfg.train.output_name / key
    inputs = {"pairs": pairs, "tokenizer": tokenizer, "base-checkpoint": checkpoint}
    with Stage("train", cfg, ctx, inputs, out=out, clean=False, params={"train.key": key},
               tags={"train.key": key}) as s:
        data_dir = s.fetch(pairs)
        tok_path = tokenizer_in(s.fetch(tokenizer), cfg.extend_bpe.output_name)
        mirror = CheckpointMirror(s.store, key)
        fresh = refreshing(cfg)
        if fresh and (out / "latest.pth").is_file():  # --refresh-cache trains anew; the old run is kept aside
            aside = out.with_name(f"{out.name}.before-refresh-{time.strftime('%Y%m%d-%H%M%S')}")
            out.rename(aside)
            out.mkdir(parents=True)
            logger.info("refresh: training anew; the previous checkpoints are in %s", aside)
        if not fresh and not (out / "latest.pth").is_file() and mirror.has_latest():
            logger.info("resuming from the store's copy of the last checkpoint (%s)", s.store.uri_for(mirror.prefix))
            mirror.pull(out)  # the export takes the best checkpoint: it travels too, both verified
        val = data_dir / "GPT_pairs_val.jsonl"
        run_inputs = TrainInputs(
            checkpoint_dir=s.fetch(checkpoint), tokenizer=tok_path, train=data_dir / "GPT_pairs_train.jsonl",
            val=val if val.is_file() and val.stat().st_size else None, output_dir=out,
            pairing=PairingPolicy(cfg.pairs, seed=cfg.run.seed),
            feature_dir=feature_folder(s.store, data_dir, cfg.storage.cache_dir),
            read_audio=lambda uri: read_uri_bytes(uri, cfg.storage))
        if any(a is not None for a in (w2v, codec, campplus, bigvgan)):  # not in the base folder's hf_cache/
            aux = checkpoint_bundle(cfg, s.store, checkpoint, w2v, codec, campplus, bigvgan)
            run_inputs.w2v_bert_dir, run_inputs.codec_path = aux.w2v_bert_dir, aux.codec_path
            run_inputs.campplus_path, run_inputs.bigvgan_dir = aux.campplus_path, aux.bigvgan_dir

        def on_checkpoint(path: Path, progress: Any, is_best: bool) -> None:
            mirror.push(out, is_best, getattr(progress, "step", None))

        report = ValidationReport("train")  # the Prefect UI: a progress artifact and a validation table
        report.start(f"training {cfg.language}: {key}")
        sinks = [*([MlflowMetricSink(s.run)] if s.run is not None else []), report]
        nproc = processes(cfg)
        if nproc > 1:
            result = train_distributed(cfg, run_inputs, nproc, on_checkpoint, sinks)
        else:
            result = train(run_inputs, stage_settings(cfg), seed=cfg.run.seed, sinks=sinks,
                           on_checkpoint=on_checkpoint, on_step=report.on_step)
        if result.export_dir is None:
            raise InputError("training produced no checkpoint to export (no steps ran?)")
        metrics: dict[str, float | int] = {
            "steps": result.steps, "epochs": result.epochs_done, "best_step": result.best_step or 0,
            "export_verified": int(result.export_verified), "oom_backoffs": result.oom_backoffs,
            "vocab_size": result.model["vocab_size"], "trainable_parameters": result.model["trainable_parameters"],
            **{f"throughput.{k}": v for k, v in result.throughput.items()},
            **{f"baseline.{k.removeprefix('val/')}": v for k, v in result.baseline.items()},
            **{f"final.{k.removeprefix('val/')}": v for k, v in result.final.items()},
            # the exported (best) checkpoint's validation: what promotion compares, not the last validation
            **{f"exported.{k.removeprefix('val/')}": v for k, v in result.exported.items()},
            **result_metrics(result),
        }
        if result.base_rows_unchanged is not None:
            metrics["base_rows_unchanged"] = int(result.base_rows_unchanged)
        if result.best_value is not None:
            metrics["best_value"] = result.best_value
        if s.run is not None and (out / "logs").is_dir():  # the TensorBoard event files, next to the metrics
            s.run.log_artifacts(out / "logs", "tensorboard")
        staged = s.publish(metrics, folder=result.export_dir, reports=[
            result.summary_path, out / "train.json", result.export_dir / "indextts-export.json",
            result.export_dir / "config.yaml"], tags={"train.dir": str(out), **result_tags(result)},
            data={"checkpoints": str(out), "forgetting": result.forgetting},
            outputs={"gpt": "gpt.pth", "config": "config.yaml", "tokenizer": tok_path.name, "checkpoints": str(out)})
        if s.run is not None and ctx.tracking is not None:
            staged.outputs["registered_version"] = register(cfg, ctx, staged, result.fingerprint, result, key,
                                                            inputs)
            logger.info("registered %s version %s -> %s", registered_name(cfg), staged.outputs["registered_version"],
                        staged.artifact.uri)
            s.run.set_tags({"registered_model": registered_name(cfg),
                            "registered_model.version": staged.outputs["registered_version"]})
    return staged


def refreshing(cfg: PipelineConfig) -> bool:
    """A --refresh-cache run's first attempt trains from scratch (its retries resume it as usual)."""
    from prefect.runtime import task_run

    return bool(cfg.orchestration.refresh_cache) and not cfg.train.resume and (task_run.run_count or 1) <= 1


def registered_name(cfg: PipelineConfig) -> str:
    return cfg.train.registered_model or f"indextts2-{cfg.language}"


def register(cfg: PipelineConfig, ctx: RunContext, staged: StageResult, fp: dict[str, Any], result: TrainResult,
             key: str, inputs: dict[str, ArtifactRef]) -> str:
    """A new version of the registered model, pointing at the export, with its lineage as tags."""
    assert ctx.tracking is not None and staged.mlflow_run_id is not None
    ref, pairs, tokenizer, checkpoint = staged.artifact, inputs["pairs"], inputs["tokenizer"], inputs["base-checkpoint"]
    return register_model(ctx.tracking, registered_name(cfg), ref.uri, staged.mlflow_run_id, description=(
        f"{cfg.language}: best {cfg.train.best_metric} {result.best_value} at step {result.best_step}"), tags={
        "base_checkpoint.uri": checkpoint.uri, "base_checkpoint.gpt_sha256": fp["base_checkpoint_sha256"],
        "tokenizer.uri": tokenizer.uri, "tokenizer.sha256": fp["tokenizer_sha256"],
        "tokenizer.vocab_size": fp["vocab_size"], "data.uri": pairs.uri, "data.digest": pairs.digest,
        "data.index_sha256": fp["data_sha256"], "config.train_key": key,
        "prefect.flow_run_id": ctx.flow_run_id or "", "mlflow.parent_run_id": ctx.tracking.parent_run_id,
        "export.digest": ref.digest, "export.ref": ref.model_dump_json(),
        "export.verified": str(result.export_verified),
        "language": cfg.language, **result_tags(result),
    })
