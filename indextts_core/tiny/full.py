"""A full-size random checkpoint folder: the official IndexTTS-2 layout at the released shapes.

:func:`write_full_bundle` writes what :func:`~indextts_core.tiny.bundle.write_tiny_bundle` writes,
but every model has the released widths (GPT 3.5 GB, Wav2Vec2-BERT 2.3 GB, S2Mel, BigVGAN,
CAMPPlus, the MaskGCT codec, a Qwen3-0.6B-sized emotion folder) with random weights.  It exists
to rehearse a real run's sizes (copies, hashing, peak memory at load and export) on a CPU
without downloading anything; whatever it says is noise.  The download stage writes it for the
source ``random://<seed>``.

Each model is built from the same classes the loaders use, saved, and freed before the next, so
the peak memory is about the largest model (the GPT, plus what its ``torch.save`` holds), not
their sum.  The same seed writes the same weights.

The pipeline itself never loads the Qwen emotion model (the official inference does; an export
copies the folder), so it gets the released size (``model.safetensors`` in bfloat16, about
1.19 GB, as the release) with the tiny byte-level tokenizer; ``qwen="tiny"`` writes the tiny
stand-in instead.  The tokenizer ``bpe.model`` has the release's 12000 pieces: a small unigram
model learned from the bundled sentences, then single CJK characters as user-defined pieces (as
the release has 8466 of them) up to 12000.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from indextts_core.model.bundle import BIGVGAN_DIR, BUNDLE_META, CAMPPLUS_FILE, CODEC_FILE, RESOURCES, W2V_DIR
from indextts_core.model.bundle import ModelBundle, open_bundle
from indextts_core.utils.fileio import atomic_write, write_json

#: Version of this generator (part of a ``random://`` asset's identity in the store).
FULL_VERSION = "1"
#: The released ``gpt:`` section of IndexTTS-2 (checkpoints/config.yaml).
FULL_GPT: dict[str, Any] = {
    "model_dim": 1280, "max_mel_tokens": 1815, "max_text_tokens": 600, "heads": 20, "use_mel_codes_as_input": True,
    "mel_length_compression": 1024, "layers": 24, "number_text_tokens": 12000, "number_mel_codes": 8194,
    "start_mel_token": 8192, "stop_mel_token": 8193, "start_text_token": 0, "stop_text_token": 1,
    "train_solo_embeddings": False, "condition_type": "conformer_perceiver",
    "condition_module": {"output_size": 512, "linear_units": 2048, "attention_heads": 8, "num_blocks": 6,
                         "input_layer": "conv2d2", "perceiver_mult": 2},
    "emo_condition_module": {"output_size": 512, "linear_units": 1024, "attention_heads": 4, "num_blocks": 4,
                             "input_layer": "conv2d2", "perceiver_mult": 2},
}
#: The released ``semantic_codec:`` section (MaskGCT RepCodec).
FULL_CODEC: dict[str, Any] = {"codebook_size": 8192, "hidden_size": 1024, "codebook_dim": 8, "vocos_dim": 384,
                              "vocos_intermediate_dim": 2048, "vocos_num_layers": 12}
#: The released ``s2mel:`` section.
FULL_S2MEL: dict[str, Any] = {
    "preprocess_params": {"sr": 22050, "spect_params": {"n_fft": 1024, "win_length": 1024, "hop_length": 256,
                                                        "n_mels": 80, "fmin": 0, "fmax": "None"}},
    "dit_type": "DiT", "reg_loss_type": "l1", "style_encoder": {"dim": 192},
    "length_regulator": {"channels": 512, "is_discrete": False, "in_channels": 1024, "content_codebook_size": 2048,
                         "sampling_ratios": [1, 1, 1, 1], "vector_quantize": False, "n_codebooks": 1,
                         "quantizer_dropout": 0.0, "f0_condition": False, "n_f0_bins": 512},
    "DiT": {"hidden_dim": 512, "num_heads": 8, "depth": 13, "class_dropout_prob": 0.1, "block_size": 8192,
            "in_channels": 80, "style_condition": True, "final_layer_type": "wavenet", "target": "mel",
            "content_dim": 512, "content_codebook_size": 1024, "content_type": "discrete", "f0_condition": False,
            "n_f0_bins": 512, "content_codebooks": 1, "is_causal": False, "long_skip_connection": True,
            "zero_prompt_speech_token": False, "time_as_token": False, "style_as_token": False,
            "uvit_skip_connection": True, "add_resblock_in_transformer": False},
    "wavenet": {"hidden_dim": 512, "num_layers": 8, "kernel_size": 5, "dilation_rate": 1, "p_dropout": 0.2,
                "style_condition": True},
}
#: nvidia/bigvgan_v2_22khz_80band_256x ``config.json`` (training keys included, as the hub file has them).
FULL_BIGVGAN: dict[str, Any] = {
    "resblock": "1", "num_gpus": 0, "batch_size": 32, "learning_rate": 0.0001, "adam_b1": 0.8, "adam_b2": 0.99,
    "lr_decay": 0.9999996, "seed": 1234, "upsample_rates": [4, 4, 2, 2, 2, 2],
    "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4], "upsample_initial_channel": 1536,
    "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "use_tanh_at_final": False, "use_bias_at_final": False, "activation": "snakebeta", "snake_logscale": True,
    "use_cqtd_instead_of_mrd": True, "cqtd_filters": 128, "cqtd_max_filters": 1024, "cqtd_filters_scale": 1,
    "cqtd_dilations": [1, 2, 4], "cqtd_hop_lengths": [512, 256, 256], "cqtd_n_octaves": [9, 9, 9],
    "cqtd_bins_per_octaves": [24, 36, 48], "mpd_reshapes": [2, 3, 5, 7, 11], "use_spectral_norm": False,
    "discriminator_channel_mult": 1, "use_multiscale_melloss": True, "lambda_melloss": 15, "clip_grad_norm": 500,
    "segment_size": 65536, "num_mels": 80, "num_freq": 1025, "n_fft": 1024, "hop_size": 256, "win_size": 1024,
    "sampling_rate": 22050, "fmin": 0, "fmax": None, "fmax_for_loss": None, "normalize_volume": True,
    "num_workers": 4, "dist_config": {"dist_backend": "nccl", "dist_url": "tcp://localhost:54321", "world_size": 1},
}
#: facebook/w2v-bert-2.0 (transformers' ``Wav2Vec2BertConfig`` defaults are this model's values; named here
#: so a change of defaults cannot shrink it): 580,493,120 parameters, 2.32 GB in float32.
FULL_W2V_BERT: dict[str, Any] = {
    "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
    "feature_projection_input_dim": 160, "hidden_act": "swish", "position_embeddings_type": "relative_key",
    "left_max_position_embeddings": 64, "right_max_position_embeddings": 8, "conv_depthwise_kernel_size": 31,
    "layer_norm_eps": 1e-5, "add_adapter": False,
}
#: Qwen3-0.6B, the base of ``qwen0.6bemo4-merge`` (596,049,920 parameters; 1.19 GB in bfloat16 as released).
FULL_QWEN: dict[str, Any] = {
    "vocab_size": 151936, "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 40960,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
}
#: Pieces of the released ``bpe.model``.
FULL_PIECES = 12000
HEADER = "# full-size random IndexTTS-2-layout bundle (release shapes, random weights; not a trained model)\n"


# ------------------------------------------------------------------ the models, one constructor each
# Each builds on the current default device: under ``with torch.device("meta")`` nothing is allocated
# (the tests compare the key/shape lists with the release's that way).

def gpt_model() -> nn.Module:
    from indextts_core.model.config import GPTConfig
    from indextts_core.model.unified_voice import UnifiedVoice

    return UnifiedVoice(GPTConfig.from_dict(FULL_GPT, version=2.0))


def s2mel_models() -> dict[str, nn.Module]:
    """The three sub-models of ``s2mel.pth``'s ``net`` dict."""
    from indextts_core.model.s2mel import LengthRegulator, gpt_layer
    from indextts_core.model.s2mel_decoder import FlowMatching

    return {"cfm": FlowMatching(FULL_S2MEL), "length_regulator": LengthRegulator.from_config(
        FULL_S2MEL["length_regulator"]), "gpt_layer": gpt_layer(FULL_GPT["model_dim"])}


