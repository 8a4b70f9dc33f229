"""S2Mel, the stage between the GPT and the vocoder: the parts before the flow-matching decoder
(:mod:`indextts_core.model.s2mel_decoder`).

With the released ``s2mel.pth`` layout (``{"net": {"cfm": ..., "length_regulator": ...,
"gpt_layer": ...}}``) and the ``s2mel:`` section of ``config.yaml``:

* :func:`mel_spectrogram`: the 22.05 kHz log-mel of the speaker prompt (the reference mel the
  decoder continues): reflect padding of ``(n_fft - hop) / 2``, STFT without centring (periodic
  Hann window), magnitude with a 1e-9 floor inside the root, Slaney mel filters, ``log(max(x, 1e-5))``;
* :class:`LengthRegulator` (``InterpolateRegulator`` as infer_v2 uses it): a projection of the
  1024-wide content to the decoder's width, nearest-neighbour stretching to the target frame count,
  ``len(sampling_ratios)`` blocks of Conv1d(k3) + GroupNorm(1) + Mish, a 1x1 conv, then the
  length mask.  A batch is stretched to its longest target and normalised over it, as released
  (infer_v2 runs one item at a time);
* :func:`gpt_layer`: three affine maps 1280 -> 256 -> 128 -> 1024 (no activation) that bring the GPT
  latent to the codec's width;
* :func:`target_lengths`: infer_v2's mel frames per code, ``(code_lens * 1.72).long()`` (truncated).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from indextts_core.errors import InputError

#: infer_v2's mel frames per semantic code (22050 / 256 = 86.13 frames per s, 50 codes per s).
FRAMES_PER_CODE = 1.72


@dataclass(frozen=True)
class MelSpec:
    """``s2mel.preprocess_params`` of config.yaml."""

    sample_rate: int = 22050
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 256
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = None

    @classmethod
    def from_config(cls, params: dict[str, Any]) -> MelSpec:
        spect = params.get("spect_params", {})
        fmax = spect.get("fmax", "None")
        # infer_v2 maps the string "None" (what the YAML holds) to None and any other value to 8000
        return cls(sample_rate=int(params.get("sr", 22050)), n_fft=int(spect.get("n_fft", 1024)),
                   win_length=int(spect.get("win_length", 1024)), hop_length=int(spect.get("hop_length", 256)),
                   n_mels=int(spect.get("n_mels", 80)), fmin=float(spect.get("fmin", 0)),
                   fmax=None if fmax in (None, "None") else 8000.0)


def mel_spectrogram(wave: torch.Tensor, spec: MelSpec = MelSpec()) -> torch.Tensor:
    """(B, N) waveform at ``spec.sample_rate`` -> (B, n_mels, N // hop) log-mel."""
    import torchaudio.functional as AF

    pad = (spec.n_fft - spec.hop_length) // 2
    y = F.pad(wave.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    window = torch.hann_window(spec.win_length, device=wave.device)
    stft = torch.stft(y, spec.n_fft, hop_length=spec.hop_length, win_length=spec.win_length, window=window,
                      center=False, normalized=False, onesided=True, return_complex=True)
    magnitude = torch.sqrt(torch.view_as_real(stft).pow(2).sum(-1) + 1e-9)
    fb = AF.melscale_fbanks(spec.n_fft // 2 + 1, spec.fmin, spec.fmax or spec.sample_rate / 2, spec.n_mels,
                            spec.sample_rate, norm="slaney", mel_scale="slaney").to(wave.device)
    return torch.log(torch.clamp(fb.T @ magnitude, min=1e-5))


class LengthRegulator(nn.Module):
    """Content (B, T, in_channels) -> (B, max(ylens), channels), stretched to ``ylens`` frames and masked."""

    def __init__(self, channels: int, in_channels: int, sampling_ratios: list[int], codebook_size: int):
        super().__init__()
        if not sampling_ratios:
            raise InputError("s2mel.length_regulator.sampling_ratios: must not be empty (no stretching without it)")
        layers: list[nn.Module] = []
        for _ in sampling_ratios:
            layers += [nn.Conv1d(channels, channels, 3, 1, 1), nn.GroupNorm(1, channels), nn.Mish()]
        layers.append(nn.Conv1d(channels, channels, 1, 1))
        self.model = nn.Sequential(*layers)
        self.embedding = nn.Embedding(codebook_size, channels)  # in the checkpoint; continuous input never reads it
        self.mask_token = nn.Parameter(torch.zeros(1, channels))  # likewise
        self.content_in_proj = nn.Linear(in_channels, channels)

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> LengthRegulator:
        return cls(int(cfg["channels"]), int(cfg["in_channels"]), list(cfg["sampling_ratios"]),
                   int(cfg.get("content_codebook_size", 1024)))

    def forward(self, x: torch.Tensor, ylens: torch.Tensor) -> torch.Tensor:
        x = self.content_in_proj(x).transpose(1, 2)
        x = F.interpolate(x, size=int(ylens.max()), mode="nearest")
        out = self.model(x).transpose(1, 2)
        mask = torch.arange(out.size(1), device=out.device)[None, :] < ylens.to(out.device)[:, None]
        return out * mask.unsqueeze(-1)


def gpt_layer(gpt_dim: int = 1280, codec_dim: int = 1024) -> nn.Sequential:
    """The released ``gpt_layer``: 1280 -> 256 -> 128 -> 1024, affine only."""
    return nn.Sequential(nn.Linear(gpt_dim, 256), nn.Linear(256, 128), nn.Linear(128, codec_dim))


def target_lengths(code_lens: torch.Tensor) -> torch.Tensor:
    """Mel frames for ``code_lens`` codes, truncated as infer_v2 does (float32 product, then ``.long()``)."""
    return (code_lens.float() * FRAMES_PER_CODE).long()


def load_s2mel_net(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """The ``net`` dict of a released ``s2mel.pth`` (sub-model name -> state dict), read without pickle."""
    from indextts_core.utils.safe_load import torch_load

    obj = torch_load(path, "S2Mel weights")
    net = obj.get("net") if isinstance(obj, dict) else None
    if not isinstance(net, dict) or not {"cfm", "length_regulator", "gpt_layer"} <= set(net):
        raise InputError(f"{path}: not an S2Mel checkpoint (expected {{'net': {{'cfm', 'length_regulator', "
                         "'gpt_layer'}}})")
    return {name: {k.removeprefix("module."): v for k, v in sd.items()} for name, sd in net.items()}


def load_front(path: str | Path, s2mel_cfg: dict[str, Any], gpt_dim: int = 1280
               ) -> tuple[LengthRegulator, nn.Sequential]:
    """The length regulator and ``gpt_layer`` of ``s2mel.pth``, each loaded strictly, in eval mode.

    ``gpt_dim``: the GPT's ``model_dim`` (1280 in the release, where infer_v2 hard-codes it).
    """
    from indextts_core.model.checkpoint import load_state_dict_into

    net = load_s2mel_net(path)
    regulator = LengthRegulator.from_config(s2mel_cfg["length_regulator"])
    layer = gpt_layer(gpt_dim)
    for name, module in (("length_regulator", regulator), ("gpt_layer", layer)):
        load_state_dict_into(module, net[name], Path(f"{path}[net.{name}]"))  # type: ignore[arg-type]
    return regulator.eval(), layer.eval()
