"""Micro-batch sizing from a memory probe, and the other automatic settings.

On a GPU, :func:`probe_micro_tokens` runs forward + backward on synthetic batches of the
*longest* sample in the data (one and two copies), reads the peak memory of each, and fits
``peak = fixed + per_sample * n``.  The micro-batch budget is the number of such samples that fits
in ``margin`` of the device memory, once the optimizer's state (two fp32 moments per trainable
parameter, allocated at the first step) is set aside, times the longest sample's padded cost.
The guess is then tried once; on out-of-memory it is halved until a probe passes.

Anything shorter than the longest sample costs less per token (attention grows faster than
linearly), so a budget that fits the longest fits the rest.  Gradient accumulation is then
whatever it takes to reach ``batch_tokens`` per optimizer step.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)


def fit_samples(peak_1: int, peak_2: int, capacity: int, reserved: int, margin: float) -> int:
    """How many longest samples fit, from the peaks measured with one and two of them."""
    per_sample = max(1, peak_2 - peak_1)
    fixed = peak_1 - per_sample
    usable = capacity * margin - reserved - fixed
    return max(1, int(usable // per_sample))


def probe_micro_tokens(measure: Callable[[int], int], longest_cost: int, capacity: int, reserved: int,
                       margin: float = 0.85, is_oom: Callable[[BaseException], bool] | None = None) -> int:
    """Micro-batch budget in padded tokens (see the module docstring).

    ``measure(n)`` runs forward + backward on ``n`` longest samples and returns the peak bytes.
    """
    from indextts_core.utils.oom import free_accelerator_memory
    from indextts_core.utils.oom import is_oom as default_is_oom

    is_oom = is_oom or default_is_oom
    try:
        p1 = measure(1)
    except Exception as e:  # noqa: BLE001 - filtered below
        if is_oom(e):
            free_accelerator_memory()
            log.warning("memory probe: one longest sample (%d tokens) does not fit; using a budget of one sample",
                        longest_cost)
            return longest_cost
        raise
    p2 = measure(2)
    n = fit_samples(p1, p2, capacity, reserved, margin)
    while n > 1:
        try:
            measure(n)
            break
        except Exception as e:  # noqa: BLE001
            if not is_oom(e):
                raise
        free_accelerator_memory()
        n //= 2
    log.info("memory probe: peak %.2f GiB with 1 longest sample, %.2f GiB with 2; budget %d samples = %d tokens "
             "per micro-batch (margin %.0f%%)", p1 / 2**30, p2 / 2**30, n, n * longest_cost, margin * 100)
    return n * longest_cost


def loader_workers(requested: int | None, world: int = 1) -> int:
    """Threads preparing batches: the CPU cores this rank may use, at most 4 (reading shards is light)."""
    if requested is not None:
        return max(0, requested)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores // max(1, world) - 1))
