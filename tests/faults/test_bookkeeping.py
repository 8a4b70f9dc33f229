"""After a failure, MLflow shows what happened: no run left RUNNING."""

from __future__ import annotations

from pathlib import Path

import pytest

import indextts_core.preprocess.run as preprocess_core
from flows.finetune import finetune
from indextts_core.errors import InputError
from tests_support import make_cfg, mlflow_runs


def test_a_failed_preprocess_unit_ends_every_mlflow_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def broken_unit(*args, **kwargs):
        raise InputError("unit failed on purpose")

    monkeypatch.setattr(preprocess_core, "process_unit", broken_unit)
    cfg = make_cfg(tmp_path)
    with pytest.raises(InputError, match="on purpose"):
        finetune(cfg)
    runs = mlflow_runs(cfg)
    statuses = {r.data.tags.get("stage", "parent"): r.info.status for r in runs}
    assert statuses["preprocess"] == "FAILED" and statuses["parent"] == "FAILED"
    assert "RUNNING" not in statuses.values()
