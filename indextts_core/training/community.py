"""Warm starts from the checkpoints of the community IndexTTS2 trainers (``trainers/train_gpt_v2.py`` lineage).

Their ``trained_ckpts/latest.pth`` and ``model_step{N}.pth`` are ``torch.save`` of a dict::

    {"model": <UnifiedVoice state dict>, "optimizer": <AdamW state dict>, "scheduler": ..., "scaler": ...,
     "epoch": int, "step": int, ...}

(some lineages write ``latest.pth`` as the model only: a plain state dict, or ``{"model": sd}``).
Everything here reads such a file with ``weights_only=True`` (:func:`read_checkpoint`); a file
that needs unpickling is refused with the few lines that re-save its tensors on the user's own
machine.  What a warm start takes from it (:func:`indextts_core.training.checkpointing.warm_start`):

* the weights (:func:`model_weights`: alias keys dropped, text rows checked against the tokenizer
  by :func:`check_text_rows`, then the usual strict load);
* the optimizer step count (:func:`saved_step`), with the learning-rate schedule moved to it
  (:func:`set_schedule_position`);
* the AdamW moments of every parameter whose shape still fits (:func:`transfer_optimizer_state`).

Not taken: their scheduler (our schedule is rebuilt from this run's settings and only its position
is kept), their gradient scaler, their epoch and position in it (their data order cannot be
reproduced), random generator states and best validation value.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from indextts_core.errors import InputError
from indextts_core.model.checkpoint import ALIAS_KEYS, ALIAS_PREFIXES, official_state_dict
from indextts_core.model.vocab import SplitEmbedding, SplitLinear
from indextts_core.utils.safe_load import torch_load

log = logging.getLogger(__name__)

#: Keys that, next to ``"model"``, mark a community trainer's checkpoint.
COMMUNITY_KEYS = ("step", "epoch", "optimizer")
#: The text tensors whose rows follow the tokenizer (``pieces + 1`` rows).
TEXT_ROW_KEYS = ("text_embedding.weight", "text_head.weight", "text_head.bias")
#: Per-parameter AdamW state that is moved over (the moments and the parameter's own step count).
MOMENTS = ("exp_avg", "exp_avg_sq")


# ------------------------------------------------------------------------ reading the file


def _refusal_reason(message: str) -> str:
    found = re.search(r"Reason:\s*(.+)$", message, re.S)
    return found.group(1).strip() if found else ""


def read_checkpoint(path: Path, what: str = "checkpoint") -> Any:
    """The file's contents, loaded with ``weights_only=True`` (nothing is unpickled).

    A file holding pickled Python objects (a trainer's ``argparse.Namespace``, say) is refused with
    an :class:`InputError` that names the file and shows how to re-save only its tensors on the
    machine that wrote it.  This program never loads such a file itself.
    """
    path = Path(path)
    try:
        return torch_load(path, what)
    except InputError as e:
        if not path.is_file():
            raise
        reason = _refusal_reason(str(e))
        objects = "global" in reason.lower()
        found = re.search(r"GLOBAL\s+(\S+)", reason)
        kind = f" (here: {found.group(1)})" if found else ""
        snippet = (f"    import torch\n"
                   f"    ck = torch.load(\"{path.name}\", map_location=\"cpu\", weights_only=False)  # trusted file only\n"
                   f"    torch.save({{k: ck[k] for k in (\"model\", \"optimizer\", \"step\") if k in ck}}, "
                   f"\"{path.stem}_tensors.pth\")\n")
        head = (f"{path}: {what} refused: it holds pickled Python objects{kind}, not only tensors, and this program "
                "never unpickles objects from a file it is given (unpickling can run arbitrary code); it reads "
                "checkpoints with torch.load(weights_only=True)." if objects else
                f"{path}: {what} refused: it cannot be read as tensors and plain containers only (torch.load with "
                "weights_only=True); either it holds pickled Python objects, which this program never unpickles "
                "(unpickling can run arbitrary code), or it is damaged (then write it again).")
        why = " (Community trainers sometimes pickle their options into their checkpoints.)" if objects else ""
        raise InputError(
            f"{head}{why} To use the file, re-save only its tensors on the machine that wrote it, where you trust "
            f"it:\n\n{snippet}\nand pass "
            f"--resume {path.stem}_tensors.pth --warm-start." + (f" (torch: {reason})" if reason else "")
        ) from None


def is_ours(obj: Any, fmt: str) -> bool:
    return isinstance(obj, Mapping) and obj.get("format") == fmt


def is_community(obj: Any) -> bool:
    """A community trainer's training checkpoint: weights under ``"model"`` plus a step, epoch or optimizer.

    A plain state dict, or ``{"model": sd}`` alone, is *not* one (it is a model-only file).
    """
    return (isinstance(obj, Mapping) and "format" not in obj and isinstance(obj.get("model"), Mapping)
            and any(k in obj for k in COMMUNITY_KEYS))


def model_weights(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The weights of a community checkpoint, model-only file or plain state dict, alias keys dropped.

    ``inference_model.*`` and ``gpt.wte.weight`` are copies of other tensors that a model gets after
    ``post_init_gpt2_config``; they are dropped here so the strict key check sees only official keys.
    """
    sd = obj["model"] if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping) else obj
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                        for k, v in sd.items()):
        raise InputError(f"{path}: expected a state dict of tensors, or a dict holding one under 'model' (a "
                         "checkpoint of this platform, of a community trainer, or a plain gpt.pth)")
    aliases = [k for k in sd if _is_alias(k)]
    if aliases:
        log.info("%s: %d alias keys dropped (inference_model.* / gpt.wte.weight: copies of other tensors)", path.name,
                 len(aliases))
    return {k: v for k, v in sd.items() if not _is_alias(k)}


