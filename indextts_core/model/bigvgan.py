"""BigVGAN v2, the vocoder IndexTTS-2 uses (80-band log-mel at 22.05 kHz -> waveform, 256x).

Parameter names are those of ``bigvgan_generator.pt`` (``{"generator": state_dict}``, weight-norm
form ``weight_g``/``weight_v``), so the released folder (``config.json`` + ``bigvgan_generator.pt``)
loads strictly; a checkpoint saved after ``remove_weight_norm`` (plain ``weight``) loads too.  The
network, as the official torch path computes it (no fused CUDA kernel):

* ``conv_pre`` (k7), then per stage a transposed conv (stride ``u``) and the mean of the
  stage's AMP blocks (one per resblock kernel size);
* an AMP block adds, for each dilation, ``conv2(act(conv1_d(act(x))))`` to ``x``;
* every activation is anti-aliased: 2x up-sampling with a 12-tap Kaiser-sinc filter, SnakeBeta
  ``x + sin(exp(alpha) x)^2 / (exp(beta) + 1e-9)``, 2x down-sampling with the same kind of filter;
* a last activation, ``conv_post`` (k7, no bias) and ``clamp(-1, 1)`` (``use_tanh_at_final: false``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from indextts_core.errors import InputError

GENERATOR_FILE = "bigvgan_generator.pt"
CONFIG_FILE = "config.json"
_TAPS = 12


def kaiser_sinc_filter(cutoff: float, half_width: float, taps: int = _TAPS) -> torch.Tensor:
    """A (1, 1, taps) low-pass filter: a Kaiser-windowed sinc, normalised to unit sum."""
    half = taps // 2
    atten = 2.285 * (half - 1) * math.pi * (4 * half_width) + 7.95
    beta = 0.1102 * (atten - 8.7) if atten > 50 else (0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21)
                                                       if atten >= 21 else 0.0)
    window = torch.kaiser_window(taps, beta=beta, periodic=False)
    time = torch.arange(-half, half) + 0.5 if taps % 2 == 0 else torch.arange(taps) - half
    filt = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
    return (filt / filt.sum()).view(1, 1, taps)


class _UpSample(nn.Module):
    def __init__(self, ratio: int = 2):
        super().__init__()
        self.ratio = ratio
        self.pad = _TAPS // ratio - 1
        self.crop_left = self.pad * ratio + (_TAPS - ratio) // 2
        self.crop_right = self.pad * ratio + (_TAPS - ratio + 1) // 2
        self.register_buffer("filter", kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.size(1)
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        x = self.ratio * F.conv_transpose1d(x, self.filter.expand(c, -1, -1), stride=self.ratio, groups=c)
        return x[..., self.crop_left:-self.crop_right]


class _LowPass(nn.Module):
    def __init__(self, ratio: int = 2):
        super().__init__()
        self.stride = ratio
        self.register_buffer("filter", kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.size(1)
        x = F.pad(x, (_TAPS // 2 - 1, _TAPS // 2), mode="replicate")
        return F.conv1d(x, self.filter.expand(c, -1, -1), stride=self.stride, groups=c)


class _DownSample(nn.Module):
    def __init__(self, ratio: int = 2):
        super().__init__()
        self.lowpass = _LowPass(ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lowpass(x)


class SnakeBeta(nn.Module):
    """``x + sin(exp(alpha) x)^2 / (exp(beta) + 1e-9)`` per channel (log-scale parameters)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.exp(self.alpha)[None, :, None]
        beta = torch.exp(self.beta)[None, :, None]
        return x + (1.0 / (beta + 1e-9)) * torch.sin(x * alpha).pow(2)


class Activation1d(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.act = SnakeBeta(channels)
        self.upsample = _UpSample()
        self.downsample = _DownSample()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.act(self.upsample(x)))


