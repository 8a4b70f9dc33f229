"""Cached answers (:mod:`flows.cached_answers`): a stage command whose result is known starts nothing."""

from __future__ import annotations

import pytest

import json
import os
import shutil
from pathlib import Path

from flows.cached_answers import answer, check_out, remember
from indextts_core.config import PipelineConfig
from indextts_core.store.objects import open_store
from tasks.artifacts import StageResult, publish_dir
from tests_support import DEMO_DIR, cli


def _setup(tmp_path: Path) -> tuple[PipelineConfig, StageResult]:
    data = tmp_path / "data"
    shutil.copytree(DEMO_DIR, data)
    cfg = PipelineConfig.model_validate({
        "run": {"output_dir": str(tmp_path / "run")},
        "storage": {"uri": str(tmp_path / "store"), "cache_dir": str(tmp_path / "cache")},
        "ingest": {"source": {"source": str(data)}},
    })
    out = tmp_path / "made"
    out.mkdir()
    (out / "am.txt").write_text("ሰላም\n", encoding="utf-8")
    ref = publish_dir(open_store(cfg.storage.uri, cfg.storage), out, "corpus")
    return cfg, StageResult(stage="corpus", artifact=ref, metrics={"am.lines": 1}, mlflow_run_id="r1")


def test_a_remembered_stage_is_answered_and_checked_out_once(tmp_path: Path):
    cfg, result = _setup(tmp_path)
    assert answer(cfg, "corpus", {}) is None  # nothing stored yet
    remember(cfg, {"corpus": result.model_dump(mode="json")}, {})

    got = answer(cfg, "corpus", {})
    assert got is not None and StageResult.model_validate(got) == result
    folder = cfg.run.output_dir / "corpus"
    assert (folder / "am.txt").read_text(encoding="utf-8") == "ሰላም\n"
    inode = folder.stat().st_ino
    assert answer(cfg, "corpus", {}) is not None
    assert folder.stat().st_ino == inode  # the checkout was current: not copied again

    shutil.rmtree(folder)  # the run folder lost it (or a flow run replaced it): checked out again
    assert answer(cfg, "corpus", {}) is not None and (folder / "am.txt").is_file()


def test_any_change_in_what_the_stage_depends_on_asks_the_flow(tmp_path: Path):
    cfg, result = _setup(tmp_path)
    remember(cfg, {"corpus": result.model_dump(mode="json"), "train": result.model_dump(mode="json")}, {})
    assert answer(cfg, "corpus", {}) is not None

    changed = cfg.model_copy(update={"pairs": cfg.pairs.model_copy(update={"pairs_per_target": 7})})
    assert answer(changed, "corpus", {}) is None  # any stage's keyed setting
    refresh = cfg.model_copy(update={"orchestration": cfg.orchestration.model_copy(update={"refresh_cache": True})})
    assert answer(refresh, "corpus", {}) is None
    off = cfg.model_copy(update={"orchestration": cfg.orchestration.model_copy(update={"cached_answers": False})})
    assert answer(off, "corpus", {}) is None
    resume = cfg.model_copy(update={"train": cfg.train.model_copy(update={"resume": "ckpts/model_step6.pth"})})
    assert answer(resume, "train", {}) is None  # an explicit --resume asks for training
    assert answer(cfg, "train", {}) is not None
    assert answer(cfg, "corpus", {"dataset": result.artifact}) is None  # another question: an input was given
    assert answer(cfg, "evaluate", {}) is None  # depends on the registry's champion: never answered

    manifest = Path(cfg.ingest.source.source) / "manifest.jsonl"
    st = manifest.stat()
    os.utime(manifest, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the dataset changed at its source
    assert answer(cfg, "corpus", {}) is None
    os.utime(manifest, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert answer(cfg, "corpus", {}) is not None

    store = open_store(cfg.storage.uri, cfg.storage)
    store.delete(result.artifact.prefix)  # the output is gone from the store: the flow recomputes it
    assert answer(cfg, "corpus", {}) is None


def test_a_damaged_answer_is_no_answer(tmp_path: Path):
    cfg, result = _setup(tmp_path)
    remember(cfg, {"corpus": result.model_dump(mode="json")}, {})
    (record,) = (tmp_path / "store" / "answers" / "corpus").glob("*.json")
    record.write_text(json.dumps({"format": 1, "stage": "corpus"}))
    assert answer(cfg, "corpus", {}) is None
    remember(cfg, {"corpus": result.model_dump(mode="json")}, {})
    assert answer(cfg, "corpus", {}) is not None
    assert check_out(open_store(cfg.storage.uri, cfg.storage), cfg, result).is_dir()


@pytest.mark.slow
def test_the_second_corpus_command_answers_without_a_flow_run(tmp_path: Path, prefect_env: dict[str, str]):
    args = ("corpus", "--manifest", str(DEMO_DIR / "manifest.jsonl"), "--output-dir", str(tmp_path / "corpus"))
    first = cli(*args, cwd=tmp_path, env=prefect_env)
    assert "corpus: ran" in first.stderr
    (tmp_path / "corpus" / "am.txt").unlink()
    second = cli(*args, cwd=tmp_path, env=prefect_env)
    assert "corpus: cached, answered" in second.stderr and "Beginning flow run" not in second.stderr
    assert second.stdout == first.stdout and (tmp_path / "corpus" / "am.txt").is_file()


def test_the_answering_path_imports_no_prefect_mlflow_or_torch():
    """What a stage command runs before it knows whether it can answer: the CLI, the config, the local inputs
    and the answers.  Importing Prefect, MLflow or torch there costs seconds on every command."""
    import subprocess
    import sys

    code = ("import sys, flows.cli, flows.cached_answers, flows.local_inputs, flows.cli_support; "
            "print(sorted(m for m in ('prefect', 'mlflow', 'torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