def bigvgan_model() -> nn.Module:
    from indextts_core.model.bigvgan import BigVGAN

    return BigVGAN(FULL_BIGVGAN)


def campplus_model() -> nn.Module:
    from indextts_core.model.campplus import CAMPPlus

    return CAMPPlus()  # the release's widths (feat_dim 80, embedding 192) are the defaults


def codec_model() -> nn.Module:
    from indextts_core.model.codec import CodecConfig, SemanticCodec

    return SemanticCodec(CodecConfig.from_dict(FULL_CODEC, version=2.0))


def w2v_bert_model() -> nn.Module:
    from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel

    return Wav2Vec2BertModel(Wav2Vec2BertConfig(**FULL_W2V_BERT))


def qwen_model(eos_token_id: int | None = None, pad_token_id: int | None = None) -> nn.Module:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    return Qwen3ForCausalLM(Qwen3Config(**FULL_QWEN, eos_token_id=eos_token_id, pad_token_id=pad_token_id))


def _built(seed: int, make: Callable[[], Any], dtype: torch.dtype | None = None) -> Any:
    """``make()`` after ``torch.manual_seed(seed)`` (floating tensors created in ``dtype`` when given)."""
    torch.manual_seed(seed)
    if dtype is None:
        return make()
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return make()
    finally:
        torch.set_default_dtype(before)


