"""Model set-up for fine-tuning: the base checkpoint, resized to the tokenizer, with the right parts frozen.

Everything a mismatched set of files would silently break is checked here, before any step, and
the error says which file is which (the seed's "training losses stuck" cause):

* the tokenizer must *extend* the checkpoint's ``bpe.model``: same pieces at ids ``0..N-1``;
* the vocabulary size comes from the tokenizer (``V`` pieces -> ``V + 1`` text rows, one rule in
  :func:`indextts_core.model.config.text_rows`), never from tensor shapes;
* the index's text ids must have been made with this tokenizer, and its speaker latents and
  emotion vectors with this base GPT (``preprocess.json`` records both).

Frozen by construction:

* base text rows (embedding, head weight and bias) are constants (:func:`split_text_rows`), so no
  gradient, weight decay or optimizer state can touch them;
* the conditioning encoders, perceivers and emotion projections always: their outputs were
  precomputed by preprocessing from the base model, so training them would have no effect on the
  loss, and keeping them at the base weights keeps the export consistent with the cached latents;
* ``freeze_conditioning`` also freezes the two speed rows that follow the latents in the prefix.

IndexTTS-2.5: the vocabulary must be the checkpoint's tiktoken file (nothing is resized), the
speaker row ``spk_emb_proj(campplus)`` is precomputed like 2.0's latents, and of
``lang_embedding`` only the run's language row trains (:class:`~indextts_core.model.vocab.OneRowEmbedding`),
started as the tokenizer stage recorded (kept, or the released languages' mean).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from indextts_core.errors import InputError
from indextts_core.utils.fileio import sha256_file
from indextts_core.model.bundle import ModelBundle
from indextts_core.model.checkpoint import load_gpt
from indextts_core.model.config import GPTConfig, text_rows, vocab_size_from_rows
from indextts_core.model.unified_voice import UnifiedVoice
from indextts_core.model.vocab import (
    ResizeReport,
    resize_text_vocab,
    split_text_rows,
    train_language_row,
    train_text_row,
)
from indextts_core.text.tokenizer import load_sentencepiece, new_piece_decompositions
from indextts_core.training.lora import ADAPTER_SUFFIXES, LoRASpec, apply_lora

log = logging.getLogger(__name__)

#: Modules whose outputs preprocessing caches; never trained here.
PRECOMPUTED = ("conditioning_encoder", "perceiver_encoder", "emo_conditioning_encoder", "emo_perceiver_encoder",
               "emo_layer", "emovec_layer", "spk_emb_proj")


@dataclass(frozen=True)
class TokenizerCheck:
    path: Path
    sha256: str
    vocab_size: int
    base_vocab: int
    base_sha256: str
    notes: list[str] = field(default_factory=list)


def check_tokenizer(base_tokenizer: Path, tokenizer: Path, checkpoint_rows: int, checkpoint: Path) -> TokenizerCheck:
    """Refuse a tokenizer that is not an extension of the checkpoint's (see the module docstring)."""
    base_sp, ext_sp = load_sentencepiece(base_tokenizer), load_sentencepiece(tokenizer)
    n_model = vocab_size_from_rows(checkpoint_rows)
    n_base = base_sp.GetPieceSize()
    if n_base != n_model:
        raise InputError(f"{checkpoint}: the checkpoint has {checkpoint_rows} text rows (a {n_model}-piece vocabulary) "
                         f"but its tokenizer {base_tokenizer} has {n_base} pieces: the checkpoint folder is "
                         "inconsistent (was it exported with another tokenizer?)")
    vocab = ext_sp.GetPieceSize()
    if vocab < n_base:
        raise InputError(f"--tokenizer {tokenizer} has {vocab} pieces, fewer than the {n_base} of the checkpoint's "
                         f"tokenizer {base_tokenizer}: it is not an extension of this checkpoint's vocabulary (wrong "
                         "--tokenizer, or wrong --checkpoint?)")
    for i in range(n_base):
        if base_sp.IdToPiece(i) != ext_sp.IdToPiece(i):
            raise InputError(f"--tokenizer {tokenizer}: id {i} is {ext_sp.IdToPiece(i)!r} there but "
                             f"{base_sp.IdToPiece(i)!r} in the checkpoint's tokenizer {base_tokenizer}: the tokenizer "
                             "was not extended from this checkpoint's bpe.model, so every base embedding would be "
                             "read for the wrong piece (the 'losses stuck' failure)")
    base_sha = sha256_file(base_tokenizer)
    notes = []
    side = Path(tokenizer).with_suffix(".json")
    if side.is_file():
        recorded = (json.loads(side.read_text(encoding="utf-8")).get("base") or {}).get("sha256")
        if recorded and recorded != base_sha:
            notes.append(f"{side.name} records base tokenizer {recorded[:12]}, the checkpoint has {base_sha[:12]}; "
                         f"the first {n_base} pieces agree, so training goes on")
    if vocab == n_base:
        notes.append(f"--tokenizer {tokenizer} adds no pieces to the checkpoint's {n_base}: a new script would be "
                     "mostly <unk>; is this the extended tokenizer?")
    for note in notes:
        log.warning("%s", note)
    return TokenizerCheck(Path(tokenizer), sha256_file(tokenizer), vocab, n_base, base_sha, notes)


