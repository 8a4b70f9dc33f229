"""Everything about training checkpoints: what they hold, writing and keeping them, resuming, warm starts, export.

A checkpoint (``model_step{N}.pth``) holds everything the next step depends on: the model (as the
official state dict), the optimizer, the scheduler, the gradient scaler, the progress counters
(optimizer step, epoch, step within the epoch: checkpoints are only written between optimizer
steps, so there is never a partial accumulation window), the micro-batch budget in use, every
random generator of every rank, the best validation result so far (with the numbers of the best
checkpoint) and the step-0 baseline validation (so a run resumed from ``latest.pth`` on a fresh
machine still reports forgetting and can be compared with the base model), and a fingerprint of what
the run was built from (:func:`fingerprint`).  Everything is plain data and tensors, so it loads with
``weights_only=True``.

In the output folder:

* ``model_step{N}.pth``: the last ``keep`` of them are kept;
* ``latest.pth``: the newest checkpoint, replaced at each save;
* ``best.pth``: the checkpoint with the best validation metric, never deleted by retention.

``best.pth`` is a hard link to a step file where the file system allows (no extra space), a copy
otherwise.  Which files hold the optimizer's state (AdamW's two moments, twice the trainable weights) is
``train.optimizer_state``: ``every`` (the default), all of them, and ``latest.pth`` is a link to the
step file like ``best.pth``; ``latest``, only ``latest.pth``, written as a file of its own, while the
step files (and so ``best.pth``) leave the optimizer out and keep everything else (about half the
size for a full fine-tune of the released GPT: 3.3 of 6.9 GiB).  Resuming from a file without the
optimizer's state continues with fresh moments (:func:`resume` warns and says so).  Every file
appears atomically (temporary name, fsync, rename).

:func:`resume` finds and loads the checkpoint a run continues from (refusing one made from other
inputs), or starts a new run from another checkpoint's weights (a warm start, :func:`warm_start`:
from one of ours, a plain ``gpt.pth``, or a community trainer's ``latest.pth`` / ``model_step{N}.pth``,
whose step count and fitting optimizer state are kept too, see
:mod:`indextts_core.training.community`); the export of the best checkpoint in the official layout is
:mod:`indextts_core.training.export`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from indextts_core.config import TrainConfig
from indextts_core.errors import InputError
from indextts_core.model.checkpoint import (
    CheckpointError,
    load_state_dict_into,
    official_state_dict,
)
from indextts_core.training import community
from indextts_core.training import distributed as dd
from indextts_core.training.data import TrainingSet
from indextts_core.training.lora import ADAPTER_SUFFIXES, has_lora, lora_state_dict
from indextts_core.training.optim import group_layout
from indextts_core.training.records import Progress, TrainInputs
from indextts_core.training.setup import ModelSetup
from indextts_core.utils.fileio import atomic_copy, atomic_write, link_atomic

log = logging.getLogger(__name__)

FORMAT = "indextts-train/1"
STEP_FILE = re.compile(r"^model_step(\d+)\.pth$")
#: The checkpoint key holding the optimizer's state (AdamW's moments), the part ``optimizer_state=latest`` leaves out
#: of the step files.
MOMENTS = "optimizer"
#: The values of ``train.optimizer_state``: which files hold the optimizer's state.
OPTIMIZER_STATE = ("every", "latest")

#: Fingerprint fields and what a mismatch means.
FINGERPRINT_FIELDS = {
    "tokenizer_sha256": "the tokenizer",
    "vocab_size": "the vocabulary size",
    "base_vocab": "the base vocabulary size",
    "model_config_sha256": "the model configuration",
    "base_checkpoint_sha256": "the base checkpoint (gpt.pth)",
    "data_sha256": "the training data (index and pair files)",
    "sampling": "the sample order (seed, batch_tokens, fresh prompts)",
    "optimizer_layout": "the trainable parameters (freeze settings)",
    "lora": "the LoRA adapters (rank, alpha, dropout, targets)",
    "language": "the IndexTTS-2.5 language row (code, row, how it started)",
}


def fingerprint(setup: ModelSetup, data: TrainingSet, inputs: TrainInputs, groups: list[dict[str, Any]],
                sampling: Mapping[str, Any]) -> dict[str, Any]:
    """What a run is built from (the fields of :data:`FINGERPRINT_FIELDS`)."""
    return {
        "tokenizer_sha256": setup.tokenizer.sha256, "vocab_size": setup.vocab_size,
        "base_vocab": setup.base_vocab, "model_config_sha256": setup.config_sha256,
        "base_checkpoint_sha256": setup.base_gpt_sha256,
        "data_sha256": data.fingerprint([p for p in (inputs.train, inputs.val) if p is not None]),
        "sampling": dict(sampling),
        "optimizer_layout": hashlib.sha256(json.dumps(group_layout(groups)).encode()).hexdigest(),
        # only where set, so the fingerprints of full fine-tunes of 2.0 are what they were
        **({"lora": {**setup.lora.__dict__, "targets": list(setup.lora.targets)}} if setup.lora else {}),
        **({"language": {k: setup.language[k] for k in ("code", "row", "row_init")}} if setup.language else {}),
    }


def fingerprint_mismatch(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between a checkpoint's fingerprint and this run's."""
    out = []
    for key, what in FINGERPRINT_FIELDS.items():
        a, b = saved.get(key), current.get(key)
        if a != b:
            show = (lambda v: v[:12] if isinstance(v, str) and len(v) > 20 else v)
            out.append(f"{what} ({key}): checkpoint {show(a)!r}, this run {show(b)!r}")
    return out


