"""16 kHz audio -> normalised Wav2Vec2-BERT features (50 Hz), the input of the codec and conditioners.

The official path: ``SeamlessM4TFeatureExtractor`` (80-bin fbank at 100 fps stacked to 160-d at
50 fps, padded with 1.0 plus an attention mask), ``Wav2Vec2BertModel`` with
``output_hidden_states=True``, ``hidden_states[17]`` (the output of layer 17, not the last layer),
then ``(h - mean) / sqrt(var)`` with ``wav2vec2bert_stats.pt``.

:meth:`SemanticFeatures.extract` batches clips of different lengths and trims every output to
the frames the clip has alone (:func:`frame_count`: with an odd fbank count that includes the last,
half-padded frame, which the official single-item call keeps although its mask is 0), so a clip's
features never include batch padding and do not depend on its batch-mates.  Models load from local
folders only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from indextts_core.errors import InputError
from indextts_core.utils.safe_load import torch_load

SAMPLE_RATE = 16000
HIDDEN_LAYER = 17  # infer_v2.get_emb: hidden_states[17]


def read_stats(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``wav2vec2bert_stats.pt`` -> (mean, std) with std = sqrt(var); loaded with weights_only=True."""
    stats = torch_load(path, "feature statistics (wav2vec2bert_stats.pt)")
    if not isinstance(stats, dict) or not {"mean", "var"} <= set(stats):
        raise InputError(f"{path}: expected a dict with 'mean' and 'var' tensors")
    return stats["mean"].float(), torch.sqrt(stats["var"].float())


class SemanticFeatures:
    """Feature extractor + Wav2Vec2-BERT + normalisation statistics."""

    def __init__(self, extractor, model, mean: torch.Tensor, std: torch.Tensor, layer: int = HIDDEN_LAYER):
        self.extractor = extractor
        self.model = model.eval()
        self.layer = layer
        self.mean, self.std = mean, std
        n_layers = model.config.num_hidden_layers
        if not 0 < layer <= n_layers:
            raise InputError(f"hidden layer {layer} does not exist in a {n_layers}-layer Wav2Vec2-BERT")
        if mean.numel() != model.config.hidden_size:
            raise InputError(f"statistics have {mean.numel()} values but the model is {model.config.hidden_size} wide")

    @classmethod
    def from_dirs(cls, model_dir: str | Path, stats: str | Path, feature_extractor_dir: str | Path | None = None,
                  layer: int = HIDDEN_LAYER, device: str | torch.device = "cpu",
                  attn_implementation: str = "eager") -> SemanticFeatures:
        """Load from local Hugging Face folders (no hub access).

        ``attn_implementation="eager"`` reproduces the official numbers bit for bit (transformers 5
        defaults to SDPA, which differs by up to ~1e-5).
        """
        from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        model_dir = Path(model_dir)
        fe_dir = Path(feature_extractor_dir or model_dir)
        for d in (model_dir, fe_dir):
            if not d.is_dir():
                raise InputError(f"{d}: Wav2Vec2-BERT folder not found")
        try:
            extractor = SeamlessM4TFeatureExtractor.from_pretrained(str(fe_dir), local_files_only=True)
        except Exception as e:  # noqa: BLE001 - OSError, JSONDecodeError, ...: a file there is missing or damaged
            raise InputError(f"{fe_dir}: cannot load the Wav2Vec2-BERT feature extractor "
                             f"({type(e).__name__}: {(str(e).strip().splitlines() or ['-'])[0]}); a file there "
                             "is missing, damaged or incomplete: download/copy it again") from None
        try:
            model = Wav2Vec2BertModel.from_pretrained(str(model_dir), local_files_only=True,
                                                      attn_implementation=attn_implementation)
        except OSError as e:
            raise InputError(f"{model_dir}: cannot load Wav2Vec2-BERT ({str(e).splitlines()[0]})") from None
        except Exception as e:  # noqa: BLE001 - SafetensorError, RuntimeError, ValueError: damaged weights
            named = [model_dir / n for n in ("model.safetensors", "pytorch_model.bin", "config.json")
                     if (model_dir / n).is_file()]
            raise InputError(f"{named[0] if named else model_dir}: cannot load Wav2Vec2-BERT "
                             f"({type(e).__name__}: {(str(e).strip().splitlines() or ['-'])[0]}); it is damaged or "
                             "incomplete: download/copy it again") from None
        mean, std = read_stats(stats)
        return cls(extractor, model.to(device), mean, std, layer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def inputs(self, waves: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature-extractor output for 16 kHz waves: (B, T, 160) features and (B, T) mask."""
        batch = self.extractor([np.asarray(w, dtype=np.float32) for w in waves], sampling_rate=SAMPLE_RATE,
                               return_tensors="pt", padding=True)
        return batch["input_features"], batch["attention_mask"]

    @torch.no_grad()
    def hidden(self, input_features: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Normalised hidden state ``layer`` for a padded batch: (B, T, hidden)."""
        dev = self.device
        out = self.model(input_features=input_features.to(dev), attention_mask=attention_mask.to(dev),
                         output_hidden_states=True)
        h = out.hidden_states[self.layer]
        return (h - self.mean.to(h.device)) / self.std.to(h.device)

    def extract(self, waves: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """One (T_i, hidden) tensor per 16 kHz wave, each cut to the frames it has alone (:func:`frame_count`)."""
        hidden, lengths = self.extract_padded(waves)
        return [hidden[i, : int(n)] for i, n in enumerate(lengths.tolist())]

    def extract_padded(self, waves: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, hidden) features and (B,) frame counts, ready for the codec and GPT; the frames after a
        wave's own count (batch padding) are zero.

        Each wave keeps every frame the official single-item call gives it, including the last, half-padded
        frame of an odd fbank count (its attention mask is 0, yet infer_v2 feeds its hidden state to the
        codec and the GPT), so a clip's features are the same alone, in any batch, and in the official code.
        """
        feats, mask = self.inputs(waves)
        hidden = self.hidden(feats, mask)
        lengths = torch.tensor([frame_count(len(w)) for w in waves], device=hidden.device)
        if bool((lengths > hidden.size(1)).any()) or bool((lengths < mask.sum(dim=1).to(hidden.device)).any()):
            raise ValueError("frame counts disagree with the feature extractor's mask (not a 16 kHz SeamlessM4T "
                             "feature extractor with stride 2?)")
        keep = torch.arange(hidden.size(1), device=hidden.device)[None, :] < lengths[:, None]
        return hidden.masked_fill(~keep.unsqueeze(-1), 0.0), lengths


def frame_count(samples: int, window: int = 400, hop: int = 160, stride: int = 2) -> int:
    """50 Hz frames the feature extractor gives ``samples`` of 16 kHz audio alone: ``ceil(fbank / 2)`` with
    ``fbank = 1 + (samples - 400) // 160`` (25 ms windows every 10 ms, no centring; 0 under one window)."""
    fbank = 1 + (samples - window) // hop if samples >= window else 0
    return -(-fbank // stride)
