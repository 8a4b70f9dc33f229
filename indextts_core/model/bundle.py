"""A checkpoint folder and everything the pipeline builds from it.

:func:`open_bundle` reads an official IndexTTS-2 folder (or one of our exports)::

    config.yaml  gpt.pth  bpe.model  wav2vec2bert_stats.pt  [s2mel.pth feat1.pt ...]
    hf_cache/w2v-bert-2.0/                       (facebook/w2v-bert-2.0, Hugging Face layout)
    hf_cache/semantic_codec_model.safetensors    (amphion/MaskGCT semantic_codec/model.safetensors)

The two ``hf_cache`` locations are the ones the official code uses; both can be given
explicitly instead.  :func:`write_tiny_bundle` writes a folder of the same layout with a tiny
random configuration (and an ``indextts-bundle.json`` noting the tiny Wav2Vec2-BERT's feature
layer), for tests and the laptop demo.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from indextts_core.errors import InputError
from indextts_core.utils.fileio import atomic_write, sha256_file, write_json
from indextts_core.model.checkpoint import load_gpt, read_config
from indextts_core.model.codec import CodecConfig, SemanticCodec, load_codec
from indextts_core.model.config import GPTConfig
from indextts_core.model.features import HIDDEN_LAYER, SemanticFeatures
from indextts_core.model.unified_voice import UnifiedVoice

BUNDLE_META = "indextts-bundle.json"
W2V_DIR = Path("hf_cache") / "w2v-bert-2.0"
CODEC_FILE = Path("hf_cache") / "semantic_codec_model.safetensors"
RESOURCES = Path(__file__).resolve().parent.parent / "resources"


@dataclass(frozen=True)
class ModelBundle:
    checkpoint_dir: Path
    config: dict[str, Any]
    gpt_config: GPTConfig
    codec_config: CodecConfig
    w2v_bert_dir: Path
    codec_path: Path
    hidden_layer: int = HIDDEN_LAYER

    @property
    def gpt_path(self) -> Path:
        return self.checkpoint_dir / self.config.get("gpt_checkpoint", "gpt.pth")

    @property
    def tokenizer_path(self) -> Path:
        return self.checkpoint_dir / (self.config.get("dataset") or {}).get("bpe_model", "bpe.model")

    @property
    def stats_path(self) -> Path:
        return self.checkpoint_dir / self.config.get("w2v_stat", "wav2vec2bert_stats.pt")

    def load_gpt(self, strict: bool = True) -> UnifiedVoice:
        return load_gpt(self.checkpoint_dir, strict=strict, config=self.gpt_config)

    def load_codec(self) -> SemanticCodec:
        return load_codec(self.codec_path, self.codec_config)

    def load_features(self, device: str | torch.device = "cpu") -> SemanticFeatures:
        return SemanticFeatures.from_dirs(self.w2v_bert_dir, self.stats_path, layer=self.hidden_layer, device=device)

    def fingerprint(self) -> dict[str, str]:
        """sha256 of every file the models are built from (for cache keys and lineage)."""
        files = {"config.yaml": self.checkpoint_dir / "config.yaml", "gpt": self.gpt_path,
                 "tokenizer": self.tokenizer_path, "stats": self.stats_path, "codec": self.codec_path}
        files |= {f"w2v_bert/{p.name}": p for p in sorted(self.w2v_bert_dir.glob("*")) if p.is_file()}
        return {name: sha256_file(p) for name, p in files.items()}


def open_bundle(checkpoint_dir: str | Path, w2v_bert_dir: str | Path | None = None,
                codec_path: str | Path | None = None) -> ModelBundle:
    """Read a checkpoint folder's config and locate its auxiliary models (nothing is loaded yet)."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        raise InputError(f"{root}: checkpoint folder not found")
    config = read_config(root / "config.yaml")
    gpt_cfg = GPTConfig.from_dict(config["gpt"], f"{root / 'config.yaml'}: gpt")
    codec_cfg = CodecConfig.from_dict(config.get("semantic_codec") or {})
    meta = json.loads((root / BUNDLE_META).read_text()) if (root / BUNDLE_META).is_file() else {}
    bundle = ModelBundle(
        checkpoint_dir=root, config=config, gpt_config=gpt_cfg, codec_config=codec_cfg,
        w2v_bert_dir=Path(w2v_bert_dir) if w2v_bert_dir else root / W2V_DIR,
        codec_path=Path(codec_path) if codec_path else root / CODEC_FILE,
        hidden_layer=int(meta.get("w2v_bert_hidden_layer", HIDDEN_LAYER)),
    )
    for what, path in (("gpt weights", bundle.gpt_path), ("tokenizer", bundle.tokenizer_path),
                       ("feature statistics", bundle.stats_path)):
        if not path.is_file():
            raise InputError(f"{root}: {what} missing ({path.name})")
    return bundle


# ------------------------------------------------------------------------ tiny bundle