# ------------------------------------------------------------------ the folder

def write_full_tokenizer(dest: Path, pieces: int = FULL_PIECES) -> int:
    """A SentencePiece unigram ``bpe.model`` with ``pieces`` pieces and the release's special ids.

    A small unigram model learned from the bundled sentences (front-end text), then single CJK
    characters (U+4E00 on) as user-defined pieces until ``pieces``, as the release keeps its 8466 CJK
    characters.  Returns the piece count.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    from indextts_core.text.frontend import split_cjk
    from indextts_core.tiny.bundle import train_base_tokenizer

    sentences = [split_cjk(line) for line in (RESOURCES / "base_languages.txt").read_text(encoding="utf-8")
                 .splitlines() if line.strip()]
    train_base_tokenizer(sentences, dest, vocab_size=512)
    proto = pb.ModelProto()
    proto.ParseFromString(dest.read_bytes())
    have = {p.piece for p in proto.pieces}
    code = 0x4E00
    while len(proto.pieces) < pieces:
        char = chr(code)
        code += 1
        if char not in have:
            proto.pieces.append(pb.ModelProto.SentencePiece(piece=char, score=0.0,
                                                            type=pb.ModelProto.SentencePiece.USER_DEFINED))
    proto.trainer_spec.vocab_size = len(proto.pieces)
    data = proto.SerializeToString()
    with atomic_write(dest, "wb") as f:
        f.write(data)
    return spm.SentencePieceProcessor(model_proto=data).GetPieceSize()


def _config(n_pieces: int) -> dict[str, Any]:
    """The released config.yaml's keys and values (the ``dataset:`` v1 leftovers included)."""
    from indextts_core.tiny.bundle import EMO_NUM, QWEN_DIR

    return {
        "dataset": {"bpe_model": "bpe.model", "sample_rate": 24000, "squeeze": False,
                    "mel": {"sample_rate": 24000, "n_fft": 1024, "hop_length": 256, "win_length": 1024,
                            "n_mels": 100, "mel_fmin": 0, "normalize": False}},
        "gpt": dict(FULL_GPT, number_text_tokens=n_pieces),
        "semantic_codec": FULL_CODEC,
        "s2mel": FULL_S2MEL,
        "gpt_checkpoint": "gpt.pth",
        "w2v_stat": "wav2vec2bert_stats.pt",
        "s2mel_checkpoint": "s2mel.pth",
        "emo_matrix": "feat2.pt",
        "spk_matrix": "feat1.pt",
        "emo_num": EMO_NUM,
        "qwen_emo_path": QWEN_DIR,
        "vocoder": {"type": "bigvgan", "name": "nvidia/bigvgan_v2_22khz_80band_256x"},
        "version": 2.0,
    }


