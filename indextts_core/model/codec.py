"""The semantic codec of IndexTTS-2 (MaskGCT RepCodec): 50 Hz features -> 50 Hz codes, and of
IndexTTS-2.5 (``EnhancedCodec``: the same codec behind a stride-2 convolution, 50 Hz -> 25 Hz codes).

``quantize``: a Vocos (ConvNeXt) encoder and a linear layer, then one factorised VQ: a
weight-normed 1x1 conv to ``codebook_dim``, the nearest L2-normalised codebook row, and a 1x1 conv
back.  The decoder half exists only so the released safetensors load strictly; tokenisation does
not use it.

With ``downsample_scale`` 2 (the 2.5 codec, the default of a ``version: 2.5`` config), ``quantize``
first applies a 3-tap stride-2 convolution and a GELU (a T-frame input gives ceil(T/2) codes), and
``decode`` maps codes back through the decoder, a nearest x2 upsampling and a 3-tap convolution.

The released codec has no notion of padding: its 7-tap convolutions mix neighbouring frames, so a
padded batch gives a short clip different codes near its end.  Pass ``lengths`` and every
convolution sees zeros beyond each clip's end, which is exactly what it sees when the clip is
quantised alone; without ``lengths`` the computation is the official one.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from indextts_core.errors import ConfigError, InputError
from indextts_core.utils.safe_load import safetensors_load, torch_load


@dataclass(frozen=True)
class CodecConfig:
    codebook_size: int = 8192
    hidden_size: int = 1024
    codebook_dim: int = 8
    vocos_dim: int = 384
    vocos_intermediate_dim: int = 2048
    vocos_num_layers: int = 12
    num_quantizers: int = 1
    downsample_scale: int = 1

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "config.yaml: semantic_codec",
                  version: str | float | None = None) -> CodecConfig:
        """The ``semantic_codec:`` section; ``version`` is the config's (2.5 builds ``EnhancedCodec``, whose
        ``downsample_scale`` defaults to 2)."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
        data = dict(d)
        if "vocos_dim" not in data:  # the official constructor reads these two only next to vocos_dim
            data.pop("vocos_intermediate_dim", None)
            data.pop("vocos_num_layers", None)
        if str(version) == "2.5":
            data.setdefault("downsample_scale", 2)
        if data.get("downsample_scale") is None:
            data["downsample_scale"] = 1
        cfg = cls(**data)
        if cfg.downsample_scale not in (1, 2) or cfg.num_quantizers != 1:
            raise ConfigError(f"{where}: downsample_scale must be 1 (IndexTTS-2) or 2 (IndexTTS-2.5) with one "
                              f"quantizer; got downsample_scale {cfg.downsample_scale}, {cfg.num_quantizers} "
                              "quantizers")
        return cfg


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, intermediate: int, layer_scale: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate)
        self.pwconv2 = nn.Linear(intermediate, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        y = self.norm(self.dwconv(x).transpose(1, 2))
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(y)))
        return x + y.transpose(1, 2)


class VocosBackbone(nn.Module):
    def __init__(self, input_channels: int, dim: int, intermediate: int, num_layers: int):
        super().__init__()
        self.embed = nn.Conv1d(input_channels, dim, kernel_size=7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.convnext = nn.ModuleList(ConvNeXtBlock(dim, intermediate, 1 / num_layers) for _ in range(num_layers))
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C_in, T) -> (B, T, dim).  ``mask`` (B, 1, T) zeroes frames beyond each length before convs."""
        if mask is not None:
            x = x.masked_fill(~mask, 0.0)
        x = self.norm(self.embed(x).transpose(1, 2)).transpose(1, 2)
        for block in self.convnext:
            if mask is not None:
                x = x.masked_fill(~mask, 0.0)
            x = block(x)
        return self.final_layer_norm(x.transpose(1, 2))


class WeightNormConv1d(nn.Module):
    """A 1-D convolution parameterised as ``weight_g * weight_v / ||weight_v||`` (old ``weight_norm`` names)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(c_out))
        v = torch.empty(c_out, c_in, 1)
        nn.init.kaiming_uniform_(v, a=5**0.5)
        self.weight_g = nn.Parameter(v.norm(dim=(1, 2), keepdim=True))
        self.weight_v = nn.Parameter(v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, torch._weight_norm(self.weight_v, self.weight_g, 0), self.bias)


class FactorizedVQ(nn.Module):
    def __init__(self, input_dim: int, codebook_size: int, codebook_dim: int):
        super().__init__()
        self.in_project = WeightNormConv1d(input_dim, codebook_dim)
        self.out_project = WeightNormConv1d(codebook_dim, input_dim)
        self.codebook = nn.Embedding(codebook_size, codebook_dim)

    def nearest(self, z_e: torch.Tensor) -> torch.Tensor:
        """Codes (B, T) of projected latents (B, d, T): nearest L2-normalised codebook row."""
        enc = F.normalize(z_e.transpose(1, 2).reshape(-1, z_e.size(1)))
        cb = F.normalize(self.codebook.weight)
        dist = enc.pow(2).sum(1, keepdim=True) - 2 * enc @ cb.t() + cb.pow(2).sum(1, keepdim=True).t()
        return (-dist).max(1)[1].view(z_e.size(0), z_e.size(2))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z_e = self.in_project(z)
        codes = self.nearest(z_e)
        z_q = self.codebook(codes).transpose(1, 2)
        return self.out_project(z_e + (z_q - z_e).detach()), codes

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        return self.out_project(self.codebook(codes).transpose(1, 2))