def _is_alias(key: str) -> bool:
    return key.startswith(ALIAS_PREFIXES) or key in ALIAS_KEYS


def check_text_rows(weights: Mapping[str, torch.Tensor], model: nn.Module, path: Path, tokenizer: Path) -> None:
    """Refuse text rows made for another vocabulary, naming the tensor, both shapes and what to do."""
    ours = official_state_dict(model)  # type: ignore[arg-type]
    for key in TEXT_ROW_KEYS:
        if key not in weights or key not in ours or weights[key].shape == ours[key].shape:
            continue
        theirs_rows, our_rows = weights[key].shape[0], ours[key].shape[0]
        raise InputError(
            f"{path}: {key} has shape {tuple(weights[key].shape)}, but this run's model needs {tuple(ours[key].shape)}"
            f": the checkpoint's text rows are for a {theirs_rows - 1}-piece tokenizer ({theirs_rows} rows = pieces "
            f"+ 1), while --tokenizer {tokenizer} has {our_rows - 1} pieces. Train with the tokenizer that "
            f"checkpoint was trained with (it must extend the base checkpoint's bpe.model, and the data must be "
            f"preprocessed with it), or leave out --warm-start and start from the base model.")


def saved_step(obj: Mapping[str, Any], path: Path) -> int:
    """Their global optimizer step (``"step"``); 0, with a warning, when it is missing or not a count."""
    step = obj.get("step")
    if isinstance(step, torch.Tensor) and step.numel() == 1:
        step = step.item()
    if isinstance(step, float) and step.is_integer():
        step = int(step)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        log.warning("%s: no usable optimizer step count (step=%r): the step count starts at 0", path.name, step)
        return 0
    return step


# ------------------------------------------------------------------------ optimizer state


def _official_parameters(model: nn.Module) -> dict[str, list[tuple[nn.Parameter | None, slice | None]]]:
    """Each official key that is a parameter -> the parameters holding it (and which rows of it each holds).

    A plain parameter is held whole; a text tensor split by :func:`~indextts_core.model.vocab.split_text_rows`
    is held as base rows (a parameter, or None when they are frozen constants) and new rows.
    """
    out: dict[str, list[tuple[nn.Parameter | None, slice | None]]] = {}
    split = {name: m for name, m in model.named_modules() if isinstance(m, (SplitEmbedding, SplitLinear))}
    for prefix, m in split.items():
        for t in (("weight",) if isinstance(m, SplitEmbedding) else ("weight", "bias")):
            base, new = getattr(m, f"{t}_base"), getattr(m, f"{t}_new")
            key = f"{prefix}.{t}" if prefix else t
            out[key] = [(base if isinstance(base, nn.Parameter) else None, slice(0, m.n_base)),
                        (new, slice(m.n_base, None))]
    for name, p in model.named_parameters():
        owner = name.rpartition(".")[0]
        if owner in split or _is_alias(name):
            continue
        out[name] = [(p, None)]
    return out