TINY_GPT = {
    "model_dim": 64, "max_mel_tokens": 600, "max_text_tokens": 200, "heads": 4, "use_mel_codes_as_input": True,
    "mel_length_compression": 1024, "layers": 2, "number_text_tokens": 0, "number_mel_codes": 66,
    "start_mel_token": 64, "stop_mel_token": 65, "start_text_token": 0, "stop_text_token": 1,
    "train_solo_embeddings": False, "condition_type": "conformer_perceiver",
    "condition_module": {"output_size": 8, "linear_units": 32, "attention_heads": 2, "num_blocks": 2,
                         "input_layer": "conv2d2", "perceiver_mult": 2},
    "emo_condition_module": {"output_size": 8, "linear_units": 32, "attention_heads": 2, "num_blocks": 2,
                             "input_layer": "conv2d2", "perceiver_mult": 0.0625},
}
TINY_CODEC = {"codebook_size": 64, "hidden_size": 1024, "codebook_dim": 8, "vocos_dim": 16,
              "vocos_intermediate_dim": 32, "vocos_num_layers": 2}


def train_base_tokenizer(lines: list[str], dest: Path, vocab_size: int = 256) -> int:
    """A SentencePiece unigram model with the official special ids (<s>=0, </s>=1, <unk>=2, no pad).

    ``lines`` should already be front-end text (upper-cased, CJK split).  Returns the piece count.
    """
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, model_type="unigram", vocab_size=vocab_size,
        hard_vocab_limit=False, bos_id=0, eos_id=1, unk_id=2, pad_id=-1, character_coverage=1.0,
        normalization_rule_name="nmt_nfkc", add_dummy_prefix=True, remove_extra_whitespaces=True,
        byte_fallback=False, max_sentencepiece_length=16, num_threads=1, minloglevel=2,
    )
    with atomic_write(dest, "wb") as f:
        f.write(buf.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    return sp.GetPieceSize()


def write_tiny_bundle(dest: str | Path, seed: int = 0, vocab_size: int = 256) -> ModelBundle:
    """Write a tiny random checkpoint folder in the official layout (about 35 MB, a few seconds)."""
    from safetensors.torch import save_model
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel
    from transformers.utils import logging as hf_logging

    from indextts_core.text.frontend import split_cjk

    hf_logging.disable_progress_bar()
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    lines = [split_cjk(line) for line in (RESOURCES / "base_languages.txt").read_text(encoding="utf-8").splitlines()
             if line.strip()]
    n_pieces = train_base_tokenizer(lines, root / "bpe.model", vocab_size)

    gpt = dict(TINY_GPT, number_text_tokens=n_pieces)
    config = {"dataset": {"bpe_model": "bpe.model"}, "gpt": gpt, "semantic_codec": TINY_CODEC,
              "gpt_checkpoint": "gpt.pth", "w2v_stat": "wav2vec2bert_stats.pt", "version": 2.0}
    with atomic_write(root / "config.yaml") as f:
        f.write("# tiny random IndexTTS-2-layout bundle for tests and the demo (not a trained model)\n")
        yaml.safe_dump(config, f, sort_keys=False)

    torch.manual_seed(seed)
    model = UnifiedVoice(GPTConfig.from_dict(gpt))
    with torch.no_grad():  # the released init leaves these at zero; make the tiny model less degenerate
        model.speed_emb.weight.normal_(std=0.02)
    with atomic_write(root / "gpt.pth", "wb") as f:
        torch.save(model.state_dict(), f)

    hidden = TINY_CODEC["hidden_size"]
    g = torch.Generator().manual_seed(seed + 1)
    stats = {"mean": torch.randn(hidden, generator=g) * 0.1, "var": torch.rand(hidden, generator=g) + 0.5}
    with atomic_write(root / "wav2vec2bert_stats.pt", "wb") as f:
        torch.save(stats, f)

    w2v_dir = root / W2V_DIR
    torch.manual_seed(seed + 2)
    w2v = Wav2Vec2BertModel(Wav2Vec2BertConfig(
        hidden_size=hidden, num_hidden_layers=1, num_attention_heads=16, intermediate_size=64,
        feature_projection_input_dim=160, hidden_act="swish", position_embeddings_type="relative_key",
        left_max_position_embeddings=64, right_max_position_embeddings=8, conv_depthwise_kernel_size=31,
        layer_norm_eps=1e-5, add_adapter=False))
    w2v.save_pretrained(str(w2v_dir))
    SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, padding_value=1.0, sampling_rate=16000, stride=2,
                                return_attention_mask=True, padding_side="right").save_pretrained(str(w2v_dir))

    torch.manual_seed(seed + 3)
    codec = SemanticCodec(CodecConfig.from_dict(TINY_CODEC))
    (root / CODEC_FILE).parent.mkdir(parents=True, exist_ok=True)
    save_model(codec, str(root / CODEC_FILE))
    write_json(root / BUNDLE_META, {"format": 1, "kind": "tiny-random", "seed": seed, "w2v_bert_hidden_layer": 1})
    return open_bundle(root)
