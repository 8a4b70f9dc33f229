"""``indextts-train ui``: the MLflow UI and TensorBoard on one run's stores, light enough for a laptop.

``mlflow ui`` as MLflow starts it serves with four uvicorn workers and a job runner (15 processes,
about 2.2 GB, 40-130 s before it answers on a 2-core machine).  Here the MLflow server runs one
worker and no job runner on the run's tracking store (sqlite by default: 2 processes, about 0.5 GB,
half the time; ``benchmarks/ui_startup.py``), TensorBoard reads the run's training
folders, both bound to 127.0.0.1, and the command prints the two URLs once each answers.  Each runs
in a process group of its own, so Ctrl-C (or SIGTERM) stops every process of both, workers
included; on Linux each is also told to stop if this process dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from indextts_core.config import PipelineConfig
from indextts_core.errors import InputError


@dataclass
class Service:
    name: str
    url: str
    health: str  # a URL that answers 200 once the service is up
    proc: subprocess.Popen


def _die_with_parent() -> None:  # runs in the child before exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent)


def _tool(name: str) -> str:
    """The venv's own console script (a user's PATH may hold another version, or none)."""
    path = Path(sys.executable).parent / name
    if not path.is_file():
        raise InputError(f"{path}: not installed in this environment (uv sync installs it)")
    return str(path)


def start_services(cfg: PipelineConfig, mlflow_port: int = 5000, tensorboard_port: int | None = 6006,
                   logdir: Path | None = None, log_dir: Path | None = None) -> list[Service]:
    """Start the MLflow server (one worker) on the run's tracking store and TensorBoard on its trainings."""
    from tasks.tracking_store import default_tracking_uri

    uri = default_tracking_uri(cfg)
    # no job runner (its consumers are separate processes; nothing here submits server-side jobs)
    env = dict(os.environ, MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING="false", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    logs = log_dir or cfg.run.output_dir.parent
    logs.mkdir(parents=True, exist_ok=True)
    services: list[Service] = []
    if uri.startswith(("http://", "https://")):
        raise InputError(f"tracking.tracking_uri is a server ({uri}): open it directly")
    cmd = [_tool("mlflow"), "server", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(mlflow_port),
           "--workers", "1"]
    services.append(Service("MLflow", f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{mlflow_port}/health",
                            _spawn(cmd, env, logs / "mlflow-ui.log")))
    if tensorboard_port is not None:
        folder = logdir or cfg.run.output_dir.parent
        cmd = [_tool("tensorboard"), "--logdir", str(folder), "--host", "127.0.0.1", "--port", str(tensorboard_port),
               "--reload_interval", "15"]
        services.append(Service("TensorBoard", f"http://127.0.0.1:{tensorboard_port}",
                                f"http://127.0.0.1:{tensorboard_port}/", _spawn(cmd, env, logs / "tensorboard-ui.log")))
    return services


def wait_ready(services: list[Service], timeout: float = 180.0) -> dict[str, float]:
    """Seconds until each service answered; an error naming the one that exited or never answered."""
    start, ready = time.monotonic(), {}
    while len(ready) < len(services):
        for s in services:
            if s.name in ready:
                continue
            if s.proc.poll() is not None:
                raise RuntimeError(f"{s.name} exited with code {s.proc.returncode} (see its log)")
            try:
                with urllib.request.urlopen(s.health, timeout=2) as r:
                    if r.status == 200:
                        ready[s.name] = round(time.monotonic() - start, 1)
            except (urllib.error.URLError, OSError):
                pass
        if time.monotonic() - start > timeout:
            missing = [s.name for s in services if s.name not in ready]
            raise RuntimeError(f"{', '.join(missing)} did not answer within {timeout:.0f} s")
        time.sleep(0.5)
    return ready


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # the service and every worker it started


def stop_services(services: list[Service], timeout: float = 15.0) -> None:
    for s in services:
        _signal_group(s.proc, signal.SIGTERM)
    for s in services:
        try:
            s.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(s.proc, signal.SIGKILL)
            s.proc.wait(timeout=5)
