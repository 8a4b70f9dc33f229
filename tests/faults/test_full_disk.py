"""A full or read-only disk is a clear error naming the path and the fix, and nothing is left half-written."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from indextts_core.errors import OutputError
from indextts_core.utils.fileio import atomic_write


def test_disk_full_during_a_checkpoint_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    target = tmp_path / "latest.pth"
    target.write_bytes(b"the previous checkpoint")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match=rf"{target}: cannot write: no space left on the device\. Nothing was "
                                          r"half-written .* Free space"):
        with atomic_write(target, "wb") as f:
            torch.save({"w": torch.zeros(4)}, f)
    assert target.read_bytes() == b"the previous checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pth"]  # no temporary file left


def test_read_only_output_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("tempfile.mkstemp", read_only)
    with pytest.raises(OutputError, match=r"report.json: cannot write: the file system is read-only\. .* make "
                                          r".* writable, or point run.output_dir or storage.uri elsewhere"):
        with atomic_write(tmp_path / "report.json") as f:
            f.write("{}")


def test_torch_save_failing_part_way_names_the_file(tmp_path: Path):
    class Boom:
        def __reduce__(self):
            raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file "
                               "data/0: file write failed")

    with pytest.raises(OutputError, match=r"gpt.pth: cannot write: the write failed part-way \(torch.save\)"):
        with atomic_write(tmp_path / "gpt.pth", "wb") as f:
            torch.save({"x": Boom()}, f)
    assert not list(tmp_path.iterdir())
