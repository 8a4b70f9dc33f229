"""Download stage: local, S3 and Hugging Face sources into the store; reuse; clear errors.  No network."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from indextts_core.config import AssetSource, load_config
from indextts_core.store.download import download, fetch_asset
from indextts_core.errors import DownloadError
from indextts_core.utils.fileio import sha256_file
from indextts_core.store.materialize import materialize_dir
from indextts_core.store.objects import open_store

COMMIT = "0123456789abcdef0123456789abcdef01234567"
CHECKPOINT_FILES = {
    "config.yaml": b"gpt:\n  model_dim: 64\n",
    "gpt.pth": os.urandom(4096),
    "bpe.model": os.urandom(512),
    "wav2vec2bert_stats.pt": os.urandom(256),
    "s2mel.pth": os.urandom(1024),
}


def _checkpoint_dir(root: Path) -> Path:
    root.mkdir(parents=True)
    for name, data in CHECKPOINT_FILES.items():
        (root / name).write_bytes(data)
    return root


def _hf_cache(cache: Path, repo: str, files: dict[str, bytes], tag: str = "v2.0") -> Path:
    """A Hugging Face cache folder laid out as huggingface_hub writes it."""
    base = cache / f"models--{repo.replace('/', '--')}"
    snap = base / "snapshots" / COMMIT
    for name, data in files.items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).write_bytes(data)
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / tag).write_text(COMMIT)
    return cache


def test_local_checkpoint_default_allow_list_and_reuse(tmp_path: Path):
    src = _checkpoint_dir(tmp_path / "ckpt")
    store = open_store(tmp_path / "store")
    first = fetch_asset("checkpoint", AssetSource(source=str(src)), store)
    assert not first.reused
    # what fine-tuning needs, plus what synthesis needs when the folder has it (s2mel.pth here)
    assert sorted(f.key for f in first.files) == ["bpe.model", "config.yaml", "gpt.pth", "s2mel.pth",
                                                  "wav2vec2bert_stats.pt"]
    assert {f.key: f.sha256 for f in first.files}["gpt.pth"] == sha256_file(src / "gpt.pth")
    assert store.get_bytes(f"{first.prefix}/gpt.pth") == CHECKPOINT_FILES["gpt.pth"]
    record = store.get_json(f"{first.prefix}.json")
    assert record["source"] == str(src) and len(record["files"]) == 5

    assert fetch_asset("checkpoint", AssetSource(source=str(src)), store).reused
    # touched but identical: still reused (content hash checked)
    os.utime(src / "gpt.pth", (time.time() + 5, time.time() + 5))
    assert fetch_asset("checkpoint", AssetSource(source=str(src)), store).reused
    # changed content: fetched again
    (src / "gpt.pth").write_bytes(b"new weights")
    again = fetch_asset("checkpoint", AssetSource(source=str(src)), store)
    assert not again.reused
    assert store.get_bytes(f"{again.prefix}/gpt.pth") == b"new weights"


def test_more_files_on_request(tmp_path: Path):
    src = _checkpoint_dir(tmp_path / "ckpt")
    asset = fetch_asset("checkpoint", AssetSource(source=str(src), files=["config.yaml", "s2mel.pth"]),
                        open_store(tmp_path / "store"))
    assert sorted(f.key for f in asset.files) == ["config.yaml", "s2mel.pth"]


def test_missing_local_file_is_named(tmp_path: Path):
    src = _checkpoint_dir(tmp_path / "ckpt")
    (src / "gpt.pth").unlink()
    with pytest.raises(DownloadError, match=r"checkpoint: file 'gpt\.pth' not found in .*ckpt"):
        fetch_asset("checkpoint", AssetSource(source=str(src)), open_store(tmp_path / "store"))
    with pytest.raises(DownloadError, match="does not exist"):
        fetch_asset("dataset", AssetSource(source=str(tmp_path / "nowhere")), open_store(tmp_path / "store"))


def test_single_file_source(tmp_path: Path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"codec")
    asset = fetch_asset("semantic_codec", AssetSource(source=str(f)), open_store(tmp_path / "store"))
    assert [x.key for x in asset.files] == ["model.safetensors"]


def test_s3_source_into_local_store(s3_bucket: str, tmp_path: Path):
    src_store = open_store(f"s3://{s3_bucket}/release/IndexTTS-2")
    for name, data in CHECKPOINT_FILES.items():
        src_store.put_bytes(data, name)
    store = open_store(tmp_path / "store")
    src = AssetSource(source=f"s3://{s3_bucket}/release/IndexTTS-2")
    asset = fetch_asset("checkpoint", src, store)
    assert not asset.reused and len(asset.files) == 5
    assert store.get_bytes(f"{asset.prefix}/bpe.model") == CHECKPOINT_FILES["bpe.model"]
    assert fetch_asset("checkpoint", src, store).reused
    src_store.put_bytes(b"changed", "bpe.model")
    assert not fetch_asset("checkpoint", src, store).reused
    with pytest.raises(DownloadError, match=r"checkpoint: file 'feat1\.pt' not found at s3://"):
        fetch_asset("checkpoint", AssetSource(source=src.source, files=["feat1.pt"]), store)
    with pytest.raises(DownloadError, match="nothing found"):
        fetch_asset("dataset", AssetSource(source=f"s3://{s3_bucket}/empty"), store)


def test_local_source_into_s3_store(s3_bucket: str, tmp_path: Path, demo_copy: Path):
    store = open_store(f"s3://{s3_bucket}/artifacts")
    asset = fetch_asset("dataset", AssetSource(source=str(demo_copy)), store)
    assert asset.uri.startswith(f"s3://{s3_bucket}/artifacts/assets/dataset/")
    local = materialize_dir(store, asset.prefix, cache_dir=tmp_path / "cache")
    assert (local / "manifest.jsonl").read_bytes() == (demo_copy / "manifest.jsonl").read_bytes()
    assert len(list((local / "audio").iterdir())) == 60
    assert fetch_asset("dataset", AssetSource(source=str(demo_copy)), store).reused


def test_hub_source_from_offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = _hf_cache(tmp_path / "hf", "IndexTeam/IndexTTS-2", CHECKPOINT_FILES)
    store = open_store(tmp_path / "store")
    src = AssetSource(source="hf://IndexTeam/IndexTTS-2", revision=COMMIT)
    asset = fetch_asset("checkpoint", src, store, hf_cache_dir=cache, offline=True)
    assert len(asset.files) == 5
    assert store.get_bytes(f"{asset.prefix}/config.yaml") == CHECKPOINT_FILES["config.yaml"]
    assert fetch_asset("checkpoint", src, store, hf_cache_dir=cache, offline=True).reused
    # a tag resolves through refs/ like the hub does
    tagged = fetch_asset("checkpoint", AssetSource(source=src.source, revision="v2.0"), store,
                         hf_cache_dir=cache, offline=True)
    assert {f.sha256 for f in tagged.files} == {f.sha256 for f in asset.files}


def test_hub_missing_file_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = _hf_cache(tmp_path / "hf", "IndexTeam/IndexTTS-2", {"config.yaml": b"x"})
    src = AssetSource(source="hf://IndexTeam/IndexTTS-2", revision=COMMIT)
    with pytest.raises(DownloadError) as e:
        fetch_asset("checkpoint", src, open_store(tmp_path / "store"), hf_cache_dir=cache, offline=True)
    msg = str(e.value)
    assert "checkpoint: file 'gpt.pth' of hf://IndexTeam/IndexTTS-2@" + COMMIT in msg
    assert "not in the Hugging Face cache" in msg and "offline mode is on" in msg


def test_hub_dataset_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hf"
    base = cache / "datasets--someone--amharic-tts" / "snapshots" / COMMIT
    (base / "audio").mkdir(parents=True)
    (base / "manifest.jsonl").write_text("{}\n")
    (base / "audio" / "a.wav").write_bytes(b"RIFF")
    asset = fetch_asset("dataset", AssetSource(source="hf://datasets/someone/amharic-tts", revision=COMMIT),
                        open_store(tmp_path / "store"), hf_cache_dir=cache, offline=True)
    assert sorted(f.key for f in asset.files) == ["audio/a.wav", "manifest.jsonl"]


def test_download_stage_fetches_every_configured_asset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       demo_copy: Path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = _hf_cache(tmp_path / "hf", "IndexTeam/IndexTTS-2", CHECKPOINT_FILES)
    w2v = tmp_path / "w2v-bert-2.0"
    w2v.mkdir()
    (w2v / "config.json").write_text("{}")
    cfg = load_config(overrides={
        "download.checkpoint": {"source": "hf://IndexTeam/IndexTTS-2", "revision": COMMIT},
        "download.w2v_bert": {"source": str(w2v)},
        "download.hf_cache_dir": str(cache),
        "download.offline": True,
        "ingest.source": {"source": str(demo_copy)},
    })
    assets = download(cfg, open_store(tmp_path / "store"))
    assert list(assets) == ["checkpoint", "w2v_bert", "dataset"]
    assert all(not a.reused for a in assets.values())
    assert all(a.reused for a in download(cfg, open_store(tmp_path / "store")).values())


def test_tiny_source_is_written_once_and_reused(tmp_path: Path):
    store = open_store(tmp_path / "store")
    first = fetch_asset("checkpoint", AssetSource(source="tiny://3"), store)
    keys = {f.key for f in first.files}
    assert not first.reused and {"config.yaml", "gpt.pth", "bpe.model", "wav2vec2bert_stats.pt",
                                 "hf_cache/semantic_codec_model.safetensors"} <= keys
    assert fetch_asset("checkpoint", AssetSource(source="tiny://3"), store).reused
    from indextts_core.model.bundle import open_bundle
    from indextts_core.store.materialize import materialize_dir

    bundle = open_bundle(materialize_dir(store, first.prefix))
    assert bundle.load_gpt().cfg.number_text_tokens == bundle.gpt_config.number_text_tokens
    with pytest.raises(DownloadError, match="tiny://<integer seed>"):
        fetch_asset("checkpoint", AssetSource(source="tiny://abc"), store)
