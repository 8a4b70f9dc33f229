"""The platform as users run it: a real Prefect server, a process worker, a UI-style REST trigger.

Started and stopped by PID (worker first, then server).  The run's outputs, Prefect results and
MLflow database all go to the test's temporary folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests_support import BIN, REPO, free_port, stop_process, wait_for_port, wait_healthy

pytestmark = pytest.mark.slow


def test_ui_triggered_run_on_a_process_worker(tmp_path: Path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5"}
    logs = tmp_path / "logs"
    logs.mkdir()
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=open(logs / "server.log", "wb"), stderr=subprocess.STDOUT)
    worker = None
    try:
        wait_for_port(port, server, timeout=120)
        wait_healthy(api, server)
        subprocess.run([sys.executable, "deployments/bootstrap.py", "--pools", "local-process"], cwd=REPO, env=env,
                       check=True, capture_output=True, timeout=120)
        deploy = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--prefect-file",
                                 "deployments/prefect.yaml", "--name", "finetune"],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "local-process"], cwd=tmp_path,
                                  env=env, stdout=open(logs / "worker.log", "wb"), stderr=subprocess.STDOUT)

        deployment = httpx.get(f"{api}/deployments/name/finetune/finetune", timeout=30).json()
        assert deployment["work_pool_name"] == "local-process"
        url = f"{api}/deployments/{deployment['id']}/create_flow_run"
        # the UI validates parameters against the PipelineConfig schema before creating a run
        bad = httpx.post(url, json={"parameters": {"cfg": {"train": {"epochs": 0}}}}, timeout=30)
        assert bad.status_code in (409, 422) and "epochs" in bad.text
        # the run YAML as a parameter (`demo`: the one shipped in the package), a few settings on top
        overrides = {"run.name": "from-ui", "run.output_dir": str(tmp_path / "runs" / "from-ui"),
                     "storage.uri": str(tmp_path / "store"), "tracking.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                     "train.max_steps": 6, "train.val_audio_samples": 0, "train.val_generate": 0,
                     "evaluate.max_items": 1, "evaluate.diffusion_steps": 2, "evaluate.resamples": 50,
                     # the evaluation's probes that decide nothing here (the demo test checks them)
                     "evaluate.paragraph_sentences": 0, "evaluate.emotion_items": 0, "evaluate.naturalness": False}
        created = httpx.post(url, json={"parameters": {"config": "demo", "overrides": overrides},
                                        "tags": ["ui"]}, timeout=30)
        assert created.status_code == 201, created.text
        run_id = created.json()["id"]

        deadline = time.monotonic() + 400
        state, progress_seen = None, set()
        while time.monotonic() < deadline:
            state = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30).json()["state"]
            if state and state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            progress_seen |= {a["data"] for a in _artifacts(api, run_id) if a["key"] == "train-progress"}
            time.sleep(2)
        worker_log = (logs / "worker.log").read_text(errors="replace")
        assert state and state["type"] == "COMPLETED", f"{state}\n--- worker log ---\n{worker_log[-4000:]}"
        # the trainer's own lines are in the run's log, as the UI shows it ...
        messages = [m["message"] for m in _logs(api, run_id)]
        for expected in ("baseline (step 0", "validation:", "saved ", "exported "):
            assert any(expected in m for m in messages), f"{expected!r} not in the run's log:\n" + "\n".join(messages)
        # ... the training shows a progress artifact (100 at the end) and its validation as a table
        artifacts = _artifacts(api, run_id)
        progress = [a for a in artifacts if a["key"] == "train-progress"]
        assert progress and progress[-1]["type"] == "progress" and progress[-1]["data"] == 100, progress
        table = [a for a in artifacts if a["key"] == "train-validation"]
        assert table and table[0]["type"] == "table" and "am" in str(table[0]["data"])
        # preprocessing's units run in a subflow: its progress artifact belongs to that flow run (this server's only)
        units = httpx.post(f"{api}/artifacts/filter", json={"artifacts": {"key": {"any_": ["preprocess-progress"]}}},
                           timeout=30).json()
        assert units and units[0]["type"] == "progress" and units[0]["data"] == 100, units
    finally:
        if worker is not None:
            stop_process(worker, timeout=30)
        stop_process(server, timeout=30)

    assert progress_seen, "no training progress was visible while the run was going"
    assert (tmp_path / "runs" / "from-ui" / "ingest" / "report.md").is_file()
    from tasks.tracking import search_runs

    runs = search_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "indextts2-finetune",
                       filter_string=f"tags.`prefect.flow_run_id` = '{run_id}'")
    stages = {r.data.tags.get("stage", "parent") for r in runs}
    assert stages == {"parent", "download", "ingest", "corpus", "extend-bpe", "preprocess", "pairs", "train", "evaluate",
                      "promote"}
    parent = next(r for r in runs if "stage" not in r.data.tags)
    assert parent.data.tags["prefect.deployment"] == "finetune" and parent.info.status == "FINISHED"


def _logs(api: str, flow_run_id: str) -> list[dict]:
    """Every log line of a flow run (its tasks' included), oldest first, as the UI pages them."""
    out: list[dict] = []
    while True:
        page = httpx.post(f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [flow_run_id]}},
                                                       "sort": "TIMESTAMP_ASC", "offset": len(out), "limit": 200},
                          timeout=30).json()
        out += page
        if len(page) < 200:
            return out


def _artifacts(api: str, flow_run_id: str) -> list[dict]:
    """The flow run's artifacts, oldest first."""
    r = httpx.post(f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}},
                                                     "sort": "CREATED_DESC"}, timeout=30)
    r.raise_for_status()
    return r.json()[::-1]
