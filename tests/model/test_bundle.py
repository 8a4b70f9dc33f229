"""The tiny random bundle: official folder layout, loads through the same code as a real checkpoint."""

from __future__ import annotations

import torch
import pytest

from indextts_core.data.audio import load_audio
from indextts_core.errors import InputError
from indextts_core.model.bundle import open_bundle
from indextts_core.text.tokenizer import load_sentencepiece
from tests_support import DEMO_DIR


def test_layout_and_tokenizer(tiny_bundle):
    root = tiny_bundle.checkpoint_dir
    for name in ("config.yaml", "gpt.pth", "bpe.model", "wav2vec2bert_stats.pt",
                 "hf_cache/w2v-bert-2.0/config.json", "hf_cache/w2v-bert-2.0/preprocessor_config.json",
                 "hf_cache/semantic_codec_model.safetensors"):
        assert (root / name).is_file(), name
    sp = load_sentencepiece(tiny_bundle.tokenizer_path)
    assert [sp.IdToPiece(i) for i in range(3)] == ["<s>", "</s>", "<unk>"]
    assert (sp.bos_id(), sp.eos_id(), sp.unk_id(), sp.pad_id()) == (0, 1, 2, -1)
    assert sp.GetPieceSize() == tiny_bundle.gpt_config.number_text_tokens
    assert tiny_bundle.gpt_config.number_mel_codes == tiny_bundle.codec_config.codebook_size + 2


def test_audio_to_codes_and_conditioning(tiny_bundle):
    gpt, codec, feats = tiny_bundle.load_gpt(), tiny_bundle.load_codec(), tiny_bundle.load_features()
    waves = [load_audio(DEMO_DIR / "audio" / f"spk0{k}_am_001.flac", 16000).samples for k in (1, 2)]
    padded, lengths = feats.extract_padded(waves)
    codes, _ = codec.quantize(padded, lengths)
    assert codes.max() < tiny_bundle.codec_config.codebook_size
    assert abs(int(lengths[0]) - round(len(waves[0]) / 320)) <= 2  # 50 codes per second
    with torch.no_grad():
        latents = gpt.speaker_latents(padded, lengths)
        emo = gpt.emotion_vector(padded, lengths)
    assert latents.shape == (2, 32, 64) and emo.shape == (2, 64)


def test_missing_pieces_are_named(bundle_copy):
    root = bundle_copy.checkpoint_dir
    (root / "wav2vec2bert_stats.pt").unlink()
    with pytest.raises(InputError, match="feature statistics missing"):
        open_bundle(root)
    with pytest.raises(InputError, match="checkpoint folder not found"):
        open_bundle(root / "nope")


def test_fingerprint_is_stable_and_content_based(bundle_copy):
    first = bundle_copy.fingerprint()
    assert first == bundle_copy.fingerprint()
    (bundle_copy.checkpoint_dir / "gpt.pth").write_bytes(b"changed")
    assert bundle_copy.fingerprint()["gpt"] != first["gpt"]


def test_tiny_qwen_folder_names_a_tokenizer_the_official_pin_reads(tmp_path):
    """transformers 4.52 (the official pin) cannot resolve transformers 5's ``TokenizersBackend``: the tiny
    emotion folder names ``PreTrainedTokenizerFast`` and ``additional_special_tokens``, and still loads here."""
    import json

    from transformers import AutoTokenizer

    from indextts_core.tiny.bundle import _write_tiny_qwen

    _write_tiny_qwen(tmp_path / "qwen", seed=0)
    config = json.loads((tmp_path / "qwen" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and "backend" not in config
    assert config["additional_special_tokens"] == ["<|im_start|>"] and "extra_special_tokens" not in config
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "qwen"))
    assert tok.eos_token == "<|im_end|>" and tok.convert_tokens_to_ids("<|im_start|>") != tok.unk_token_id
