"""The ``gpt:`` section of an IndexTTS-2 ``config.yaml``, as a validated dataclass.

The official code passes every key of ``gpt:`` straight to ``UnifiedVoice(**cfg.gpt)``; this
module reads the same keys (unknown keys are an error there and here), fills the constructor
defaults the released config leaves out, and refuses settings this implementation does not
build (the v1 mel encoder, solo embeddings, other conditioners).

The one rule about vocabulary size lives here: a tokenizer of ``V`` pieces needs a model with
``number_text_tokens = V`` and ``V + 1`` rows in ``text_embedding`` and ``text_head``
(:func:`text_rows`).  Nothing else in the project adds or subtracts one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from indextts_core.errors import ConfigError

#: The two speaker paths of the released ``UnifiedVoice``: IndexTTS-2's conformer + perceiver over
#: Wav2Vec2-BERT features, IndexTTS-2.5's projection of a 192-wide CAMPPlus vector
#: (``spk_cond_mode="campplus"``, which ``infer_v2_5`` passes; ``config.yaml`` has no key for it).
SPEAKER_CONDITIONS = ("conformer", "campplus")


#: IndexTTS-2.5's text vocabulary in the released folder (a tiktoken rank file; IndexTTS-2 ships ``bpe.model``).
#: A release-layout fact kept here, beside the release switch, so the model layer never imports the text layer.
TIKTOKEN_FILE = "multilingual_zh_ja_yue_char_del.tiktoken"


def release_of(version: Any) -> str:
    """``"2.5"`` for a ``version: 2.5`` config, ``"2.0"`` for anything else (2.0 or missing)."""
    return "2.5" if str(version).strip() == "2.5" else "2.0"


def text_rows(vocab_size: int) -> int:
    """Rows of ``text_embedding``/``text_head`` for a tokenizer of ``vocab_size`` pieces."""
    if vocab_size < 2:
        raise ValueError(f"vocabulary size must be at least 2, got {vocab_size}")
    return vocab_size + 1


def vocab_size_from_rows(rows: int) -> int:
    """Inverse of :func:`text_rows`: the tokenizer size a checkpoint's text rows were built for."""
    return rows - 1


@dataclass(frozen=True)
class ConformerSpec:
    """``condition_module`` / ``emo_condition_module``."""

    output_size: int
    linear_units: int
    attention_heads: int
    num_blocks: int
    input_layer: str = "conv2d2"
    perceiver_mult: float = 2.0

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> ConformerSpec:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
        try:
            spec = cls(**d)
        except TypeError as e:
            raise ConfigError(f"{where}: {e}") from None
        if spec.input_layer != "conv2d2":
            raise ConfigError(f"{where}.input_layer: only 'conv2d2' (IndexTTS-2) is supported, got {spec.input_layer!r}")
        if spec.output_size % spec.attention_heads:
            raise ConfigError(f"{where}: output_size {spec.output_size} is not divisible by "
                              f"attention_heads {spec.attention_heads}")
        return spec


@dataclass(frozen=True)
class GPTConfig:
    """Every argument ``UnifiedVoice`` (IndexTTS-2) takes from ``config.yaml``'s ``gpt:`` section."""

    model_dim: int
    layers: int
    heads: int
    max_text_tokens: int
    max_mel_tokens: int
    number_text_tokens: int
    condition_module: ConformerSpec
    emo_condition_module: ConformerSpec
    number_mel_codes: int = 8194
    start_mel_token: int = 8192
    stop_mel_token: int = 8193
    start_text_token: int = 0
    stop_text_token: int = 1
    use_mel_codes_as_input: bool = True
    mel_length_compression: int = 1024
    train_solo_embeddings: bool = False
    condition_type: str = "conformer_perceiver"
    condition_num_latent: int = 32
    max_conditioning_inputs: int = 1
    types: int = 1
    checkpointing: bool = True
    #: not a ``gpt:`` key: set from the config's ``version`` (2.5 -> ``"campplus"``)
    speaker_condition: str = "conformer"

    @property
    def is_v25(self) -> bool:
        """IndexTTS-2.5's layout: ``spk_emb_proj`` + ``lang_embedding``, no speaker conformer or speed rows."""
        return self.speaker_condition == "campplus"

    @property
    def text_vocab_rows(self) -> int:
        return text_rows(self.number_text_tokens * self.types)

    @property
    def text_positions(self) -> int:
        return self.max_text_tokens + 2

    @property
    def mel_positions(self) -> int:
        return self.max_mel_tokens + 2 + self.max_conditioning_inputs

    @classmethod
    def from_dict(cls, gpt: dict[str, Any], where: str = "config.yaml: gpt", version: Any = None) -> GPTConfig:
        """The ``gpt:`` section; ``version`` is the config's top-level ``version`` (2.5 -> CAMPPlus speaker path)."""
        if not isinstance(gpt, dict):
            raise ConfigError(f"{where}: expected a mapping")
        names = {f.name for f in fields(cls)} - {"speaker_condition"}
        unknown = set(gpt) - names
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; the official UnifiedVoice would refuse "
                              "them too")
        data = dict(gpt)
        for key in ("condition_module", "emo_condition_module"):
            if key not in data:
                raise ConfigError(f"{where}.{key}: required")
            data[key] = ConformerSpec.from_dict(dict(data[key]), f"{where}.{key}")
        data["speaker_condition"] = "campplus" if release_of(version) == "2.5" else "conformer"
        try:
            cfg = cls(**data)
        except TypeError as e:
            raise ConfigError(f"{where}: {e}") from None
        checks = {
            "use_mel_codes_as_input": (cfg.use_mel_codes_as_input is True, "only semantic-code input (true) is supported"),
            "train_solo_embeddings": (cfg.train_solo_embeddings is False, "solo embeddings are not supported"),
            "condition_type": (cfg.condition_type == "conformer_perceiver",
                               "only 'conformer_perceiver' (IndexTTS-2) is supported"),
            "types": (cfg.types == 1, "only types: 1 is supported"),
            "model_dim": (cfg.model_dim % cfg.heads == 0, f"must be divisible by heads ({cfg.heads})"),
            "number_mel_codes": (cfg.stop_mel_token < cfg.number_mel_codes and cfg.start_mel_token < cfg.number_mel_codes,
                                 "start/stop mel tokens must be below number_mel_codes"),
        }
        for key, (ok, why) in checks.items():
            if not ok:
                raise ConfigError(f"{where}.{key}: {why} (got {getattr(cfg, key)!r})")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """The keys as they appear in ``config.yaml``'s ``gpt:`` (constructor defaults included)."""
        d = asdict(self)
        d.pop("speaker_condition")
        return d

    def with_vocab(self, vocab_size: int) -> GPTConfig:
        return replace(self, number_text_tokens=vocab_size)
