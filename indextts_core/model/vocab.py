"""Text-vocabulary surgery: resize to an extended tokenizer, and freeze the base rows for real.

Resizing to ``V`` pieces gives ``text_embedding`` and ``text_head`` ``text_rows(V) = V + 1`` rows:

* rows ``0..N-1`` (the base tokenizer's pieces) are copied unchanged;
* each new piece ``N..V-1`` starts from the mean of the base rows of the base pieces it
  decomposes into (:func:`indextts_core.tokenizer.new_piece_decompositions`), falling back to
  the mean of all base rows when it decomposes into nothing known (e.g. only ``<unk>``);
  the head bias likewise;
* the last row (the model's extra "+1" row, never produced by the tokenizer) keeps its values.

Freezing (:func:`freeze_base_rows`, or :func:`split_text_rows` with ``freeze=True``) splits each
of the three tensors into a constant buffer for rows ``0..N-1`` and a parameter for the rest.  Frozen rows are not parameters, so no optimizer
can change them (no gradient, no weight decay, no momentum), and the split modules still save
and load as the single official tensors (``text_embedding.weight``, ``text_head.weight``,
``text_head.bias``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from indextts_core.model.config import text_rows, vocab_size_from_rows
from indextts_core.model.unified_voice import UnifiedVoice


@dataclass(frozen=True)
class ResizeReport:
    old_vocab: int
    new_vocab: int
    rows: int  # text rows after resizing (new_vocab + 1)
    copied: int  # base rows copied
    from_pieces: int  # new rows initialised from their decomposition
    from_mean: int  # new rows initialised from the mean of all base rows


def _new_rows(old: torch.Tensor, n_base: int, new_vocab: int,
              decompositions: Mapping[int, Sequence[int]]) -> tuple[torch.Tensor, int]:
    """Rows for a resized tensor (works for 2-D weights and 1-D biases)."""
    new = old.new_empty((text_rows(new_vocab), *old.shape[1:]))
    new[:n_base] = old[:n_base]
    base_mean = old[:n_base].mean(dim=0)
    from_pieces = 0
    for token in range(n_base, new_vocab):
        parts = [i for i in decompositions.get(token, ()) if 0 <= i < n_base]
        if parts:
            new[token] = old[parts].mean(dim=0)
            from_pieces += 1
        else:
            new[token] = base_mean
    new[-1] = old[-1]  # the extra row stays what it was
    return new, from_pieces


@torch.no_grad()
def resize_text_vocab(model: UnifiedVoice, vocab_size: int,
                      decompositions: Mapping[int, Sequence[int]] | None = None) -> ResizeReport:
    """Resize the model's text rows to a ``vocab_size``-piece tokenizer (in place)."""
    if isinstance(model.text_embedding, SplitEmbedding):
        raise RuntimeError("resize before freezing base rows, not after")
    old_rows = model.text_embedding.weight.shape[0]
    n_base = vocab_size_from_rows(old_rows)
    if vocab_size < n_base:
        raise ValueError(f"cannot shrink the text vocabulary from {n_base} to {vocab_size} pieces: "
                         "base token ids would lose their rows")
    decompositions = decompositions or {}
    emb, from_pieces = _new_rows(model.text_embedding.weight, n_base, vocab_size, decompositions)
    head_w, _ = _new_rows(model.text_head.weight, n_base, vocab_size, decompositions)
    head_b, _ = _new_rows(model.text_head.bias, n_base, vocab_size, decompositions)
    d = model.cfg.model_dim
    model.text_embedding = nn.Embedding(emb.shape[0], d, device=emb.device, dtype=emb.dtype)
    model.text_embedding.weight.copy_(emb)
    model.text_head = nn.Linear(d, emb.shape[0], device=emb.device, dtype=emb.dtype)
    model.text_head.weight.copy_(head_w)
    model.text_head.bias.copy_(head_b)
    model.cfg = model.cfg.with_vocab(vocab_size)
    new = vocab_size - n_base
    return ResizeReport(n_base, vocab_size, emb.shape[0], n_base, from_pieces, new - from_pieces)


