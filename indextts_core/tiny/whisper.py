"""A tiny random Whisper folder in the Hugging Face layout, for tests and the laptop demo's evaluation.

Its transcripts are noise: it exists so that every part of the evaluation runs as with a real judge.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from indextts_core.languages import whisper_language
from indextts_core.text.byte_level import byte_alphabet

def write_tiny_whisper(dest: str | Path, languages: Sequence[str] = ("en", "am", "zh", "ja"), seed: int = 0) -> Path:
    """A tiny random multilingual Whisper in the Hugging Face layout (about 200 kB): bytes as tokens, no merges."""
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperTokenizer)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(byte_alphabet())}))
    (root / "merges.txt").write_text("#version: 0.2\n")
    eot = "<|endoftext|>"
    tok = WhisperTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), unk_token=eot, bos_token=eot,
                           eos_token=eot, pad_token=eot)
    langs = [f"<|{whisper_language(x)}|>" for x in dict.fromkeys(languages)]
    tok.add_special_tokens({"additional_special_tokens": ["<|startoftranscript|>", *langs, "<|translate|>",
                                                          "<|transcribe|>", "<|notimestamps|>"]})
    ids = tok.convert_tokens_to_ids
    cfg = WhisperConfig(vocab_size=len(tok), num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                        max_source_positions=1500, max_target_positions=448, pad_token_id=ids(eot),
                        bos_token_id=ids(eot), eos_token_id=ids(eot),
                        decoder_start_token_id=ids("<|startoftranscript|>"))
    torch.manual_seed(seed)
    WhisperForConditionalGeneration(cfg).save_pretrained(str(root))
    gen = GenerationConfig(decoder_start_token_id=cfg.decoder_start_token_id, bos_token_id=ids(eot),
                           eos_token_id=ids(eot), pad_token_id=ids(eot), max_length=448, is_multilingual=True,
                           lang_to_id={t: ids(t) for t in langs},
                           task_to_id={"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")},
                           no_timestamps_token_id=ids("<|notimestamps|>"))
    gen.save_pretrained(str(root))
    tok.save_pretrained(str(root))
    WhisperFeatureExtractor(feature_size=80).save_pretrained(str(root))
    return root
