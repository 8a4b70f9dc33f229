"""The GPT-2 stack of IndexTTS-2, with the released model's parameter names and layouts.

As released, there are no token or position embeddings inside the stack (``wte`` deleted, ``wpe``
returning zeros): the caller passes ``inputs_embeds`` with its own segment-local positions, and
the causal mask is built per call, so sequences may be longer than GPT-2's nominal context.
Linear layers keep HF's ``Conv1D`` layout, weight ``(in, out)``, so ``gpt.h.{i}.*`` tensors load
and save unchanged.  Dropout (p=0.1 on the embeddings, attention weights and residual branches)
is active in train mode only, as in HF GPT-2.  Optional gradient checkpointing per block.

:meth:`GPT2.step` is the decoding path: it takes and returns each layer's cached keys and values
(``KV``) and an explicit boolean attention mask, so a prompt is encoded once and each new token
costs one position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

#: One layer's cached keys and values, each (B, heads, positions, head_dim).
KV = tuple[torch.Tensor, torch.Tensor]


class Conv1D(nn.Module):
    """y = x @ W + b with W stored as (in, out), like transformers' ``Conv1D``."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.addmm(self.bias, x.reshape(-1, x.size(-1)), self.weight)
        return out.view(*x.shape[:-1], self.weight.size(1))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.c_attn = Conv1D(dim, 3 * dim)
        self.c_proj = Conv1D(dim, dim)
        self.attn_dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        return tuple(z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))  # type: ignore

    def _out(self, y: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = y.shape
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(b, t, -1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_dropout if self.training else 0.0,
                                           is_causal=x.size(1) > 1)
        return self._out(y)

    def step(self, x: torch.Tensor, past: KV | None, mask: torch.Tensor) -> tuple[torch.Tensor, KV]:
        """New positions ``x`` (B, t, D) after the cached ones; ``mask`` (B, 1, t, past + t), True = attend."""
        q, k, v = self._qkv(x)
        if past is not None:
            k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        return self._out(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)), (k, v)


class MLP(nn.Module):
    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.c_fc = Conv1D(dim, 4 * dim)
        self.c_proj = Conv1D(4 * dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, eps: float = 1e-5):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, dropout)
        self.ln_2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

    def step(self, x: torch.Tensor, past: KV | None, mask: torch.Tensor) -> tuple[torch.Tensor, KV]:
        h, kv = self.attn.step(self.ln_1(x), past, mask)
        x = x + h
        return x + self.mlp(self.ln_2(x)), kv


class GPT2(nn.Module):
    def __init__(self, dim: int, layers: int, heads: int, dropout: float = 0.1):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList(Block(dim, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim, eps=1e-5)
        self.gradient_checkpointing = False

    def forward(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        x = self.drop(inputs_embeds)
        for block in self.h:
            if self.gradient_checkpointing and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.ln_f(x)

    def step(self, inputs_embeds: torch.Tensor, past: list[KV] | None, mask: torch.Tensor
             ) -> tuple[torch.Tensor, list[KV]]:
        """Run new positions against the cache (eval only): final hidden states and the grown cache.

        ``mask`` (B, 1, new, cached + new) says which keys each new position may attend to; the
        caller builds it (causal order, padding).  Every query must be allowed at least one key.
        """
        x, cache = inputs_embeds, []
        for i, block in enumerate(self.h):
            x, kv = block.step(x, past[i] if past is not None else None, mask)
            cache.append(kv)
        return self.ln_f(x), cache
