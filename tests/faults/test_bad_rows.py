"""Bad input is reported per row (file, line, reason), never a whole-manifest failure, never trained on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from indextts_core.config import IngestConfig
from indextts_core.data.ingest import ManifestInput, ingest
from tests_support import DEMO_DIR


def _demo_rows(n: int) -> list[dict]:
    return [json.loads(x) for x in (DEMO_DIR / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[:n]]


def _dataset(tmp_path: Path, lines: list[bytes]) -> Path:
    root = tmp_path / "data"
    shutil.copytree(DEMO_DIR / "audio", root / "audio")
    (root / "manifest.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return root / "manifest.jsonl"


def _run(manifest: Path, out: Path):
    result = ingest([ManifestInput(manifest)], out, IngestConfig(max_rejected_fraction=1.0))
    rejects = [json.loads(x) for x in result.rejects.read_text(encoding="utf-8").splitlines()]
    return result, rejects


def test_bom_non_utf8_line_and_punctuation_only_text(tmp_path: Path):
    rows = _demo_rows(5)
    rows[3]["text"] = "?!... -- ,"
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in rows]
    lines[0] = b"\xef\xbb\xbf" + lines[0]  # a BOM before row 1: row 1 is kept
    lines[2] = lines[2].replace(b'"text": "', b'"text": "\xff\xfe', 1)  # one line that is not UTF-8
    result, rejects = _run(_dataset(tmp_path, lines), tmp_path / "out")
    by_line = {r["line"]: r for r in rejects}
    assert result.accepted == 3 and set(by_line) == {3, 4}  # rows 1, 2 and 5 kept
    assert by_line[3]["reason_code"] == "invalid_row" and "not UTF-8 text" in by_line[3]["reason"]
    assert "manifest.jsonl:3" in by_line[3]["reason"]
    assert by_line[4]["reason_code"] == "no_speakable_text"


def test_a_truncated_wav_is_rejected_not_trained_on(tmp_path: Path):
    rows = _demo_rows(2)
    rows[1]["audio"] = "audio/cut.wav"
    manifest = _dataset(tmp_path, [json.dumps(r, ensure_ascii=False).encode() for r in rows])
    wav = manifest.parent / "audio" / "cut.wav"
    sf.write(wav, np.full(44100, 0.1, dtype=np.float32), 22050, subtype="PCM_16")  # 2.0 s declared
    wav.write_bytes(wav.read_bytes()[: 44 + 2 * 14700])  # 0.67 s present
    result, rejects = _run(manifest, tmp_path / "out")
    (bad,) = rejects
    assert result.accepted == 1 and bad["line"] == 2 and "truncated" in bad["reason"]
    assert "declares 2.00 s but the file holds 0.67 s" in bad["reason"]


def test_audio_outside_the_stored_dataset_is_a_reject_not_a_local_path(tmp_path: Path):
    """A worker elsewhere could never read an absolute path on this machine: the row says so."""
    rows = _demo_rows(2)
    elsewhere = tmp_path / "elsewhere" / "x.flac"
    elsewhere.parent.mkdir()
    shutil.copy(DEMO_DIR / rows[1]["audio"], elsewhere)
    rows[1]["audio"] = str(elsewhere)
    manifest = _dataset(tmp_path, [json.dumps(r, ensure_ascii=False).encode() for r in rows])
    result = ingest([ManifestInput(manifest)], tmp_path / "out", IngestConfig(max_rejected_fraction=1.0),
                    dataset_root=manifest.parent, audio_base="store://datasets/d")
    (bad,) = [json.loads(x) for x in result.rejects.read_text(encoding="utf-8").splitlines()]
    assert result.accepted == 1 and bad["reason_code"] == "audio_outside_dataset" and bad["line"] == 2


def _without_aws_credentials(monkeypatch, tmp_path: Path) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup from a test


def test_s3_rows_without_credentials_are_listed_and_fail_once_without_retry(tmp_path: Path, s3_bucket: str,
                                                                            aws_env: str, monkeypatch):
    """The campaign: one s3:// row without credentials aborted the ingest after ~85 s of retries with no
    rejects file.  Now: the affected rows are in the rejects file with the reason, the rest are checked,
    and the stage fails once with a clear, non-transient credentials error."""
    import boto3

    from indextts_core.config import StorageConfig
    from indextts_core.store.objects import StorageCredentialsError
    from tasks.policies import is_transient

    rows = _demo_rows(4)
    client = boto3.client("s3", endpoint_url=aws_env)
    for r in rows[2:]:
        client.upload_file(str(DEMO_DIR / r["audio"]), s3_bucket, r["audio"])
        r["audio"] = f"s3://{s3_bucket}/{r['audio']}"
    manifest = _dataset(tmp_path, [json.dumps(r, ensure_ascii=False).encode() for r in rows])
    _without_aws_credentials(monkeypatch, tmp_path)
    out = tmp_path / "out"
    with pytest.raises(StorageCredentialsError) as err:
        ingest([ManifestInput(manifest)], out, IngestConfig(max_rejected_fraction=1.0),
               storage=StorageConfig(uri=str(tmp_path / "store"), endpoint_url=aws_env, region="us-east-1"))
    message = str(err.value)
    assert "2 row(s)" in message and f"s3://{s3_bucket}" in message and "no S3 credentials found" in message
    assert "storage.access_key_id" in message and "AWS_ACCESS_KEY_ID" in message
    assert not is_transient(err.value)  # the task's retry policy gives up at once
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["line"] for r in rejects) == [3, 4]
    assert {r["reason_code"] for r in rejects} == {"storage_credentials"}
    accepted = [json.loads(x) for x in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in accepted] == [rows[0]["id"], rows[1]["id"]]  # the local rows were still checked


def test_an_unreadable_s3_object_is_a_reject_of_its_row(tmp_path: Path, s3_bucket: str, aws_env: str):
    from indextts_core.config import StorageConfig

    rows = _demo_rows(3)
    rows[2]["audio"] = f"s3://{s3_bucket}/audio/not-uploaded.flac"
    manifest = _dataset(tmp_path, [json.dumps(r, ensure_ascii=False).encode() for r in rows])
    result = ingest([ManifestInput(manifest)], tmp_path / "out", IngestConfig(max_rejected_fraction=1.0),
                    storage=StorageConfig(uri=str(tmp_path / "store")))
    (bad,) = [json.loads(x) for x in result.rejects.read_text(encoding="utf-8").splitlines()]
    assert result.accepted == 2 and bad["line"] == 3 and bad["reason_code"] == "audio_missing"
