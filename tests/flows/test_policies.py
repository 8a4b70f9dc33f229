"""Retry policy and GPU-OOM backoff with injected faults, under real Prefect and MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from indextts_core.errors import ConfigError, StorageError
from indextts_core.utils.oom import GpuOOM, run_with_oom_backoff
from tasks.policies import STAGE_TASK_OPTIONS, OomRecorder, StageCache, attempt_batch_size, is_transient
from tasks.tracking import TrackingRef, stage_run, start_parent_run
from tests_support import make_cfg, mlflow_runs

FAST = {**STAGE_TASK_OPTIONS, "retries": 3, "retry_delay_seconds": 0, "persist_result": False,
        "cache_policy": NO_CACHE}


def _flaky(errors: list[BaseException]):
    """A task body that raises the given errors in turn, then succeeds."""
    attempts: list[int] = []

    @task(**FAST)
    def work() -> int:
        attempts.append(1)
        if len(attempts) <= len(errors):
            raise errors[len(attempts) - 1]
        return len(attempts)

    @flow
    def run() -> int:
        return work()

    return run, attempts


@pytest.mark.parametrize("error", [
    StorageError("s3://b/k: upload failed: SlowDown"), ConnectionResetError(104, "reset"),
    TimeoutError("read timed out"), GpuOOM(1),
])
def test_transient_faults_are_retried(error: BaseException):
    run, attempts = _flaky([error, error])
    assert run() == 3 and len(attempts) == 3


@pytest.mark.parametrize("error", [
    ConfigError("run.yaml: train.epochs: bad"), StorageError("s3://b/k: AccessDenied", transient=False),
    FileNotFoundError(2, "missing"), KeyError("programming error"),
])
def test_deterministic_errors_are_not_retried(error: BaseException):
    run, attempts = _flaky([error])
    with pytest.raises(type(error)):
        run()
    assert len(attempts) == 1


def test_is_transient_botocore_connection_errors():
    from botocore.exceptions import EndpointConnectionError

    assert is_transient(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))


def _gpu_stage(ooms_before_success: int, calls: list[int], tracking: TrackingRef):
    """A stand-in GPU stage using the shared mechanism exactly as real stages do."""

    @task(**{**FAST, "retries": 2})
    def gpu_stage(batch_size: int) -> int:
        with stage_run(tracking, "gpu-stage") as run:
            def step(bs: int) -> int:
                calls.append(bs)
                if len(calls) <= ooms_before_success:
                    raise torch.OutOfMemoryError(f"CUDA out of memory at {bs}")
                return bs

            _, used = run_with_oom_backoff(step, attempt_batch_size(batch_size), min_batch=2,
                                           on_backoff=OomRecorder(run))
            run.log_metrics({"final_batch_size": used})
            return used

    @flow
    def pipeline(batch_size: int) -> int:
        return gpu_stage(batch_size)

    return pipeline


def test_oom_backoff_in_process_then_prefect_retry(tmp_path: Path):
    cfg = make_cfg(tmp_path)
    tracking = start_parent_run(cfg, "oom-test", {})
    calls: list[int] = []
    # attempt 1: 16, 8, 4, 2 all run out of memory -> GpuOOM at the floor -> Prefect retries;
    # attempt 2 starts from 16 // 2 = 8 and runs.
    used = _gpu_stage(ooms_before_success=4, calls=calls, tracking=tracking)(16)
    assert calls == [16, 8, 4, 2, 8] and used == 8

    runs = sorted((r for r in mlflow_runs(cfg) if r.data.tags.get("stage") == "gpu-stage"),
                  key=lambda r: r.info.start_time)
    assert [r.info.status for r in runs] == ["FAILED", "FINISHED"]
    from mlflow import MlflowClient

    history = MlflowClient(cfg.tracking.tracking_uri).get_metric_history(runs[0].info.run_id, "oom_backoff_batch_size")
    assert [int(m.value) for m in sorted(history, key=lambda m: m.step)] == [8, 4, 2]
    assert runs[0].data.tags["oom.last_failed_batch_size"] == "4"
    assert runs[1].data.metrics["final_batch_size"] == 8


def test_stage_cache_key_follows_declared_config_and_input_digests(tmp_path: Path):
    from tasks.artifacts import ArtifactRef

    policy = StageCache(stage="ingest", version="1", config_keys=("ingest.val_fraction",))
    ref = ArtifactRef(stage="x", uri="/a", prefix="p", digest="d1", files=1, bytes=1)
    base = make_cfg(tmp_path)
    key = policy.compute_key(None, {"cfg": base, "dataset": ref, "ctx": object()}, {})
    same = policy.compute_key(None, {"cfg": make_cfg(tmp_path, {"ingest.workers": 3}), "ctx": object(),
                                     "dataset": ref.model_copy(update={"uri": "/elsewhere", "prefix": "q"})}, {})
    assert key == same  # undeclared config, run context and where the input lives do not matter
    changed_cfg = policy.compute_key(None, {"cfg": make_cfg(tmp_path, {"ingest.val_fraction": 0.3}),
                                            "dataset": ref, "ctx": None}, {})
    changed_input = policy.compute_key(None, {"cfg": base, "dataset": ref.model_copy(update={"digest": "d2"}),
                                              "ctx": None}, {})
    changed_code = StageCache(stage="ingest", version="2", config_keys=("ingest.val_fraction",)).compute_key(
        None, {"cfg": base, "dataset": ref, "ctx": None}, {})
    assert len({key, changed_cfg, changed_input, changed_code}) == 4
