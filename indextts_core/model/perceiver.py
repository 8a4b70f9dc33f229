"""Perceiver resampler: a fixed number of learned latents cross-attend to a variable-length context.

IndexTTS-2 uses it twice: 32 latents of width 1280 over the speaker Conformer's output, and one
latent of width 1024 over the emotion Conformer's output.  The latents attend to themselves and
the context together (keys/values = [latents; projected context]); the key mask therefore starts
with one ``True`` per latent.  Feed-forward is GEGLU with width ``int(dim * mult * 2 / 3)``;
the output goes through an RMSNorm (``normalize(x) * sqrt(dim) * gamma``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LatentAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int = 64):
        super().__init__()
        self.heads = heads
        self.scale = dim_head**-0.5
        inner = heads * dim_head
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _split(self, t: torch.Tensor) -> torch.Tensor:  # (B, N, H*d) -> (B, H, N, d)
        return t.view(t.size(0), t.size(1), self.heads, -1).transpose(1, 2)

    def forward(self, latents: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        kv_in = torch.cat((latents, context), dim=-2)
        k, v = self.to_kv(kv_in).chunk(2, dim=-1)
        q, k, v = self._split(self.to_q(latents)), self._split(k), self._split(v)
        sim = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        if mask is not None:
            sim = sim.masked_fill(~mask[:, None, None, :], -torch.finfo(sim.dtype).max)
        out = torch.matmul(sim.softmax(dim=-1), v)  # (B, H, N, d)
        return self.to_out(out.transpose(1, 2).reshape(out.size(0), out.size(2), -1))


class GEGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = x.chunk(2, dim=-1)
        return F.gelu(gate) * x


def feed_forward(dim: int, mult: float) -> nn.Sequential:
    inner = int(dim * mult * 2 / 3)
    return nn.Sequential(nn.Linear(dim, inner * 2), GEGLU(), nn.Linear(inner, dim))


class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) * self.scale * self.gamma


class PerceiverResampler(nn.Module):
    def __init__(self, dim: int, dim_context: int, num_latents: int, heads: int, ff_mult: float,
                 depth: int = 2, dim_head: int = 64):
        super().__init__()
        self.proj_context = nn.Linear(dim_context, dim) if dim_context != dim else nn.Identity()
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.ModuleList([LatentAttention(dim, heads, dim_head), feed_forward(dim, ff_mult)]) for _ in range(depth))
        self.norm = RMSNorm(dim)

    def forward(self, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """context (B, T, dim_context), mask (B, num_latents + T) -> (B, num_latents, dim)."""
        x = self.proj_context(context)
        latents = self.latents.unsqueeze(0).expand(x.size(0), -1, -1)
        for attn, ff in self.layers:
            latents = attn(latents, x, mask) + latents
            latents = ff(latents) + latents
        return self.norm(latents)
