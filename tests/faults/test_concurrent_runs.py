"""Two runs that start at once on a new MLflow store both get going (one creates the store, one waits)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests_support import REPO

START = """
import sys
from indextts_core.config import load_config
from tasks.tracking import start_parent_run
cfg = load_config(overrides={"run.output_dir": sys.argv[1] + "/runs/demo",
                             "tracking.tracking_uri": "sqlite:///" + sys.argv[1] + "/mlflow.db"})
ref = start_parent_run(cfg, sys.argv[2], {})
print(ref.experiment_id)
"""


def test_two_first_runs_on_a_new_sqlite_store_both_start(tmp_path: Path):
    procs = [subprocess.Popen([sys.executable, "-c", START, str(tmp_path), f"run-{i}"], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in outs]
    assert len({out.strip() for out, _ in outs}) == 1  # one experiment, created once
