"""Training losses: masked text and mel cross-entropy, and mel top-1 accuracy.

Masks count, per sample, the real tokens plus the first stop token (positions < length + 1), so
padding contributes nothing; means are over all counted tokens of the batch.  ``official=True``
reproduces the only loss in the released code (IndexTTS v1): a plain mean over every position,
padding included (its targets are stop tokens), used by the parity tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from indextts_core.model.unified_voice import GPTOutput


@dataclass
class Losses:
    loss: torch.Tensor  # text_weight * text_loss + mel_weight * mel_loss
    text_loss: torch.Tensor
    mel_loss: torch.Tensor
    mel_top1: torch.Tensor  # share of counted mel positions whose argmax is the target
    text_tokens: int
    mel_tokens: int


def target_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B, width) bool: the real tokens and the first stop token of each sample."""
    return torch.arange(width, device=lengths.device)[None, :] < (lengths[:, None] + 1)


def token_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Unreduced cross-entropy (B, N) for logits (B, N, C)."""
    b, n, c = logits.shape
    return F.cross_entropy(logits.reshape(b * n, c).float(), targets.reshape(b * n), reduction="none").view(b, n)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


@dataclass
class TokenSums:
    """Per-sample sums over the counted positions (see :func:`target_mask`), each shaped (B,).

    Sums rather than means, so a caller can normalise over any set of samples: a whole optimizer
    step spread over micro-batches and ranks, or one language of a validation set.
    """

    text_loss: torch.Tensor
    text_tokens: torch.Tensor
    mel_loss: torch.Tensor
    mel_tokens: torch.Tensor
    mel_hits: torch.Tensor  # positions whose argmax is the target (no gradient)


def token_sums(out: GPTOutput) -> TokenSums:
    mel_ce = token_losses(out.mel_logits, out.mel_targets)
    mel_mask = target_mask(out.mel_lengths.to(mel_ce.device), mel_ce.size(1))
    if out.text_logits is None:
        raise ValueError("token_sums needs text logits (call the model with with_text_logits=True)")
    text_ce = token_losses(out.text_logits, out.text_targets)
    text_mask = target_mask(out.text_lengths.to(text_ce.device), text_ce.size(1))
    with torch.no_grad():
        hits = ((out.mel_logits.argmax(dim=-1) == out.mel_targets) & mel_mask).sum(dim=1)
    return TokenSums(text_loss=(text_ce * text_mask).sum(dim=1), text_tokens=text_mask.sum(dim=1),
                     mel_loss=(mel_ce * mel_mask).sum(dim=1), mel_tokens=mel_mask.sum(dim=1), mel_hits=hits)


def compute_losses(out: GPTOutput, text_weight: float = 0.2, mel_weight: float = 0.8,
                   official: bool = False) -> Losses:
    mel_ce = token_losses(out.mel_logits, out.mel_targets)
    mel_mask = target_mask(out.mel_lengths.to(mel_ce.device), mel_ce.size(1))
    if out.text_logits is not None:
        text_ce = token_losses(out.text_logits, out.text_targets)
        text_mask = target_mask(out.text_lengths.to(text_ce.device), text_ce.size(1))
    else:
        text_ce = mel_ce.new_zeros(mel_ce.size(0), 1)
        text_mask = torch.zeros_like(text_ce, dtype=torch.bool)
    if official:
        text_loss, mel_loss = text_ce.mean(), mel_ce.mean()
    else:
        text_loss, mel_loss = _masked_mean(text_ce, text_mask), _masked_mean(mel_ce, mel_mask)
    with torch.no_grad():
        hits = (out.mel_logits.argmax(dim=-1) == out.mel_targets) & mel_mask
        top1 = hits.sum() / mel_mask.sum().clamp(min=1)
    return Losses(
        loss=text_weight * text_loss + mel_weight * mel_loss, text_loss=text_loss, mel_loss=mel_loss,
        mel_top1=top1, text_tokens=int(text_mask.sum()), mel_tokens=int(mel_mask.sum()),
    )
