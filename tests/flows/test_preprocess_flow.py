"""The preprocessing stage in the flow: work units on two local Dask workers; resuming from the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.stage import stage_flow
from indextts_core.utils.fileio import read_jsonl
from tests_support import make_cfg, statuses

pytestmark = pytest.mark.slow


def test_units_spread_over_two_dask_workers(tmp_path: Path):
    cfg = make_cfg(tmp_path, {"preprocess.runner": "dask", "preprocess.dask_workers": 2,
                              "preprocess.unit_clips": 6})
    summary = stage_flow(cfg, "pairs")  # the stages up to the pairs (which read the index): no training
    metrics = summary.results["preprocess"]["metrics"]
    assert statuses(summary)["preprocess"] == "ran"
    assert metrics["units_run"] == 10 and metrics["unit_workers"] == 2
    index = read_jsonl(cfg.run.output_dir / "pairs" / "train_manifest.jsonl")
    assert metrics["indexed"] == len(index) + len(read_jsonl(cfg.run.output_dir / "pairs" /
                                                             "val_manifest.jsonl"))


def test_units_already_in_the_store_are_not_redone(tmp_path: Path):
    first = stage_flow(make_cfg(tmp_path, {"preprocess.unit_clips": 16}), "preprocess")
    store = Path(first.store)
    records = sorted(store.glob("features/*/unit-*.json"))
    assert len(records) == 4
    # lose the index and one unit (as if a run had stopped after three units), then run again
    import shutil

    shutil.rmtree(first.results["preprocess"]["artifact"]["uri"])
    records[0].unlink()
    again = stage_flow(make_cfg(tmp_path, {"preprocess.unit_clips": 16}), "preprocess")
    metrics = again.results["preprocess"]["metrics"]
    assert statuses(again)["preprocess"] == "ran" and metrics["units_run"] == 1
    assert metrics["indexed"] == first.results["preprocess"]["metrics"]["indexed"]
