"""Kill the whole pipeline at random points with SIGKILL, rerun it, and count what held.

    uv run python benchmarks/kill_points.py                 # 10 trials on the demo, about 15 min on 2 cores
    uv run python benchmarks/kill_points.py --trials 30 --seed 7 --json kill.json

First one uninterrupted ``indextts-train run`` of the demo (the baseline: its time and the sha256 of
the exported ``gpt.pth``). Then, per trial, in a fresh store, run folder, cache and Prefect home:
start the same command, SIGKILL it at a random moment of the baseline's duration, and check

* that no temporary Prefect server outlives the killed command (within 10 s);
* that the same command run again finishes, and exports the baseline's ``gpt.pth`` byte for byte;
* that after that rerun no temporary file (``.*.tmp``) is left in the store, the cache or the run folder.

A trial *held* when all three are true. Prints one row per trial and the totals; asserts nothing.
Each command starts its own temporary Prefect server, as a user's would (``PREFECT_API_URL`` unset).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from flows.api_server import servers_of  # noqa: E402

CLI = Path(sys.executable).parent / "indextts-train"


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _leftovers(*folders: Path) -> list[Path]:
    return [p for f in folders if f.is_dir() for p in f.rglob(".*.tmp")]


class Sandbox:
    """One trial's folders and the command that runs the demo in them."""

    def __init__(self, root: Path):
        self.root = root
        self.run_dir, self.store, self.cache = root / "run", root / "store", root / "cache"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        self.env |= {"PREFECT_HOME": str(root / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                     "INDEXTTS_CACHE": str(self.cache)}
        self.cmd = [str(CLI), "run", "--set", f"run.output_dir={self.run_dir}", "--set", f"storage.uri={self.store}",
                    "--set", f"tracking.tracking_uri=sqlite:///{root}/mlflow.db"]

    def start(self, log_name: str) -> subprocess.Popen[bytes]:
        log = open(self.root / log_name, "wb")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(self.cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)

    def run(self, log_name: str) -> tuple[int, float]:
        start = time.monotonic()
        proc = self.start(log_name)
        return proc.wait(), time.monotonic() - start

    def gpt_sha256(self) -> str | None:
        return _sha256(self.run_dir / "train" / "gpt.pth")


_STAGES = ["download", "ingest", "corpus", "extend-bpe", "preprocess", "pairs", "train", "(done)"]
_FINISHED = re.compile(r"\b(download|ingest|corpus|extend-bpe|preprocess|pairs|train): (ran|cached|reused)")


def _stage_at_kill(log: Path) -> str:
    """The stage the killed command was in, from its log: the one after the last finished stage."""
    stage = "startup"
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if "Beginning flow run" in line:
            stage = "download"
        if m := _FINISHED.search(line):
            stage = _STAGES[_STAGES.index(m[1]) + 1]
    return stage


def trial(i: int, root: Path, kill_at: float) -> dict:
    box = Sandbox(root)
    root.mkdir(parents=True)
    proc = box.start("killed.log")
    try:
        proc.wait(timeout=kill_at)
        finished_first = True  # it ended before the kill point
    except subprocess.TimeoutExpired:
        finished_first = False
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while servers_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    orphans = servers_of(proc.pid)
    for pid in orphans:  # do not let them disturb the next trial
        os.kill(pid, signal.SIGKILL)
    rc, seconds = box.run("rerun.log")
    left = _leftovers(box.store, box.cache, box.run_dir)
    return {"trial": i, "kill_at_s": round(kill_at, 1), "stage": _stage_at_kill(root / "killed.log"),
            "finished_before_kill": finished_first, "orphan_servers": len(orphans), "rerun_rc": rc,
            "rerun_s": round(seconds, 1), "gpt_sha256": box.gpt_sha256(), "leftover_tmp": [str(p) for p in left]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill points")
    ap.add_argument("--workdir", type=Path, help="keep every trial's folders here (default: a temporary folder)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="indextts-kill-"))
    work.mkdir(parents=True, exist_ok=True)
    base = Sandbox(work / "baseline")
    base.root.mkdir(parents=True, exist_ok=True)
    rc, baseline_s = base.run("baseline.log")
    reference = base.gpt_sha256()
    if rc != 0 or reference is None:
        print(f"the uninterrupted baseline run failed (rc {rc}); see {base.root / 'baseline.log'}")
        return 1
    print(f"baseline: uninterrupted run {baseline_s:.1f} s, gpt.pth {reference[:16]}")

    rng = random.Random(args.seed)
    rows = []
    print(f"{'trial':>5} {'kill at':>8} {'stage':>10} {'orphan':>6} {'rerun':>6} {'rerun s':>8} {'same gpt':>8} "
          f"{'tmp left':>8}  held")
    for i in range(args.trials):
        row = trial(i, work / f"trial-{i:03d}", rng.uniform(1.0, baseline_s))
        row["same_gpt"] = row["gpt_sha256"] == reference
        row["held"] = row["same_gpt"] and row["rerun_rc"] == 0 and not row["orphan_servers"] \
            and not row["leftover_tmp"]
        rows.append(row)
        print(f"{i:>5} {row['kill_at_s']:>7.1f}s {row['stage']:>10} {row['orphan_servers']:>6} {row['rerun_rc']:>6} "
              f"{row['rerun_s']:>8.1f} {str(row['same_gpt']):>8} {len(row['leftover_tmp']):>8}  "
              f"{'yes' if row['held'] else 'NO'}", flush=True)

    held = sum(r["held"] for r in rows)
    reruns = [r["rerun_s"] for r in rows]
    print(f"\n{len(rows)} trials: {held} held, {len(rows) - held} failed; "
          f"orphaned servers {sum(r['orphan_servers'] for r in rows)}, "
          f"temporary files left {sum(len(r['leftover_tmp']) for r in rows)}, "
          f"different gpt.pth {sum(not r['same_gpt'] for r in rows)}")
    if reruns:
        print(f"rerun after a kill: mean {sum(reruns) / len(reruns):.1f} s against {baseline_s:.1f} s uninterrupted "
              f"(ratio {sum(reruns) / len(reruns) / baseline_s:.2f}; finished stages come from the cache)")
    if args.json:
        args.json.write_text(json.dumps({"baseline_s": baseline_s, "reference_gpt_sha256": reference,
                                         "trials": rows}, indent=2) + "\n", encoding="utf-8")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