def check_tiktoken(base_tokenizer: Path, tokenizer: Path, checkpoint_rows: int, checkpoint: Path) -> TokenizerCheck:
    """IndexTTS-2.5: the run's vocabulary must be the checkpoint's tiktoken file, byte for byte (the tokenizer
    stage keeps it), and fill the checkpoint's text rows."""
    from indextts_core.text.tiktoken_vocab import load_tiktoken_vocab

    base, ext = load_tiktoken_vocab(base_tokenizer), load_tiktoken_vocab(tokenizer)
    if ext.sha256 != base.sha256:
        raise InputError(f"--tokenizer {tokenizer} ({ext.sha256[:12]}) is not the checkpoint's tiktoken vocabulary "
                         f"{base_tokenizer} ({base.sha256[:12]}): an IndexTTS-2.5 fine-tune keeps the released "
                         "vocabulary (wrong --tokenizer, or wrong --checkpoint?)")
    if vocab_size_from_rows(checkpoint_rows) != base.n_vocab:
        raise InputError(f"{checkpoint}: the checkpoint has {checkpoint_rows} text rows but its vocabulary "
                         f"{base_tokenizer} has {base.n_vocab} ids (number_text_tokens must equal it)")
    return TokenizerCheck(Path(tokenizer), ext.sha256, base.n_vocab, base.n_vocab, base.sha256)


def check_index(meta: Mapping[str, Any], index_dir: Path, tokenizer: TokenizerCheck, base_gpt_sha256: str,
                max_text_id: int, checkpoint_dir: Path | None = None) -> None:
    """Refuse an index made with another tokenizer or another base checkpoint (every recorded file)."""
    recorded = (meta.get("tokenizer") or {})
    if recorded.get("sha256") and recorded["sha256"] != tokenizer.sha256:
        raise InputError(f"{index_dir / 'preprocess.json'}: the text ids were made with tokenizer "
                         f"{recorded.get('file')} ({recorded['sha256'][:12]}), but --tokenizer is {tokenizer.path} "
                         f"({tokenizer.sha256[:12]}); re-run preprocess with this tokenizer, or train with the one it "
                         "used")
    gpt = meta.get("base_gpt_sha256")
    if gpt and gpt != base_gpt_sha256:
        raise InputError(f"{index_dir / 'preprocess.json'}: speaker latents and emotion vectors were computed with base "
                         f"GPT {gpt[:12]}, but the checkpoint's gpt.pth is {base_gpt_sha256[:12]}; re-run preprocess "
                         "with this checkpoint")
    for name, sha in (meta.get("base_files_sha256") or {}).items() if checkpoint_dir is not None else ():
        path = Path(checkpoint_dir) / name
        got = sha256_file(path) if path.is_file() else "missing"
        if got != sha:
            raise InputError(f"{index_dir / 'preprocess.json'}: the features were computed with {name} {sha[:12]}, but "
                             f"the checkpoint's {path} is {got[:12]}: this is not the checkpoint preprocess used "
                             "(download.checkpoint / --checkpoint); re-run preprocess with it, or train with the one "
                             "preprocess used")
    if not gpt:
        log.warning("%s: no base_gpt_sha256 recorded (older preprocess output); cannot check that the cached speaker "
                    "latents come from this checkpoint", index_dir / "preprocess.json")
    if max_text_id >= tokenizer.vocab_size:
        raise InputError(f"{index_dir / 'text_ids.safetensors'}: text id {max_text_id} is outside the tokenizer's "
                         f"{tokenizer.vocab_size} pieces")


def check_language_rows(rows: list[dict[str, Any]], language: Mapping[str, Any] | None, index_dir: Path) -> None:
    """2.5: every row of the run's language must have been framed for the language row training uses."""
    if not language:
        return
    base = str(language["language"]).split("-")[0]
    bad = [r for r in rows if str(r.get("language", "")).split("-")[0] == base and r.get("lang") != language["row"]]
    if bad:
        raise InputError(f"{index_dir}: {len(bad)} {base!r} rows (e.g. {bad[0].get('id')!r}, language row "
                         f"{bad[0].get('lang')!r}) were preprocessed for another language choice than the tokenizer "
                         f"records (lang {language['code']!r}, row {language['row']}); re-run preprocess with this "
                         "tokenizer stage's output")


