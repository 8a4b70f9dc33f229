"""Optimizer and learning-rate schedule.

Three AdamW groups, always in this order (a checkpoint's optimizer state depends on it):

* ``decay``: trainable matrices of the backbone (and the base text rows when they are not frozen);
* ``no_decay``: biases, LayerNorm weights and other vectors;
* ``new_rows``: the text rows the extended tokenizer added, with their own learning rate and weight
  decay (they start from a decomposition mean and have the most to learn).

Frozen tensors are not parameters at all, so no group holds them and weight decay cannot shrink them.
The schedule is a linear warm-up to the peak, then a cosine down to ``min_lr_ratio`` of it; a
run no longer than its ``warmup_steps`` gets a short warm-up instead (:func:`clipped_warmup`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from indextts_core.model.vocab import new_row_parameters


def param_groups(model: nn.Module, lr: float, weight_decay: float, new_rows_lr: float,
                 new_rows_weight_decay: float) -> list[dict[str, Any]]:
    new = new_row_parameters(model)  # type: ignore[arg-type]
    new_ids = {id(p) for p in new}
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad or id(p) in new_ids:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [
        {"name": "decay", "params": decay, "lr": lr, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0},
        {"name": "new_rows", "params": [p for p in new if p.requires_grad], "lr": new_rows_lr,
         "weight_decay": new_rows_weight_decay},
    ]
    return [g for g in groups if g["params"]]


def group_layout(groups: list[dict[str, Any]]) -> list[list[Any]]:
    """Names and parameter shapes of the groups (part of a checkpoint's fingerprint)."""
    return [[g["name"], [list(p.shape) for p in g["params"]]] for g in groups]


def build_optimizer(groups: list[dict[str, Any]], device: torch.device, betas: tuple[float, float] = (0.9, 0.999),
                    eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW, fused on CUDA and on the CPU (each parameter updated in one pass, no temporaries), torch's default
    elsewhere.

    On the CPU torch's default is the one-tensor-at-a-time loop, which allocates a temporary the size
    of each tensor in turn and is slower; the fused kernel gives the same numbers within float32
    rounding.  A resumed run keeps the choice its checkpoint's parameter groups recorded.
    """
    fused = device.type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, betas=betas, eps=eps, fused=fused or None)


def warmup_cosine(warmup_steps: int, total_steps: int, min_lr_ratio: float) -> Callable[[int], float]:
    """Multiplier of the peak learning rate for optimizer step ``step`` (0-based)."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def clipped_warmup(warmup_steps: int, total_steps: int) -> int:
    """The warm-up a run of ``total_steps`` optimizer steps uses: ``warmup_steps``, unless that is the whole run.

    A warm-up as long as the run or longer means the learning rate never reaches its peak: the
    seed's ``warmup_steps: 1000`` on a six-step run trains at a thousandth of it at most, and the
    loss does not move.  Such a run warms up for a tenth of its steps instead (rounded down, at
    least one): about the share a warm-up takes of a real run (1000 of some 10^4 steps), which
    leaves nine tenths of the run at and after the peak; under twenty steps that is one step, the
    peak from the first step (too few steps to warm up gradually).  A warm-up shorter than the run
    is kept as set.

    A function of the setting and the planned step count only (itself a function of the data, the
    seed, ``batch_tokens``, ``epochs`` and ``max_steps``), so a resumed run computes the same value;
    the trainer also records it in ``train.json`` and in every checkpoint, and a resumed run keeps
    the recorded one.
    """
    if total_steps <= 0 or warmup_steps < total_steps:
        return warmup_steps
    return max(1, total_steps // 10)  # integers: the same on every machine


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                    min_lr_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    # a closure, not an object: LambdaLR would save an object's fields and restore a stale total on resume
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup_steps, total_steps, min_lr_ratio))


def set_warmup(scheduler: torch.optim.lr_scheduler.LambdaLR, warmup_steps: int, total_steps: int,
               min_lr_ratio: float) -> None:
    """Give a :func:`build_scheduler` schedule another warm-up, keeping its position and the current learning
    rates: the next ``scheduler.step()`` follows the new curve (a resumed run keeps the warm-up its
    checkpoint recorded)."""
    factor = warmup_cosine(warmup_steps, total_steps, min_lr_ratio)
    scheduler.lr_lambdas = [factor] * len(scheduler.optimizer.param_groups)
