"""LoRA adapters that keep the official state-dict key names.

A low-rank adapter adds a trainable update to a frozen linear layer::

    y = base(x) + dropout(x) @ A^T @ B^T * (alpha / rank)

with ``A`` (``lora_a``) of shape (rank, in_features) and ``B`` (``lora_b``) of shape
(out_features, rank).

Key names.  :func:`apply_lora` *replaces* each targeted ``Conv1D`` / ``nn.Linear`` in its parent
by a :class:`LoRALinear` that holds the original tensors under the same attribute names,
``weight`` and ``bias`` (the same ``Parameter`` objects, now with ``requires_grad=False``), in the
original layout: ``(in, out)`` for ``Conv1D``, ``(out, in)`` for ``nn.Linear``.  The model's
state dict is therefore the official key set (``gpt.h.0.attn.c_attn.weight``,
``gpt.h.0.attn.c_attn.bias``, ...) plus ``<module>.lora_a`` / ``<module>.lora_b`` for each
adapted module; no ``base_layer.`` prefix appears that would have to be renamed on export.

Initialisation.  ``A`` is drawn with kaiming-uniform (``a=sqrt(5)``, as ``nn.Linear`` does) and
``B`` starts at zero, so the adapter's term is exactly zero and a freshly wrapped model computes
bit-identical outputs to the base model.  Only the wrapped layers' ``weight`` / ``bias`` are
frozen by :func:`apply_lora`; whether any other parameter trains is left to the caller.

Merge.  :func:`merge_lora` replaces every adapter, in place, by a plain module of the original
class whose weight is ``base + scale * B @ A`` (transposed for ``Conv1D``'s layout) and whose bias
is the base bias.  Module order is unchanged, so afterwards ``model.state_dict()`` has exactly the
base model's keys in the same order and the saved file loads strictly, like the official
``gpt.pth`` (:func:`check_merged_keys` is the export's key check).

Resume.  The adapter tensors are ordinary state-dict entries, so a training checkpoint that saves
``model.state_dict()`` stores them with the rest of the model state; to load such a checkpoint,
call :func:`apply_lora` with the same :class:`LoRASpec` first (``alpha`` is not stored in the
tensors, so the spec must be recorded with the run's configuration).  :func:`lora_state_dict` /
:func:`load_lora_state_dict` move the adapter tensors alone.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from indextts_core.errors import ConfigError
from indextts_core.model.gpt2 import Conv1D

if TYPE_CHECKING:
    from indextts_core.config import TrainConfig

#: Suffixes of the adapter tensors' state-dict keys.
ADAPTER_SUFFIXES = (".lora_a", ".lora_b")
#: The module classes :func:`apply_lora` can wrap (exact types: a subclass may use its weight
#: without calling ``forward``, as ``nn.MultiheadAttention`` does with its ``out_proj``).
WRAPPABLE = (Conv1D, nn.Linear)


@dataclass(frozen=True)
class LoRASpec:
    """Which layers get adapters and how large they are.

    ``targets`` are dotted suffixes of module names, matched on whole components:
    ``"attn.c_proj"`` matches ``gpt.h.0.attn.c_proj`` but not ``gpt.h.0.mlp.c_proj``, and a full
    name such as ``"emo_layer"`` matches that module only.
    """

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ConfigError(f"lora.rank must be an integer >= 1, got {self.rank!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) \
                or not math.isfinite(self.alpha) or self.alpha <= 0:
            raise ConfigError(f"lora.alpha must be a finite number > 0, got {self.alpha!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) \
                or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout!r}")
        if isinstance(self.targets, str) or not isinstance(self.targets, Iterable):
            raise ConfigError(f"lora.targets must be a list of module names, got {self.targets!r}")
        targets = tuple(self.targets)
        if not targets:
            raise ConfigError("lora.targets must name at least one module")
        for t in targets:
            if not isinstance(t, str) or not t or any(not part for part in t.split(".")):
                raise ConfigError(f"lora.targets: {t!r} is not a dotted module name")
        object.__setattr__(self, "targets", targets)  # a list from YAML becomes a (hashable) tuple

    @property
    def scale(self) -> float:
        """The factor applied to the adapter's output: ``alpha / rank``."""
        return self.alpha / self.rank


def lora_spec(cfg: TrainConfig) -> LoRASpec | None:
    """The :class:`LoRASpec` of a train section's ``lora_*`` settings (None when ``lora_rank`` is 0)."""
    if not cfg.lora_rank:
        return None
    return LoRASpec(cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, tuple(cfg.lora_targets))


