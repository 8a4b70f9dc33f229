"""CAMPPlus (3D-Speaker CAM++), the speaker-style encoder IndexTTS-2 loads from ``campplus_cn_common.bin``.

Parameter names and shapes are the released ones (937 state-dict entries at full size), so the
official plain state dict loads strictly.  The network, for (B, T, 80) log-mel fbanks:

* FCM front end: a 2-D conv stem and two stages of residual blocks that stride over frequency
  only (time is kept), flattened to ``32 * (80 // 8)`` channels;
* a TDNN (kernel 5, stride 2 in time), then three densely connected blocks of CAM layers
  (12 / 24 / 16 layers, kernel 3, dilation 1 / 2 / 2), each followed by a transit layer that
  halves the channels.  A CAM layer gates a local convolution with context from the global mean
  plus 100-frame segment means (the last, partial segment averaged over its real frames);
* statistics pooling (mean and unbiased std over time) and a 1x1 conv with no bias, then a
  BatchNorm without affine parameters: the (B, 192) style vector.

:func:`style_features` is infer_v2's front end: Kaldi fbank (80 bins, no dither, 16 kHz) of the
prompt, minus its mean over time.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def _norm_relu(channels: int, affine: bool = True, relu: bool = True) -> nn.Sequential:
    """The released ``nonlinear`` containers: ``batchnorm`` (and ``relu``, which has no parameters)."""
    seq = nn.Sequential()
    seq.add_module("batchnorm", nn.BatchNorm1d(channels, affine=affine))
    if relu:
        seq.add_module("relu", nn.ReLU())
    return seq


class _ResBlock(nn.Module):
    """Residual 2-D block striding over frequency (dim 2) only."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=(stride, 1), bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class _FCM(nn.Module):
    def __init__(self, feat_dim: int, channels: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.layer1 = nn.Sequential(_ResBlock(channels, channels, 2), _ResBlock(channels, channels, 1))
        self.layer2 = nn.Sequential(_ResBlock(channels, channels, 2), _ResBlock(channels, channels, 1))
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.out_channels = channels * (feat_dim // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F, T) -> (B, C * F / 8, T)
        out = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        out = self.layer2(self.layer1(out))
        out = F.relu(self.bn2(self.conv2(out)))
        return out.flatten(1, 2)


class _TDNN(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int):
        super().__init__()
        self.linear = nn.Conv1d(in_channels, out_channels, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False)
        self.nonlinear = _norm_relu(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


class _CAM(nn.Module):
    """Context-aware masking: a local conv gated by global + segment-mean context."""

    def __init__(self, bn_channels: int, out_channels: int, kernel: int, dilation: int, segment: int = 100):
        super().__init__()
        self.segment = segment
        self.linear_local = nn.Conv1d(bn_channels, out_channels, kernel, padding=(kernel - 1) // 2 * dilation,
                                      dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(bn_channels, bn_channels // 2, 1)
        self.linear2 = nn.Conv1d(bn_channels // 2, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.size(-1)
        seg = F.avg_pool1d(x, self.segment, self.segment, ceil_mode=True)  # partial last segment: its real frames
        seg = seg.repeat_interleave(self.segment, dim=-1)[..., :t]
        context = F.relu(self.linear1(x.mean(-1, keepdim=True) + seg))
        return self.linear_local(x) * torch.sigmoid(self.linear2(context))


class _CAMDenseLayer(nn.Module):
    def __init__(self, in_channels: int, growth: int, bn_channels: int, kernel: int, dilation: int):
        super().__init__()
        self.nonlinear1 = _norm_relu(in_channels)
        self.linear1 = nn.Conv1d(in_channels, bn_channels, 1, bias=False)
        self.nonlinear2 = _norm_relu(bn_channels)
        self.cam_layer = _CAM(bn_channels, growth, kernel, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class _CAMDenseBlock(nn.ModuleDict):
    def __init__(self, layers: int, in_channels: int, growth: int, bn_channels: int, kernel: int, dilation: int):
        super().__init__({f"tdnnd{i + 1}": _CAMDenseLayer(in_channels + i * growth, growth, bn_channels, kernel,
                                                           dilation) for i in range(layers)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.values():
            x = torch.cat((x, layer(x)), dim=1)
        return x


class _Transit(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.nonlinear = _norm_relu(in_channels)
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class _StatsPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x.mean(dim=-1), x.std(dim=-1, unbiased=True)), dim=-1)


class _Dense(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        self.nonlinear = _norm_relu(out_channels, affine=False, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))


class CAMPPlus(nn.Module):
    """(B, T, feat_dim) fbank features -> (B, embedding_size) speaker-style vector (eval mode)."""

    def __init__(self, feat_dim: int = 80, embedding_size: int = 192, growth_rate: int = 32, bn_size: int = 4,
                 init_channels: int = 128):
        super().__init__()
        self.head = _FCM(feat_dim)
        x = nn.Sequential()
        x.add_module("tdnn", _TDNN(self.head.out_channels, init_channels, 5, stride=2))
        channels = init_channels
        for i, (layers, dilation) in enumerate(zip((12, 24, 16), (1, 2, 2)), 1):
            x.add_module(f"block{i}", _CAMDenseBlock(layers, channels, growth_rate, bn_size * growth_rate, 3,
                                                     dilation))
            channels += layers * growth_rate
            x.add_module(f"transit{i}", _Transit(channels, channels // 2))
            channels //= 2
        x.add_module("out_nonlinear", _norm_relu(channels))
        x.add_module("stats", _StatsPool())
        x.add_module("dense", _Dense(channels * 2, embedding_size))
        self.xvector = x

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.xvector(self.head(feats.transpose(1, 2)))


def style_features(wave_16k: torch.Tensor) -> torch.Tensor:
    """infer_v2's CAMPPlus input for one prompt: Kaldi fbank (80 bins, no dither) minus its mean, (T, 80).

    ``wave_16k``: (1, N) or (N,) float in [-1, 1] at 16 kHz (not scaled to the int16 range).
    """
    import torchaudio.compliance.kaldi as kaldi

    fbank = kaldi.fbank(wave_16k.reshape(1, -1).float(), num_mel_bins=80, dither=0, sample_frequency=16000)
    return fbank - fbank.mean(dim=0, keepdim=True)


def campplus_style(campplus: CAMPPlus, wave_16k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The CAMPPlus vector (1, 192) of a prompt and its input features (T', 80), as the official code makes them.

    ``wave_16k`` (1, N): the speaker path's 16 kHz signal (:func:`~indextts_core.data.prompt_audio.to_16k`
    of the 22.05 kHz reading); its mean-normalised Kaldi fbank (:func:`style_features`) goes through
    ``campplus``.  The decoder's style in synthesis and, on IndexTTS-2.5, the GPT's speaker input.
    """
    feat = style_features(wave_16k)
    return campplus(feat.unsqueeze(0)), feat


def load_campplus(path: str | Path, config: dict[str, int] | None = None) -> CAMPPlus:
    """The released ``campplus_cn_common.bin`` (a plain state dict), loaded strictly, in eval mode.

    ``config``: constructor arguments (the release uses the defaults; tiny test copies shrink the widths).
    """
    from indextts_core.model.checkpoint import load_state_dict_into
    from indextts_core.utils.safe_load import torch_load

    model = CAMPPlus(**(config or {}))
    load_state_dict_into(model, torch_load(path, "CAMPPlus speaker encoder"), Path(path))  # type: ignore[arg-type]
    return model.eval()
