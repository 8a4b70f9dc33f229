"""A checkpoint folder and everything the pipeline builds from it.

:func:`open_bundle` reads an official IndexTTS-2 folder (or one of our exports)::

    config.yaml  gpt.pth  bpe.model  wav2vec2bert_stats.pt  [s2mel.pth feat1.pt ...]
    hf_cache/w2v-bert-2.0/                       (facebook/w2v-bert-2.0, Hugging Face layout)
    hf_cache/semantic_codec_model.safetensors    (amphion/MaskGCT semantic_codec/model.safetensors)
    hf_cache/campplus_cn_common.bin              (funasr/campplus, for synthesis)
    hf_cache/bigvgan/                            (nvidia/bigvgan_v2_22khz_80band_256x, for synthesis)

The ``hf_cache`` locations are where the official code's downloads land; each can be given
explicitly instead (an export carries no ``hf_cache``: it names the base folder's encoders).

An IndexTTS-2.5 folder (``version: 2.5`` in its config, as ``infer_v2_5`` opens it) differs in
two files: the text vocabulary is ``multilingual_zh_ja_yue_char_del.tiktoken`` (no ``bpe.model``)
and the 25 Hz semantic codec is ``codec.pth`` in the folder itself (``{"model": state_dict}``).

:func:`indextts_core.tiny.write_tiny_bundle` writes a folder of either layout with a tiny random
configuration, for tests and the laptop demo.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from indextts_core.errors import InputError
from indextts_core.utils.fileio import sha256_file
from indextts_core.model.checkpoint import load_gpt, read_config
from indextts_core.model.codec import CodecConfig, SemanticCodec, load_codec
from indextts_core.model.config import GPTConfig
from indextts_core.model.features import HIDDEN_LAYER, SemanticFeatures
from indextts_core.model.unified_voice import UnifiedVoice
from indextts_core.layout import BIGVGAN_DIR, CAMPPLUS_FILE, CODEC_FILE, HF_CACHE, W2V_DIR  # noqa: F401

BUNDLE_META = "indextts-bundle.json"
#: IndexTTS-2.5's codec, in the checkpoint folder itself (``infer_v2_5``: ``model_dir/codec.pth``).
CODEC_V25_FILE = "codec.pth"
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
    campplus_config: dict[str, int] | None = None  # constructor widths (None: the release's)
    hf_cache: Path | None = None  # where campplus and bigvgan are (default: <checkpoint>/hf_cache)
    campplus_file: Path | None = None  # given apart (e.g. the download.campplus asset)
    bigvgan_folder: Path | None = None  # given apart (e.g. the download.bigvgan asset)
    kind: str | None = None  # "tiny-random": the tests' and the demo's random models (indextts-bundle.json)

    @property
    def s2mel_path(self) -> Path:
        return self.checkpoint_dir / self.config.get("s2mel_checkpoint", "s2mel.pth")

    @property
    def campplus_path(self) -> Path:
        return self.campplus_file or (self.hf_cache or self.checkpoint_dir / HF_CACHE) / CAMPPLUS_FILE.name

    @property
    def bigvgan_dir(self) -> Path:
        return self.bigvgan_folder or (self.hf_cache or self.checkpoint_dir / HF_CACHE) / BIGVGAN_DIR.name

    @property
    def gpt_path(self) -> Path:
        return self.checkpoint_dir / self.config.get("gpt_checkpoint", "gpt.pth")

    @property
    def is_v25(self) -> bool:
        """An IndexTTS-2.5 folder (tiktoken vocabulary, CAMPPlus speaker row, 25 Hz codec)."""
        return self.gpt_config.is_v25

    @property
    def tokenizer_path(self) -> Path:
        """``bpe.model`` (or ``dataset.bpe_model``); 2.5: the tiktoken rank file ``infer_v2_5`` reads."""
        if self.is_v25:
            from indextts_core.model.config import TIKTOKEN_FILE

            return self.checkpoint_dir / TIKTOKEN_FILE
        return self.checkpoint_dir / (self.config.get("dataset") or {}).get("bpe_model", "bpe.model")

    @property
    def stats_path(self) -> Path:
        return self.checkpoint_dir / self.config.get("w2v_stat", "wav2vec2bert_stats.pt")

    def load_gpt(self, strict: bool = True) -> UnifiedVoice:
        return load_gpt(self.checkpoint_dir, strict=strict, config=self.gpt_config)

    def require_encoders(self, w2v_bert: bool = True, codec: bool = True) -> None:
        """An error naming the missing file and where it comes from, instead of a traceback deep in a loader."""
        if w2v_bert and not (self.w2v_bert_dir / "config.json").is_file():
            raise InputError(
                f"{self.w2v_bert_dir}: Wav2Vec2-BERT 2.0 folder missing (config.json not found). Set download.w2v_bert "
                "(hf://facebook/w2v-bert-2.0 at a pinned revision, or a local folder), give --w2v-bert, or put it at "
                f"{self.checkpoint_dir / W2V_DIR} as the official folder has it")
        if codec and not self.codec_path.is_file() and self.is_v25:
            raise InputError(f"{self.codec_path}: IndexTTS-2.5 semantic codec missing (the release ships it as "
                             f"{CODEC_V25_FILE} in the checkpoint folder)")
        if codec and not self.codec_path.is_file():
            raise InputError(
                f"{self.codec_path}: MaskGCT semantic codec missing. Set download.semantic_codec (hf://amphion/MaskGCT "
                "at a pinned revision, files [semantic_codec/model.safetensors]), or put it at "
                f"{self.checkpoint_dir / CODEC_FILE} as the official folder has it")

    def load_codec(self) -> SemanticCodec:
        self.require_encoders(w2v_bert=False)
        return load_codec(self.codec_path, self.codec_config)

    def load_features(self, device: str | torch.device = "cpu") -> SemanticFeatures:
        self.require_encoders(codec=False)
        return SemanticFeatures.from_dirs(self.w2v_bert_dir, self.stats_path, layer=self.hidden_layer, device=device)

    def fingerprint(self) -> dict[str, str]:
        """sha256 of every file the models are built from (for cache keys and lineage)."""
        self.require_encoders()
        files = {"config.yaml": self.checkpoint_dir / "config.yaml", "gpt": self.gpt_path,
                 "tokenizer": self.tokenizer_path, "stats": self.stats_path, "codec": self.codec_path}
        files |= {f"w2v_bert/{p.name}": p for p in sorted(self.w2v_bert_dir.glob("*")) if p.is_file()}
        if self.is_v25:  # 2.5 speaker conditioning is a CAMPPlus vector
            files["campplus"] = self.campplus_path
        return {name: sha256_file(p) for name, p in files.items()}


def open_bundle(checkpoint_dir: str | Path, w2v_bert_dir: str | Path | None = None,
                codec_path: str | Path | None = None, hf_cache: str | Path | None = None,
                campplus_path: str | Path | None = None, bigvgan_dir: str | Path | None = None) -> ModelBundle:
    """Read a checkpoint folder's config and locate its auxiliary models (nothing is loaded yet).

    ``hf_cache``: the folder holding the encoders and synthesis models when it is not the
    checkpoint's own ``hf_cache/`` (an export uses its base folder's).  Each auxiliary model can
    also be given on its own (``w2v_bert_dir``, ``codec_path``, ``campplus_path``, ``bigvgan_dir``).
    """
    root = Path(checkpoint_dir)
    if not root.is_dir():
        raise InputError(f"{root}: checkpoint folder not found")
    config = read_config(root / "config.yaml")
    gpt_cfg = GPTConfig.from_dict(config["gpt"], f"{root / 'config.yaml'}: gpt", version=config.get("version"))
    codec_cfg = CodecConfig.from_dict(config.get("semantic_codec") or {}, version=config.get("version"))
    meta = json.loads((root / BUNDLE_META).read_text()) if (root / BUNDLE_META).is_file() else {}
    cache = Path(hf_cache) if hf_cache else root / HF_CACHE
    bundle = ModelBundle(
        checkpoint_dir=root, config=config, gpt_config=gpt_cfg, codec_config=codec_cfg,
        w2v_bert_dir=Path(w2v_bert_dir) if w2v_bert_dir else cache / W2V_DIR.name,
        codec_path=Path(codec_path) if codec_path else (root / CODEC_V25_FILE if gpt_cfg.is_v25
                                                         else cache / CODEC_FILE.name),
        hidden_layer=int(meta.get("w2v_bert_hidden_layer", HIDDEN_LAYER)),
        campplus_config=meta.get("campplus"), hf_cache=cache,
        campplus_file=Path(campplus_path) if campplus_path else None,
        bigvgan_folder=Path(bigvgan_dir) if bigvgan_dir else None, kind=meta.get("kind"),
    )
    for what, path in (("gpt weights", bundle.gpt_path), ("tokenizer", bundle.tokenizer_path),
                       ("feature statistics", bundle.stats_path)):
        if not path.is_file():
            raise InputError(f"{root}: {what} missing ({path.name})")
    return bundle
