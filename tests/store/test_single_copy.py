"""One physical copy of each large file across the local store, the run folder and downloads (hard links)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from indextts_core.config import AssetSource
from indextts_core.store.download import _fetch_generated, fetch_asset
from indextts_core.store.objects import ArtifactStore, open_store
from indextts_core.utils.fileio import make_temp_dir
from tasks.artifacts import checkout, publish_dir


def _inode(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def _copies(*paths: Path) -> int:
    """How many physical files the paths name (same content assumed: the test checks it apart)."""
    return len({_inode(p) for p in paths})


def _stage_output(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.bin").write_bytes(os.urandom(3000))
    (folder / "sub" / "notes.txt").write_text("hello")
    return folder


def test_put_file_with_link_adopts_the_file(tmp_path: Path):
    store = open_store(tmp_path / "store")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(5000))
    info = store.put_file(src, "a/big.bin", link=True)
    stored = store.local_path("a/big.bin")
    assert stored is not None and _copies(src, stored) == 1
    assert (info.size, info.sha256) == (5000, store.info("a/big.bin").sha256)
    assert not [p for p in stored.parent.iterdir() if p.name.endswith(".tmp")]  # no temporary link left
    plain = store.put_file(src, "a/copy.bin")  # without link: a copy, as before
    assert _copies(src, tmp_path / "store" / "a" / "copy.bin") == 2 and plain.sha256 == info.sha256


def test_publish_and_checkout_keep_one_copy(tmp_path: Path):
    store = open_store(tmp_path / "store")
    out = _stage_output(tmp_path / "run" / "corpus")
    ref = publish_dir(store, out, "corpus")
    stored = store.local_path(ref.prefix)
    assert stored is not None
    dest = checkout(store, ref, tmp_path / "run2" / "corpus")
    for rel in ("weights.bin", "sub/notes.txt"):
        assert (dest / rel).read_bytes() == (out / rel).read_bytes()
        assert _copies(out / rel, stored / rel, dest / rel) == 1
    assert sorted(p.name for p in dest.iterdir()) == ["sub", "weights.bin"]  # no manifest in the run folder
    again = checkout(store, ref, dest)  # replacing a checkout: still the one file
    assert _copies(stored / "weights.bin", again / "weights.bin") == 1
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]


def test_across_file_systems_files_are_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def no_link(src: object, dst: object, **kwargs: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    store = open_store(tmp_path / "store")
    out = _stage_output(tmp_path / "run" / "corpus")
    monkeypatch.setattr(os, "link", no_link)
    ref = publish_dir(store, out, "corpus")
    dest = checkout(store, ref, tmp_path / "elsewhere" / "corpus")
    stored = store.local_path(ref.prefix)
    assert stored is not None
    assert _copies(out / "weights.bin", stored / "weights.bin", dest / "weights.bin") == 3
    assert (dest / "weights.bin").read_bytes() == (out / "weights.bin").read_bytes()
    assert store.dir_info(ref.prefix).digest == ref.digest  # type: ignore[union-attr]


def test_generated_model_is_written_once_into_the_store(tmp_path: Path):
    store = open_store(tmp_path / "store")
    written: dict[str, tuple[int, int]] = {}

    def write(staging: Path) -> None:
        assert staging.parent == tmp_path / "store" and staging.name.startswith(".")  # inside the store's root
        (staging / "hf_cache").mkdir()
        for rel in ("gpt.pth", "hf_cache/codec.bin"):
            (staging / rel).write_bytes(os.urandom(2048))
            written[rel] = _inode(staging / rel)
        assert store.list() == [] and store.is_empty()  # a staging folder is never seen as objects

    asset = _fetch_generated("checkpoint", AssetSource(source="tiny://7"), store, "test:7", write, "a test model")
    for rel, inode in written.items():
        stored = tmp_path / "store" / asset.prefix / rel
        assert _inode(stored) == inode and stored.stat().st_nlink == 1  # the file written, renamed; no copy
    assert not [p for p in (tmp_path / "store").iterdir() if p.name.startswith(".")]  # staging removed
    again = _fetch_generated("checkpoint", AssetSource(source="tiny://7"), store, "test:7", write, "a test model")
    assert again.reused


def test_hub_files_are_linked_and_local_sources_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = tmp_path / "hf" / "models--Org--Model" / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "model.safetensors").write_bytes(os.urandom(1024))
    store = open_store(tmp_path / "store")
    hub = fetch_asset("semantic_codec", AssetSource(source="hf://Org/Model", revision=commit,
                                                    files=["model.safetensors"]),
                      store, hf_cache_dir=tmp_path / "hf", offline=True)
    assert _copies(snap / "model.safetensors", tmp_path / "store" / hub.prefix / "model.safetensors") == 1
    local = fetch_asset("semantic_codec", AssetSource(source=str(snap / "model.safetensors")), store)
    # a user's own folder may be edited in place: the store keeps its own copy
    assert _copies(snap / "model.safetensors", tmp_path / "store" / local.prefix / "model.safetensors") == 2


def test_sweep_removes_a_killed_writers_staging_folder(tmp_path: Path):
    store = open_store(tmp_path / "store")
    store.put_bytes(b"kept", "a/kept.txt")
    left = make_temp_dir(tmp_path / "store", "download")
    (left / "half.bin").write_bytes(b"half")
    assert store.list() == ["a/kept.txt"]
    assert store.sweep(max_age_s=3600) == []  # its writer (this process) still runs
    os.utime(left, (0, 0))  # abandoned long ago
    assert store.sweep(max_age_s=3600) == [str(left)]
    assert not left.exists() and store.list() == ["a/kept.txt"]


def _checkpoints(out: Path, step: int, *, best: bool) -> None:
    """A training folder as the checkpoint manager leaves it: latest (and best) hard links of the step file."""
    out.mkdir(parents=True, exist_ok=True)
    step_file = out / f"model_step{step}.pth"
    step_file.write_bytes(os.urandom(4096))
    for name in ("latest.pth",) + (("best.pth",) if best else ()):
        (out / name).unlink(missing_ok=True)
        os.link(step_file, out / name)


def _mirror_copies(store: ArtifactStore, prefix: str, out: Path) -> int:
    local = store.local_path(prefix)
    assert local is not None
    return _copies(local / "latest.pth", local / "best.pth", out / "latest.pth", out / "best.pth")


def test_checkpoint_mirror_keeps_one_copy(tmp_path: Path):
    from tasks.train import CheckpointMirror

    store = open_store(tmp_path / "store")
    out = tmp_path / "trained_ckpts" / "k"
    mirror = CheckpointMirror(store, "k")
    _checkpoints(out, 1, best=True)
    mirror.push(out, True, 1)
    assert _mirror_copies(store, mirror.prefix, out) == 1
    record = store.get_json(mirror.record_key)
    assert record["best.pth"] == record["latest.pth"]
    assert record["latest.pth"]["sha256"] == store.info(mirror.key("latest.pth")).sha256
    _checkpoints(out, 2, best=False)  # a newer latest, the best stays
    mirror.push(out, False, 2)
    assert _mirror_copies(store, mirror.prefix, out) == 2
    assert store.get_json(mirror.record_key)["best.pth"]["step"] == 1
    pulled = tmp_path / "fresh"
    pulled.mkdir()
    mirror.pull(pulled)
    assert (pulled / "best.pth").read_bytes() == (out / "model_step1.pth").read_bytes()
    assert _copies(pulled / "best.pth", out / "best.pth") == 1  # a fresh folder resumes from links, not copies


def test_checkpoint_mirror_on_s3_copies_on_the_server(s3_bucket: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch):
    from tasks.train import CheckpointMirror

    store = open_store(f"s3://{s3_bucket}/runs")
    out = tmp_path / "trained_ckpts" / "k"
    _checkpoints(out, 1, best=True)
    mirror = CheckpointMirror(store, "k")
    uploads: list[str] = []
    upload = store.put_file
    monkeypatch.setattr(store, "put_file", lambda local, key, **kw: uploads.append(key) or upload(local, key, **kw))
    mirror.push(out, True, 1)
    assert uploads == [mirror.key("best.pth")]  # latest.pth is the same file: copied by the server
    assert store.info(mirror.key("latest.pth")).sha256 == store.content_sha256(mirror.key("best.pth"))
    assert store.get_bytes(mirror.key("latest.pth")) == (out / "latest.pth").read_bytes()
    pulled = tmp_path / "fresh"
    pulled.mkdir()
    mirror.pull(pulled)  # both checked against the record
    assert (pulled / "latest.pth").read_bytes() == (out / "latest.pth").read_bytes()
