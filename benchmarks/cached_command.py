"""A cached stage command: answered from its stored answer against the same command run as a flow, same run.

    uv run python benchmarks/cached_command.py                    # corpus and pairs on the bundled demo
    uv run python benchmarks/cached_command.py --stages corpus --repeat 5

In a fresh folder, ``indextts-train run`` computes the demo once (not timed: it fills the store, the
cache and the stored answers).  Then each stage command is timed ``--repeat`` times each way, as a
user runs it (a new process every time, no Prefect server given, so the flow path starts its own):

* **flow**: ``--set orchestration.cached_answers=false``: a flow run whose stages all come from
  Prefect's cache (what every stage command did before cached answers);
* **answered**: the default: the stored answer of the same question, nothing started.

Both must print the same stdout (checked).  Reported: median and min wall seconds of each, and the
ratio.  Not a test: it measures and prints (wall times depend on the machine and its load).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = str(Path(sys.executable).parent / "indextts-train")


def _timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    proc = subprocess.run([CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", nargs="+", default=["corpus", "pairs"])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"OMP_NUM_THREADS": "1", "COLUMNS": "200", "NO_COLOR": "1"}
    with tempfile.TemporaryDirectory(prefix="cached-command-") as tmp:
        work = Path(tmp)
        env["PREFECT_HOME"] = str(work / "prefect-home")
        seconds, _ = _timed(["run"], work, env)
        print(f"setup: `indextts-train run` on the demo took {seconds:.1f} s (not part of the comparison)")
        print(f"{'command':<12} {'flow median':>12} {'flow min':>9} {'answered median':>16} {'answered min':>13}"
              f" {'ratio':>7}")
        for stage in args.stages:
            times: dict[str, list[float]] = {"flow": [], "answered": []}
            outputs: set[str] = set()
            for _ in range(args.repeat):
                for way, extra in (("flow", ["--set", "orchestration.cached_answers=false"]), ("answered", [])):
                    took, proc = _timed([stage, *extra], work, env)
                    if way == "answered" and "answered in" not in proc.stderr:
                        raise SystemExit(f"{stage}: expected a cached answer, got:\n{proc.stderr[-2000:]}")
                    times[way].append(took)
                    outputs.add(proc.stdout)
            if len(outputs) != 1:
                raise SystemExit(f"{stage}: the two ways printed different results")
            flow, answered = statistics.median(times["flow"]), statistics.median(times["answered"])
            print(f"{stage:<12} {flow:>11.2f}s {min(times['flow']):>8.2f}s {answered:>15.2f}s "
                  f"{min(times['answered']):>12.2f}s {flow / answered:>6.1f}x")


if __name__ == "__main__":
    main()