class _SplitRows(nn.Module):
    """Rows ``0..n-1`` and the rest of a tensor held separately; one tensor in state dicts.

    The base rows are a constant buffer (``frozen=True``) or a parameter of their own, so the
    base and the new rows can have their own optimizer settings either way.
    """

    def __init__(self, tensors: Mapping[str, torch.Tensor], n_base: int, frozen: bool = True):
        super().__init__()
        self.n_frozen = n_base if frozen else 0
        self.n_base = n_base
        self._names = list(tensors)
        for name, t in tensors.items():
            base = t[:n_base].detach().clone()
            if frozen:
                self.register_buffer(f"{name}_base", base, persistent=False)
            else:
                self.register_parameter(f"{name}_base", nn.Parameter(base))
            self.register_parameter(f"{name}_new", nn.Parameter(t[n_base:].detach().clone()))
        self.register_state_dict_post_hook(self._save_whole)
        self.register_load_state_dict_pre_hook(self._load_whole)

    def full(self, name: str) -> torch.Tensor:
        return torch.cat((getattr(self, f"{name}_base"), getattr(self, f"{name}_new")), dim=0)

    @staticmethod
    def _save_whole(module: _SplitRows, state: dict[str, Any], prefix: str, _meta: Any) -> None:
        for name in module._names:
            new = state.pop(prefix + f"{name}_new")
            base = state.pop(prefix + f"{name}_base", None)
            base = getattr(module, f"{name}_base") if base is None else base
            state[prefix + name] = torch.cat((base, new), dim=0).detach()

    @staticmethod
    def _load_whole(module: _SplitRows, state: dict[str, Any], prefix: str, *_args: Any) -> None:
        for name in module._names:
            whole = state.pop(prefix + name, None)
            if whole is None:
                continue
            base = getattr(module, f"{name}_base")
            if whole.shape[0] <= module.n_base or whole.shape[1:] != base.shape[1:]:
                state[prefix + name] = whole  # let load_state_dict report it as unexpected
                continue
            if module.n_frozen:
                with torch.no_grad():
                    base.copy_(whole[: module.n_base])
            else:
                state[prefix + f"{name}_base"] = whole[: module.n_base]
            state[prefix + f"{name}_new"] = whole[module.n_base:]


class SplitEmbedding(_SplitRows):
    """``nn.Embedding`` with the first ``n_base`` rows held apart (constant when ``frozen``)."""

    def __init__(self, embedding: nn.Embedding, n_base: int, frozen: bool = True):
        super().__init__({"weight": embedding.weight}, n_base, frozen)

    @property
    def weight(self) -> torch.Tensor:
        return self.full("weight")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.full("weight"))


class SplitLinear(_SplitRows):
    """``nn.Linear`` with the first ``n_base`` output rows (weight and bias) held apart (constant when ``frozen``)."""

    def __init__(self, linear: nn.Linear, n_base: int, frozen: bool = True):
        super().__init__({"weight": linear.weight, "bias": linear.bias}, n_base, frozen)

    @property
    def weight(self) -> torch.Tensor:
        return self.full("weight")

    @property
    def bias(self) -> torch.Tensor:
        return self.full("bias")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.full("weight"), self.full("bias"))


def split_text_rows(model: UnifiedVoice, n_base: int, freeze: bool = True) -> None:
    """Hold text rows ``0..n_base-1`` (embedding, head weight, head bias) apart from the new rows (in place).

    With ``freeze`` the base rows become constants; without it they stay trainable, as a parameter
    of their own (so new rows can still get their own learning rate and weight decay).
    """
    rows = model.text_embedding.weight.shape[0]
    if not 0 < n_base < rows:
        raise ValueError(f"n_base must be between 1 and {rows - 1}, got {n_base}")
    if isinstance(model.text_embedding, SplitEmbedding):
        raise RuntimeError("text rows are already split")
    model.text_embedding = SplitEmbedding(model.text_embedding, n_base, freeze)
    model.text_head = SplitLinear(model.text_head, n_base, freeze)


def freeze_base_rows(model: UnifiedVoice, n_base: int) -> None:
    """Make text rows ``0..n_base-1`` (embedding, head weight, head bias) constants (in place)."""
    split_text_rows(model, n_base, freeze=True)


def new_row_parameters(model: UnifiedVoice) -> list[nn.Parameter]:
    """The new text rows after :func:`split_text_rows` (for their own optimizer group)."""
    if not isinstance(model.text_embedding, SplitEmbedding):
        return []
    return [model.text_embedding.weight_new, model.text_head.weight_new, model.text_head.bias_new]


