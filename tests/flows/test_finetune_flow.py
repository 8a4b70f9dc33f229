"""The finetune flow on the demo dataset with real Prefect and MLflow: lineage, caching, failures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from flows.finetune import finetune
from flows.runtime import RunSummary
from indextts_core.errors import ManifestError
from indextts_core.utils.fileio import read_jsonl
from tasks.tracking import search_runs
from tests_support import STAGES, expect, make_cfg, mlflow_runs, statuses


#: For the runs that only have to show that training ran again (the demo test checks what it learns).
TWO_STEPS = {"train.max_steps": 2}


def _children(runs, parent_id: str) -> dict[str, object]:
    return {r.data.tags["stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id}


def test_demo_run_records_lineage(first_run):
    tmp_path, cfg, summary = first_run.root, first_run.cfg(), first_run.summary
    assert isinstance(summary, RunSummary) and summary.status == "completed"
    assert statuses(summary) == expect("ran")

    # stage outputs are content-addressed in the store and checked out into the run folder
    ingest = summary.results["ingest"]
    assert ingest["artifact"]["uri"].startswith(str(tmp_path / "store" / "artifacts" / "ingest"))
    assert len(read_jsonl(cfg.run.output_dir / "ingest" / "manifest.jsonl")) == 60
    assert (cfg.run.output_dir / "corpus" / "am.txt").is_file()
    assert (cfg.run.output_dir / "corpus" / "am.frontend.txt").is_file()
    official = (cfg.run.output_dir / "corpus" / "am.official.txt").read_text(encoding="utf-8").splitlines()
    assert len(official) == 48 and sum("።" in x for x in official) > 40  # raw text, as the official front-end gives it
    assert summary.results["extend-bpe"]["metrics"]["am.unk_char_rate_raw"] == 0.0
    assert (cfg.run.output_dir / "extend-bpe" / "extended_bpe.model").is_file()
    assert summary.results["extend-bpe"]["metrics"]["base_drift"] == 0.0
    assert "| ingest | ran |" in (cfg.run.output_dir / "summary.md").read_text()
    # what a fresh worker needs to finish this training exactly as here: the latest and the best checkpoint
    (ckpts,) = (cfg.run.output_dir / "trained_ckpts").iterdir()
    mirrored = tmp_path / "store" / "train" / ckpts.name
    for name in ("latest.pth", "best.pth"):
        assert (mirrored / name).read_bytes() == (ckpts / name).read_bytes(), name
    # a fresh machine (no local checkpoints, the export gone from the store) finishes with the same export
    exported = (cfg.run.output_dir / "train" / "gpt.pth").read_bytes()
    shutil.rmtree(cfg.run.output_dir / "trained_ckpts")
    shutil.rmtree(summary.results["train"]["artifact"]["uri"])
    again = finetune(cfg)
    assert statuses(again)["train"] == "ran" and again.results["train"]["metrics"]["steps"] == \
        summary.results["train"]["metrics"]["steps"]
    assert (cfg.run.output_dir / "train" / "gpt.pth").read_bytes() == exported

    # MLflow: one parent, one child per stage, tagged with the Prefect flow run and the commit
    runs = mlflow_runs(cfg)
    parent = next(r for r in runs if r.info.run_id == summary.mlflow_parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["prefect.flow_run_id"] == summary.flow_run_id
    # the run list tells runs apart by name, and the parent carries the headline numbers
    assert parent.info.run_name == "t · finetune · lr=2e-05 · ep=2 · bt=12288 · am"
    assert {"train.final.loss", "train.baseline.loss", "ingest.accepted"} <= set(parent.data.metrics)
    train_run = next(r for r in runs if r.data.tags.get("stage") == "train"
                     and r.data.tags.get("mlflow.parentRunId") == summary.mlflow_parent_run_id)
    assert train_run.info.run_name == "train · lr=2e-05 · ep=2 · bt=12288 · am"
    assert parent.data.tags["git.commit"] and parent.data.params["ingest.min_duration_s"] == "0.5"
    children = _children(runs, parent.info.run_id)
    assert set(children) == set(STAGES) - {"evaluate"}  # make_cfg turns the evaluation off
    for child in children.values():
        assert child.data.tags["prefect.flow_run_id"] == summary.flow_run_id
        assert child.data.tags["git.commit"] == parent.data.tags["git.commit"]
        assert child.info.status == "FINISHED"
    ing = children["ingest"]
    assert ing.data.metrics["accepted"] == 60 and ing.data.params["ingest.val_fraction"] == "0.1"
    assert ing.data.tags["output.digest"] == ingest["artifact"]["digest"]
    (inp,) = ing.inputs.dataset_inputs
    assert inp.dataset.name == "dataset" and inp.tags[0].value == "source"

    from mlflow import MlflowClient

    client = MlflowClient(cfg.tracking.tracking_uri)
    reports = {a.path for a in client.list_artifacts(ing.info.run_id, "reports")}
    assert {"reports/report.md", "reports/rejects.jsonl", "reports/durations.png"} <= reports
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"config.yaml", "summary.md"}

    # training: step metrics on the train run, the export registered with its lineage
    tr = children["train"]
    assert {"train/loss", "train/text_loss", "train/mel_loss", "train/mel_top1", "train/lr", "train/grad_norm",
            "train/tokens_per_s", "train/padding_share", "val/loss", "val/am/loss"} <= set(tr.data.metrics)
    steps = [m.step for m in client.get_metric_history(tr.info.run_id, "train/loss")]
    assert steps == list(range(1, len(steps) + 1))
    trained = summary.results["train"]
    assert trained["metrics"]["export_verified"] == 1 and trained["metrics"]["base_rows_unchanged"] == 1
    version = client.get_model_version("indextts2-am", trained["outputs"]["registered_version"])
    assert version.source == trained["artifact"]["uri"] and version.run_id == tr.info.run_id
    assert version.tags["prefect.flow_run_id"] == summary.flow_run_id
    assert version.tags["data.digest"] == summary.results["pairs"]["artifact"]["digest"]
    assert version.tags["tokenizer.sha256"] and version.tags["base_checkpoint.gpt_sha256"]
    assert (cfg.run.output_dir / "train" / "gpt.pth").is_file()
    tr_reports = {a.path for a in client.list_artifacts(tr.info.run_id, "reports")}
    assert {"reports/train_summary.json", "reports/indextts-export.json"} <= tr_reports

    # the Prefect run carries the summary as a markdown and a table artifact
    with get_client(sync_client=True) as pc:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        arts = pc.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["finetune-summary"])))
        assert any(str(a.flow_run_id) == summary.flow_run_id and "| corpus | ran |" in a.data for a in arts)


@pytest.mark.slow
def test_second_run_is_fully_cached_and_config_changes_rerun_only_downstream(first_run):
    tmp_path, cfg, first = first_run.root, first_run.cfg(), first_run.summary
    second = finetune(cfg)
    assert statuses(second) == expect("cached", download="reused")
    # cached stages point at the MLflow runs that produced their outputs, and create none
    assert second.results["ingest"]["mlflow_run_id"] == first.results["ingest"]["mlflow_run_id"]
    children = _children(mlflow_runs(cfg), second.mlflow_parent_run_id)
    assert set(children) == {"download"}  # sources checked; the version is already the champion: nothing to record
    parent = next(r for r in mlflow_runs(cfg) if r.info.run_id == second.mlflow_parent_run_id)
    assert parent.data.tags["stage.ingest.status"] == "cached"
    assert parent.data.tags["stage.ingest.produced_by_run"] == first.results["ingest"]["mlflow_run_id"]

    # a corpus setting changes only the corpus stage (each of these retrains: two steps are enough to see that)
    third = finetune(make_cfg(tmp_path, {"corpus.include_val": False, **TWO_STEPS}))
    assert statuses(third) == expect("ran", download="reused", ingest="cached")
    assert third.results["preprocess"]["metrics"]["audio_processed_now"] == 0  # re-tokenized, audio reused
    # a dataset setting reruns ingest and what depends on it; a held-out speaker is validated apart
    fourth = finetune(make_cfg(tmp_path, {"ingest.val_fraction": 0.2, "ingest.val_speakers": ["spk04"],
                                         **TWO_STEPS}))
    assert statuses(fourth) == expect("ran", download="reused")
    trained = fourth.results["train"]["metrics"]
    assert {"final.unseen_speakers/loss", "final.seen_speakers/loss", "baseline.unseen_speakers/loss"} <= set(trained)
    # a setting that does not change any output (decoding threads) keeps the cache
    fifth = finetune(make_cfg(tmp_path, {"ingest.workers": 1}))
    assert statuses(fifth) == expect("cached", download="reused")
    # a tokenizer setting reruns only the tokenizer stage
    sixth = finetune(make_cfg(tmp_path, {"extend_bpe.min_piece_count": 3, **TWO_STEPS}))
    assert statuses(sixth) == expect("ran", download="reused", ingest="cached", corpus="cached")
    # and the run folder is complete on cached runs too
    assert len(read_jsonl(make_cfg(tmp_path).run.output_dir / "ingest" / "val.jsonl")) == 8
    # --refresh-cache recomputes, training included (not a resume that trains 0 steps)
    refreshed = finetune(make_cfg(tmp_path, {"orchestration.refresh_cache": True}))
    assert statuses(refreshed) == expect("ran", download="reused")
    assert refreshed.results["train"]["metrics"]["steps"] == first.results["train"]["metrics"]["steps"] > 0


def test_cached_result_whose_artifact_vanished_is_recomputed(first_run):
    cfg, first = first_run.cfg(), first_run.summary
    shutil.rmtree(first.results["ingest"]["artifact"]["uri"])
    again = finetune(cfg)
    assert statuses(again)["ingest"] == "ran"
    assert Path(again.results["ingest"]["artifact"]["uri"]).is_dir()


def test_bad_dataset_fails_once_and_keeps_the_evidence(tmp_path: Path, demo_copy: Path):
    lines = (demo_copy / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    lines[5] = "{not json"
    (demo_copy / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = make_cfg(tmp_path, {"ingest.source": {"source": str(demo_copy)}, "ingest.max_rejected_fraction": 0.0,
                              "orchestration.retries": 3})
    with pytest.raises(ManifestError, match="1 of 60 rows rejected"):
        finetune(cfg)
    rejects = read_jsonl(cfg.run.output_dir / "ingest" / "rejects.jsonl")
    assert rejects[0]["line"] == 6
    runs = mlflow_runs(cfg)
    ingest_runs = [r for r in runs if r.data.tags.get("stage") == "ingest"]
    assert len(ingest_runs) == 1, "a deterministic error must not be retried"
    assert ingest_runs[0].info.status == "FAILED"
    from mlflow import MlflowClient

    arts = {a.path for a in MlflowClient(cfg.tracking.tracking_uri).list_artifacts(ingest_runs[0].info.run_id, "reports")}
    assert "reports/rejects.jsonl" in arts
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.status == "FAILED"
    summary = json.loads((cfg.run.output_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["stages"][-1] == {**summary["stages"][-1], "stage": "ingest",
                                                                     "status": "failed"}


def test_tracking_goes_to_the_configured_uri(first_run):
    cfg = first_run.cfg({"tracking.experiment": "elsewhere"})  # a new experiment in the same store (cached stages)
    summary = finetune(cfg)
    runs = search_runs(cfg.tracking.tracking_uri, "elsewhere")
    assert summary.mlflow_parent_run_id in {r.info.run_id for r in runs}


def test_one_physical_copy_of_the_export_and_a_cached_run_reads_each_stored_file_once(first_run):
    """Issue 30 at the tiny size: the exported ``gpt.pth`` is one file on disk, whether it is looked for in the
    training folder, the store, the run folder or the model registry (which names the stored export); a second,
    fully cached run into an empty run folder verifies each stored file as it checks it out: one read each."""
    import hashlib
    import os
    import sys

    from mlflow import MlflowClient

    root, trained = first_run.root, first_run.summary.results["train"]
    stored = Path(trained["artifact"]["uri"]) / "gpt.pth"
    digest = hashlib.sha256(stored.read_bytes()).hexdigest()
    same = [p for p in root.rglob("*.pth") if p.stat().st_size == stored.stat().st_size
            and hashlib.sha256(p.read_bytes()).hexdigest() == digest]
    where = {p.relative_to(root).parts[0] + "/" + p.parent.name for p in same}
    assert len(same) >= 3, where  # trained_ckpts/<run>/export, the store's train artifact, the run folder's train/
    assert len({(p.stat().st_dev, p.stat().st_ino) for p in same}) == 1, where
    version = MlflowClient(first_run.cfg().tracking.tracking_uri).get_model_version(
        "indextts2-am", trained["outputs"]["registered_version"])
    assert version.source == trained["artifact"]["uri"]  # a reference to the stored export, not another upload

    # every stored file, by inode (a checkout links it into the run folder and reads it there)
    stored_files = {(st.st_dev, st.st_ino): p for p in (root / "store").rglob("*") if p.is_file()
                    and "prefect-results" not in p.parts and p.suffix != ".json"  # Prefect's and our small records
                    for st in [p.stat()]}
    reads: dict[Path, int] = {}
    counting = [True]

    def hook(event: str, args: tuple) -> None:
        if not counting[0] or event != "open" or not isinstance(args[0], str):
            return
        mode, flags = args[1], args[2]
        if (any(c in mode for c in "wax+") if isinstance(mode, str) else flags & (os.O_WRONLY | os.O_RDWR)):
            return
        try:
            st = os.stat(args[0])
        except OSError:
            return
        if (st.st_dev, st.st_ino) in stored_files:
            stored = stored_files[st.st_dev, st.st_ino]
            reads[stored] = reads.get(stored, 0) + 1

    shutil.rmtree(first_run.cfg().run.output_dir)  # another machine's run folder: every output is checked out
    sys.addaudithook(hook)  # a hook cannot be removed: this one counts only during the run
    try:
        second = finetune(first_run.cfg())
    finally:
        counting[0] = False
    assert statuses(second) == expect("cached", download="reused")
    assert any(k.name == "gpt.pth" for k in reads), sorted(reads)  # the export was checked out ...
    assert max(reads.values()) == 1, {k: v for k, v in reads.items() if v > 1}  # ... each file verified once