def set_dropout(model: nn.Module, p: float) -> None:
    """Set every dropout probability of the GPT stack (embeddings, attention, residuals)."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
        if hasattr(m, "attn_dropout"):
            m.attn_dropout = p


def config_digest(cfg: GPTConfig) -> str:
    """Digest of the architecture (a 2.0 config's digest is its ``gpt:`` keys; 2.5 adds the speaker path)."""
    keys = cfg.to_dict() | ({"speaker_condition": cfg.speaker_condition} if cfg.is_v25 else {})
    return hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class ModelSetup:
    model: UnifiedVoice
    tokenizer: TokenizerCheck
    resize: ResizeReport
    base_gpt_sha256: str
    config_sha256: str
    frozen: list[str]  # top-level modules without trainable parameters
    trainable_parameters: int
    frozen_parameters: int
    language: dict[str, Any] | None = None  # 2.5: the language row that trains and how it started
    lora: LoRASpec | None = None
    adapters: list[str] = field(default_factory=list)  # layers with LoRA adapters

    @property
    def trained_base_rows(self) -> list[int]:
        """Base text rows trained on purpose (2.5: the new language's ``<|code|>`` row), left out of the
        base-rows check."""
        token = (self.language or {}).get("token_id")
        return [token] if token is not None else []

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def base_vocab(self) -> int:
        return self.tokenizer.base_vocab

    def describe(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size, "base_vocab": self.base_vocab, "text_rows": text_rows(self.vocab_size),
                "new_rows_from_pieces": self.resize.from_pieces, "new_rows_from_mean": self.resize.from_mean,
                "frozen_modules": self.frozen, "trainable_parameters": self.trainable_parameters,
                "frozen_parameters": self.frozen_parameters, "tokenizer_sha256": self.tokenizer.sha256,
                "base_gpt_sha256": self.base_gpt_sha256, "config_sha256": self.config_sha256,
                **({"language": self.language} if self.language else {}),
                **({"lora": {**self.lora.__dict__, "targets": list(self.lora.targets), "layers": len(self.adapters)}}
                   if self.lora else {})}


def prepare_model(bundle: ModelBundle, tokenizer: Path, freeze_base_rows: bool = True,
                  freeze_conditioning: bool = True, dropout: float = 0.1,
                  gradient_checkpointing: bool = False, lora: LoRASpec | None = None) -> ModelSetup:
    """Load the base GPT strictly, resize it to ``tokenizer`` and freeze what must not train.

    2.5: the vocabulary is the checkpoint's (no resize); the language the tokenizer stage chose trains
    its ``lang_embedding`` row and, with ``freeze_base_rows``, its ``<|code|>`` text row, when it was
    not released (:func:`_language_row`).  ``lora``:
    adapters on the GPT stack, which then trains only through them (new text rows and the language
    row still train; see :mod:`indextts_core.training.lora`).
    """
    base_sha = sha256_file(bundle.gpt_path)
    # mapped, copy-on-write: what trains becomes private memory page by page as it changes (the file is never
    # written); on the CPU what never changes (the precomputed encoders, 1.3 of the released 3.3 GiB) stays clean
    # pages of the file, read only when a checkpoint is saved, which the kernel can drop again under pressure
    model = load_gpt(bundle.checkpoint_dir, strict=True, config=bundle.gpt_config, mmap=True)
    rows = model.text_embedding.weight.shape[0]
    language: dict[str, Any] | None = None
    if model.cfg.is_v25:
        tok = check_tiktoken(bundle.tokenizer_path, tokenizer, rows, bundle.checkpoint_dir)
        report = ResizeReport(tok.base_vocab, tok.vocab_size, rows, tok.base_vocab, 0, 0)
    else:
        tok = check_tokenizer(bundle.tokenizer_path, tokenizer, rows, bundle.checkpoint_dir)
        decompositions = new_piece_decompositions(load_sentencepiece(bundle.tokenizer_path),
                                                  load_sentencepiece(tokenizer))
        report = resize_text_vocab(model, tok.vocab_size, decompositions)
    if tok.vocab_size > tok.base_vocab:
        split_text_rows(model, tok.base_vocab, freeze=freeze_base_rows)
    elif freeze_base_rows and not model.cfg.is_v25:
        log.warning("no new pieces: with freeze_base_rows the text rows stay frozen entirely")
        for p in (*model.text_embedding.parameters(), *model.text_head.parameters()):
            p.requires_grad_(False)
    elif freeze_base_rows:  # 2.5 keeps its vocabulary: its text rows are base rows
        for p in (*model.text_embedding.parameters(), *model.text_head.parameters()):
            p.requires_grad_(False)
    frozen = [m for m in PRECOMPUTED if hasattr(model, m)]
    frozen += ["speed_emb"] if freeze_conditioning and hasattr(model, "speed_emb") else []
    for name in frozen:
        for p in getattr(model, name).parameters():
            p.requires_grad_(False)
    if model.cfg.is_v25:
        language = _language_row(model, tokenizer, freeze_base_rows)
    set_dropout(model, dropout)  # before the adapters: their own dropout is lora.dropout
    adapters: list[str] = []
    if lora is not None:
        adapters = apply_lora(model.gpt, lora)
        for name, p in model.named_parameters():  # the stack and the heads learn through the adapters only
            if not name.endswith(ADAPTER_SUFFIXES) and (name.startswith(LORA_FROZEN) or name in LORA_FROZEN_ROWS):
                p.requires_grad_(False)
        log.info("LoRA rank %d on %d layers of the GPT stack (%s)", lora.rank, len(adapters), ", ".join(lora.targets))
    model.gpt.gradient_checkpointing = gradient_checkpointing
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad) + \
        sum(b.numel() for n, b in model.named_buffers() if n.endswith(("_base", ".table")))
    return ModelSetup(model, tok, report, base_sha, config_digest(model.cfg), frozen, n_train, n_frozen,
                      language=language, lora=lora, adapters=adapters)