def base_rows_digest(model: UnifiedVoice, n_base: int, trained: Sequence[int] = ()) -> str:
    """sha256 of the bytes of text rows ``0..n_base-1`` (embedding, head weight, head bias), leaving out
    the embedding rows in ``trained`` (a 2.5 language's ``<|code|>`` row, trained on purpose)."""
    import hashlib

    keep = torch.ones(n_base, dtype=torch.bool)
    keep[list(trained)] = False
    h = hashlib.sha256()
    for k, t in enumerate((model.text_embedding.weight, model.text_head.weight, model.text_head.bias)):
        rows = t[:n_base].detach().to("cpu")
        h.update((rows[keep] if k == 0 else rows).contiguous().numpy().tobytes())
    return h.hexdigest()


class OneRowEmbedding(nn.Module):
    """``nn.Embedding`` of which only row ``row`` is a parameter; the rest a constant buffer.

    IndexTTS-2.5's ``lang_embedding`` (and ``text_embedding`` for the ``<|code|>`` row) while a
    language is fine-tuned: the run's language row learns, every other row stays byte-identical (no
    gradient, no weight decay).  The state dict
    holds the whole table as ``weight``, as the official layout does.
    """

    def __init__(self, embedding: nn.Embedding, row: int):
        super().__init__()
        if not 0 <= row < embedding.weight.shape[0]:
            raise ValueError(f"row {row} outside the table of {embedding.weight.shape[0]} rows")
        self.row = row
        self.register_buffer("table", embedding.weight.detach().clone(), persistent=False)
        self.trained = nn.Parameter(embedding.weight[row].detach().clone())
        self.register_state_dict_post_hook(self._save_whole)
        self.register_load_state_dict_pre_hook(self._load_whole)

    @property
    def weight(self) -> torch.Tensor:
        return torch.cat((self.table[: self.row], self.trained[None], self.table[self.row + 1:]), dim=0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)

    @staticmethod
    def _save_whole(module: OneRowEmbedding, state: dict[str, Any], prefix: str, _meta: Any) -> None:
        state.pop(prefix + "trained")
        state[prefix + "weight"] = module.weight.detach()

    @staticmethod
    def _load_whole(module: OneRowEmbedding, state: dict[str, Any], prefix: str, *_args: Any) -> None:
        whole = state.pop(prefix + "weight", None)
        if whole is None or whole.shape != module.table.shape:
            if whole is not None:
                state[prefix + "weight"] = whole  # let load_state_dict report it
            return
        with torch.no_grad():
            module.table.copy_(whole)
        state[prefix + "trained"] = whole[module.row]


@torch.no_grad()
def train_language_row(model: UnifiedVoice, row: int, init: str, released_rows: Sequence[int]) -> dict[str, Any]:
    """2.5: make ``lang_embedding`` row ``row`` the only trainable one (in place), first setting it to the
    mean of ``released_rows`` when ``init == "released_mean"``.  Returns what was done (for the run's record)."""
    table = model.lang_embedding.weight
    before = float(table[row].norm())
    if init == "released_mean":
        table[row] = table[list(released_rows)].mean(dim=0)
    elif init != "keep":
        raise ValueError(f"unknown language-row initialisation {init!r}")
    model.lang_embedding = OneRowEmbedding(model.lang_embedding, row)
    return {"row": row, "init": init, "norm_before": round(before, 4),
            "norm_after": round(float(model.lang_embedding.trained.norm()), 4)}


@torch.no_grad()
def train_text_row(model: UnifiedVoice, token: int, source_tokens: Sequence[int]) -> dict[str, Any]:
    """Make ``text_embedding`` row ``token`` the only trainable text row (in place), starting from the mean
    of ``source_tokens``' rows (2.5: a new language's ``<|code|>`` prefix, from the released languages')."""
    table = model.text_embedding.weight
    before = float(table[token].norm())
    table[token] = table[list(source_tokens)].mean(dim=0)
    model.text_embedding = OneRowEmbedding(model.text_embedding, token)
    return {"row": token, "norm_before": round(before, 4), "norm_after": round(float(model.text_embedding.trained.norm()), 4)}