class WNConv1d(nn.Module):
    """Weight-normed conv (``weight_g``, ``weight_v``); ``transposed`` for the up-sampling convs."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, dilation: int = 1, padding: int = 0,
                 bias: bool = True, transposed: bool = False):
        super().__init__()
        self.stride, self.dilation, self.padding, self.transposed = stride, dilation, padding, transposed
        shape = (c_in, c_out, kernel) if transposed else (c_out, c_in, kernel)
        self.weight_v = nn.Parameter(torch.randn(shape) * 0.01)
        self.weight_g = nn.Parameter(self.weight_v.detach().flatten(1).norm(dim=1).view(-1, 1, 1).clone())
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch._weight_norm(self.weight_v, self.weight_g, 0)
        if self.transposed:
            return F.conv_transpose1d(x, w, self.bias, stride=self.stride, padding=self.padding)
        return F.conv1d(x, w, self.bias, stride=self.stride, padding=self.padding, dilation=self.dilation)


class AMPBlock1(nn.Module):
    def __init__(self, channels: int, kernel: int, dilations: list[int]):
        super().__init__()
        self.convs1 = nn.ModuleList(WNConv1d(channels, channels, kernel, dilation=d, padding=(kernel * d - d) // 2)
                                    for d in dilations)
        self.convs2 = nn.ModuleList(WNConv1d(channels, channels, kernel, padding=(kernel - 1) // 2)
                                    for _ in dilations)
        self.activations = nn.ModuleList(Activation1d(channels) for _ in range(2 * len(dilations)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
            x = x + c2(self.activations[2 * k + 1](c1(self.activations[2 * k](x))))
        return x


class BigVGAN(nn.Module):
    """(B, num_mels, T) log-mel -> (B, 1, T * prod(upsample_rates)) waveform in [-1, 1]."""

    def __init__(self, h: dict[str, Any]):
        super().__init__()
        self._check(h)
        ch = int(h["upsample_initial_channel"])
        self.num_kernels = len(h["resblock_kernel_sizes"])
        self.use_tanh = bool(h.get("use_tanh_at_final", True))
        self.conv_pre = WNConv1d(int(h["num_mels"]), ch, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (u, k) in enumerate(zip(h["upsample_rates"], h["upsample_kernel_sizes"])):
            self.ups.append(nn.ModuleList([WNConv1d(ch // 2 ** i, ch // 2 ** (i + 1), k, stride=u, padding=(k - u) // 2,
                                                    transposed=True)]))
            for kernel, dilations in zip(h["resblock_kernel_sizes"], h["resblock_dilation_sizes"]):
                self.resblocks.append(AMPBlock1(ch // 2 ** (i + 1), kernel, dilations))
        last = ch // 2 ** len(h["upsample_rates"])
        self.activation_post = Activation1d(last)
        self.conv_post = WNConv1d(last, 1, 7, padding=3, bias=bool(h.get("use_bias_at_final", True)))
        self.hop = math.prod(h["upsample_rates"])

    @staticmethod
    def _check(h: dict[str, Any]) -> None:
        wrong = {k: h.get(k) for k, want in (("resblock", "1"), ("activation", "snakebeta"), ("snake_logscale", True))
                 if h.get(k) != want}
        if wrong:
            raise InputError(f"BigVGAN config: {wrong} differ from the release (resblock '1', snakebeta, log scale), "
                             "the only variant implemented")

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(mel)
        for i, up in enumerate(self.ups):
            x = up[0](x)
            blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
            xs = blocks[0](x)
            for block in blocks[1:]:
                xs = xs + block(x)
            x = xs / self.num_kernels
        x = self.conv_post(self.activation_post(x))
        return torch.tanh(x) if self.use_tanh else torch.clamp(x, -1.0, 1.0)


def _to_weight_norm(sd: dict[str, torch.Tensor], model: BigVGAN) -> dict[str, torch.Tensor]:
    """A plain-``weight`` state dict (saved after ``remove_weight_norm``) in the weight-norm form."""
    expected = model.state_dict()
    out = {}
    for k, v in sd.items():
        base = k[: -len(".weight")] if k.endswith(".weight") else None
        if base is not None and f"{base}.weight_v" in expected:
            out[f"{base}.weight_v"] = v
            out[f"{base}.weight_g"] = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
        else:
            out[k] = v
    return out


def load_bigvgan(folder: str | Path) -> BigVGAN:
    """The vocoder of a BigVGAN folder (``config.json`` + ``bigvgan_generator.pt``), strictly, eval mode."""
    from indextts_core.model.checkpoint import load_state_dict_into
    from indextts_core.utils.safe_load import torch_load

    folder = Path(folder)
    for name in (CONFIG_FILE, GENERATOR_FILE):
        if not (folder / name).is_file():
            raise InputError(f"{folder}: not a BigVGAN folder ({name} missing)")
    model = BigVGAN(json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")))
    obj = torch_load(folder / GENERATOR_FILE, "BigVGAN generator")
    sd = obj.get("generator") if isinstance(obj, dict) else None
    if not isinstance(sd, dict):
        raise InputError(f"{folder / GENERATOR_FILE}: expected {{'generator': state_dict}}")
    if not any(k.endswith(".weight_v") for k in sd):
        sd = _to_weight_norm(sd, model)
    load_state_dict_into(model, sd, folder / GENERATOR_FILE)  # type: ignore[arg-type]
    return model.eval()


def to_pcm(wav: torch.Tensor) -> torch.Tensor:
    """infer_v2's per-segment post-processing: (B, 1, N) -> (1, N) on the int16 scale, clamped to +-32767."""
    return torch.clamp(32767 * wav.squeeze().unsqueeze(0), -32767.0, 32767.0)