#: With LoRA, parameters under these prefixes train only through adapters (new text rows and the
#: language row are separate parameters and still train).
LORA_FROZEN = ("gpt.", "mel_embedding.", "mel_head.", "final_norm.", "mel_pos_embedding.", "text_pos_embedding.")
LORA_FROZEN_ROWS = {"text_embedding.weight", "text_head.weight", "text_head.bias", "text_embedding.weight_base",
                    "text_head.weight_base", "text_head.bias_base"}


def _language_row(model: UnifiedVoice, tokenizer: Path, freeze_base_rows: bool) -> dict[str, Any]:
    """2.5: the language the tokenizer stage chose.  ``released_mean``: its ``lang_embedding`` row starts
    from the released languages' mean and is the only row of the table that trains; with
    ``freeze_base_rows`` so is the text row of its ``<|code|>`` token (same start), the prefix
    inference writes before every segment.  ``keep``: both stay as released (frozen)."""
    from indextts_core.text.encoder import ROW_INITS, recorded_choice
    from indextts_core.text.tiktoken_vocab import RELEASED_LANGUAGES, language_index, load_tiktoken_vocab

    choice = recorded_choice(tokenizer)
    if choice is None:
        raise InputError(f"{tokenizer}: no language choice recorded next to it ({Path(tokenizer).with_suffix('.json')}"
                         " is missing); run the tokenizer stage (extend-bpe) on this IndexTTS-2.5 checkpoint first")
    if choice.row_init not in ROW_INITS:
        raise InputError(f"{Path(tokenizer).with_suffix('.json')}: language_choice.row_init {choice.row_init!r} is not "
                         f"one of {list(ROW_INITS)}")
    if choice.row_init == "keep":
        model.lang_embedding.weight.requires_grad_(False)
        log.info("lang_embedding: row %d (%s) kept as released; the table is frozen", choice.row, choice.code)
        return choice.to_dict() | {"trained_rows": []}
    done = train_language_row(model, choice.row, choice.row_init, [language_index(c) for c in RELEASED_LANGUAGES])
    log.info("lang_embedding: row %d (%s) trains, init %s (norm %.3f -> %.3f)", choice.row, choice.code,
             choice.row_init, done["norm_before"], done["norm_after"])
    done["trained_rows"] = ["lang_embedding"]
    vocab = load_tiktoken_vocab(tokenizer)
    token = vocab.lang_token_id(choice.code)
    if token is not None and freeze_base_rows:
        released = [vocab.lang_token_id(c) for c in RELEASED_LANGUAGES]
        text = train_text_row(model, token, [t for t in released if t is not None])
        log.info("text_embedding: the <|%s|> row (id %d) trains, from the released languages' tokens' mean "
                 "(norm %.3f -> %.3f)", choice.code, token, text["norm_before"], text["norm_after"])
        done |= {"token_id": token, "token_norm_before": text["norm_before"], "token_norm_after": text["norm_after"]}
        done["trained_rows"].append("text_embedding")
    return choice.to_dict() | done