class LoRALinear(nn.Module):
    """A frozen ``Conv1D`` or ``nn.Linear`` plus a trainable low-rank update.

    ``weight`` / ``bias`` are the base module's own parameters (same objects, same layout, frozen);
    ``transposed`` says the layout is ``Conv1D``'s ``(in, out)``.  ``base_class`` is the class
    :func:`merge_lora` rebuilds.
    """

    def __init__(self, base: nn.Module, rank: int, scale: float, dropout: float):
        super().__init__()
        if type(base) not in WRAPPABLE:
            raise TypeError(f"cannot wrap {type(base).__name__}; expected one of "
                            + ", ".join(c.__name__ for c in WRAPPABLE))
        self.base_class = type(base)
        self.transposed = isinstance(base, Conv1D)
        w = base.weight
        self.in_features, self.out_features = (w.shape[0], w.shape[1]) if self.transposed else (w.shape[1], w.shape[0])
        self.rank, self.scale = rank, scale
        # registration order: weight, bias, lora_a, lora_b (the base keys keep their place)
        self.weight = w
        self.register_parameter("bias", base.bias)
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.empty(rank, self.in_features, dtype=w.dtype, device=w.device))
        self.lora_b = nn.Parameter(torch.zeros(self.out_features, rank, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.train(base.training)

    def base_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The base module's output, computed exactly as its own ``forward`` does."""
        if self.transposed:  # Conv1D.forward
            out = torch.addmm(self.bias, x.reshape(-1, x.size(-1)), self.weight)
            return out.view(*x.shape[:-1], self.weight.size(1))
        return F.linear(x, self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_a), self.lora_b)
        return self.base_forward(x) + update * self.scale

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """``weight + scale * B @ A`` in the base layout and dtype (the product is taken in fp32)."""
        delta = (self.lora_b.float() @ self.lora_a.float()) * self.scale  # (out, in)
        if self.transposed:
            delta = delta.t()
        return (self.weight.float() + delta).to(self.weight.dtype)

    def extra_repr(self) -> str:
        return (f"{self.base_class.__name__}, in_features={self.in_features}, out_features={self.out_features}, "
                f"rank={self.rank}, scale={self.scale:g}, bias={self.bias is not None}")


# ------------------------------------------------------------------------ helpers


def _matches(name: str, target: str) -> bool:
    """Whether the dotted ``target`` is a whole-component suffix of the module name ``name``."""
    parts, want = name.split("."), target.split(".")
    return len(parts) >= len(want) and parts[-len(want):] == want


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule called ``name`` (its position among the parent's children is kept)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _adapters(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def _closest_patterns(target: str, names: list[str], limit: int = 8) -> str:
    """The layer names with numeric components as ``*``, most similar to ``target`` first."""
    patterns = list(dict.fromkeys(".".join("*" if p.isdigit() else p for p in n.split(".")) for n in names))
    k = len(target.split("."))

    def similarity(pattern: str) -> float:
        return difflib.SequenceMatcher(None, target, ".".join(pattern.split(".")[-k:])).ratio()

    return _show(sorted(patterns, key=similarity, reverse=True), limit)


def _show(names: list[str], limit: int = 8) -> str:
    more = f" (and {len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# ------------------------------------------------------------------------ public API


def apply_lora(model: nn.Module, spec: LoRASpec) -> list[str]:
    """Wrap every ``Conv1D`` / ``nn.Linear`` whose name ends with one of ``spec.targets``.

    Returns the wrapped module names, sorted.  Raises :class:`ConfigError` when the model already
    has adapters or when a target matches no such layer (the message names the target and some
    of the layers that exist).  Only the wrapped layers' ``weight`` / ``bias`` are frozen; every
    other parameter keeps its ``requires_grad``.
    """
    if has_lora(model):
        raise ConfigError("lora: the model already has LoRA adapters; apply_lora runs once per model")
    linear = [n for n, m in model.named_modules() if n and type(m) in WRAPPABLE]
    chosen: set[str] = set()
    for target in spec.targets:
        hits = [n for n in linear if _matches(n, target)]
        if not hits:
            raise ConfigError(f"lora.targets: {target!r} matches no Conv1D/nn.Linear layer; available "
                              f"(closest first, * = any index): {_closest_patterns(target, linear)}")
        chosen.update(hits)
    for name in sorted(chosen):
        base = model.get_submodule(name)
        _set_submodule(model, name, LoRALinear(base, spec.rank, spec.scale, spec.dropout))
    return sorted(chosen)


def has_lora(model: nn.Module) -> bool:
    """Whether any submodule of ``model`` is a LoRA adapter."""
    return any(isinstance(m, LoRALinear) for m in model.modules())


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapters' ``lora_a`` and ``lora_b`` parameters, in module order."""
    return [p for _, m in _adapters(model) for p in (m.lora_a, m.lora_b)]


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the adapter tensors, keyed as in ``model.state_dict()``."""
    out: dict[str, torch.Tensor] = {}
    for name, m in _adapters(model):
        out[f"{name}.lora_a"] = m.lora_a.detach().clone()
        out[f"{name}.lora_b"] = m.lora_b.detach().clone()
    return out


def load_lora_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> None:
    """Copy adapter tensors into the model's adapters, strictly.

    ``sd`` must hold exactly the keys :func:`lora_state_dict` gives for this model, with the same
    shapes; otherwise :class:`ConfigError` names the missing, unexpected and mis-shaped keys and
    nothing is copied.  Values are cast to each adapter's dtype and device.
    """
    adapters = _adapters(model)
    if not adapters:
        raise ConfigError("lora: the model has no LoRA adapters to load into (call apply_lora first)")
    own = {f"{n}{s}": getattr(m, s[1:]) for n, m in adapters for s in ADAPTER_SUFFIXES}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: given {tuple(sd[k].shape)} vs model {tuple(p.shape)}"
              for k, p in own.items() if k in sd and tuple(sd[k].shape) != tuple(p.shape)]
    if missing or unexpected or shapes:
        lines = ["lora: adapter state dict does not match the model's adapters"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if items:
                lines.append(f"  {title} ({len(items)}): {_show(items, 10)}")
        raise ConfigError("\n".join(lines))
    with torch.no_grad():
        for k, p in own.items():
            p.copy_(sd[k])


def merge_lora(model: nn.Module) -> list[str]:
    """Fold every adapter into its base layer, in place; returns the merged names (sorted).

    Each adapter is replaced by a fresh module of its original class (``Conv1D`` or
    ``nn.Linear``) with ``weight = base + scale * B @ A`` in that class's layout and the base bias,
    both trainable (``requires_grad=True``) as in a newly built module, in the adapter's
    train/eval mode.  A model without adapters is left as it is (returns ``[]``).
    """
    merged = []
    for name, m in _adapters(model):
        with torch.device("meta"):  # shapes only: the tensors are replaced right below
            if m.base_class is Conv1D:
                plain: nn.Module = Conv1D(m.in_features, m.out_features)
            else:
                plain = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
        plain.weight = nn.Parameter(m.merged_weight())
        if m.bias is not None:
            plain.bias = nn.Parameter(m.bias.detach().clone())
        plain.train(m.training)
        _set_submodule(model, name, plain)
        merged.append(name)
    return sorted(merged)


def check_merged_keys(state_dict: Mapping[str, torch.Tensor] | Iterable[str], reference_keys: Iterable[str]) -> None:
    """The export's key check: ``state_dict`` (or its keys) must be exactly ``reference_keys``.

    Raises :class:`ConfigError` listing the missing and unexpected keys (adapter keys left over
    mean :func:`merge_lora` was not run).  Only the key set is compared, not the order.
    """
    keys = list(state_dict.keys() if isinstance(state_dict, Mapping) else state_dict)
    ref = list(reference_keys)
    have, want = set(keys), set(ref)
    missing = [k for k in ref if k not in have]
    unexpected = [k for k in keys if k not in want]
    if not missing and not unexpected:
        return
    lines = ["export: merged state dict does not have the official keys"]
    if missing:
        lines.append(f"  missing ({len(missing)}): {_show(missing, 10)}")
    if unexpected:
        lines.append(f"  unexpected ({len(unexpected)}): {_show(unexpected, 10)}")
    if any(k.endswith(ADAPTER_SUFFIXES) for k in unexpected):
        lines.append("  hint: LoRA adapter keys are present; merge_lora(model) before exporting")
    raise ConfigError("\n".join(lines))


def parameter_count(model: nn.Module) -> int:
    """Number of scalars in all of ``model``'s parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def trainable_parameter_count(model: nn.Module) -> int:
    """Number of scalars in the parameters with ``requires_grad=True`` (shared ones counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
