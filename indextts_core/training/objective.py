"""The model call: one forward pass of the GPT on a :class:`~indextts_core.training.data.Batch`, and its loss sums."""

from __future__ import annotations

import torch
from torch import nn

from indextts_core.model.losses import TokenSums, token_sums
from indextts_core.training.data import Batch


def forward(model: nn.Module, batch: Batch, amp_dtype: torch.dtype | None = None, pad_at_end: bool = True):
    """The model's output (logits and targets) for ``batch``, under autocast to ``amp_dtype`` when given."""
    device_type = batch.codes.device.type
    with torch.autocast(device_type, dtype=amp_dtype, enabled=amp_dtype is not None):
        return model(batch.speaker_latents, batch.emotion_vectors, batch.text_ids, batch.text_lengths, batch.codes,
                     batch.code_lengths, pad_at_end=pad_at_end, langs=batch.langs)


def loss_sums(model: nn.Module, batch: Batch, amp_dtype: torch.dtype | None = None,
              pad_at_end: bool = True) -> TokenSums:
    """Per-sample sums of text and mel cross-entropy, target counts and mel hits (see :func:`token_sums`)."""
    return token_sums(forward(model, batch, amp_dtype, pad_at_end))
