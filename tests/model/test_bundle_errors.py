"""A checkpoint folder without its encoders: an error naming the file and where it comes from (found in use: a
52-line traceback ending in FileNotFoundError .../hf_cache/semantic_codec_model.safetensors)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from indextts_core.errors import InputError
from indextts_core.model.bundle import open_bundle


def test_missing_encoders_are_named_with_their_source(tiny_bundle, tmp_path: Path):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_bundle.checkpoint_dir, folder, ignore=shutil.ignore_patterns("hf_cache"))
    bundle = open_bundle(folder)
    bundle.load_gpt()  # fine-tuning alone needs no encoder
    with pytest.raises(InputError, match=r"w2v-bert-2\.0: Wav2Vec2-BERT 2\.0 folder missing.*download\.w2v_bert"):
        bundle.fingerprint()
    with pytest.raises(InputError, match=r"semantic_codec_model\.safetensors: MaskGCT semantic codec missing.*"
                                         r"download\.semantic_codec"):
        bundle.load_codec()
    with_w2v = open_bundle(folder, tiny_bundle.w2v_bert_dir)  # the prompts need only the encoder
    assert with_w2v.load_features() is not None