def parameter_names(keys: Sequence[str], model: nn.Module) -> list[str]:
    """Their parameter names in their ``model.parameters()`` order, from the order of their state-dict keys.

    A state dict lists each module's parameters and buffers in registration order, and so does
    ``parameters()`` without the buffers; a tensor shared under two names (an alias) is yielded once,
    under its first name.  So: the keys, less alias keys, less keys that are buffers in our model,
    less repeats.  (Dropping the alias keys outright relies on each coming after its original, as
    in ``UnifiedVoice``: ``mel_embedding`` is registered before ``gpt``, ``inference_model`` last.)
    """
    params = _official_parameters(model)
    buffers = set(official_state_dict(model)) - set(params)  # type: ignore[arg-type]
    names: list[str] = []
    seen: set[str] = set()
    for k in keys:
        if _is_alias(k) or k in buffers or k in seen:
            continue
        seen.add(k)
        names.append(k)
    return names


@dataclass
class OptimizerTransfer:
    """What :func:`transfer_optimizer_state` took."""

    taken: int = 0  # their parameters whose state was taken (all of it, or the rows this run trains)
    total: int = 0  # their parameters with optimizer state
    shape_differs: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # named in the file, not a parameter of this model
    not_trained: list[str] = field(default_factory=list)  # frozen in this run (no optimizer state here)
    reason: str | None = None  # why nothing was taken, when nothing could be

    def describe(self, path: Path) -> str:
        if self.reason is not None:
            return f"optimizer state: none taken from {path.name}: {self.reason}; the optimizer starts fresh"
        skipped = []
        if self.shape_differs:
            more = f" and {len(self.shape_differs) - 10} more" if len(self.shape_differs) > 10 else ""
            skipped.append("shape differs: " + ", ".join(self.shape_differs[:10]) + more)
        if self.unknown:
            skipped.append("not in this model: " + ", ".join(self.unknown[:10]) +
                           (f" and {len(self.unknown) - 10} more" if len(self.unknown) > 10 else ""))
        if self.not_trained:
            skipped.append(f"not trained in this run: {len(self.not_trained)}")
        k = len(self.shape_differs) + len(self.unknown) + len(self.not_trained)
        tail = f" ({k} skipped: {'; '.join(skipped)})" if k else ""
        return f"optimizer state: {self.taken} of {self.total} parameters taken from {path.name}{tail}"


def _index_names(saved: Mapping[str, Any], names: list[str]) -> tuple[dict[int, str] | None, str | None]:
    """Their optimizer's parameter index -> name, or None and why not."""
    groups = saved.get("param_groups")
    if not isinstance(groups, list) or not all(isinstance(g, Mapping) and isinstance(g.get("params"), list)
                                               for g in groups):
        return None, "its optimizer state has no parameter groups"
    ids = [i for g in groups for i in g["params"]]
    if all(isinstance(g.get("param_names"), list) and len(g["param_names"]) == len(g["params"]) for g in groups):
        # saved from an optimizer built on named_parameters(): the names are in the file
        return {i: n for g in groups for i, n in zip(g["params"], g["param_names"])}, None
    if len(groups) != 1:
        return None, (f"its optimizer has {len(groups)} parameter groups and no parameter names, so which state "
                      "belongs to which parameter cannot be told from the model's parameter order")
    if len(ids) != len(names):
        return None, (f"its optimizer holds {len(ids)} parameters but its model has {len(names)}, so they cannot be "
                      "matched by order (an optimizer over only some parameters?)")
    return dict(zip(ids, names)), None


