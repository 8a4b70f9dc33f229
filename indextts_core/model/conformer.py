"""The Conformer encoder of IndexTTS-2's speaker and emotion conditioners (WeNet style).

``exact_padding=True`` zeroes padded frames once more after the GLU, so every valid frame sees
exactly what it sees when its clip is encoded alone: a padded batch then gives each clip its solo
result.  For an unpadded clip it changes nothing, so solo results stay the official ones.

Input (B, T, 1024) features at 50 Hz with per-sample lengths; a stride-2 convolution halves time
(T' = (T - 1) // 2), then ``num_blocks`` pre-norm Conformer blocks (relative-position attention,
convolution module, feed-forward) and a final LayerNorm.  Returns (B, T', D) and the (B, 1, T')
validity mask.

Numerics follow the released model exactly, including two behaviours that make batched results
depend on padding: the convolution module zeroes padded frames *before* its first pointwise
convolution, whose bias makes them non-zero again before the depthwise convolution; and the
"relative" positional term uses the key's absolute sinusoid (the released code skips the
relative shift).  Dropout is 0 everywhere, as released.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def valid_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, max_len) bool, True where the frame index is below the sample's length."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class RelPositionalEncoding(nn.Module):
    """Scales the input by sqrt(d) and supplies sinusoidal position vectors (a persistent buffer)."""

    def __init__(self, d_model: int, max_len: int = 5000):
        super().__init__()
        self.xscale = math.sqrt(d_model)
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div)
        pe[:, 1::2] = torch.cos(position * div)
        self.register_buffer("pe", pe.unsqueeze(0))  # persistent: it is in the released state dict

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.size(1) >= self.pe.size(1):
            raise ValueError(f"conditioning input too long: {x.size(1)} frames after subsampling "
                             f"(the positional table holds {self.pe.size(1) - 1})")
        return x * self.xscale, self.pe[:, : x.size(1)]


class Conv2dSubsampling2(nn.Module):
    """Conv2d(1 -> D, kernel 3, stride 2) + ReLU over (time, feature), then a linear projection."""

    def __init__(self, idim: int, odim: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, odim, 3, 2), nn.ReLU())
        self.out = nn.Sequential(nn.Linear(odim * ((idim - 1) // 2), odim))
        self.pos_enc = RelPositionalEncoding(odim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.conv(x.unsqueeze(1))  # (B, D, T', F')
        b, c, t, f = x.shape
        x = self.out(x.transpose(1, 2).reshape(b, t, c * f))
        x, pos = self.pos_enc(x)
        return x, pos, mask[:, :, 2::2]


class RelPositionAttention(nn.Module):
    """Multi-head self-attention with learned biases u/v and a projected positional term."""

    def __init__(self, n_head: int, n_feat: int):
        super().__init__()
        self.h = n_head
        self.d_k = n_feat // n_head
        self.linear_q = nn.Linear(n_feat, n_feat)
        self.linear_k = nn.Linear(n_feat, n_feat)
        self.linear_v = nn.Linear(n_feat, n_feat)
        self.linear_out = nn.Linear(n_feat, n_feat)
        self.linear_pos = nn.Linear(n_feat, n_feat, bias=False)
        self.pos_bias_u = nn.Parameter(torch.empty(self.h, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.empty(self.h, self.d_k))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, H*dk) -> (B, H, T, dk)
        return x.view(x.size(0), -1, self.h, self.d_k).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        b = x.size(0)
        q = self.linear_q(x).view(b, -1, self.h, self.d_k)  # (B, T, H, dk)
        k = self._heads(self.linear_k(x))
        v = self._heads(self.linear_v(x))
        p = self._heads(self.linear_pos(pos))  # (1, H, T, dk)
        scores_ac = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))
        scores_bd = torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1))
        scores = (scores_ac + scores_bd) / math.sqrt(self.d_k)  # (B, H, T, T)
        pad = ~mask.unsqueeze(1)  # (B, 1, 1, T): masked keys
        attn = torch.softmax(scores.masked_fill(pad, float("-inf")), dim=-1).masked_fill(pad, 0.0)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, -1, self.h * self.d_k)
        return self.linear_out(out)


class ConvolutionModule(nn.Module):
    """Pointwise conv + GLU, depthwise conv (kernel 15), LayerNorm, SiLU, pointwise conv."""

    def __init__(self, channels: int, kernel_size: int = 15):
        super().__init__()
        self.pointwise_conv1 = nn.Conv1d(channels, 2 * channels, 1)
        self.depthwise_conv = nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2,
                                        groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.pointwise_conv2 = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, exact_padding: bool = False) -> torch.Tensor:
        x = x.transpose(1, 2).masked_fill(~mask, 0.0)  # (B, C, T); mask (B, 1, T)
        x = F.glu(self.pointwise_conv1(x), dim=1)
        if exact_padding:  # the released model lets the bias of pointwise_conv1 leak into valid frames here
            x = x.masked_fill(~mask, 0.0)
        x = self.depthwise_conv(x)
        x = F.silu(self.norm(x.transpose(1, 2))).transpose(1, 2)
        x = self.pointwise_conv2(x).masked_fill(~mask, 0.0)
        return x.transpose(1, 2)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w_1 = nn.Linear(dim, hidden)
        self.w_2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(F.silu(self.w_1(x)))


class ConformerBlock(nn.Module):
    def __init__(self, size: int, heads: int, linear_units: int):
        super().__init__()
        self.self_attn = RelPositionAttention(heads, size)
        self.feed_forward = FeedForward(size, linear_units)
        self.conv_module = ConvolutionModule(size)
        self.norm_ff = nn.LayerNorm(size, eps=1e-5)
        self.norm_mha = nn.LayerNorm(size, eps=1e-5)
        self.norm_conv = nn.LayerNorm(size, eps=1e-5)
        self.norm_final = nn.LayerNorm(size, eps=1e-5)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, exact_padding: bool = False) -> torch.Tensor:
        x = x + self.self_attn(self.norm_mha(x), mask, pos)
        x = x + self.conv_module(self.norm_conv(x), mask, exact_padding)
        x = x + self.feed_forward(self.norm_ff(x))
        return self.norm_final(x)


class ConformerEncoder(nn.Module):
    def __init__(self, input_size: int, output_size: int, attention_heads: int, linear_units: int,
                 num_blocks: int):
        super().__init__()
        self.embed = Conv2dSubsampling2(input_size, output_size)
        self.after_norm = nn.LayerNorm(output_size, eps=1e-5)  # registered before the blocks, as released
        self.encoders = nn.ModuleList(
            ConformerBlock(output_size, attention_heads, linear_units) for _ in range(num_blocks))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor,
                exact_padding: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, input_size), lengths (B,) -> (B, T', D), mask (B, 1, T')."""
        mask = valid_mask(lengths, x.size(1)).unsqueeze(1)
        x, pos, mask = self.embed(x, mask)
        for layer in self.encoders:
            x = layer(x, mask, pos, exact_padding)
        return self.after_norm(x), mask