# ------------------------------------------------------------------------ random generators


def rng_state() -> dict[str, Any]:
    """Every random generator of this process, as plain data and tensors."""
    version, keys, gauss = random.getstate()
    name, np_keys, pos, has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(keys), gauss],
        "numpy": {"name": name, "keys": np_keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            log.warning("checkpoint has CUDA generator states for %d devices, this machine has %d: CUDA generators "
                        "not restored", len(cuda), torch.cuda.device_count())


# ------------------------------------------------------------------------ files


def save_file(obj: Mapping[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, rename."""
    with atomic_write(path, "wb") as f:
        torch.save(dict(obj), f)


def load_file(path: Path) -> dict[str, Any]:
    """A training checkpoint of this platform, loaded with ``weights_only=True``.

    Anything else is an :class:`InputError` that says what the file is and what to do with it (a
    community trainer's checkpoint or a plain ``gpt.pth`` can only be warm-started from).
    """
    obj = community.read_checkpoint(path, "training checkpoint")
    if not community.is_ours(obj, FORMAT):
        if community.is_community(obj):
            raise InputError(
                f"{path}: not one of this platform's training checkpoints ({FORMAT}) but another trainer's (model, "
                f"optimizer, step {obj.get('step')!r}; e.g. the community IndexTTS2 trainers' latest.pth / "
                "model_step{N}.pth), so it cannot be resumed exactly (its data order, schedule and random state are "
                f"not this run's). Pass --resume {path} --warm-start to start a new run from its weights, keeping "
                "its step count and the optimizer state that fits, in an empty --output-dir.")
        hint = " (a plain gpt.pth? use it as --checkpoint, or --resume it with --warm-start to take its weights)" \
            if isinstance(obj, dict) and "format" not in obj else ""
        raise InputError(f"{path}: not a training checkpoint ({FORMAT}){hint}")
    return obj


def _link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` as a hard link of ``src`` (a copy where the file system cannot link), never seen half-made."""
    if not link_atomic(src, dst):
        atomic_copy(src, dst)


def without_moments(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` without the optimizer's state: a new dict holding the same objects (no tensor is copied)."""
    return {k: v for k, v in state.items() if k != MOMENTS}


class CheckpointDir:
    """The checkpoint files of one training run (see the module docstring).

    ``optimizer_state`` is ``train.optimizer_state``: ``every`` (each file holds the optimizer's state)
    or ``latest`` (only ``latest.pth`` does).
    """

    def __init__(self, root: Path, keep: int = 3, optimizer_state: str = "every"):
        if keep < 1:
            raise ValueError("keep must be at least 1")
        if optimizer_state not in OPTIMIZER_STATE:
            raise ValueError(f"optimizer_state must be one of {', '.join(OPTIMIZER_STATE)}, not {optimizer_state!r}")
        self.root = Path(root)
        self.keep = keep
        self.optimizer_state = optimizer_state

    @property
    def latest(self) -> Path:
        return self.root / "latest.pth"

    @property
    def best(self) -> Path:
        return self.root / "best.pth"

    def step_path(self, step: int) -> Path:
        return self.root / f"model_step{step}.pth"

    def steps(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := STEP_FILE.match(p.name)))

    def has_checkpoints(self) -> bool:
        return self.latest.is_file() or bool(self.steps())

    def clean_partial(self) -> None:
        """Remove temporary files an interrupted save left behind."""
        if self.root.is_dir():
            for p in self.root.glob(".*.tmp"):
                p.unlink(missing_ok=True)

    def save(self, state: Mapping[str, Any], step: int, is_best: bool) -> Path:
        """Write ``state`` as the checkpoint of ``step``, update ``latest.pth`` (and ``best.pth`` if ``is_best``),
        prune old step files; returns the step file.

        ``every``: the step file holds ``state`` and ``latest.pth`` is a link to it.  ``latest``: the step
        file holds ``state`` without the optimizer (:func:`without_moments`) and ``latest.pth`` is
        written apart with all of ``state``.  ``best.pth`` is a link to the step file either way.
        """
        path = self.step_path(step)
        if self.optimizer_state == "latest":
            save_file(without_moments(state), path)
            save_file(state, self.latest)
        else:
            save_file(state, path)
            _link_or_copy(path, self.latest)
        if is_best:
            _link_or_copy(path, self.best)
        self.prune()
        return path

    def prune(self) -> list[Path]:
        """Delete all but the newest ``keep`` step files (``best.pth`` and ``latest.pth`` are separate links)."""
        removed = []
        for step in self.steps()[:-self.keep]:
            p = self.step_path(step)
            p.unlink(missing_ok=True)
            removed.append(p)
        return removed

    def resolve(self, resume: str | Path | None) -> Path | None:
        """The file to resume from: None (fresh), ``auto`` (latest.pth if any) or a path."""
        if resume is None:
            return None
        if str(resume) == "auto":
            if self.latest.is_file():
                return self.latest
            steps = self.steps()
            return self.step_path(steps[-1]) if steps else None
        path = Path(resume)
        if not path.is_file():
            raise InputError(f"--resume {resume}: no such checkpoint")
        return path


# ------------------------------------------------------------------------ the run's checkpoints


@dataclass(frozen=True)
class Start:
    """Where a run starts (what :func:`resume` returns).

    ``fresh_moments``: None, or (resuming from a checkpoint without the optimizer's state) the
    sentence that says the run continues at its step with fresh AdamW moments.
    """

    progress: Progress
    fresh_moments: str | None = None


def checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any, progress: Progress,
               rng: list[Any], fingerprint: Mapping[str, Any], options: Mapping[str, Any], world: int,
               metrics: Mapping[str, float]) -> dict[str, Any]:
    """The checkpoint dict (see the module docstring); ``rng`` holds every rank's :func:`rng_state`."""
    return {
        "format": FORMAT,
        "model": {k: v.detach().cpu() for k, v in official_state_dict(model).items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "progress": asdict(progress),
        "rng": rng,
        "fingerprint": dict(fingerprint),
        "options": dict(options),
        "world": world,
        "metrics": dict(metrics),
    }


def fresh_moments_note(path: Path, step: int) -> str:
    """What resuming from ``path``, a checkpoint without the optimizer's state, at ``step`` means."""
    return (f"{path} holds no optimizer moments (train.optimizer_state=latest keeps them only in latest.pth): "
            f"resuming at step {step} with fresh AdamW moments")


def _follow_schedule(optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    """Give each parameter group the learning rate the restored schedule is at (what the optimizer's own state
    would have restored: the scheduler sets them when it steps, not when it is loaded)."""
    for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr()):
        group["lr"] = lr


def _load_weights(model: nn.Module, weights: Mapping[str, torch.Tensor], path: Path) -> None:
    if has_lora(model) and not any(k.endswith(ADAPTER_SUFFIXES) for k in weights):
        weights = {**weights, **lora_state_dict(model)}  # LoRA from full weights: the adapters start fresh
    try:
        load_state_dict_into(model, weights, path)
    except CheckpointError as e:
        raise InputError(str(e)) from None


def warm_start(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
               tokenizer: Path) -> Progress:
    """Start a new run from the weights of ``path``; returns where the run starts.

    * One of our training checkpoints, or a plain state dict (``gpt.pth``, a model-only
      ``latest.pth``, ``{"model": sd}``): the weights only; optimizer, schedule and position start
      fresh (step 0).
    * A community trainer's checkpoint (:func:`~indextts_core.training.community.is_community`):
      the weights, and its optimizer step count ``N``: the returned progress is at step ``N`` and
      the learning-rate schedule is put where it is after ``N`` steps
      (:func:`~indextts_core.training.community.set_schedule_position`), so the next step is
      ``N + 1`` at the learning rate an uninterrupted run of this schedule would use there (the
      schedule's length, like ``max_steps``, counts steps from 0, so a warm start at step ``N``
      reaches them ``N`` steps sooner).  The AdamW moments of every parameter whose shape fits are
      copied into this run's optimizer; this run's parameter groups and learning rates stay
      (:func:`~indextts_core.training.community.transfer_optimizer_state`).  The epoch restarts:
      their data order cannot be reproduced, so the run begins with the first epoch of its own plan.

    Weights must match the model strictly (after dropping alias keys); text rows made for another
    tokenizer are refused by name and shape.  A file that needs unpickling is refused.
    """
    obj = community.read_checkpoint(path)
    if community.is_ours(obj, FORMAT):
        _load_weights(model, obj["model"], path)
        log.info("warm start: weights from %s; optimizer, schedule and position start fresh", path)
        return Progress()
    weights = community.model_weights(obj, path)
    community.check_text_rows(weights, model, path, tokenizer)
    _load_weights(model, weights, path)
    if not community.is_community(obj):
        log.info("warm start: weights from %s (%d tensors, no training state); optimizer, schedule and position "
                 "start fresh at step 0", path, len(weights))
        return Progress()
    step = community.saved_step(obj, path)
    names = community.parameter_names(list(obj["model"]), model)
    moved = community.transfer_optimizer_state(obj.get("optimizer"), names, model, optimizer)
    (log.warning if moved.reason is not None else log.info)("%s", moved.describe(path))
    community.set_schedule_position(scheduler, optimizer, step)
    lr, ended = community.schedule_note(scheduler, optimizer, step)
    log.info("warm start: weights from %s (%d tensors) and its step count %d: the next step is %d, at %s", path,
             len(weights), step, step + 1, lr)
    if ended:
        log.warning("step %d is at or past the end of this run's learning-rate schedule: every step of this run "
                    "uses its minimum learning rate (more epochs or a larger max_steps lengthen the schedule)", step)
    extra = sorted(str(k) for k in obj if k not in ("model", "optimizer", "scheduler", "scaler", "epoch", "step"))
    log.info("warm start: %s was in epoch %r; its data order cannot be reproduced, so this run starts at the "
             "beginning of its first epoch, with step %d; not taken: its scheduler (this run's schedule is used, "
             "at step %d), gradient scaler%s", path.name, obj.get("epoch"), step + 1, step,
             "".join(f", {k}" for k in extra))
    return Progress(step=step)


def resume(ckdir: CheckpointDir, cfg: TrainConfig, tokenizer: Path, model: nn.Module,
           optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any, current: Mapping[str, Any], seed: int,
           dist: dd.Dist) -> Start:
    """Where the run starts: fresh, resumed exactly from a checkpoint, or warm-started from its weights.

    What to start from is ``cfg.resume`` (None, ``auto`` or a checkpoint path) and ``cfg.warm_start``.
    ``current`` is this run's fingerprint; a checkpoint made from other inputs is refused, and so
    is another trainer's checkpoint without ``warm_start``.  With ``warm_start`` see
    :func:`warm_start` (a community checkpoint keeps its step count and fitting optimizer state;
    ``tokenizer`` is this run's, to map its text rows).
    Seeds torch's generator for a fresh or warm start (``seed + rank``) or restores every generator
    on resume.  A checkpoint without the optimizer's state (a step file or ``best.pth`` of a run
    with ``optimizer_state=latest``) resumes with fresh AdamW moments and the schedule's learning
    rates: logged as a warning and said in the returned :class:`Start`.
    """
    out = ckdir.root
    ckdir.clean_partial()
    path = ckdir.resolve(cfg.resume)
    if path is None:
        if ckdir.has_checkpoints() and cfg.resume is None:
            raise InputError(f"{out} already holds checkpoints of a run (latest: {ckdir.latest.name}); "
                             "pass --resume auto to continue it, or choose another --output-dir")
        if cfg.resume == "auto":
            log.info("--resume auto: no checkpoint in %s, starting from the base model", out)
        torch.manual_seed(seed + dist.rank)
        return Start(Progress())
    if cfg.warm_start:
        if ckdir.has_checkpoints():
            raise InputError(f"--warm-start starts a new run, but {out} already holds checkpoints; choose an "
                             "empty --output-dir")
        progress = warm_start(path, model, optimizer, scheduler, Path(tokenizer))
        torch.manual_seed(seed + dist.rank)
        return Start(progress)
    ck = load_file(path)
    diffs = fingerprint_mismatch(ck["fingerprint"], current)
    if diffs:
        raise InputError(f"{path}: made by a run with different inputs, refusing to resume:\n  " +
                         "\n  ".join(diffs) + "\nResume with the same files and settings, or pass --warm-start to "
                         "start a new run from its weights only.")
    _load_weights(model, ck["model"], path)
    if MOMENTS in ck:
        optimizer.load_state_dict(ck[MOMENTS])
    scheduler.load_state_dict(ck["scheduler"])
    if MOMENTS not in ck:
        _follow_schedule(optimizer, scheduler)
    if scaler is not None and ck.get("scaler"):
        scaler.load_state_dict(ck["scaler"])
    progress = Progress(**ck["progress"])
    states = ck["rng"]
    if len(states) == dist.world:
        set_rng_state(states[dist.rank])
    else:
        log.warning("checkpoint was written by %d rank(s), this run has %d: the sample order is unchanged, but "
                    "dropout draws restart from the seed", len(states), dist.world)
        torch.manual_seed(seed + progress.step * 1009 + dist.rank)
    log.info("resuming from %s: step %d, epoch %d, step %d of the epoch", path, progress.step, progress.epoch + 1,
             progress.step_in_epoch)
    if MOMENTS in ck:
        return Start(progress)
    note = fresh_moments_note(path, progress.step)
    log.warning("%s", note)
    return Start(progress, note)
