"""The flow with its artifacts and Prefect results in S3 (a real moto server), and scheduled retraining."""

from __future__ import annotations

import pytest

import json
from pathlib import Path

import boto3

from flows.finetune import finetune
from flows.retrain import scheduled_retrain
from tests_support import expect, make_cfg, statuses, write_audio


@pytest.mark.slow
def test_results_and_artifacts_in_s3_shared_by_two_machines(tmp_path: Path, s3_bucket: str, aws_env: str):
    store = f"s3://{s3_bucket}/indextts"
    machine_a = make_cfg(tmp_path / "a", {"storage.uri": store, "storage.cache_dir": str(tmp_path / "a" / "cache")})
    first = finetune(machine_a)
    assert statuses(first) == expect("ran")
    assert first.results["ingest"]["artifact"]["uri"].startswith(f"{store}/artifacts/ingest/")

    keys = [o["Key"] for page in boto3.client("s3", endpoint_url=aws_env).get_paginator("list_objects_v2")
            .paginate(Bucket=s3_bucket) for o in page.get("Contents", [])]
    assert any(k.startswith("indextts/prefect-results/") for k in keys), "Prefect results live in the store"
    assert any(k.startswith("indextts/artifacts/ingest/") and k.endswith("/report.md") for k in keys)
    assert any(k.startswith("indextts/assets/dataset/") and k.endswith("/manifest.jsonl") for k in keys)

    # another machine: its own run folder, local download cache and MLflow store; the same bucket
    # (Prefect finds cached results through the result records in the bucket, not its database)
    machine_b = make_cfg(tmp_path / "b", {"storage.uri": store, "storage.cache_dir": str(tmp_path / "b" / "cache")})
    second = finetune(machine_b)
    assert statuses(second) == expect("cached", download="reused")
    assert (machine_b.run.output_dir / "ingest" / "report.md").is_file()  # checked out from S3
    # machine B's registry never saw that training: the promote step registers the same export there
    from mlflow import MlflowClient

    promoted = second.results["promote"]
    version = MlflowClient(machine_b.tracking.tracking_uri).get_model_version("indextts2-am", promoted["version"])
    assert version.source == first.results["train"]["artifact"]["uri"] and version.tags["registered_by"] == "promote"


@pytest.mark.slow
def test_scheduled_retrain_runs_only_when_the_dataset_changes(tmp_path: Path, demo_copy: Path):
    """The deployment's way: the run YAML is a parameter (a file, or a Prefect Variable holding it), read at
    every run, never baked in at deploy time."""
    from prefect.variables import Variable

    from indextts_core.config import dump_config

    cfg = make_cfg(tmp_path, {"ingest.source": {"source": str(demo_copy)}})
    run_yaml = tmp_path / "retrain.yaml"
    run_yaml.write_text(dump_config(cfg), encoding="utf-8")
    first = scheduled_retrain(config=str(run_yaml))
    assert first.ran and first.reason == "first run"
    assert statuses(first.summary) == expect("ran")

    Variable.set("retrain-config", run_yaml.read_text(encoding="utf-8"), overwrite=True)
    unchanged = scheduled_retrain(config="variable://retrain-config")
    assert not unchanged.ran and "no new data" in unchanged.reason

    # new data arrives: a new clip and its manifest line
    write_audio(demo_copy / "audio" / "spk01_am_new.flac", seconds=1.5, freq=180.0)
    row = {"id": "spk01_am_new", "audio": "audio/spk01_am_new.flac", "text": "አዲስ ድምፅ።", "speaker": "spk01",
           "language": "am"}
    with open(demo_copy / "manifest.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
    grown = scheduled_retrain(config=str(run_yaml))
    assert grown.ran and grown.reason == "the dataset changed"
    assert statuses(grown.summary)["ingest"] == "ran" and statuses(grown.summary)["extend-bpe"] == "ran"
    assert grown.summary.results["preprocess"]["metrics"]["audio_processed_now"] == 1  # only the new clip
    assert grown.summary.results["ingest"]["metrics"]["accepted"] == 61
    promoted = grown.summary.results["promote"]  # the new version is judged against the champion
    assert promoted["alias"] in ("champion", "challenger") and promoted["decision"]["metric"] == "val_loss"

    forced = scheduled_retrain(cfg, force=True)
    assert forced.ran and forced.reason == "forced"
    assert statuses(forced.summary) == expect("cached", download="reused")
