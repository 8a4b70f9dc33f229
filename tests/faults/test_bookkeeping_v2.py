"""Decisions and bookkeeping after a bad day: the number promotion reads, a resume on a fresh machine, runs a
killed process left RUNNING, two temporary servers on one new database, credentials only in the config, a
read-only output folder."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from prefect import flow

from indextts_core.config import TrainConfig, load_config
from indextts_core.errors import InputError
from indextts_core.training import TrainInputs, train
from tasks.artifacts import ArtifactRef, StageResult
from tasks.context import RunContext
from tasks.stale_runs import HOST_TAG, PID_TAG
from tasks.storage_env import storage_environment
from tasks.tracking import register_model, search_runs, start_parent_run
from tests_support import make_cfg
from training.conftest import processed  # noqa: F401 - the preprocessed demo data, as the trainer tests use it

#: A few steps, a validation after each (the best and the last can differ), no audio or decoding.
OPTS = TrainConfig(epochs=1, batch_tokens=1024, learning_rate=1e-3, new_rows_learning_rate=3e-3, warmup_steps=1,
                   val_interval=1, val_audio_samples=0, val_generate=0, max_steps=2)


def _inputs(processed, out: Path, **kw) -> TrainInputs:  # noqa: F811
    return TrainInputs(processed.checkpoint, processed.tokenizer, processed.train_pairs, processed.val_pairs, out, **kw)


def _trained(metrics: dict) -> StageResult:
    ref = ArtifactRef(stage="train", uri="/exported", prefix="x", digest="d", files=1, bytes=1)
    return StageResult(stage="train", artifact=ref, metrics=metrics)


@pytest.fixture(scope="module")
def short_run(processed, tmp_path_factory):  # noqa: F811
    """Two steps of training with a validation after each (the machine that then goes away)."""
    out = tmp_path_factory.mktemp("first-machine") / "train"
    return out, train(_inputs(processed, out), OPTS)


def test_promotion_decides_on_the_exported_checkpoint_not_the_last_validation(short_run, tmp_path: Path):
    from tasks.promote import _decision, promote_task

    # the trainer says which numbers the exported checkpoint has: the validation at its best step
    out, result = short_run
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    at_best = next(r for r in rows if r["step"] == result.best_step and "val/loss" in r)
    assert result.exported and result.exported["val/loss"] == pytest.approx(at_best["val/loss"])
    assert json.loads(result.summary_path.read_text())["exported"] == result.exported

    # a training whose last validation (5.5) is worse than its best, exported one (4.0)
    trained = _trained({"steps": 20, "best_step": 10, "best_value": 4.0, "baseline.loss": 5.0, "final.loss": 5.5,
                        "exported.loss": 4.0})
    cfg = make_cfg(tmp_path, {"promotion.metric": "val_loss"})
    d = _decision(cfg, trained, None, None)
    assert d.promote and d.candidate == 4.0 and d.incumbent == 5.0  # the final 5.5 would have lost to the base
    ctx = RunContext(flow_run_id=None, tracking=start_parent_run(cfg, "promote-test", {}))
    version = register_model(ctx.tracking, "indextts2-am", "/exported", ctx.tracking.parent_run_id, tags={})
    trained.outputs["registered_version"] = version

    @flow
    def promote_only():
        return promote_task(cfg, trained, None, None, ctx)

    promoted = promote_only()
    assert promoted.alias == "champion" and promoted.decision["candidate"] == 4.0
    from mlflow import MlflowClient

    tags = MlflowClient(ctx.tracking.tracking_uri).get_model_version("indextts2-am", version).tags
    assert float(tags["eval.val_loss"]) == 4.0  # the number compared, not final.loss


def test_a_resume_on_a_fresh_machine_keeps_the_baseline_and_no_baseline_never_promotes(
        processed, short_run, tmp_path: Path):  # noqa: F811
    from tasks.promote import Champion, _decision

    first_out, first = short_run
    assert first.baseline["val/loss"] > 0
    # a fresh machine: only the store's copies of latest.pth and best.pth, no metrics file
    fresh = tmp_path / "train"
    fresh.mkdir()
    for name in ("latest.pth", "best.pth"):
        shutil.copyfile(first_out / name, fresh / name)
    resumed = train(_inputs(processed, fresh), OPTS.model_copy(update={"max_steps": 3, "resume": "auto"}))
    assert resumed.steps == 3 and resumed.baseline == pytest.approx(first.baseline)
    summary = json.loads(resumed.summary_path.read_text())
    assert summary["forgetting"]["val/loss"] == pytest.approx(resumed.final["val/loss"] - first.baseline["val/loss"],
                                                              abs=1e-5)

    # and when the baseline is missing anyway (an older checkpoint) or not a number: nothing is promoted on it
    cfg = load_config(overrides={"promotion.metric": "val_loss"})
    for metrics in ({"steps": 3, "best_step": 3, "exported.loss": 3.0},
                    {"steps": 3, "best_step": 3, "exported.loss": 3.0, "baseline.loss": float("nan")}):
        d = _decision(cfg, _trained(metrics), None, None)
        assert not d.promote and d.incumbent is None and "no base model val_loss to compare with" in d.reason
    d = _decision(cfg, _trained({"exported.loss": 3.0}), None, Champion(version="2", tags={"eval.val_loss": "nan"}))
    assert not d.promote and "champion v2 (recorded)" in d.reason


def test_runs_left_running_are_closed_and_a_cached_preprocess_stage_ends_its_run(tmp_path: Path):
    import socket

    from mlflow import MlflowClient

    from flows.preprocess import preprocess_stage
    from tasks.preprocess import PreprocessPlan
    from tasks.tracking import open_stage_run

    cfg = make_cfg(tmp_path, {"tracking.close_stale_runs_after_h": 2})
    killed = start_parent_run(cfg, "killed", {})
    alive = start_parent_run(cfg, "alive", {})  # this process: still running
    client = MlflowClient(killed.tracking_uri)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid whose process is gone
    client.set_tag(killed.parent_run_id, PID_TAG, str(gone.pid))
    elsewhere = {HOST_TAG: "another-host", PID_TAG: "1"}
    old = client.create_run(killed.experiment_id, start_time=int((time.time() - 3 * 3600) * 1000), tags=elsewhere)
    recent = client.create_run(killed.experiment_id, tags=elsewhere)

    new = start_parent_run(cfg, "next", {})
    status = {r.info.run_id: r for r in search_runs(new.tracking_uri, cfg.tracking.experiment)}
    assert status[killed.parent_run_id].info.status == "KILLED"
    assert status[killed.parent_run_id].data.tags["indextts.closed_by"] == new.parent_run_id
    assert status[old.info.run_id].info.status == "KILLED"  # another host's, older than the configured age
    assert status[recent.info.run_id].info.status == "RUNNING"  # another host's, recent: left alone
    assert status[alive.parent_run_id].info.status == "RUNNING"
    assert status[new.parent_run_id].data.tags[HOST_TAG] == socket.gethostname()

    # the preprocess plan opened a run for new audio, and the index came from the cache: the run still ends
    plan_run = open_stage_run(new, "preprocess")

    class CachedRun:
        def __init__(self):
            self.cfg, self.tracking, self.ctx = cfg, new, RunContext(flow_run_id=None, tracking=new)

        def call(self, task, *inputs):
            return PreprocessPlan(featureset="f", units=[], clips=0, text_rejects=0, stage_run_id=plan_run.run_id)

        def stage(self, task, *inputs, since=None):
            return "the index, from the cache"

    ref = ArtifactRef(stage="x", uri="/x", prefix="x", digest="d", files=1, bytes=1)
    assert preprocess_stage(CachedRun(), ref, ref, ref, None, None) == "the index, from the cache"
    assert client.get_run(plan_run.run_id).info.status == "FINISHED"


def test_two_temporary_servers_start_one_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import flows.api_server as api

    for var in ("PREFECT_API_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    spans: list[tuple[float, float]] = []

    def start(env, timeout_s):  # the server start (creating and migrating prefect.db), without a server
        t0 = time.monotonic()
        time.sleep(0.3)
        spans.append((t0, time.monotonic()))
        return "server"

    monkeypatch.setattr(api, "_start", start)
    threads = [threading.Thread(target=api.start_temporary_api) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans.sort()
    assert len(spans) == 3 and all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans  # never overlapping
    assert (tmp_path / "prefect-home" / "prefect.db.lock").is_file()  # next to the database


def test_credentials_only_in_the_config_reach_mlflow_and_prefect_s3_clients(
        tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    import boto3

    from indextts_core.config import parse_overrides
    from tasks.result_storage import StoreResults

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("MY_KEY_ID", "config-key-id")
    secret = tmp_path / "s3-secret"
    secret.write_text("config-secret\n")
    bucket = "bookkeeping-creds"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="x",
                 aws_secret_access_key="y").create_bucket(Bucket=bucket)
    cfg = make_cfg(tmp_path, {"storage.uri": f"s3://{bucket}/store", "storage.endpoint_url": s3_endpoint,
                              "storage.region": "us-east-1", "storage.access_key_id": "env:MY_KEY_ID",
                              "storage.secret_access_key_file": str(secret)})
    assert cfg.storage.secret_access_key.get_secret_value() == "config-secret"
    with pytest.raises(InputError, match=r"secret_access_key_file: cannot read .*missing"):
        load_config(overrides={"storage.secret_access_key_file": str(tmp_path / "missing")})
    with caplog.at_level(logging.WARNING, logger="indextts_core.config"):
        parse_overrides(["storage.secret_access_key=hush"])
    assert "visible" in caplog.text and "secret_access_key_file" in caplog.text and "hush" not in caplog.text

    from mlflow.store.artifact.s3_artifact_repo import _cached_get_s3_client, _get_s3_client

    _cached_get_s3_client.cache_clear()  # a client an earlier test built would hide what this one sees
    with storage_environment(cfg.storage) as added:
        client = _get_s3_client()  # the client MLflow's artifact upload builds (from the environment only)
        assert client._request_signer._credentials.access_key == "config-key-id"
        assert client._request_signer._credentials.secret_key == "config-secret"
        assert client.meta.endpoint_url == s3_endpoint
        ref = start_parent_run(cfg, "creds", {})  # logs config.yaml to s3://<bucket>/store/mlflow/...
        StoreResults(uri=f"s3://{bucket}/store/prefect-results").write_path("probe", b"{}")
    assert set(added) >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                                           aws_access_key_id="x", aws_secret_access_key="y")
            .list_objects_v2(Bucket=bucket)["Contents"]]
    assert any(k.endswith("config.yaml") and ref.parent_run_id in k for k in keys)
    assert "store/prefect-results/probe" in keys
    import os

    assert "AWS_SECRET_ACCESS_KEY" not in os.environ  # scoped to the run


def test_a_read_only_output_folder_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cfg = make_cfg(tmp_path, {"tracking.tracking_uri": None, "run.output_dir": str(tmp_path / "ro" / "runs" / "demo")})
    real_mkdir = Path.mkdir

    def refuse(self, *args, **kwargs):  # tests run as root: chmod would not stop a write
        if self == tmp_path / "ro" / "runs" or tmp_path / "ro" / "runs" in self.parents:
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(InputError, match=r"ro/runs: not writable .*MLflow store mlflow\.db.*run\.output_dir"):
        start_parent_run(cfg, "read-only", {})