def _save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def write_full_bundle(dest: str | Path, seed: int = 0, version: str = "2.0", qwen: str = "full") -> ModelBundle:
    """Write the official IndexTTS-2 folder at the released shapes with random weights (about 8 GB).

    Deterministic from ``seed``.  ``qwen="tiny"``: the tiny Qwen stand-in instead of the full-size one
    (the pipeline never loads it).  Only the IndexTTS-2 layout (``version="2.0"``) is written.
    """
    from indextts_core.model.config import release_of

    if release_of(version) != "2.0":
        raise ValueError(f"write_full_bundle writes the IndexTTS-2 layout only (version 2.0), not {version!r}")
    if qwen not in ("full", "tiny"):
        raise ValueError(f"qwen must be 'full' or 'tiny', not {qwen!r}")
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    n_pieces = write_full_tokenizer(root / "bpe.model")
    config = _config(n_pieces)
    with atomic_write(root / "config.yaml") as f:
        f.write(HEADER)
        yaml.safe_dump(config, f, sort_keys=False)

    # the GPT first: the largest model, alone in memory
    from indextts_core.model.checkpoint import official_state_dict

    model = _built(seed, gpt_model)
    with torch.no_grad():  # the released init leaves it at zero; like the tiny bundle, make it non-degenerate
        model.speed_emb.weight.normal_(std=0.02)
    _save(official_state_dict(model), root / "gpt.pth")
    del model
    gc.collect()

    g = torch.Generator().manual_seed(seed + 1)
    hidden = FULL_CODEC["hidden_size"]
    _save({"mean": torch.randn(hidden, generator=g) * 0.1, "var": torch.rand(hidden, generator=g) + 0.5},
          root / "wav2vec2bert_stats.pt")
    from indextts_core.tiny.bundle import EMO_NUM

    for name, width in (("feat1.pt", 192), ("feat2.pt", FULL_GPT["model_dim"])):
        _save(torch.randn(sum(EMO_NUM), width, generator=g), root / name)

    _write_w2v_bert(root / W2V_DIR, seed + 2)
    codec = _built(seed + 3, codec_model)
    from safetensors.torch import save_model

    (root / CODEC_FILE).parent.mkdir(parents=True, exist_ok=True)
    save_model(codec, str(root / CODEC_FILE))
    del codec
    gc.collect()

    parts = _built(seed + 4, s2mel_models)
    _save({"net": {k: m.state_dict() for k, m in parts.items()}}, root / "s2mel.pth")
    del parts
    gc.collect()
    campplus = _built(seed + 5, campplus_model)
    _save(campplus.state_dict(), root / CAMPPLUS_FILE)
    del campplus
    gc.collect()
    vocoder = _built(seed + 6, bigvgan_model)
    (root / BIGVGAN_DIR).mkdir(parents=True, exist_ok=True)
    write_json(root / BIGVGAN_DIR / "config.json", FULL_BIGVGAN)
    _save({"generator": vocoder.state_dict()}, root / BIGVGAN_DIR / "bigvgan_generator.pt")
    del vocoder
    gc.collect()

    _write_qwen(root, seed + 8, full=qwen == "full")
    with atomic_write(root / "LICENSE.txt") as f:
        f.write("Full-size random stand-in for the IndexTTS-2 folder (size rehearsals; random weights). The real "
                "folder's licence is the bilibili IndexTTS model licence; an export carries it over.\n")
    write_json(root / BUNDLE_META, {"format": 1, "kind": "full-random", "seed": seed, "generator": FULL_VERSION,
                                    "qwen": qwen})
    return open_bundle(root)


def _write_w2v_bert(dest: Path, seed: int) -> None:
    from transformers import SeamlessM4TFeatureExtractor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = _built(seed, w2v_bert_model)
    model.save_pretrained(str(dest))
    del model
    gc.collect()
    SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, padding_value=1.0, sampling_rate=16000, stride=2,
                                return_attention_mask=True, padding_side="right").save_pretrained(str(dest))


def _write_qwen(root: Path, seed: int, full: bool) -> None:
    """The Qwen emotion folder: the tiny one's tokenizer and files, then (``full``) a Qwen3-0.6B-sized
    model in bfloat16 in place of its tiny model."""
    from indextts_core.tiny.bundle import QWEN_DIR, _write_tiny_qwen

    dest = root / QWEN_DIR
    _write_tiny_qwen(dest, seed)
    if not full:
        return
    tiny = json.loads((dest / "config.json").read_text(encoding="utf-8"))
    model = _built(seed, lambda: qwen_model(tiny.get("eos_token_id"), tiny.get("pad_token_id")), torch.bfloat16)
    for old in dest.glob("model*.safetensors*"):
        old.unlink()
    model.save_pretrained(str(dest))
    del model
    gc.collect()
