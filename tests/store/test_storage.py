"""Object store: both backends (a local folder and a real S3-compatible server on 127.0.0.1)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from indextts_core.config import StorageConfig
from indextts_core.utils.fileio import atomic_write, sha256_file
from indextts_core.store.materialize import materialize_dir
from indextts_core.store.objects import (
    DIR_MANIFEST,
    ArtifactStore,
    ObjectNotFoundError,
    open_store,
    read_uri_bytes,
)
from indextts_core.store.s3 import S3Store


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return open_store(tmp_path / "store")
    bucket = request.getfixturevalue("s3_bucket")
    return open_store(f"s3://{bucket}/some/prefix")


def test_backend_is_chosen_by_uri(tmp_path: Path, s3_bucket: str):
    assert type(open_store(tmp_path / "a")).__name__ == "LocalStore"
    assert type(open_store(f"file://{tmp_path}/b")).__name__ == "LocalStore"
    assert isinstance(open_store(f"s3://{s3_bucket}"), S3Store)
    with pytest.raises(ValueError, match="unsupported store URI"):
        open_store("gs://bucket/x")


def test_files_bytes_exists_list_hash(store: ArtifactStore, tmp_path: Path):
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(100_000))
    info = store.put_file(src, "a/b/payload.bin")
    assert info.size == 100_000 and info.sha256 == sha256_file(src)
    store.put_bytes(b"hello", "a/hello.txt")
    store.put_json({"x": 1}, "c.json")

    assert store.exists("a/b/payload.bin") and not store.exists("a/missing")
    assert store.list() == ["a/b/payload.bin", "a/hello.txt", "c.json"]
    assert store.list("a") == ["a/b/payload.bin", "a/hello.txt"]
    assert store.list("a/hello.txt") == ["a/hello.txt"]
    assert store.list("nothing/here") == []
    assert store.sha256("a/b/payload.bin") == sha256_file(src)
    assert store.get_bytes("a/hello.txt") == b"hello"
    assert store.get_json("c.json") == {"x": 1}

    out = store.get_file("a/b/payload.bin", tmp_path / "out" / "copy.bin")
    assert out.read_bytes() == src.read_bytes()

    store.delete("a/hello.txt")
    assert not store.exists("a/hello.txt")
    with pytest.raises(ObjectNotFoundError):
        store.get_bytes("a/hello.txt")
    with pytest.raises(ObjectNotFoundError):
        store.get_file("a/hello.txt", tmp_path / "nope")


def test_keys_must_be_relative(store: ArtifactStore):
    for bad in ("/abs", "../escape", "a/../b", ""):
        with pytest.raises(ValueError, match="invalid store key"):
            store.put_bytes(b"x", bad)


def test_directories_round_trip_and_verify(store: ArtifactStore, tmp_path: Path):
    src = tmp_path / "folder"
    (src / "sub").mkdir(parents=True)
    (src / "one.txt").write_text("one")
    (src / "sub" / "two.bin").write_bytes(os.urandom(5000))
    info = store.put_dir(src, "dirs/x")
    assert sorted(f.key for f in info.files) == ["one.txt", "sub/two.bin"]
    assert store.dir_exists("dirs/x")
    dest = store.get_dir("dirs/x", tmp_path / "back")
    assert (dest / "one.txt").read_text() == "one"
    assert (dest / "sub" / "two.bin").read_bytes() == (src / "sub" / "two.bin").read_bytes()
    local = materialize_dir(store, "dirs/x", cache_dir=tmp_path / "cache")
    assert (local / "sub" / "two.bin").read_bytes() == (src / "sub" / "two.bin").read_bytes()


def test_half_uploaded_directory_is_not_visible(store: ArtifactStore, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch):
    src = tmp_path / "folder"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}.txt").write_text(str(i))
    real_put = type(store).put_file
    calls = {"n": 0}

    def failing_put(self, local, key):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("connection reset")
        return real_put(self, local, key)

    monkeypatch.setattr(type(store), "put_file", failing_put)
    with pytest.raises(OSError, match="connection reset"):
        store.put_dir(src, "dirs/partial")
    monkeypatch.undo()
    assert store.exists("dirs/partial/f0.txt")  # some files made it...
    assert not store.dir_exists("dirs/partial")  # ...but the directory does not count
    assert store.dir_info("dirs/partial") is None
    with pytest.raises(ObjectNotFoundError, match=DIR_MANIFEST):
        store.get_dir("dirs/partial", tmp_path / "dest")
    with pytest.raises(ObjectNotFoundError):
        materialize_dir(store, "dirs/partial", cache_dir=tmp_path / "cache")


def test_get_dir_detects_tampering(store: ArtifactStore, tmp_path: Path):
    src = tmp_path / "folder"
    src.mkdir()
    (src / "a.txt").write_text("original")
    store.put_dir(src, "dirs/t")
    store.put_bytes(b"tampered", "dirs/t/a.txt")
    with pytest.raises(Exception, match="sha256"):
        store.get_dir("dirs/t", tmp_path / "dest")


def test_local_writes_are_atomic(tmp_path: Path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write("half of the new cont")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temp file left behind


def test_s3_multipart_upload(s3_bucket: str, tmp_path: Path):
    cfg = StorageConfig(uri=f"s3://{s3_bucket}", multipart_threshold_mb=5, multipart_chunk_mb=5)
    store = open_store(cfg.uri, cfg)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(12 * 1024 * 1024))
    info = store.put_file(big, "big.bin")
    head = store.client.head_object(Bucket=s3_bucket, Key="big.bin")
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 5 + 5 + 2 MB
    assert info.sha256 == sha256_file(big) == store.sha256("big.bin")
    assert store.get_file("big.bin", tmp_path / "big.out").read_bytes() == big.read_bytes()


def test_s3_hash_of_foreign_objects(s3_bucket: str):
    store = open_store(f"s3://{s3_bucket}")
    store.client.put_object(Bucket=s3_bucket, Key="foreign.txt", Body=b"made elsewhere")
    import hashlib

    assert store.sha256("foreign.txt") == hashlib.sha256(b"made elsewhere").hexdigest()


def test_s3_credentials_from_config_are_never_shown(s3_bucket: str, caplog: pytest.LogCaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    cfg = StorageConfig.model_validate({
        "uri": f"s3://{s3_bucket}", "access_key_id": "AKIDCONFIGKEY", "secret_access_key": "sEcReTfromconfig",
    })
    caplog.set_level(logging.DEBUG)
    store = open_store(cfg.uri, cfg)
    store.put_bytes(b"x", "k")
    assert store.get_bytes("k") == b"x"
    ours = repr(store) + repr(cfg) + str(cfg.model_dump()) + "".join(
        r.getMessage() for r in caplog.records if r.name.startswith("indextts_core"))
    assert "sEcReTfromconfig" not in ours and "AKIDCONFIGKEY" not in ours
    # botocore's own DEBUG log names the access key *id* in signed headers (AWS does not treat it
    # as secret), but the secret key appears nowhere, at any log level
    assert "sEcReTfromconfig" not in caplog.text


def test_read_uri_bytes_local_and_s3(s3_bucket: str, tmp_path: Path):
    open_store(f"s3://{s3_bucket}").put_bytes(b"abc", "x/y.bin")
    assert read_uri_bytes(f"s3://{s3_bucket}/x/y.bin") == b"abc"
    (tmp_path / "f").write_bytes(b"local")
    assert read_uri_bytes(str(tmp_path / "f")) == b"local"
    with pytest.raises(ObjectNotFoundError):
        read_uri_bytes(f"s3://{s3_bucket}/x/missing.bin")
