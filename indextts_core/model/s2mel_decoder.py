"""S2Mel's decoder: a flow-matching DiT with a WaveNet head, and infer_v2's Euler solver with CFG.

Names and layouts are the released ``s2mel.pth`` ``net.cfm`` ones (``estimator.*``), so it loads
strictly.  For noisy mel ``x`` (B, 80, T), the prompt mel ``prompt_x``, a time ``t``, the
CAMPPlus style (B, 192) and the regulated content ``mu`` (B, T, C) the estimator predicts the flow:

1. ``t1``: a sinusoidal time embedding (``1000 t``, cos first) through Linear-SiLU-Linear;
2. ``x_in = cond_x_merge_linear([x, prompt_x, cond_projection(mu), style])`` per frame;
3. a transformer of ``depth`` blocks, each ``h = x + attn(adaLN(x, t1))``, ``x = h + ffn(adaLN(h, t1))``:
   adaLN is ``w * RMSNorm(x) + b`` with ``[w, b]`` from ``t1``; attention with interleaved
   rotary pairs (base 10000, positions 0..T-1), a key mask from ``x_lens`` only; SwiGLU FFN;
   U-ViT skips (the first half pushes, the second half pops and merges with ``skip_in_linear``);
4. a long skip ``skip_linear([x_res, x])``, then the WaveNet head (reflect-padded weight-normed
   convolutions gated by a second time embedding), an adaLN final layer and a 1x1 conv to 80 bins.

:func:`solve_euler` is ``cfm.inference`` on given noise (inject it: devices draw differently):
the prompt frames of ``x`` zeroed, at each step one estimator call on the stacked conditional
and unconditional batch, ``(1 + r) cond - r uncond``, an Euler step, prompt frames zeroed again.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ROPE_BASE = 10000
#: ``input_pos`` buffer length of the release (``ModelArgs(block_size=16384)``): the most frames.
MAX_FRAMES = 16384


class WeightNormLinear(nn.Module):
    """``weight_norm(nn.Linear)`` with the old parameter names (``weight_g``, ``weight_v``)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n_out))
        self.weight_g = nn.Parameter(torch.ones(n_out, 1))
        self.weight_v = nn.Parameter(torch.randn(n_out, n_in) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, torch._weight_norm(self.weight_v, self.weight_g, 0), self.bias)


class _WNConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int):
        super().__init__()
        self.dilation = dilation
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.weight_g = nn.Parameter(torch.ones(c_out, 1, 1))
        self.weight_v = nn.Parameter(torch.randn(c_out, c_in, kernel) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, torch._weight_norm(self.weight_v, self.weight_g, 0), self.bias, dilation=self.dilation)


