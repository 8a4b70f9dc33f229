"""Stage results in the shared store are never unpickled: a crafted record is refused, not run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect import flow, task
from prefect.cache_policies import INPUTS
from prefect.serializers import PickleSerializer

from indextts_core.config import StorageConfig
from tasks.artifacts import ArtifactRef, StageResult
from tasks.policies import STAGE_TASK_OPTIONS
from tasks.result_storage import ResultJSON, ResultRefused, check_record, result_storage


class _Payload:
    """What an attacker would store: unpickling it creates a file (any code could run instead)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _records(store: Path) -> list[Path]:
    return [p for p in (store / "prefect-results").rglob("*") if p.is_file() and not p.name.startswith(".")]


def test_a_pickled_result_record_is_refused_and_never_run(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    storage = StorageConfig(uri=str(tmp_path / "store"))
    block = result_storage(storage)

    @task(cache_policy=INPUTS, **{**STAGE_TASK_OPTIONS, "retries": 0})
    def step(x: int) -> dict:
        return {"x": x}

    @flow
    def pipeline() -> dict:
        return step.with_options(result_storage=block)(1)

    assert pipeline() == {"x": 1}
    (record,) = _records(tmp_path / "store")
    stored = json.loads(record.read_bytes())
    assert stored["metadata"]["serializer"]["type"] == "indextts-json"  # written as JSON, not pickle

    marker = tmp_path / "code-ran"
    pickle = PickleSerializer()
    stored["metadata"]["serializer"] = pickle.model_dump(mode="json")
    stored["result"] = pickle.dumps(_Payload(marker)).decode()
    record.write_text(json.dumps(stored))
    assert pipeline() == {"x": 1}  # the stage ran again ...
    assert not marker.exists()  # ... and the crafted record was never unpickled
    assert "written with the 'pickle' serializer; only indextts-json records are read" in caplog.text
    assert json.loads(record.read_bytes())["metadata"]["serializer"]["type"] == "indextts-json"  # replaced


def test_only_known_result_types_round_trip():
    ser = ResultJSON()
    result = StageResult(stage="ingest", artifact=ArtifactRef(stage="ingest", uri="u", prefix="p", digest="d",
                                                              files=1, bytes=2), metrics={"accepted": 3})
    assert ser.loads(ser.dumps(result)) == result
    assert ser.loads(ser.dumps({"unit": "u1", "processed": 3})) == {"unit": "u1", "processed": 3}
    with pytest.raises(ResultRefused, match="unknown type 'os.system'"):
        ser.loads(json.dumps({"kind": "os.system", "data": {}}).encode())
    with pytest.raises(ResultRefused, match="not indextts-json data"):
        ser.loads(b"\x80\x04garbage")
    with pytest.raises(ResultRefused, match="r.json: not a result record of this platform"):  # noqa: PT012
        check_record("r.json", b"\x80\x04garbage")


def test_a_failed_tasks_exception_is_kept_as_text_not_pickled():
    """Prefect persists a failed task's exception: as JSON text (no "Failed to serialize" warning), read back
    as :class:`StageFailed`, never as the original (pickled) object."""
    from indextts_core.errors import ManifestError
    from tasks.result_storage import ResultJSON, StageFailed

    blob = ResultJSON().dumps(ManifestError("no usable rows: all 4 rows were rejected"))
    assert json.loads(blob) == {"kind": "exception", "data": {"type": "ManifestError",
                                                            "message": "no usable rows: all 4 rows were rejected"}}
    back = ResultJSON().loads(blob)
    assert isinstance(back, StageFailed) and str(back) == "ManifestError: no usable rows: all 4 rows were rejected"
