"""The shared GPU out-of-memory backoff loop (core, framework-free)."""

from __future__ import annotations

import pickle

import pytest
import torch

from indextts_core.utils.oom import BackoffEvent, GpuOOM, batch_for_attempt, is_oom, run_with_oom_backoff


def _fits_at_most(limit: int, calls: list[int]):
    def step(batch_size: int) -> str:
        calls.append(batch_size)
        if batch_size > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {batch_size} GiB")
        return f"done at {batch_size}"
    return step


def test_halves_until_it_fits():
    calls: list[int] = []
    events: list[BackoffEvent] = []
    result, bs = run_with_oom_backoff(_fits_at_most(5, calls), 32, on_backoff=events.append)
    assert (result, bs) == ("done at 4", 4)
    assert calls == [32, 16, 8, 4]
    assert [(e.failed_batch_size, e.next_batch_size) for e in events] == [(32, 16), (16, 8), (8, 4)]
    assert "Tried to allocate 32 GiB" in events[0].message


def test_floor_raises_a_small_picklable_error():
    calls: list[int] = []
    with pytest.raises(GpuOOM) as e:
        run_with_oom_backoff(_fits_at_most(0, calls), 8, min_batch=2)
    assert calls == [8, 4, 2] and e.value.batch_size == 2
    assert e.value.__cause__ is None and e.value.__context__ is None  # no frames (and tensors) kept alive
    again = pickle.loads(pickle.dumps(e.value))
    assert isinstance(again, GpuOOM) and again.batch_size == 2


def test_other_errors_pass_through_untouched():
    def step(bs: int) -> None:
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        run_with_oom_backoff(step, 8)


def test_oom_detection():
    assert is_oom(torch.OutOfMemoryError("x"))
    assert is_oom(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert not is_oom(RuntimeError("shape mismatch"))
    assert not is_oom(GpuOOM(1))


def test_batch_for_attempt():
    assert [batch_for_attempt(32, a) for a in (1, 2, 3, 4)] == [32, 16, 8, 4]
    assert batch_for_attempt(4, 5, min_batch=2) == 2