class SConv1d(nn.Module):
    """A weight-normed conv with reflect padding of the whole receptive field (``(k-1) d``; more on the left)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int = 1):
        super().__init__()
        self.conv = nn.Module()
        self.conv.conv = _WNConv(c_in, c_out, kernel, dilation)
        self.total = (kernel - 1) * dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        right = self.total // 2
        left = self.total - right
        if x.size(-1) <= max(left, right):  # reflect needs more frames than the pad: zero-pad first
            extra = max(left, right) - x.size(-1) + 1
            x = F.pad(F.pad(x, (0, extra)), (left, right), mode="reflect")[..., : x.size(-1) + left + right]
        else:
            x = F.pad(x, (left, right), mode="reflect")
        return self.conv.conv(x)


class WaveNet(nn.Module):
    def __init__(self, hidden: int, kernel: int, dilation_rate: int, layers: int):
        super().__init__()
        self.hidden = hidden
        self.in_layers = nn.ModuleList(SConv1d(hidden, 2 * hidden, kernel, dilation_rate ** i) for i in range(layers))
        self.res_skip_layers = nn.ModuleList(SConv1d(hidden, 2 * hidden if i < layers - 1 else hidden, 1)
                                             for i in range(layers))
        self.cond_layer = SConv1d(hidden, 2 * hidden * layers, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        g = self.cond_layer(g)
        h = self.hidden
        for i, (inp, res_skip) in enumerate(zip(self.in_layers, self.res_skip_layers)):
            z = inp(x) + g[:, 2 * h * i: 2 * h * (i + 1)]
            acts = res_skip(torch.tanh(z[:, :h]) * torch.sigmoid(z[:, h:]))
            if i < len(self.in_layers) - 1:
                x = (x + acts[:, :h]) * mask
                out = out + acts[:, h:]
            else:
                out = out + acts
        return out * mask


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        half = freq_dim // 2
        self.register_buffer("freqs", torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = 1000 * t[:, None].float() * self.freqs[None]
        return self.mlp(torch.cat((torch.cos(args), torch.sin(args)), dim=-1))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(torch.mean(xf * xf, dim=-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class AdaLN(nn.Module):
    """``w * RMSNorm(x) + b``, ``[w, b]`` projected from the time embedding (no ``1 +``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.project_layer = nn.Linear(dim, 2 * dim)
        self.norm = RMSNorm(dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        w, b = self.project_layer(c).split(x.size(-1), dim=-1)
        return w * self.norm(x) + b


def rotary_table(positions: int, head_dim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(positions, head_dim / 2, 2) cos/sin of each interleaved pair."""
    freqs = 1.0 / (ROPE_BASE ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    angles = torch.outer(torch.arange(positions), freqs)
    polar = torch.polar(torch.ones_like(angles), angles)
    return torch.stack((polar.real, polar.imag), dim=-1).to(dtype)


def apply_rotary(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """x (B, T, heads, head_dim): rotate the pairs (x[2i], x[2i+1]) by position."""
    xs = x.float().reshape(*x.shape[:-1], -1, 2)
    cs = table.view(1, xs.size(1), 1, xs.size(3), 2)
    out = torch.stack((xs[..., 0] * cs[..., 0] - xs[..., 1] * cs[..., 1],
                       xs[..., 1] * cs[..., 0] + xs[..., 0] * cs[..., 1]), dim=-1)
    return out.flatten(3).type_as(x)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.wqkv = nn.Linear(dim, 3 * dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, table: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (z.view(b, t, self.heads, self.head_dim) for z in self.wqkv(x).split(d, dim=-1))
        q, k = apply_rotary(q, table), apply_rotary(k, table)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        return self.wo(y.transpose(1, 2).reshape(b, t, d))


class FeedForward(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        hidden = int(2 * 4 * dim / 3)
        hidden = hidden if hidden % 256 == 0 else hidden + 256 - hidden % 256
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attention = Attention(dim, heads)
        self.feed_forward = FeedForward(dim)
        self.ffn_norm = AdaLN(dim)
        self.attention_norm = AdaLN(dim)
        self.skip_in_linear = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor, table: torch.Tensor, mask: torch.Tensor,
                skip: torch.Tensor | None) -> torch.Tensor:
        if skip is not None:
            x = self.skip_in_linear(torch.cat((x, skip), dim=-1))
        h = x + self.attention(self.attention_norm(x, c), table, mask)
        return h + self.feed_forward(self.ffn_norm(h, c))


class Transformer(nn.Module):
    def __init__(self, dim: int, heads: int, depth: int):
        super().__init__()
        self.layers = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = AdaLN(dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor, table: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        depth = len(self.layers)
        stack: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            x = layer(x, c, table, mask, stack.pop() if i > depth // 2 else None)
            if i < depth // 2:
                stack.append(x)
        return self.norm(x, c)


class FinalLayer(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.linear = WeightNormLinear(hidden, hidden)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        x = F.layer_norm(x, (x.size(-1),), eps=1e-6) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)
        return self.linear(x)


class Estimator(nn.Module):
    """The DiT of ``s2mel.cfm`` (``final_layer_type: wavenet``, U-ViT and long skips, style as a channel)."""

    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        dit, wn = cfg["DiT"], cfg["wavenet"]
        self._check(cfg)
        h, mels = int(dit["hidden_dim"]), int(dit["in_channels"])
        self.heads = int(dit["num_heads"])
        self.register_buffer("input_pos", torch.arange(MAX_FRAMES))
        self.transformer = Transformer(h, self.heads, int(dit["depth"]))
        self.x_embedder = WeightNormLinear(mels, h)  # in the checkpoint; inference never reads it
        self.cond_embedder = nn.Embedding(int(dit["content_codebook_size"]), h)  # likewise
        self.cond_projection = nn.Linear(int(dit["content_dim"]), h)
        self.t_embedder = TimestepEmbedder(h)
        self.t_embedder2 = TimestepEmbedder(int(wn["hidden_dim"]))
        self.conv1 = nn.Linear(h, int(wn["hidden_dim"]))
        self.conv2 = nn.Conv1d(int(wn["hidden_dim"]), mels, 1)
        self.wavenet = WaveNet(int(wn["hidden_dim"]), int(wn["kernel_size"]), int(wn["dilation_rate"]),
                               int(wn["num_layers"]))
        self.final_layer = FinalLayer(int(wn["hidden_dim"]))
        self.res_projection = nn.Linear(h, int(wn["hidden_dim"]))
        self.content_mask_embedder = nn.Embedding(1, h)  # likewise
        self.skip_linear = nn.Linear(h + mels, h)
        self.cond_x_merge_linear = nn.Linear(h + 2 * mels + int(cfg["style_encoder"]["dim"]), h)
        self._table: torch.Tensor | None = None

    @staticmethod
    def _check(cfg: dict[str, Any]) -> None:
        from indextts_core.errors import InputError

        dit, wn = cfg["DiT"], cfg["wavenet"]
        unsupported = {k: dit.get(k) for k, want in (("time_as_token", False), ("style_as_token", False),
                                                     ("is_causal", False), ("final_layer_type", "wavenet"),
                                                     ("long_skip_connection", True), ("uvit_skip_connection", True),
                                                     ("style_condition", True)) if dit.get(k, want) != want}
        if unsupported:
            raise InputError(f"s2mel.DiT: {unsupported} differ from the released configuration, which is the only "
                             "one implemented")
        if int(wn["hidden_dim"]) != int(dit["hidden_dim"]) or (int(dit["hidden_dim"]) // int(dit["num_heads"])) % 2:
            raise InputError("s2mel: wavenet.hidden_dim must equal DiT.hidden_dim, and DiT.hidden_dim / num_heads "
                             "must be even")

    def _rotary(self, frames: int, device: torch.device) -> torch.Tensor:
        head_dim = self.transformer.layers[0].attention.head_dim
        if self._table is None or self._table.device != device:
            self._table = rotary_table(MAX_FRAMES, head_dim).to(device)
        return self._table[:frames]

    def forward(self, x: torch.Tensor, prompt_x: torch.Tensor, x_lens: torch.Tensor, t: torch.Tensor,
                style: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        _, _, frames = x.shape
        if frames > MAX_FRAMES:
            raise ValueError(f"{frames} mel frames: the decoder handles at most {MAX_FRAMES}")
        t1 = self.t_embedder(t)
        xt = x.transpose(1, 2)
        x_in = torch.cat((xt, prompt_x.transpose(1, 2), self.cond_projection(mu),
                          style[:, None, :].expand(-1, frames, -1)), dim=-1)
        x_in = self.cond_x_merge_linear(x_in)
        valid = torch.arange(frames, device=x.device)[None, :] < x_lens.to(x.device)[:, None]  # (B or 1, T)
        mask = valid[:, None, None, :].expand(-1, 1, frames, -1)  # keys only, every query
        x_res = self.transformer(x_in, t1.unsqueeze(1), self._rotary(frames, x.device), mask)
        x_res = self.skip_linear(torch.cat((x_res, xt), dim=-1))
        h = self.conv1(x_res).transpose(1, 2)
        h = self.wavenet(h, valid[:, None, :].to(h.dtype), self.t_embedder2(t).unsqueeze(2)).transpose(1, 2)
        h = h + self.res_projection(x_res)
        return self.conv2(self.final_layer(h, t1).transpose(1, 2))


class FlowMatching(nn.Module):
    """``s2mel.cfm``: the estimator and the Euler solver."""

    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        self.estimator = Estimator(cfg)

    @torch.no_grad()
    def solve_euler(self, noise: torch.Tensor, x_lens: torch.Tensor, prompt: torch.Tensor, mu: torch.Tensor,
                    style: torch.Tensor, steps: int, cfg_rate: float = 0.7) -> torch.Tensor:
        """Integrate from ``noise`` (1, 80, T) over ``steps`` Euler steps; the prompt's frames stay 0.

        ``cfg_rate > 0``: classifier-free guidance, ``(1 + r) cond - r uncond`` (the release supports
        only a batch of one then).
        """
        t_span = torch.linspace(0, 1, steps + 1, device=noise.device)
        t = t_span[0]
        tp = prompt.size(-1)
        prompt_x = torch.zeros_like(noise)
        prompt_x[..., :tp] = prompt[..., :tp]
        x = noise.clone()
        x[..., :tp] = 0
        for step in range(1, steps + 1):
            dt = t_span[step] - t_span[step - 1]
            if cfg_rate > 0:
                stacked = self.estimator(torch.cat((x, x)), torch.cat((prompt_x, torch.zeros_like(prompt_x))), x_lens,
                                         torch.stack((t, t)), torch.cat((style, torch.zeros_like(style))),
                                         torch.cat((mu, torch.zeros_like(mu))))
                cond, uncond = stacked.chunk(2, dim=0)
                dphi = (1.0 + cfg_rate) * cond - cfg_rate * uncond
            else:
                dphi = self.estimator(x, prompt_x, x_lens, t.unsqueeze(0), style, mu)
            x = x + dt * dphi
            t = t + dt
            x[:, :, :tp] = 0
        return x


def load_decoder(path: Any, s2mel_cfg: dict[str, Any]) -> FlowMatching:
    """``net.cfm`` of a released ``s2mel.pth``, loaded strictly, in eval mode."""
    from pathlib import Path

    from indextts_core.model.checkpoint import load_state_dict_into
    from indextts_core.model.s2mel import load_s2mel_net

    model = FlowMatching(s2mel_cfg)
    load_state_dict_into(model, load_s2mel_net(path)["cfm"], Path(f"{path}[net.cfm]"))  # type: ignore[arg-type]
    return model.eval()
