"""What a killed writer leaves behind is cleaned up by the next run, and nothing a live writer holds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from prefect import flow

from flows.api_server import servers_of
from flows.runtime import PipelineRun
from indextts_core.store.objects import open_store
from indextts_core.utils.fileio import make_temp
from tests_support import make_cfg

_WRITER = """
import sys, time
from indextts_core.utils.fileio import make_temp
fd, tmp = make_temp(sys.argv[1])
print(tmp, flush=True)
time.sleep(600)
"""


def _killed_writer(target: Path) -> Path:
    """A temporary file left by a process SIGKILLed in the middle of writing ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    tmp = Path(proc.stdout.readline().strip())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert tmp.is_file()
    return tmp


def test_local_sweep_removes_files_of_dead_writers_only(tmp_path: Path):
    store = open_store(tmp_path / "store")
    shard_dir = tmp_path / "store" / "features" / "f1"
    shard_dir.mkdir(parents=True)
    dead = _killed_writer(shard_dir / "shard-0001.safetensors")
    fd, alive = make_temp(shard_dir / "shard-0002.safetensors")  # this process: still writing
    os.close(fd)
    old_foreign = shard_dir / ".shard-0003.safetensors.x7f3k2.tmp"  # no owner tag (another host, older version)
    old_foreign.write_bytes(b"partial")
    day_ago = time.time() - 2 * 24 * 3600
    os.utime(old_foreign, (day_ago, day_ago))
    fresh_foreign = shard_dir / ".shard-0004.safetensors.q1w2e3.tmp"
    fresh_foreign.write_bytes(b"partial")

    removed = store.sweep()
    assert sorted(removed) == sorted([str(dead), str(old_foreign)])
    assert Path(alive).is_file() and fresh_foreign.is_file()
    assert store.list("features") == []  # temporary files are never objects


def test_s3_sweep_aborts_abandoned_multipart_uploads(s3_bucket: str):
    import boto3

    store = open_store(f"s3://{s3_bucket}/runs")
    client = boto3.client("s3")
    upload = client.create_multipart_upload(Bucket=s3_bucket, Key="runs/features/f1/shard-0001.safetensors")
    elsewhere = client.create_multipart_upload(Bucket=s3_bucket, Key="other/x.bin")  # not under our prefix
    (removed,) = store.sweep(max_age_s=0)  # (moto dates every upload 2010: the age rule is not testable here)
    assert upload["UploadId"] in removed
    left = client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert [u["UploadId"] for u in left] == [elsewhere["UploadId"]]


@flow
def _empty_flow(cfg) -> None:
    with PipelineRun(cfg, flow_name="sweep") as run:
        run.finish()


def test_the_next_run_sweeps_the_store_the_cache_and_the_run_folder(tmp_path: Path):
    cfg = make_cfg(tmp_path)
    cfg.storage.cache_dir = tmp_path / "cache"
    leftovers = [_killed_writer(Path(cfg.storage.uri) / "artifacts" / "train" / "d1" / "gpt.pth"),
                 _killed_writer(cfg.storage.cache_dir / "objects" / "x.bin"),
                 _killed_writer(cfg.run.output_dir / "train" / "checkpoints" / "latest.pth")]
    _empty_flow(cfg)
    assert not any(p.exists() for p in leftovers)


def test_a_killed_command_leaves_no_server_running(tmp_path: Path):
    """The campaign: SIGKILL of `run` left the temporary Prefect server running in 9 of 10 cases."""
    from tests_support import BIN, DEMO_DIR

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    cmd = [str(BIN / "indextts-train"), "ingest", "--manifest", str(DEMO_DIR / "manifest.jsonl"),
           "--output-dir", str(tmp_path / "out"), "--set", f"run.output_dir={tmp_path / 'run'}",
           "--set", f"storage.uri={tmp_path / 'store'}", "--set", f"tracking.tracking_uri=sqlite:///{tmp_path}/m.db"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (servers := servers_of(proc.pid)) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert servers, "the command started no temporary server"
        time.sleep(2)  # let it get to work
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 30
        while servers_of(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert servers_of(proc.pid) == [], "the temporary server outlived the killed command"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in servers_of(proc.pid):
            os.kill(pid, signal.SIGKILL)
