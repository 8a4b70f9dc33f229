"""GPU out-of-memory backoff: one mechanism for every stage that runs batches on a GPU.

:func:`run_with_oom_backoff` calls ``step(batch_size)``; on an out-of-memory error it frees what
it can, halves the batch size and calls again, down to ``min_batch``.  If even ``min_batch``
runs out of memory it raises :class:`GpuOOM`, a small picklable error that an orchestrator can
retry (the next attempt starts again from a smaller size, see :func:`batch_for_attempt`).
Every backoff is reported to ``on_backoff`` and logged.  A loop that retries by itself (the
training step, which must also agree with the other ranks before retrying) uses
:func:`back_off`, the part after the error: free memory, halve, or give up at the floor.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

log = logging.getLogger(__name__)
T = TypeVar("T")


class GpuOOM(RuntimeError):
    """Out of memory even at the smallest allowed batch size."""

    def __init__(self, batch_size: int, detail: str = ""):
        self.batch_size = batch_size
        self.detail = detail
        super().__init__(f"out of GPU memory at batch size {batch_size} (the floor){': ' + detail if detail else ''}")

    def __reduce__(self):  # keep it picklable with its fields
        return (GpuOOM, (self.batch_size, self.detail))


@dataclass(frozen=True)
class BackoffEvent:
    """One halving: the batch size that ran out of memory and the one tried next."""

    failed_batch_size: int
    next_batch_size: int
    message: str


def is_oom(exc: BaseException) -> bool:
    """True for CUDA/MPS/CPU allocator out-of-memory errors."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower() and not isinstance(exc, GpuOOM)


def free_accelerator_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and torch.backends.mps.is_available():
        mps.empty_cache()


def run_with_oom_backoff(
    step: Callable[[int], T],
    batch_size: int,
    min_batch: int = 1,
    on_backoff: Callable[[BackoffEvent], None] | None = None,
) -> tuple[T, int]:
    """Run ``step(batch_size)``, halving the batch size on out-of-memory errors.

    Returns ``(result, batch_size_that_worked)``; callers keep using the returned size.
    Raises :class:`GpuOOM` when ``min_batch`` itself runs out of memory.
    """
    if batch_size < 1 or min_batch < 1:
        raise ValueError(f"batch sizes must be >= 1 (got batch_size={batch_size}, min_batch={min_batch})")
    min_batch = min(min_batch, batch_size)
    while True:
        try:
            return step(batch_size), batch_size
        except Exception as e:  # noqa: BLE001 - filtered right below
            if not is_oom(e):
                raise
            message = str(e).splitlines()[0][:200]
        # Outside the except block: the traceback, and the tensors its frames hold, are released.
        event = back_off(batch_size, min_batch, message)
        if on_backoff is not None:
            on_backoff(event)
        batch_size = event.next_batch_size


def back_off(batch_size: int, min_batch: int, message: str) -> BackoffEvent:
    """What follows an out-of-memory error at ``batch_size``: free what can be freed, then halve.

    Returns the halving (logged), never below ``min_batch``; raises :class:`GpuOOM` when
    ``batch_size`` is already ``min_batch``.  Call it outside the ``except`` block that caught the
    error, so that the failed attempt's frames (and their tensors) are gone first.
    """
    free_accelerator_memory()
    if batch_size <= min_batch:
        raise GpuOOM(batch_size, message) from None
    event = BackoffEvent(batch_size, max(min_batch, batch_size // 2), message)
    log.warning("out of memory at batch size %d; retrying at %d (%s)", event.failed_batch_size,
                event.next_batch_size, message)
    return event


def batch_for_attempt(batch_size: int, attempt: int, min_batch: int = 1) -> int:
    """Starting batch size for the ``attempt``-th try of a stage (1-based): halved per retry."""
    return max(min_batch, batch_size >> max(0, attempt - 1))
