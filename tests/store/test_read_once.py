"""Files read from the store are read once: checked while linked or copied, never read again to check them."""

from __future__ import annotations

import errno
import os
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from indextts_core.store.download import _fetch_generated
from indextts_core.config import AssetSource
from indextts_core.store.materialize import materialize_dir
from indextts_core.store.objects import ArtifactStore, CorruptArtifactError, open_store
from tasks.artifacts import ArtifactRef, checkout, publish_dir

#: Opens for reading while a :func:`counting_reads` block runs, by (device, inode) of the file opened.
_READS: dict[str, Counter[tuple[int, int]] | None] = {"counter": None}


def _on_audit(event: str, args: tuple[object, ...]) -> None:
    counter = _READS["counter"]
    if counter is None or event != "open":
        return
    path, mode, flags = args
    if not isinstance(path, (str, bytes, os.PathLike)):
        return
    reading = ("r" in mode and "+" not in mode) if isinstance(mode, str) else (flags & os.O_ACCMODE) == os.O_RDONLY
    if not reading:
        return
    try:
        st = os.stat(path)
    except OSError:
        return
    counter[(st.st_dev, st.st_ino)] += 1


sys.addaudithook(_on_audit)  # audit hooks cannot be removed: this one counts only inside counting_reads


@contextmanager
def counting_reads() -> Iterator[Counter[tuple[int, int]]]:
    """Count every open of a file for reading in this process, by the file opened (whatever name it is opened by)."""
    counter: Counter[tuple[int, int]] = Counter()
    _READS["counter"] = counter
    try:
        yield counter
    finally:
        _READS["counter"] = None


def _inode(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def _published(store: ArtifactStore, tmp_path: Path) -> tuple[ArtifactRef, Path]:
    out = tmp_path / "run" / "pairs"
    (out / "sub").mkdir(parents=True)
    (out / "a.bin").write_bytes(os.urandom(3000))
    (out / "sub" / "b.jsonl").write_text('{"x": 1}\n')
    return publish_dir(store, out, "pairs"), out


FILES = ("a.bin", "sub/b.jsonl")


def _no_links(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(src: object, dst: object, **kwargs: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", refuse)


def test_materialize_reads_each_file_once(tmp_path: Path):
    store = open_store(tmp_path / "store")
    ref, _ = _published(store, tmp_path)
    with counting_reads() as reads:
        folder = materialize_dir(store, ref.prefix)
    assert [reads[_inode(folder / rel)] for rel in FILES] == [1, 1]


@pytest.mark.parametrize("linking", [True, False], ids=["linked", "other-file-system"])
def test_checkout_reads_each_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linking: bool):
    store = open_store(tmp_path / "store")
    ref, _ = _published(store, tmp_path)
    stored = store.local_path(ref.prefix)
    assert stored is not None
    if not linking:
        _no_links(monkeypatch)
    with counting_reads() as reads:
        dest = checkout(store, ref, tmp_path / "checkout" / "pairs")
    for rel in FILES:
        assert reads[_inode(stored / rel)] == 1, rel
        assert (_inode(dest / rel) == _inode(stored / rel)) is linking
        assert (dest / rel).read_bytes() == (stored / rel).read_bytes()


def test_checkout_from_s3_reads_each_file_once(s3_bucket: str, tmp_path: Path):
    store = open_store(f"s3://{s3_bucket}/store")
    ref, _ = _published(store, tmp_path)
    for attempt in ("fetched", "cached"):
        with counting_reads() as reads:
            dest = checkout(store, ref, tmp_path / "checkout" / "pairs", cache_dir=tmp_path / "cache")
        assert [reads[_inode(dest / rel)] for rel in FILES] == [1, 1], attempt
        assert (dest / "a.bin").stat().st_nlink == 2  # the run folder's file is the cache's


@pytest.mark.parametrize("linking", [True, False], ids=["linked", "other-file-system"])
def test_damaged_store_file_is_named_and_the_checkout_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 linking: bool):
    store = open_store(tmp_path / "store")
    ref, _ = _published(store, tmp_path)
    dest = checkout(store, ref, tmp_path / "checkout" / "pairs")
    before = (dest / "a.bin").read_bytes()
    stored = store.local_path(ref.prefix)
    assert stored is not None
    (stored / "a.bin").unlink()  # the checkout keeps its (good) link; the store's file is replaced by a damaged one
    (stored / "a.bin").write_bytes(bytes(len(before)))
    if not linking:
        _no_links(monkeypatch)
    with pytest.raises(CorruptArtifactError, match=r"pairs/[0-9a-f]+/a\.bin: content does not match"):
        checkout(store, ref, dest)
    assert (dest / "a.bin").read_bytes() == before
    assert sorted(p.name for p in dest.parent.iterdir()) == ["pairs"]  # no half-made folder left


def test_missing_store_file_is_named(tmp_path: Path):
    store = open_store(tmp_path / "store")
    ref, _ = _published(store, tmp_path)
    (tmp_path / "store" / ref.prefix / "sub" / "b.jsonl").unlink()
    with pytest.raises(CorruptArtifactError, match=r"sub/b\.jsonl: missing"):
        checkout(store, ref, tmp_path / "checkout" / "pairs")


def test_storing_reads_each_file_once(tmp_path: Path):
    store = open_store(tmp_path / "store")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.bin").write_bytes(os.urandom(3000))
    with counting_reads() as reads:
        store.put_files({"a.bin": out / "a.bin"}, "dir", link=True)
    assert reads[_inode(out / "a.bin")] == 1

    written: list[Path] = []

    def write(staging: Path) -> None:
        (staging / "gpt.pth").write_bytes(os.urandom(4096))
        written.append(staging / "gpt.pth")

    with counting_reads() as reads:
        asset = _fetch_generated("checkpoint", AssetSource(source="tiny://3"), store, "t", write, "a test model")
    assert reads[_inode(tmp_path / "store" / asset.prefix / "gpt.pth")] == 1
