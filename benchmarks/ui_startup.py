"""MLflow UI start-up: `mlflow ui` as MLflow starts it against the one `indextts-train ui` starts, same run.

    uv run python benchmarks/ui_startup.py [--tracking-uri sqlite:///runs/mlflow.db] [--repeat 2]

Each way is started on a free port, timed until ``/health`` answers 200, then its whole process
group is sampled for processes and resident memory (the sum of RSS of every process in the group),
then stopped.  The two ways alternate (``--repeat`` rounds), so machine load affects both alike.
Not a test: it measures and prints, it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_usage(pgid: int) -> tuple[int, float]:
    """(processes, resident MB) of every process in the group ``pgid`` (from /proc)."""
    count, rss = 0, 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) != pgid:
                continue
            with open(f"/proc/{entry}/statm") as f:
                rss += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            count += 1
        except (OSError, ProcessLookupError):
            continue
    return count, rss / 1e6


def measure(cmd: list[str], port: int, env: dict[str, str], timeout: float = 300.0) -> dict[str, float]:
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=env)
    ready = None
    try:
        while time.monotonic() - start < timeout and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        ready = time.monotonic() - start
                        break
            except (urllib.error.URLError, OSError):
                time.sleep(0.25)
        time.sleep(3)  # let every worker it starts come up
        procs, mb = group_usage(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return {"ready_s": ready if ready is not None else float("nan"), "processes": procs, "rss_mb": mb}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracking-uri", help="MLflow store (default: a new sqlite file)")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    uri = args.tracking_uri or f"sqlite:///{Path(tempfile.mkdtemp()) / 'mlflow.db'}"
    ways = {
        "mlflow ui (MLflow's default)": lambda p: [str(BIN / "mlflow"), "ui", "--backend-store-uri", uri,
                                                   "--port", str(p)],
        "indextts-train ui (mlflow server, 1 worker)": lambda p: [str(BIN / "mlflow"), "server", "--backend-store-uri",
                                                                  uri, "--host", "127.0.0.1", "--port", str(p),
                                                                  "--workers", "1"],
    }
    rows: dict[str, list[dict[str, float]]] = {k: [] for k in ways}
    for _ in range(args.repeat):
        for name, cmd in ways.items():
            port = free_port()
            env = dict(os.environ) if name.startswith("mlflow ui") else \
                dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")  # as flows/ui.py starts it
            rows[name].append(measure(cmd(port), port, env))
    print(f"MLflow store: {uri}; {args.repeat} round(s), median of each")
    print(f"{'':46} {'ready (s)':>10} {'processes':>10} {'RSS (MB)':>10}")
    base = None
    for name, runs in rows.items():
        med = {k: sorted(r[k] for r in runs)[len(runs) // 2] for k in runs[0]}
        base = base or med
        print(f"{name:46} {med['ready_s']:10.1f} {med['processes']:10.0f} {med['rss_mb']:10.0f}"
              + ("" if med is base else f"   ({med['ready_s'] / base['ready_s']:.2f}x time, "
                                        f"{med['rss_mb'] / base['rss_mb']:.2f}x memory)"))


if __name__ == "__main__":
    main()
