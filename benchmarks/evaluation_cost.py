"""Evaluation cost per model on the demo: this tree against the code before issue 27, same machine, same run.

    uv run python benchmarks/evaluation_cost.py                  # baseline: the parent of issue 27's first commit
    uv run python benchmarks/evaluation_cost.py --baseline <git ref>

Each code version (the baseline exported with ``git archive`` into a temporary folder, then this
working tree) runs ``indextts-train run`` on the bundled demo in a fresh folder of its own (its own
store, MLflow database and Prefect home), one after the other.  From each run's ``evaluation.json``
it reads, per model, the items spoken and the seconds the model took (synthesis plus its scoring),
and the whole stage's seconds (the real recordings' scoring included).  Reported: seconds per item
per model for both versions and their ratio.  The sets differ in size (this tree adds the paragraph
probe and draws items by speaker), so compare seconds per item, not totals.  Not a test: wall times
depend on the machine and its load; it prints what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _first_issue_commit() -> str:
    out = subprocess.run(["git", "log", "--reverse", "--format=%H", "--grep", "^Issue 27"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    if not out:
        raise SystemExit("no commit titled 'Issue 27' found: give --baseline")
    return f"{out[0]}^"


def _export(ref: str, dest: Path) -> Path:
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def _run(code: Path, work: Path) -> tuple[dict, list[dict], float]:
    work.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env |= {"PYTHONPATH": str(code), "PREFECT_HOME": str(work / "prefect-home"), "NO_COLOR": "1",
            "COLUMNS": "200"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "from flows.cli import app; app()", "run"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{code}: `run` failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    found = sorted(work.glob("runs/**/evaluation.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"{code}: no evaluation.json under {work / 'runs'}")
    rows = [json.loads(line) for line in (found[-1].parent / "items.jsonl").read_text().splitlines() if line]
    return json.loads(found[-1].read_text()), rows, wall


def _per_model(summary: dict) -> dict[str, tuple[int, float]]:
    items = summary["evalset"]["items"]
    return {name: (items, float(info["seconds"])) for name, info in summary["models"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=None, help="git ref of the code before (default: issue 27's parent)")
    args = parser.parse_args()
    baseline = args.baseline or _first_issue_commit()
    with tempfile.TemporaryDirectory(prefix="evaluation-cost-") as tmp:
        tmp_path = Path(tmp)
        measured = {}
        for label, code in (("before", _export(baseline, tmp_path / "baseline-code")), ("now", ROOT)):
            summary, rows, wall = _run(code, tmp_path / f"work-{label}")
            measured[label] = (summary, rows, wall)
            print(f"{label}: `indextts-train run` on the demo took {wall:.1f} s; evaluate stage "
                  f"{summary['seconds']:.1f} s for {summary['evalset']['items']} items "
                  f"({', '.join(f'{k} {v}' for k, v in sorted(summary['evalset']['by_language_group'].items()))})")
    before, now = _per_model(measured["before"][0]), _per_model(measured["now"][0])
    print(f"\nbaseline: {baseline}; now: the working tree of {ROOT}")
    print(f"{'model':<12} {'before s/item':>14} {'now s/item':>11} {'ratio':>7}")
    for name in now:
        if name not in before:
            continue
        b = before[name][1] / before[name][0]
        n = now[name][1] / now[name][0]
        print(f"{name:<12} {b:>14.2f} {n:>11.2f} {n / b:>6.2f}x")
    # like for like: the items both sets hold (the per-item seconds: synthesis and that item's scoring)
    common = ({r["id"] for r in measured["before"][1]} & {r["id"] for r in measured["now"][1]})
    print(f"\nthe {len(common)} items both sets hold, mean seconds per item:")
    print(f"{'model':<12} {'before':>8} {'now':>8} {'ratio':>7}")
    for name in now:
        per = {label: [r["seconds"] for r in measured[label][1] if r["model"] == name and r["id"] in common]
               for label in ("before", "now")}
        if per["before"] and per["now"]:
            b, n = sum(per["before"]) / len(per["before"]), sum(per["now"]) / len(per["now"])
            print(f"{name:<12} {b:>8.2f} {n:>8.2f} {n / b:>6.2f}x")
    print()
    b_stage = measured["before"][0]["seconds"] / measured["before"][0]["evalset"]["items"]
    n_stage = measured["now"][0]["seconds"] / measured["now"][0]["evalset"]["items"]
    print(f"{'stage':<12} {b_stage:>14.2f} {n_stage:>11.2f} {n_stage / b_stage:>6.2f}x   (whole evaluate stage per "
          "item, the real recordings' scoring included)")


if __name__ == "__main__":
    main()
