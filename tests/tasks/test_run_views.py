"""What a team sees while a run is watched: run names that tell runs apart, headline numbers on the parent run,
validation as a table, progress that moves (all without a server)."""

from __future__ import annotations

from tests_support import make_cfg


def test_run_names_say_the_stage_and_what_changed(tmp_path):
    from tasks.run_names import parent_run_name, stage_run_name as run_name

    a = make_cfg(tmp_path, {"train.learning_rate": 3e-4})
    b = make_cfg(tmp_path, {"train.learning_rate": 1e-3, "language": "ja"})
    assert run_name(a, "train") == "train · lr=0.0003 · ep=2 · bt=12288 · am"
    assert run_name(b, "train") != run_name(a, "train")
    assert run_name(a, "ingest") == "ingest · am"
    assert parent_run_name(a, "finetune") == "t · finetune · lr=0.0003 · ep=2 · bt=12288 · am"
    assert parent_run_name(a, "extend-bpe") == "t · extend-bpe · vocab=24000 · am"


def test_headline_metrics_come_from_the_stage_results():
    from flows.runtime import headline_metrics
    from tasks.artifacts import ArtifactRef, StageResult
    from tasks.promote import PromotionResult

    ref = ArtifactRef(stage="train", uri="x", prefix="x", digest="d", files=1, bytes=1)
    results = {
        "train": StageResult(stage="train", artifact=ref, metrics={"steps": 9, "final.loss": 2.5, "baseline.loss": 3.0,
                                                     "throughput.tokens_per_s": 100.0}),
        "evaluate": StageResult(stage="evaluate", artifact=ref, metrics={"eval.fine-tuned.cer": 0.3, "eval.fine-tuned.am.seen.cer": 0.2}),
        "promote": PromotionResult(registered_model="m", version="2", alias="champion", decision={}),
    }
    assert headline_metrics(results) == {"train.steps": 9, "train.final.loss": 2.5, "train.baseline.loss": 3.0,
                                         "eval.fine-tuned.cer": 0.3, "promoted": 1.0}


def test_validation_becomes_one_row_per_group():
    from tasks.progress import validation_rows

    rows = validation_rows({"val/loss": 2.0, "val/am/loss": 2.1, "val/am/mel_top1": 0.31, "val/en/loss": 1.9,
                            "val/unseen/loss": 2.4, "train/loss": 1.0, "gen/stop_rate": 1.0}, step=20)
    assert [r["group"] for r in rows] == ["all", "am", "en", "unseen"]
    assert rows[1] == {"step": 20, "group": "am", "loss": 2.1, "mel_top1": 0.31}
    assert validation_rows({"train/loss": 1.0}, step=3) == []


def test_system_metrics_are_recorded_on_a_stage_run(tmp_path):
    import time

    from tasks.tracking import open_stage_run, search_runs, start_parent_run, system_metrics

    cfg = make_cfg(tmp_path, {"tracking.system_metrics_s": 0.5})
    ref = start_parent_run(cfg, "t", {})
    assert ref.run_names["train"].startswith("train · lr=")
    run = open_stage_run(ref, "train")
    with system_metrics(ref, run):
        time.sleep(2.5)
    (found,) = [r for r in search_runs(cfg.tracking.tracking_uri, cfg.tracking.experiment) if r.info.run_id == run.run_id]
    assert "system/cpu_utilization_percentage" in found.data.metrics
    exp = __import__("mlflow").MlflowClient(cfg.tracking.tracking_uri).get_experiment(ref.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # opens on the runs table
