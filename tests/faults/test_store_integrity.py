"""What the store serves is what was stored: a damaged artifact is detected and its stage recomputed."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect import flow, task

from flows.runtime import PipelineRun
from indextts_core.errors import InputError
from indextts_core.store.materialize import materialize_dir
from indextts_core.store.objects import CorruptArtifactError, open_store
from tasks.artifacts import StageResult
from tasks.context import RunContext
from tasks.policies import STAGE_TASK_OPTIONS, stage_cache
from tasks.stage import Stage
from tests_support import make_cfg

WEIGHTS = bytes(range(256)) * 64


@task(name="toy", cache_policy=stage_cache("toy", "1", ()), **STAGE_TASK_OPTIONS)
def toy_task(cfg, ctx: RunContext) -> StageResult:
    with Stage("toy", cfg, ctx) as s:
        (s.out / "gpt.pth").write_bytes(WEIGHTS)
        return s.publish({"n": 1}, {"gpt": "gpt.pth"})


@flow
def toy_flow(cfg) -> str:
    with PipelineRun(cfg, flow_name="toy") as run:
        run.stage(toy_task)
        return run.finish().stages[0].status


def test_a_flipped_byte_in_a_stored_artifact_recomputes_the_stage(tmp_path: Path):
    cfg = make_cfg(tmp_path)
    assert toy_flow(cfg) == "ran"
    assert toy_flow(cfg) == "cached"
    (stored,) = (tmp_path / "store" / "artifacts" / "toy").glob("*/gpt.pth")
    damaged = bytearray(stored.read_bytes())
    damaged[1000] ^= 0xFF
    stored.write_bytes(bytes(damaged))

    assert toy_flow(cfg) == "ran"  # detected on read, not served as "cached"
    assert stored.read_bytes() == WEIGHTS  # the store holds a good copy again, under the same digest
    assert (cfg.run.output_dir / "toy" / "gpt.pth").read_bytes() == WEIGHTS
    assert toy_flow(cfg) == "cached"


def test_reads_verify_and_name_the_damaged_file(tmp_path: Path):
    store = open_store(tmp_path / "store")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"x" * 100)
    store.put_dir(src, "artifacts/x/1")
    records = tmp_path / "cache"
    assert materialize_dir(store, "artifacts/x/1", records) == tmp_path / "store" / "artifacts" / "x" / "1"
    (tmp_path / "store" / "artifacts" / "x" / "1" / "a.bin").write_bytes(b"y" * 100)  # same size, new bytes
    with pytest.raises(CorruptArtifactError, match=r"1/a.bin: content does not match its recorded sha256"):
        materialize_dir(store, "artifacts/x/1", records)


def test_a_wiped_store_says_so(tmp_path: Path):
    store = open_store(tmp_path / "store")
    with pytest.raises(InputError, match="artifact store .* is missing or empty .* its stage runs again"):
        materialize_dir(store, "artifacts/ingest/abc", tmp_path / "cache")


def test_a_wiped_bucket_prefix_says_so_and_a_missing_folder_says_that(s3_bucket: str, tmp_path: Path):
    store = open_store(f"s3://{s3_bucket}/team/runs")
    with pytest.raises(InputError, match=f"artifact store s3://{s3_bucket}/team/runs is missing or empty"):
        materialize_dir(store, "artifacts/ingest/abc", tmp_path / "cache")
    store.put_bytes(b"{}", "artifacts/corpus/def/report.json")
    with pytest.raises(InputError, match="no complete directory here"):
        materialize_dir(store, "artifacts/ingest/abc", tmp_path / "cache")
