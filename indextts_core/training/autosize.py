"""Every "auto" setting of a run, resolved: micro-batch size (memory probe), loader threads, mixed precision.

:func:`micro_budget` turns ``micro_batch_tokens`` ("auto" or a number) into the budget in use:
a number is taken as is; "auto" is ``batch_tokens / ranks`` off GPU and, on a GPU, at most what
the memory probe allows.

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
import math
import os
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn

from indextts_core.errors import InputError
from indextts_core.training.data import Batch
from indextts_core.training.objective import loss_sums

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


def probe_model(model: nn.Module, params: Sequence[nn.Parameter], device: torch.device, *, longest_text: int,
                longest_code: int, longest_cost: int, latents: int, vocab_size: int, mel_codes: int,
                amp_dtype: torch.dtype | None, pad_at_end: bool, margin: float) -> int:
    """:func:`probe_micro_tokens` for ``model`` on CUDA ``device``, on synthetic batches of the longest sample.

    The CUDA random generator is left as it was, so probing does not change the run's draws.
    """
    d = model.cfg.model_dim
    reserved = sum(2 * p.numel() * 4 for p in params)  # AdamW's two fp32 moments

    def measure(n: int) -> int:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        g = torch.Generator(device="cpu").manual_seed(0)
        speaker = torch.randn(n, latents, d, generator=g).to(device)
        emo = torch.randn(n, d, generator=g).to(device)
        text = torch.randint(2, vocab_size, (n, longest_text), generator=g).to(device)
        codes = torch.randint(0, mel_codes - 2, (n, longest_code), generator=g).to(device)
        batch = Batch(speaker, emo, text, torch.full((n,), longest_text, device=device), codes,
                      torch.full((n,), longest_code, device=device), [], [], [], 0, 0,
                      torch.zeros(n, dtype=torch.long, device=device) if model.cfg.is_v25 else None)
        try:
            ts = loss_sums(model, batch, amp_dtype, pad_at_end)
            (ts.text_loss.sum() + ts.mel_loss.sum()).backward()
            torch.cuda.synchronize(device)
            return torch.cuda.max_memory_allocated(device)
        finally:
            model.zero_grad(set_to_none=True)

    rng = torch.cuda.get_rng_state(device)
    try:
        capacity = torch.cuda.get_device_properties(device).total_memory
        return probe_micro_tokens(measure, longest_cost, capacity, reserved, margin)
    finally:
        torch.cuda.set_rng_state(rng, device)


def micro_budget(setting: int | Literal["auto"] | None, batch_tokens: int, world: int, device: torch.device,
                 probe: Callable[[], int]) -> int:
    """The micro-batch budget for ``micro_batch_tokens`` = ``setting`` (see the module docstring)."""
    if setting not in (None, "auto"):
        return int(setting)
    per_rank = math.ceil(batch_tokens / world)
    if device.type != "cuda":
        return per_rank
    return min(per_rank, probe())


def loader_workers(requested: int | Literal["auto"] | None, world: int = 1) -> int:
    """Threads preparing batches: the CPU cores this rank may use, at most 4 (reading shards is light)."""
    if requested not in (None, "auto"):
        return max(0, int(requested))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores // max(1, world) - 1))


def resolve_amp(mode: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a gradient scaler is needed) for ``amp`` = ``mode`` on ``device``."""
    if mode == "off":
        return None, False
    if device.type != "cuda":
        if mode == "fp16":
            raise InputError("train.amp: fp16 needs a CUDA device (use bf16 or off on CPU)")
        return (torch.bfloat16, False) if mode == "bf16" else (None, False)
    if mode == "fp16" or (mode == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16, True
    return torch.bfloat16, False
