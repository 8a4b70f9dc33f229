"""A tiny random CTC speech recogniser (wav2vec2) in the Hugging Face layout, for tests.

Either a plain single-vocabulary folder (Latin and Ethiopic letters) or, with ``languages``, one in
the layout of MMS-1b-all: ``vocab.json`` keyed by ISO 639-3 code, one ``adapter.<iso3>.safetensors``
per language (the attention adapters and the language's CTC head), ``adapter_attn_dim`` in the
config.  Its transcripts are noise: it exists so the CTC judge runs as with a real one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>", "|")
LATIN = tuple("abcdefghijklmnopqrstuvwxyz'")
#: A few Ethiopic syllables (the first orders of ሀ ለ ሐ መ ሠ ረ ሰ ቀ በ ተ ነ አ ከ ወ ዘ የ ደ ገ ጠ ፈ) and the word space ፡.
ETHIOPIC = tuple(chr(c) for c in range(0x1200, 0x1290, 8)) + ("፡",)


def _letters(iso3: str) -> tuple[str, ...]:
    return ETHIOPIC if iso3 in ("amh", "tir") else LATIN


def write_tiny_ctc(dest: str | Path, seed: int = 0, languages: Sequence[str] | None = None) -> Path:
    """A tiny random ``Wav2Vec2ForCTC`` folder (about 100 kB); ``languages`` (ISO 639-3) makes it MMS-style."""
    from safetensors.torch import save_file
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    langs = list(dict.fromkeys(languages or ()))
    vocabs = {code: {t: i for i, t in enumerate(SPECIALS + _letters(code))} for code in langs}
    flat = {t: i for i, t in enumerate(SPECIALS + LATIN + ETHIOPIC)}
    default = ("eng" if "eng" in langs else langs[0]) if langs else None
    (root / "vocab.json").write_text(json.dumps(vocabs or flat, ensure_ascii=False, indent=1), encoding="utf-8")

    def config(vocab_size: int) -> Wav2Vec2Config:
        return Wav2Vec2Config(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=32, conv_dim=(16, 16, 16), conv_kernel=(10, 3, 2),
                              conv_stride=(5, 2, 2), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                              feat_extract_norm="layer", do_stable_layer_norm=True, pad_token_id=0,
                              adapter_attn_dim=8 if langs else None, architectures=["Wav2Vec2ForCTC"])

    torch.manual_seed(seed)
    Wav2Vec2ForCTC(config(len(vocabs[default]) if default else len(flat))).save_pretrained(
        str(root), safe_serialization=True)
    for i, code in enumerate(langs):  # each language's adapters and head, as MMS ships them
        torch.manual_seed(seed * 1000 + i + 1)
        adapters = Wav2Vec2ForCTC(config(len(vocabs[code])))._get_adapters()
        save_file({k: v.detach().contiguous() for k, v in adapters.items()}, str(root / f"adapter.{code}.safetensors"))
    tok = Wav2Vec2CTCTokenizer(str(root / "vocab.json"), target_lang=default)
    tok.save_pretrained(str(root))
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(str(root))
    return root
