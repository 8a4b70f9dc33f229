"""Train stage task: fine-tune the GPT on the pairs, export the best checkpoint, register it in MLflow.

The training folder is ``<run.output_dir>/<train.output_name>/<key>/`` where ``key`` hashes the
inputs and settings: a Prefect retry, or the same flow run again after a crash, resumes that run
on exactly its next batch (``resume auto``), while new data or new settings start a new folder.
Each checkpoint's ``latest.pth`` is mirrored to the artifact store (``train/<key>/latest.pth``),
so a worker on a fresh machine (a Kubernetes pod, a spot instance) resumes from there too.

On a machine with several GPUs (``train.nproc_per_node``, default one process per GPU) the stage
runs the same ``indextts-train train`` command under torchrun and reads its results back; the
step metrics then reach MLflow when training ends.

Outputs: the exported checkpoint folder (official layout) as the stage artifact; the step and
validation metrics, the run's reports and the lineage on the stage's MLflow run; a new version of
the registered model (``train.registered_model``, default ``indextts2-<language>``) pointing at
the exported folder, tagged with the base checkpoint, tokenizer, data index, config and flow run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from indextts_core.config import PipelineConfig, TrainConfig, dump_config
from indextts_core.errors import InputError
from indextts_core.utils.fileio import atomic_write, read_json
from indextts_core.stages import pairing_policy, train_options
from indextts_core.store.objects import ArtifactStore, open_store
from indextts_core.training import TrainInputs, TrainResult, train
from indextts_core.training.metrics import read_metrics
from indextts_core.training.trainer import STAGE_VERSION
from tasks.artifacts import ArtifactRef, StageResult, fetch_dir, publish_dir
from tasks.context import RunContext
from tasks.policies import STAGE_TASK_OPTIONS, config_subset, stage_cache
from tasks.tracking import MlflowMetricSink, register_model, stage_run

#: Settings that change the trained weights (device, loader threads, process count and naming do not).
_NOT_IN_KEY = {"resume", "warm_start", "workers", "device", "output_name", "registered_model", "nproc_per_node"}
CONFIG_KEYS = ("run.seed", "pairs.pairs_per_target", "pairs.emotion_source", "pairs.allow_self_prompt",
               "extend_bpe.output_name",
               *(f"train.{k}" for k in TrainConfig.model_fields if k not in _NOT_IN_KEY))


def run_key(cfg: PipelineConfig, *refs: ArtifactRef) -> str:
    ident = {"config": config_subset(cfg, CONFIG_KEYS), "inputs": [r.digest for r in refs], "version": STAGE_VERSION}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def feature_folder(store: ArtifactStore, index_dir: Path, cache_dir: Path | None) -> Path | None:
    """A local folder with the shards the index uses (the store folder itself when the store is local)."""
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
    for name in meta.get("shards", []):
        key = f"{prefix}/{name}"
        path = dest / name
        if not path.is_file() or path.stat().st_size != store.info(key).size:
            store.get_file(key, path)
    return dest


def processes(cfg: PipelineConfig) -> int:
    n = cfg.train.nproc_per_node
    if n == "auto":
        import torch

        n = torch.cuda.device_count() if cfg.train.device != "cpu" and torch.cuda.is_available() else 1
    return max(1, int(n))


def train_distributed(cfg: PipelineConfig, inputs: TrainInputs, nproc: int, on_checkpoint: Any,
                      sinks: list[Any]) -> TrainResult:
    """Run ``indextts-train train`` under torchrun on this machine; metrics reach ``sinks`` afterwards."""
    logger = logging.getLogger(__name__)
    out = Path(inputs.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = out / "train-config.yaml"
    with atomic_write(config) as f:
        f.write(dump_config(cfg))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "flows.cli", "train", "--config", str(config), "--train-manifest", str(inputs.train),
           "--tokenizer", str(inputs.tokenizer), "--checkpoint", str(inputs.checkpoint_dir),
           "--output-dir", str(out), "--resume", "auto"]
    if inputs.val is not None:
        cmd += ["--val-manifest", str(inputs.val)]
    if inputs.feature_dir is not None:
        cmd += ["--features", str(inputs.feature_dir)]
    logger.info("training with %d processes: %s", nproc, " ".join(cmd))
    proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parent.parent, check=False)
    if (out / "latest.pth").is_file():
        on_checkpoint(out / "latest.pth", None, False)
    if proc.returncode != 0:
        raise RuntimeError(f"distributed training exited with code {proc.returncode} (see the log above); a retry "
                           "resumes from the last checkpoint")
    for sink in sinks:
        for row in read_metrics(out / "metrics.jsonl"):
            step = int(row.pop("step"))
            sink.log(row, step)
        sink.close()
    return TrainResult.from_summary(out / "train_summary.json")


@task(name="train", cache_policy=stage_cache("train", STAGE_VERSION, CONFIG_KEYS), **STAGE_TASK_OPTIONS)
def train_task(cfg: PipelineConfig, pairs: ArtifactRef, tokenizer: ArtifactRef, checkpoint: ArtifactRef,
               ctx: RunContext) -> StageResult:
    start = time.monotonic()
    logger = get_run_logger()
    store = open_store(cfg.storage.uri, cfg.storage)
    data_dir = fetch_dir(store, pairs, cfg.storage.cache_dir)
    features = feature_folder(store, data_dir, cfg.storage.cache_dir)
    tok_path = fetch_dir(store, tokenizer, cfg.storage.cache_dir) / cfg.extend_bpe.output_name
    ckpt_dir = fetch_dir(store, checkpoint, cfg.storage.cache_dir)
    key = run_key(cfg, pairs, tokenizer, checkpoint)
    out = cfg.run.output_dir / cfg.train.output_name / key
    mirror = f"train/{key}/latest.pth"
    if not (out / "latest.pth").is_file() and store.exists(mirror):
        logger.info("resuming from the store's copy of the last checkpoint (%s)", store.uri_for(mirror))
        store.get_file(mirror, out / "latest.pth")
    val = data_dir / "GPT_pairs_val.jsonl"
    inputs = TrainInputs(checkpoint_dir=ckpt_dir, tokenizer=tok_path, train=data_dir / "GPT_pairs_train.jsonl",
                         val=val if val.is_file() and val.stat().st_size else None, output_dir=out, resume="auto",
                         pairing=pairing_policy(cfg), feature_dir=features)

    def on_checkpoint(path: Path, progress: Any, is_best: bool) -> None:
        store.put_file(out / "latest.pth", mirror)

    with stage_run(ctx.tracking, "train", {"train.key": key}) as run:
        sinks = [MlflowMetricSink(run)] if run is not None else []
        if run is not None:
            run.log_params(config_subset(cfg, CONFIG_KEYS) | {"train.key": key})
            run.log_input("pairs", pairs.uri, pairs.digest, context="training")
            run.log_input("tokenizer", tokenizer.uri, tokenizer.digest, context="tokenizer")
            run.log_input("base-checkpoint", checkpoint.uri, checkpoint.digest, context="base-model")
        nproc = processes(cfg)
        if nproc > 1:
            result = train_distributed(cfg, inputs, nproc, on_checkpoint, sinks)
        else:
            result = train(inputs, train_options(cfg), sinks=sinks, on_checkpoint=on_checkpoint)
        if result.export_dir is None:
            raise InputError("training produced no checkpoint to export (no steps ran?)")
        ref = publish_dir(store, result.export_dir, "train")
        summary = read_json(result.summary_path)
        run_info = read_json(out / "train.json")
        metrics: dict[str, float | int] = {
            "steps": result.steps, "epochs": result.epochs_done, "best_step": result.best_step or 0,
            "export_verified": int(result.export_verified), "oom_backoffs": summary["oom_backoffs"],
            "vocab_size": run_info["model"]["vocab_size"], "trainable_parameters": run_info["model"]["trainable_parameters"],
            **{f"throughput.{k}": v for k, v in result.throughput.items()},
            **{f"baseline.{k.removeprefix('val/')}": v for k, v in result.baseline.items()},
            **{f"final.{k.removeprefix('val/')}": v for k, v in result.final.items()},
        }
        if result.base_rows_unchanged is not None:
            metrics["base_rows_unchanged"] = int(result.base_rows_unchanged)
        if result.best_value is not None:
            metrics["best_value"] = result.best_value
        version = None
        if run is not None:
            run.log_metrics({k: v for k, v in metrics.items() if k.startswith(("baseline.", "final.", "throughput."))})
            for path in (result.summary_path, out / "train.json", result.export_dir / "indextts-export.json",
                         result.export_dir / "config.yaml"):
                run.log_artifact(path, "reports")
            fp = run_info["fingerprint"]
            name = cfg.train.registered_model or f"indextts2-{cfg.language}"
            version = register_model(ctx.tracking, name, ref.uri, run.run_id, description=(
                f"{cfg.language}: best {cfg.train.best_metric} {result.best_value} at step {result.best_step}"), tags={
                "base_checkpoint.uri": checkpoint.uri, "base_checkpoint.gpt_sha256": fp["base_checkpoint_sha256"],
                "tokenizer.uri": tokenizer.uri, "tokenizer.sha256": fp["tokenizer_sha256"],
                "tokenizer.vocab_size": fp["vocab_size"], "data.uri": pairs.uri, "data.digest": pairs.digest,
                "data.index_sha256": fp["data_sha256"], "config.train_key": key,
                "prefect.flow_run_id": ctx.flow_run_id or "", "mlflow.parent_run_id": ctx.tracking.parent_run_id,
                "export.digest": ref.digest, "export.verified": str(result.export_verified),
                "language": cfg.language,
            })
            run.set_tags({"output.uri": ref.uri, "output.digest": ref.digest, "registered_model": name,
                          "registered_model.version": version, "train.dir": str(out)})
            logger.info("registered %s version %s -> %s", name, version, ref.uri)
        metrics["seconds"] = round(time.monotonic() - start, 3)
    return StageResult(stage="train", artifact=ref, metrics=metrics,
                       outputs={"gpt": "gpt.pth", "config": "config.yaml", "tokenizer": tok_path.name,
                                "checkpoints": str(out), "registered_version": str(version or "")},
                       mlflow_run_id=run.run_id if run else None, flow_run_id=ctx.flow_run_id,
                       seconds=time.monotonic() - start)
