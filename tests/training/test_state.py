"""Checkpoint files: retention keeps best + last N, writes are atomic, loading is weights-only; auto-sizing."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from indextts_core.errors import InputError
from indextts_core.training.autosize import fit_samples, probe_micro_tokens
from indextts_core.training.checkpointing import (
    CheckpointDir,
    fingerprint_mismatch,
    load_file,
    rng_state,
    set_rng_state,
)


def state(step: int) -> dict:
    return {"format": "indextts-train/1", "progress": {"step": step}, "model": {"w": torch.full((2,), float(step))}}


def test_retention_keeps_the_last_n_and_the_best(tmp_path: Path):
    d = CheckpointDir(tmp_path, keep=3)
    for step, best in [(10, True), (20, False), (30, True), (40, False), (50, False), (60, False)]:
        d.save(state(step), step, best)
    assert d.steps() == [40, 50, 60]
    assert load_file(d.best)["progress"]["step"] == 30  # the best survived its step file
    assert load_file(d.latest)["progress"]["step"] == 60
    assert os.stat(d.latest).st_ino == os.stat(d.step_path(60)).st_ino  # a link, not a copy
    assert d.resolve("auto") == d.latest and d.resolve(None) is None
    with pytest.raises(InputError, match="no such checkpoint"):
        d.resolve(tmp_path / "model_step5.pth")


def test_an_interrupted_save_leaves_the_previous_files_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    d = CheckpointDir(tmp_path)
    d.save(state(1), 1, True)

    def crash(obj, f, *a, **k):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        d.save(state(2), 2, True)
    monkeypatch.undo()
    assert d.steps() == [1] and load_file(d.latest)["progress"]["step"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_loading_is_weights_only_and_checks_the_format(tmp_path: Path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"format": "indextts-train/1", "x": Evil()}, path)
    with pytest.raises(InputError, match="weights_only=True"):
        load_file(path)
    torch.save({"a": torch.zeros(1)}, tmp_path / "gpt.pth")
    with pytest.raises(InputError, match="not a training checkpoint.*--warm-start"):
        load_file(tmp_path / "gpt.pth")


def test_generator_states_round_trip():
    saved = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(saved)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_fingerprint_mismatch_says_what_differs():
    diffs = fingerprint_mismatch({"vocab_size": 24000, "tokenizer_sha256": "a" * 64},
                                 {"vocab_size": 24001, "tokenizer_sha256": "a" * 64})
    assert diffs == ["the vocabulary size (vocab_size): checkpoint 24000, this run 24001"]


def test_memory_probe_arithmetic_and_backoff():
    gib = 2**30
    # 2 GiB fixed + 1 GiB per longest sample, 80 GiB card, 10 GiB of optimizer state, 85% usable
    assert fit_samples(3 * gib, 4 * gib, 80 * gib, 10 * gib, 0.85) == 56
    calls = []

    def measure(n: int) -> int:
        calls.append(n)
        if n > 20:  # the fitted guess is too optimistic: it is halved until it runs
            raise torch.OutOfMemoryError("CUDA out of memory")
        return (2 + n) * gib

    assert probe_micro_tokens(measure, longest_cost=700, capacity=80 * gib, reserved=10 * gib) == 14 * 700
    assert calls == [1, 2, 56, 28, 14]

    def never(n: int) -> int:
        raise torch.OutOfMemoryError("CUDA out of memory")

    assert probe_micro_tokens(never, longest_cost=700, capacity=gib, reserved=0) == 700  # one sample at a time
