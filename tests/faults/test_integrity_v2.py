"""Integrity, second campaign: nothing unverified reaches a model.

One test per finding: damaged feature shards, damaged mirrored checkpoints, bit rot behind restored
timestamps, ``../`` audio paths, a read-only store, and a store moved to another folder.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from indextts_core.config import PreprocessConfig
from indextts_core.errors import InputError
from indextts_core.preprocess import Clip, TextItem, assemble, make_plan, process_unit, read_units
from indextts_core.store.local import StoreNotWritableError
from indextts_core.store.materialize import materialize_dir
from indextts_core.store.objects import (
    CorruptArtifactError,
    open_store,
    read_uri_bytes,
    verify_store,
)
from tests_support import write_audio


def _flip(path: Path, offset: int = -100, keep_mtime: bool = False) -> None:
    """Flip one byte of ``path`` (counted from the end when negative), optionally restoring its timestamps."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


# ---------------------------------------------------------------------------- 1. feature shards

def _fake_extract(waves):
    """Deterministic 'features' (no models): codes 0..6 repeated, small latents."""
    return [((np.arange(len(w) // 320) % 7).astype(np.int64), np.full((32, 8), 0.5, np.float32),
             np.full(8, 0.25, np.float32)) for w in waves]


def _index(tmp_path: Path, feature_dir: Path) -> Path:
    """A two-clip index whose features were written by ``process_unit`` into ``feature_dir``."""
    audio = [write_audio(tmp_path / "audio" / f"c{i}.wav", 1.0 + i / 4) for i in range(2)]
    clips = [Clip(f"c{i}", str(a), "hello", "s1", "en", "train", audio_sha256=f"{i:064x}") for i, a in enumerate(audio)]
    unit = [(c.audio_sha256, c.audio) for c in clips]
    process_unit(unit, _fake_extract, feature_dir, PreprocessConfig(), 10_000, 30.0, min_duration_s=0.5,
                 max_duration_s=30.0)
    records = read_units(feature_dir)
    texts = {c.id: TextItem(c, "hello", [5, 6, 7]) for c in clips}
    plan = make_plan(feature_dir, "fs", texts, [], {c.id: c.audio_sha256 for c in clips}, records, 10, {})
    tok = tmp_path / "tok.model"
    tok.write_bytes(b"tokenizer")
    out = tmp_path / "index"
    assemble(clips, plan, records, out, tok, {}, [], "store:features/fs", time.monotonic())
    return out


def test_a_damaged_feature_shard_is_refused_before_training(tmp_path: Path, s3_bucket: str):
    from indextts_core.training.data import TrainingSet
    from tasks.train import feature_folder

    store = open_store(tmp_path / "store")
    index = _index(tmp_path, tmp_path / "store" / "features" / "fs")
    meta = json.loads((index / "preprocess.json").read_text())
    (shard,) = meta["shards"]
    shard_path = tmp_path / "store" / "features" / "fs" / shard
    assert meta["shard_sha256"][shard] == open_store(tmp_path / "store").sha256(f"features/fs/{shard}")
    unit_record = json.loads(next(shard_path.parent.glob("unit-*.json")).read_text())
    assert unit_record["shard_sha256"] == meta["shard_sha256"][shard]  # recorded when written

    folder = feature_folder(store, index, tmp_path / "cache")
    data = TrainingSet([index / "train_manifest.jsonl"], folder, conds=34)
    assert data.shards_verified and data.codes(0).tolist()[:8] == [0, 1, 2, 3, 4, 5, 6, 0]

    _flip(shard_path)  # one code changes: exactly what silently moved the baseline loss
    with pytest.raises(CorruptArtifactError, match=rf"feature shard .*{shard}: content does not match .*"
                                                   "delete the damaged file.*--refresh-cache"):
        TrainingSet([index / "train_manifest.jsonl"], feature_folder(store, index, tmp_path / "cache"), conds=34)
    # deleting the damaged shard makes its unit count as not done: the next preprocess recomputes it
    shard_path.unlink()
    assert not read_units(shard_path.parent).done

    # S3: the stored object replaced by damaged bytes (its own metadata hash then agrees with them)
    s3 = open_store(f"s3://{s3_bucket}/team")
    process_unit([(f"{i:064x}", str(tmp_path / "audio" / f"c{i}.wav")) for i in range(2)], _fake_extract,
                 tmp_path / "cache-src", PreprocessConfig(), 10_000, 30.0, min_duration_s=0.5, max_duration_s=30.0)
    good = bytearray((tmp_path / "cache-src" / shard).read_bytes())
    good[-100] ^= 0x01
    s3.put_bytes(bytes(good), f"features/fs/{shard}")
    with pytest.raises(CorruptArtifactError, match=rf"s3://{s3_bucket}/team/features/fs/{shard}: content does not"):
        feature_folder(s3, index, tmp_path / "s3cache")
    assert not (tmp_path / "s3cache" / "features" / "fs" / shard).exists()  # the bad download is not kept


# ---------------------------------------------------------------------------- 2. mirrored checkpoints

def test_a_damaged_mirrored_checkpoint_is_refused_on_a_fresh_machine(tmp_path: Path):
    from tasks.train import CheckpointMirror

    store = open_store(tmp_path / "store")
    trained = tmp_path / "machine-a"
    trained.mkdir()
    (trained / "best.pth").write_bytes(b"best" * 5000)
    (trained / "latest.pth").write_bytes(b"late" * 5000)
    mirror = CheckpointMirror(store, "abc123")
    mirror.push(trained, is_best=True, step=10)
    (trained / "latest.pth").write_bytes(b"newer" * 5000)
    mirror.push(trained, is_best=False, step=20)
    record = store.get_json("train/abc123/checkpoints.json")
    assert record["best.pth"]["step"] == 10 and record["latest.pth"]["step"] == 20
    assert record["latest.pth"]["sha256"] == store.sha256("train/abc123/latest.pth")

    fresh = tmp_path / "machine-b"
    fresh.mkdir()
    CheckpointMirror(store, "abc123").pull(fresh)
    assert (fresh / "best.pth").read_bytes() == b"best" * 5000
    assert (fresh / "latest.pth").read_bytes() == b"newer" * 5000

    _flip(tmp_path / "store" / "train" / "abc123" / "best.pth", keep_mtime=True)
    other = tmp_path / "machine-c"
    other.mkdir()
    with pytest.raises(CorruptArtifactError, match=r"train/abc123/best.pth: content does not match.*refusing"):
        CheckpointMirror(store, "abc123").pull(other)
    assert not any(other.iterdir())  # neither file becomes the run's checkpoint: nothing to resume or export


# ---------------------------------------------------------------------------- 3. bit rot behind restored timestamps

def test_bit_rot_with_restored_mtime_is_caught_on_every_read(tmp_path: Path, s3_bucket: str):
    store = open_store(tmp_path / "store")
    src = tmp_path / "src"
    src.mkdir()
    (src / "gpt.pth").write_bytes(bytes(range(256)) * 400)
    (src / "bpe.model").write_bytes(b"tokenizer" * 100)
    info = store.put_dir(src, "artifacts/train/1")
    assert store.sha256("artifacts/train/1/gpt.pth") == info.files[1].sha256
    assert materialize_dir(store, "artifacts/train/1", tmp_path / "cache")  # verified once: fine
    assert verify_store(store) == []

    for name in ("gpt.pth", "bpe.model"):
        stored = tmp_path / "store" / "artifacts" / "train" / "1" / name
        before = store.sha256(f"artifacts/train/1/{name}")
        _flip(stored, offset=10, keep_mtime=True)
        assert store.sha256(f"artifacts/train/1/{name}") != before  # no cache keyed by size and mtime
        with pytest.raises(CorruptArtifactError, match=rf"1/{name}: content does not match"):
            materialize_dir(store, "artifacts/train/1", tmp_path / "cache")
        stored.write_bytes((src / name).read_bytes())
    _flip(tmp_path / "store" / "artifacts" / "train" / "1" / "bpe.model", offset=3, keep_mtime=True)
    (problem,) = verify_store(store)
    assert "artifacts/train/1/bpe.model: content does not match" in problem

    s3 = open_store(f"s3://{s3_bucket}/v")  # the full pass reads S3 objects too, not their recorded metadata
    s3.put_dir(src, "artifacts/train/1")
    assert verify_store(s3) == []
    s3.put_bytes(b"tokenizer" * 99 + b"tokenizeR", "artifacts/train/1/bpe.model")
    got = s3.sha256("artifacts/train/1/bpe.model")[:12]
    assert verify_store(s3) == [f"s3://{s3_bucket}/v/artifacts/train/1/bpe.model: content does not match its recorded "
                                f"sha256 {info.files[0].sha256[:12]} (got {got}; changed or damaged after it was stored)"]


# ---------------------------------------------------------------------------- 4. ../ audio paths

def test_audio_outside_the_dataset_folder_is_never_published(tmp_path: Path):
    from flows.local_inputs import use_manifests
    from indextts_core.store.download import fetch_asset
    from tests_support import make_cfg

    data = tmp_path / "data"
    write_audio(data / "wavs" / "a.wav")
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    (data / "wavs" / "link.wav").symlink_to(secret)
    rows = [{"id": "a", "audio": "wavs/a.wav", "text": "hi", "speaker": "s", "language": "en"},
            {"id": "p", "audio": "../../../../../../etc/passwd", "text": "hi", "speaker": "s", "language": "en"},
            {"id": "s", "audio": "../secret.txt", "text": "hi", "speaker": "s", "language": "en"},
            {"id": "l", "audio": "wavs/link.wav", "text": "hi", "speaker": "s", "language": "en"}]
    (data / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = make_cfg(tmp_path)
    store = open_store(cfg.storage.uri)

    use_manifests(cfg, [data / "manifest.jsonl"], store)
    assert cfg.ingest.source.source == str(data)  # the root stays the dataset folder, not /
    # a path the manifest's text leads out of the folder is never published; a symlink the folder's owner
    # placed inside it (audio on another disk) is part of the dataset
    assert sorted(cfg.ingest.source.files) == ["manifest.jsonl", "wavs/a.wav", "wavs/link.wav"]
    asset = fetch_asset("dataset", cfg.ingest.source, store)
    stored = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert not any(p.read_bytes() == Path("/etc/passwd").read_bytes() for p in stored)
    assert not any(p.read_bytes() == b"not yours" and p.name == "secret.txt" for p in stored)
    assert sorted(f.key for f in asset.files) == ["manifest.jsonl", "wavs/a.wav", "wavs/link.wav"]


# ---------------------------------------------------------------------------- 5. read-only store

def test_a_read_only_store_says_which_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import indextts_core.utils.fileio as fileio

    root = tmp_path / "ro" / "store"
    real_mkdir = Path.mkdir

    def refuse_mkdir(self: Path, *args, **kwargs):
        if self == root:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse_mkdir)
    with pytest.raises(StoreNotWritableError, match=rf"the artifact store folder {root} is not writable: "
                                                    "Permission denied"):
        open_store(root)
    monkeypatch.undo()

    store = open_store(root)  # exists now; the file system then turns read-only
    store.put_bytes(b"kept", "a/b.txt")

    def read_only(path):
        raise OSError(errno.EROFS, "Read-only file system", str(Path(path).parent))

    monkeypatch.setattr(fileio, "make_temp", read_only)
    for write in (lambda: store.put_bytes(b"x", "a/c.txt"), lambda: store.put_file(tmp_path / "ro" / "x", "a/d")):
        (tmp_path / "ro" / "x").write_bytes(b"x")
        with pytest.raises(StoreNotWritableError, match=rf"artifact store folder {root} is not writable: Read-only"):
            write()
    assert store.get_bytes("a/b.txt") == b"kept" and isinstance(StoreNotWritableError("x"), InputError)


# ---------------------------------------------------------------------------- 6. a moved store

def test_a_moved_store_reuses_the_ingest_output(tmp_path: Path):
    from indextts_core.config import AssetSource, load_config
    from indextts_core.store.download import fetch_asset
    from tasks.artifacts import asset_ref
    from tasks.context import RunContext
    from tasks.ingest import ingest_task
    from tasks.keys import config_subset
    from tasks.keys import STAGE_KEYS
    from tests_support import DEMO_DIR

    def cfg_at(store: Path):
        return load_config(overrides={"run.output_dir": str(tmp_path / "run"), "storage.uri": str(store)})

    a, b = tmp_path / "a" / "store", tmp_path / "b" / "store"
    cfg = cfg_at(a)
    dataset = asset_ref(fetch_asset("dataset", AssetSource(source=str(DEMO_DIR)), open_store(a)))
    first = ingest_task.fn(cfg, dataset, ctx=RunContext())
    row = json.loads((cfg.run.output_dir / "ingest" / "manifest.jsonl").read_text().splitlines()[0])
    assert row["audio"].startswith(f"store:{dataset.prefix}/") and str(a) not in json.dumps(row)

    b.parent.mkdir()
    shutil.move(a, b)  # the store is moved (or mounted elsewhere); the cached refs still name the old path
    cfg_b = cfg_at(b)
    again = ingest_task.fn(cfg_b, dataset, ctx=RunContext())
    assert again.artifact.digest == first.artifact.digest  # same output: every downstream cache key is the same
    assert config_subset(cfg_b, STAGE_KEYS["preprocess"]) == config_subset(cfg, STAGE_KEYS["preprocess"])
    assert read_uri_bytes(row["audio"], cfg_b.storage)[:4] in (b"RIFF", b"fLaC", b"OggS")  # readable where it is now


def test_verify_command_names_a_damaged_file_and_exits_1(tmp_path: Path):
    """``indextts-train verify``: the periodic full pass finds bit rot no run has read yet."""
    from typer.testing import CliRunner

    from flows.cli import app

    store = open_store(tmp_path / "store")
    src = tmp_path / "src"
    src.mkdir()
    (src / "gpt.pth").write_bytes(b"weights" * 1000)
    store.put_dir(src, "assets/checkpoint/x")
    args = ["verify", "--set", f"storage.uri={tmp_path / 'store'}"]
    ok = CliRunner().invoke(app, args)
    assert ok.exit_code == 0 and "0 problem(s)" in ok.output
    target = tmp_path / "store" / "assets" / "checkpoint" / "x" / "gpt.pth"
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[10] ^= 1
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # bit rot keeps its modification time
    bad = CliRunner().invoke(app, args)
    assert bad.exit_code == 1 and "1 problem(s)" in bad.output
    assert "assets/checkpoint/x/gpt.pth" in bad.output and "damaged" in bad.output