class ResidualVQ(nn.Module):
    def __init__(self, input_dim: int, codebook_size: int, codebook_dim: int):
        super().__init__()
        self.quantizers = nn.ModuleList([FactorizedVQ(input_dim, codebook_size, codebook_dim)])


class SemanticCodec(nn.Module):
    def __init__(self, cfg: CodecConfig = CodecConfig()):
        super().__init__()
        self.cfg = cfg

        def half() -> nn.Sequential:
            return nn.Sequential(VocosBackbone(cfg.hidden_size, cfg.vocos_dim, cfg.vocos_intermediate_dim,
                                               cfg.vocos_num_layers), nn.Linear(cfg.vocos_dim, cfg.hidden_size))

        if cfg.downsample_scale > 1:  # IndexTTS-2.5's EnhancedCodec
            self.down = nn.Conv1d(cfg.hidden_size, cfg.hidden_size, kernel_size=3, stride=2, padding=1)
            self.up = nn.Conv1d(cfg.hidden_size, cfg.hidden_size, kernel_size=3, stride=1, padding=1)
        self.encoder = half()
        self.decoder = half()
        self.quantizer = ResidualVQ(cfg.hidden_size, cfg.codebook_size, cfg.codebook_dim)

    def code_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Codes per clip of ``lengths`` feature frames (ceil(T/2) for the 2.5 codec)."""
        return (lengths + 1) // 2 if self.cfg.downsample_scale > 1 else lengths

    @torch.no_grad()
    def quantize(self, feats: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, hidden) features -> codes (B, T') int64 and quantized embeddings (B, T', hidden);
        T' = T, or ceil(T/2) for the 2.5 codec."""
        if self.cfg.downsample_scale > 1:
            if lengths is not None:  # the stride-2 conv sees zeros beyond each clip's end, as when alone
                keep = torch.arange(feats.size(1), device=feats.device)[None, :] < lengths.to(feats.device)[:, None]
                feats = feats * keep.unsqueeze(-1).to(feats.dtype)
                lengths = self.code_lengths(lengths)
            feats = F.gelu(self.down(feats.transpose(1, 2))).transpose(1, 2)
        mask = None
        if lengths is not None:
            mask = (torch.arange(feats.size(1), device=feats.device)[None, :] < lengths.to(feats.device)[:, None])
            mask = mask.unsqueeze(1)
        x = self.encoder[1](self.encoder[0](feats.transpose(1, 2), mask))  # (B, T, hidden)
        quantized, codes = self.quantizer.quantizers[0](x.transpose(1, 2))
        return codes, quantized.transpose(1, 2)

    @torch.no_grad()
    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, T) -> their embeddings (B, T, hidden) (``quantizer.vq2emb``, transposed)."""
        return self.quantizer.quantizers[0].embed(codes).transpose(1, 2)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """The 2.5 codec's ``decode``: codes (B, T) -> reconstructed features (B, 2T, hidden)."""
        if self.cfg.downsample_scale <= 1:
            raise ValueError("decode is the IndexTTS-2.5 codec's (downsample_scale 2)")
        x = self.decoder(self.quantizer.quantizers[0].embed(codes))  # (B, hidden, T) in, (B, T, hidden) out
        x = F.interpolate(x.transpose(1, 2), scale_factor=2, mode="nearest")
        return self.up(x).transpose(1, 2)


def load_codec(weights: str | Path, cfg: CodecConfig = CodecConfig()) -> SemanticCodec:
    """Build the codec and load its weights strictly: a safetensors file (as ``safetensors.torch.load_model``
    does), or the 2.5 codec's ``codec.pth`` (``{"model": state_dict}``, read with ``weights_only=True``)."""
    path = Path(weights)
    if not path.is_file():
        raise InputError(f"{path}: semantic codec weights not found")
    codec = SemanticCodec(cfg)
    if path.suffix == ".safetensors":
        state = safetensors_load(path, "semantic codec weights")
    else:
        loaded = torch_load(path, "semantic codec weights")
        state = loaded.get("model", loaded) if isinstance(loaded, dict) else loaded
        if not isinstance(state, dict):
            raise InputError(f"{path}: expected a state dict or {{'model': state dict}}")
    expected = codec.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise InputError(f"{path}: does not match the codec config (missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}, wrong shape {shapes[:5]})")
    codec.load_state_dict(state, strict=True)
    return codec.eval()