def transfer_optimizer_state(saved: Any, names: list[str], model: nn.Module,
                             optimizer: torch.optim.Optimizer) -> OptimizerTransfer:
    """Copy their per-parameter AdamW state (``exp_avg``, ``exp_avg_sq``, ``step``) into ``optimizer``.

    ``saved`` is their ``optimizer.state_dict()``: state keyed by each parameter's index in their
    ``model.parameters()`` order (one parameter group), which :func:`parameter_names` turns into
    names, matched to this model's parameters by name.  A parameter's state is taken when both
    moments have the official tensor's shape; a text tensor held as split rows gets each part its
    rows (frozen rows get none).  Our parameter groups and their hyper-parameters (learning rates,
    weight decay, betas) stay as they are; only per-parameter state moves.  Never raises: anything
    that does not fit is skipped, and :attr:`OptimizerTransfer.reason` says why when nothing fits.
    """
    result = OptimizerTransfer()
    if not isinstance(saved, Mapping) or not isinstance(saved.get("state"), Mapping):
        result.reason = "it holds no optimizer state"
        return result
    if any(g.get("amsgrad") for g in optimizer.param_groups):
        result.reason = "this run's optimizer uses amsgrad, whose extra state the file cannot supply"
        return result
    index_names, why = _index_names(saved, names)
    if index_names is None:
        result.reason = why
        return result
    try:
        ours = _official_parameters(model)
        shapes = {k: v.shape for k, v in official_state_dict(model).items()}  # type: ignore[arg-type]
        index = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
        sd = optimizer.state_dict()
        state: dict[int, dict[str, Any]] = {}
        for i, per in saved["state"].items():
            name = index_names.get(i)
            if name is None or not isinstance(per, Mapping):
                continue
            result.total += 1
            moments = [per.get(m) for m in MOMENTS]
            if name not in shapes:
                result.unknown.append(name)
                continue
            if not all(isinstance(t, torch.Tensor) and t.shape == shapes[name] for t in moments):
                result.shape_differs.append(name)
                continue
            pieces = [(p, rows) for p, rows in ours.get(name, []) if p is not None and id(p) in index]
            if not pieces:
                result.not_trained.append(name)
                continue
            step = per.get("step", 0)
            step = float(step.item() if isinstance(step, torch.Tensor) else step)
            for p, rows in pieces:
                state[index[id(p)]] = {"step": torch.tensor(step, dtype=torch.float32),
                                       **{m: (t if rows is None else t[rows]).detach().clone()
                                          for m, t in zip(MOMENTS, moments)}}
            result.taken += 1
        if state:
            sd["state"] = state
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                optimizer.load_state_dict(sd)  # casts each tensor to its parameter's device and dtype
    except Exception as e:  # noqa: BLE001 - optimizer state is a bonus: never fail the run for it
        optimizer.state.clear()
        return OptimizerTransfer(reason=f"it could not be applied ({type(e).__name__}: {e})")
    return result


# ------------------------------------------------------------------------ the schedule


def set_schedule_position(scheduler: Any, optimizer: torch.optim.Optimizer, step: int) -> None:
    """Put the learning-rate schedule where it is after ``step`` optimizer steps of an uninterrupted run.

    The trainer calls ``scheduler.step()`` after every optimizer step, so after ``step`` steps a
    ``LambdaLR`` has ``last_epoch == step`` and each group's learning rate is
    ``base_lr * lr_lambda(step)``, the rate the next step uses.  That state is set directly (the
    learning rates, and ``last_epoch`` through the scheduler's state dict), exactly what an exact
    resume restores.  Any other scheduler is stepped ``step`` times.
    """
    lambdas = getattr(scheduler, "lr_lambdas", None)
    base_lrs = getattr(scheduler, "base_lrs", None)
    if lambdas is not None and base_lrs is not None and len(lambdas) == len(optimizer.param_groups):
        lrs = [base * f(step) for base, f in zip(base_lrs, lambdas)]
        for g, lr in zip(optimizer.param_groups, lrs):
            g["lr"] = lr
        scheduler.load_state_dict({**scheduler.state_dict(), "last_epoch": step, "_last_lr": lrs})
        return
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended here
        warnings.simplefilter("ignore")
        for _ in range(step):
            scheduler.step()


def schedule_note(scheduler: Any, optimizer: torch.optim.Optimizer, step: int) -> tuple[str, bool]:
    """A few words on the learning rate the schedule continues with at ``step``, and whether it is past its end."""
    lrs = ", ".join(f"{g.get('name', i)} {g['lr']:.3g}" for i, g in enumerate(optimizer.param_groups))
    lambdas = getattr(scheduler, "lr_lambdas", None)
    if not lambdas:
        return f"learning rate {lrs}", False
    f = lambdas[0]
    factor = f(step)
    ended = step > 0 and factor < 1.0 and factor == f(step + 1) == f(2 * step + 10**9)
    return f"learning rate {lrs} ({factor:.3g} of the peak)", ended
