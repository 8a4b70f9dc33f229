"""A tiny random speaker verifier (WavLM x-vector) in the Hugging Face layout, for tests and the laptop demo.

The folder has what ``microsoft/wavlm-base-plus-sv`` ships (``config.json``, the weights and
``preprocessor_config.json``), at a size that is written in a fraction of a second.  Its embeddings
are noise: it exists so that the independent speaker similarity runs as with a real verifier.
"""

from __future__ import annotations

from pathlib import Path

import torch


def write_tiny_xvector(dest: str | Path, seed: int = 0) -> Path:
    """A tiny random ``WavLMForXVector`` folder (about 200 kB): hidden size 32, two layers, 16-dim x-vectors."""
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    # The real conv stack's kernels and strides (20 ms frames): fewer frames would make attention the cost.
    config = WavLMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(32,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, num_buckets=32,
                         max_bucket_distance=64, feat_extract_norm="group", do_stable_layer_norm=False,
                         use_weighted_layer_sum=True, tdnn_dim=(32, 32, 32, 32, 64), tdnn_kernel=(5, 3, 3, 1, 1),
                         tdnn_dilation=(1, 2, 3, 1, 1), xvector_output_dim=16, architectures=["WavLMForXVector"])
    torch.manual_seed(seed)
    WavLMForXVector(config).save_pretrained(str(root), safe_serialization=True)
    # As wavlm-base-plus-sv ships it: raw samples, no normalisation, an attention mask.
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=False,
                             return_attention_mask=True).save_pretrained(str(root))
    return root
