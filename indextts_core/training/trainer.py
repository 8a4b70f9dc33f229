"""The GPT fine-tuning loop: token-budget steps, exact resume, validation, checkpoints, export.

One optimizer step = one planned group of samples (:func:`~indextts_core.training.data.plan_epoch`,
about ``batch_tokens`` padded tokens), whatever the hardware: each rank takes its share, cuts it
into micro-batches that fit in memory, and accumulates gradients.  The loss of every micro-batch
is divided by the token counts of the *whole* step (all micro-batches, all ranks), so the step's
gradient is the gradient of the step's mean loss, however it was split::

    loss = text_weight * sum(text CE) / text tokens of the step + mel_weight * sum(mel CE) / mel tokens of the step

Out of memory in a step: gradients are dropped, the micro-batch budget halves (so accumulation
doubles) and the same samples run again; no sample is skipped or repeated.  The smaller budget is
kept for the rest of the run and saved in checkpoints.

Resume continues with exactly the next planned step: the plan is a function of the data, the
seed and ``batch_tokens``; checkpoints hold the position, the optimizer/scheduler/scaler state and
every random generator (see :mod:`indextts_core.training.state`).

Validation (every ``val_interval`` steps, at each epoch end, and once at step 0 before any update,
the baseline that makes forgetting visible) runs in eval mode, so it is deterministic and touches
no random generator; it reports loss, text_loss, mel_loss and mel_top1 overall, per language, and
for speakers seen or not seen in training.

At the end the best checkpoint (by ``best_metric``) is exported in the official layout, reloaded
strictly and compared with the trained weights and outputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from indextts_core.errors import InputError
from indextts_core.utils.fileio import read_jsonl, write_json
from indextts_core.model.bundle import ModelBundle, open_bundle
from indextts_core.model.checkpoint import (
    CheckpointError,
    export_checkpoint,
    load_gpt,
    load_state_dict_into,
    official_state_dict,
    read_state_dict,
)
from indextts_core.model.losses import token_sums
from indextts_core.model.vocab import base_rows_digest
from indextts_core.utils.oom import BackoffEvent, is_oom, run_with_oom_backoff
from indextts_core.preprocess.pairs import PairingPolicy
from indextts_core.utils.progress import StepProgress
from indextts_core.training import data as D
from indextts_core.training import distributed as dd
from indextts_core.training.autosize import loader_workers, probe_micro_tokens
from indextts_core.training.metrics import JsonlSink, MetricSink, TensorBoardSink
from indextts_core.training.optim import build_optimizer, build_scheduler, group_layout, param_groups
from indextts_core.training.setup import ModelSetup, check_index, prepare_model
from indextts_core.training.state import (
    FORMAT,
    CheckpointDir,
    fingerprint_mismatch,
    load_file,
    rng_state,
    set_rng_state,
)

log = logging.getLogger(__name__)

#: Bump when the same inputs and settings would train different weights (invalidates cached results).
STAGE_VERSION = "1"


@dataclass(frozen=True)
class TrainOptions:
    """Training settings (``train:`` section of the run configuration; see its field descriptions)."""

    epochs: int = 2
    batch_tokens: int = 12288
    micro_batch_tokens: int | None = None  # None: memory probe on CUDA, batch_tokens / ranks elsewhere
    memory_margin: float = 0.85
    learning_rate: float = 2e-5
    new_rows_learning_rate: float = 1e-4
    weight_decay: float = 0.01
    new_rows_weight_decay: float = 0.0
    warmup_steps: int = 1000
    min_lr_ratio: float = 0.1
    max_grad_norm: float = 1.0
    text_loss_weight: float = 0.2
    mel_loss_weight: float = 0.8
    val_interval: int = 1000
    keep_checkpoints: int = 3
    best_metric: str = "loss"
    amp: str = "auto"
    gradient_checkpointing: bool = False
    freeze_base_rows: bool = True
    freeze_conditioning: bool = True
    dropout: float = 0.1
    fresh_prompts: bool = False
    workers: int | None = None
    device: str = "auto"
    seed: int = 1234
    max_steps: int | None = None
    export: bool = True
    export_dtype: str = "float32"
    pad_at_end: bool = True  # False: the released per-segment padding (a sample's loss depends on its batch)
    deterministic: bool = False  # deterministic GPU kernels (bitwise-reproducible resumes on GPU; slower)


@dataclass
class TrainInputs:
    checkpoint_dir: Path  # base model folder (official layout)
    tokenizer: Path  # the extended tokenizer
    train: Path  # a pair file (GPT_pairs_train.jsonl) or a preprocessed index manifest (fresh prompts)
    val: Path | None  # a pair file or index manifest; None: no validation
    output_dir: Path
    resume: str | None = None  # None, "auto" or a checkpoint path
    warm_start: bool = False  # take only the weights of --resume (a different run is allowed)
    pairing: PairingPolicy | None = None  # prompt policy for fresh prompts (default: seed only)
    feature_dir: Path | None = None  # where the shards are, if not where preprocess.json says


@dataclass
class Progress:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch (0-based)
    step_in_epoch: int = 0  # steps of the current epoch done
    samples: int = 0
    tokens: int = 0  # real (unpadded) tokens trained on
    micro_tokens: int = 0
    oom_backoffs: int = 0
    best_value: float | None = None
    best_step: int | None = None


@dataclass(frozen=True)
class StepInfo:
    """What one optimizer step did (for callbacks: tests, progress, orchestration)."""

    step: int
    epoch: int
    step_in_epoch: int
    sample_ids: list[tuple[str, str, str]]  # (target, prompt, emotion) of every sample of the step, all ranks
    micro_batches: int
    micro_tokens: int
    metrics: dict[str, float]


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    epochs_done: int
    best_step: int | None
    best_value: float | None
    baseline: dict[str, float]
    final: dict[str, float]
    export_dir: Path | None
    export_verified: bool
    base_rows_unchanged: bool | None
    summary_path: Path
    throughput: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_summary(cls, path: Path) -> TrainResult:
        """The result of a run that ended in another process (e.g. under torchrun), from its summary file."""
        s = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(Path(path).parent, s["steps"], s["epochs_done"], s["best_step"], s["best_value"], s["baseline"],
                   s["final"], Path(s["export"]) if s["export"] else None, s["export_verified"],
                   s["base_rows_unchanged"], Path(path), s["throughput"])


Hook = Callable[..., None]


def resolve_amp(mode: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a gradient scaler is needed)."""
    if mode == "off":
        return None, False
    if device.type != "cuda":
        if mode == "fp16":
            raise InputError("train.amp: fp16 needs a CUDA device (use bf16 or off on CPU)")
        return (torch.bfloat16, False) if mode == "bf16" else (None, False)
    if mode == "fp16" or (mode == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16, True
    return torch.bfloat16, False


def _memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


class SampleSource:
    """Training samples per epoch: the pair file's, or fresh prompts for the same targets every epoch."""

    def __init__(self, data: D.TrainingSet, path: Path, fresh: bool, policy: PairingPolicy):
        self.data, self.policy = data, policy
        is_index = _is_index(path)
        self.fresh = fresh or is_index
        self.pairs: list[D.Sample] | None = None
        if is_index:
            self.targets = [data.by_id[r["id"]] for r in read_jsonl(path)]
        else:
            self.pairs = D.load_pairs(path, data)
            seen: dict[int, None] = {}
            for s in self.pairs:
                seen.setdefault(s.target, None)
            self.targets = list(seen)
        if not self.targets:
            raise InputError(f"{path}: nothing to train on")

    def epoch(self, e: int) -> list[D.Sample]:
        if not self.fresh:
            assert self.pairs is not None
            return self.pairs
        samples = D.fresh_samples(self.data, self.targets, self.policy, e)
        if not samples:
            raise InputError("fresh prompts: no target could be paired (every speaker has a single clip?)")
        return samples


class Trainer:
    def __init__(self, inputs: TrainInputs, opts: TrainOptions = TrainOptions(), sinks: Sequence[MetricSink] = (),
                 on_step: Hook | None = None, on_checkpoint: Hook | None = None, before_micro: Hook | None = None):
        self.inputs, self.opts = inputs, opts
        self.extra_sinks = list(sinks)
        self.on_step, self.on_checkpoint, self.before_micro = on_step, on_checkpoint, before_micro
        if opts.deterministic:
            import os

            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        self.dist = dd.init_distributed(opts.device)
        self.device = self.dist.device
        self.out = Path(inputs.output_dir)
        self.ckdir = CheckpointDir(self.out, opts.keep_checkpoints)

    # ------------------------------------------------------------------ set-up
    def _build(self) -> None:
        o, i = self.opts, self.inputs
        if o.text_loss_weight == 0 and o.mel_loss_weight == 0:
            raise InputError("train: text_loss_weight and mel_loss_weight are both 0")
        self.bundle: ModelBundle = open_bundle(i.checkpoint_dir)
        self.setup: ModelSetup = prepare_model(self.bundle, Path(i.tokenizer), o.freeze_base_rows,
                                               o.freeze_conditioning, o.dropout, o.gradient_checkpointing)
        manifests = D.pairs_manifests(i.train) if not _is_index(i.train) else _index_manifests(i.train)
        if i.val is not None:
            extra = D.pairs_manifests(i.val) if not _is_index(i.val) else _index_manifests(i.val)
            manifests += [m for m in extra if m.resolve() not in {x.resolve() for x in manifests}]
        self.data = D.TrainingSet(manifests, i.feature_dir)
        check_index(self.data.meta, manifests[0].parent, self.setup.tokenizer, self.setup.base_gpt_sha256,
                    self.data.max_text_id())
        self.policy = i.pairing or PairingPolicy(seed=o.seed)
        self.source = SampleSource(self.data, Path(i.train), o.fresh_prompts, self.policy)
        self.val_samples: list[D.Sample] = []
        if i.val is not None:
            if _is_index(i.val):
                targets = [self.data.by_id[r["id"]] for r in read_jsonl(i.val)]
                self.val_samples = D.fresh_samples(self.data, targets, self.policy, 0)
            else:
                self.val_samples = D.load_pairs(Path(i.val), self.data)
        self.seen_speakers = {self.data.rows[t]["speaker"] for t in self.source.targets}
        # the plan of every epoch, up front: total steps for the schedule and the ETA
        self.epoch_samples = [self.source.epoch(e) for e in range(o.epochs)]
        self.plans = [D.plan_epoch(self.data, s, o.batch_tokens, o.seed, e, min_per_step=self.dist.world,
                                   pad_at_end=o.pad_at_end)
                      for e, s in enumerate(self.epoch_samples)]
        self.total_steps = sum(len(p) for p in self.plans)
        if o.max_steps is not None:
            self.total_steps = min(self.total_steps, o.max_steps)
        if o.warmup_steps >= self.total_steps > 0:
            log.warning("warmup_steps=%d >= total steps %d: the learning rate never reaches its peak",
                        o.warmup_steps, self.total_steps)

        model = self.setup.model.to(self.device)
        self.model = model
        self.amp_dtype, use_scaler = resolve_amp(o.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        self.groups = param_groups(model, o.learning_rate, o.weight_decay, o.new_rows_learning_rate,
                                   o.new_rows_weight_decay)
        self.params = [p for g in self.groups for p in g["params"]]
        self.optimizer = build_optimizer(self.groups, self.device)
        self.scheduler = build_scheduler(self.optimizer, o.warmup_steps, self.total_steps, o.min_lr_ratio)
        sampling = {"seed": o.seed, "batch_tokens": o.batch_tokens, "fresh_prompts": self.source.fresh,
                    "pad_at_end": o.pad_at_end}
        if self.source.fresh:
            sampling["pairing"] = asdict(self.policy)
        self.fingerprint = {
            "tokenizer_sha256": self.setup.tokenizer.sha256, "vocab_size": self.setup.vocab_size,
            "base_vocab": self.setup.base_vocab, "model_config_sha256": self.setup.config_sha256,
            "base_checkpoint_sha256": self.setup.base_gpt_sha256,
            "data_sha256": self.data.fingerprint([p for p in (i.train, i.val) if p is not None]),
            "sampling": sampling,
            "optimizer_layout": hashlib.sha256(json.dumps(group_layout(self.groups)).encode()).hexdigest(),
        }
        self.base_digest = base_rows_digest(model, self.setup.base_vocab)

    def _resume(self) -> Progress:
        o, i = self.opts, self.inputs
        self.ckdir.clean_partial()
        path = self.ckdir.resolve(i.resume)
        if path is None:
            if self.ckdir.has_checkpoints() and i.resume is None:
                raise InputError(f"{self.out} already holds checkpoints of a run (latest: {self.ckdir.latest.name}); "
                                 "pass --resume auto to continue it, or choose another --output-dir")
            if i.resume == "auto":
                log.info("--resume auto: no checkpoint in %s, starting from the base model", self.out)
            torch.manual_seed(o.seed + self.dist.rank)
            return Progress()
        if i.warm_start:
            if self.ckdir.has_checkpoints():
                raise InputError(f"--warm-start starts a new run, but {self.out} already holds checkpoints; choose an "
                                 "empty --output-dir")
            try:
                weights = load_file(path)["model"]
            except InputError:
                weights = read_state_dict(path)  # a plain gpt.pth (e.g. an export)
            try:
                load_state_dict_into(self.model, weights, path)
            except CheckpointError as e:
                raise InputError(str(e)) from None
            log.info("warm start: weights from %s; optimizer, schedule and position start fresh", path)
            torch.manual_seed(o.seed + self.dist.rank)
            return Progress()
        ck = load_file(path)
        diffs = fingerprint_mismatch(ck["fingerprint"], self.fingerprint)
        if diffs:
            raise InputError(f"{path}: made by a run with different inputs, refusing to resume:\n  " +
                             "\n  ".join(diffs) + "\nResume with the same files and settings, or pass --warm-start to "
                             "start a new run from its weights only.")
        try:
            load_state_dict_into(self.model, ck["model"], path)
        except CheckpointError as e:
            raise InputError(str(e)) from None
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        if self.scaler is not None and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        progress = Progress(**ck["progress"])
        states = ck["rng"]
        if len(states) == self.dist.world:
            set_rng_state(states[self.dist.rank])
        else:
            log.warning("checkpoint was written by %d rank(s), this run has %d: the sample order is unchanged, but "
                        "dropout draws restart from the seed", len(states), self.dist.world)
            torch.manual_seed(o.seed + progress.step * 1009 + self.dist.rank)
        log.info("resuming from %s: step %d, epoch %d, step %d of the epoch", path, progress.step, progress.epoch + 1,
                 progress.step_in_epoch)
        return progress

    def _micro_budget(self, progress: Progress) -> int:
        o = self.opts
        if progress.micro_tokens:
            return progress.micro_tokens
        if o.micro_batch_tokens:
            return o.micro_batch_tokens
        per_rank = math.ceil(o.batch_tokens / self.dist.world)
        if self.device.type != "cuda":
            return per_rank
        return min(per_rank, self._probe())

    def _probe(self) -> int:
        rows = self.data.rows
        longest_text = max(r["text_len"] for r in rows)
        longest_code = max(r["code_len"] for r in rows)
        cost = D.sample_cost(longest_text, longest_code)
        d = self.setup.model.cfg.model_dim
        reserved = sum(2 * p.numel() * 4 for p in self.params)  # AdamW's two fp32 moments

        def measure(n: int) -> int:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            g = torch.Generator(device="cpu").manual_seed(0)
            latents = torch.randn(n, 32, d, generator=g).to(self.device)
            emo = torch.randn(n, d, generator=g).to(self.device)
            text = torch.randint(2, self.setup.vocab_size, (n, longest_text), generator=g).to(self.device)
            codes = torch.randint(0, self.setup.model.cfg.number_mel_codes - 2, (n, longest_code),
                                  generator=g).to(self.device)
            tl = torch.full((n,), longest_text, device=self.device)
            cl = torch.full((n,), longest_code, device=self.device)
            try:
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    out = self.model(latents, emo, text, tl, codes, cl, pad_at_end=self.opts.pad_at_end)
                    ts = token_sums(out)
                    loss = ts.text_loss.sum() + ts.mel_loss.sum()
                loss.backward()
                torch.cuda.synchronize(self.device)
                return torch.cuda.max_memory_allocated(self.device)
            finally:
                self.model.zero_grad(set_to_none=True)

        rng = torch.cuda.get_rng_state(self.device)
        try:
            capacity = torch.cuda.get_device_properties(self.device).total_memory
            return probe_micro_tokens(measure, cost, capacity, reserved, self.opts.memory_margin)
        finally:
            torch.cuda.set_rng_state(rng, self.device)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> TrainResult:
        try:
            return self._fit()
        finally:
            dd.shutdown(self.dist)

    def _fit(self) -> TrainResult:
        o, d = self.opts, self.dist
        self._build()
        progress = self._resume()
        dd.broadcast_module(self.model, d)
        progress.micro_tokens = self._micro_budget(progress)
        self.workers = loader_workers(o.workers, d.world)
        resumed_at = progress.step if (self.inputs.resume and not self.inputs.warm_start and progress.step) else None
        sinks: list[MetricSink] = []
        if d.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            sinks = [JsonlSink(self.out / "metrics.jsonl", resumed_at), TensorBoardSink(self.out / "logs", resumed_at),
                     *self.extra_sinks]
            self._write_run_info(progress)
        self.sinks = sinks
        baseline: dict[str, float] = {}
        last_val: dict[str, float] = {}
        self.model.train()
        if progress.step == 0 and self.val_samples:
            baseline = self.validate(progress.micro_tokens)
            self._check_best_metric(baseline)
            self._log(baseline, 0)
            log.info("baseline (step 0, before any update): %s", _brief(baseline))
        elif d.is_main and self.val_samples:
            baseline = _read_baseline(self.out / "metrics.jsonl")  # kept there from the first run
        bar = StepProgress(self.total_steps, progress.step, "training") if d.is_main else None
        rates: list[tuple[float, int, int, int, int]] = []  # seconds, real tokens, padded tokens, samples, micro
        stop = False
        try:
            for epoch in range(progress.epoch, o.epochs):
                samples, plan = self.epoch_samples[epoch], self.plans[epoch]
                start_at = progress.step_in_epoch if epoch == progress.epoch else 0
                steps = list(range(start_at, len(plan)))
                loader = D.prefetch(lambda k: self._load_share(samples, plan[k]), steps, self.workers,
                                    lookahead=2 * max(1, self.workers))
                for k, loaded in zip(steps, loader):
                    t0 = time.perf_counter()
                    metrics, info = self._train_step(samples, plan[k], loaded, progress)
                    dt = time.perf_counter() - t0
                    progress.step += 1
                    progress.step_in_epoch = k + 1
                    progress.samples += len(plan[k])
                    progress.tokens += info["real"]
                    rates.append((dt, info["real"], info["padded"], len(plan[k]), info["micro"]))
                    metrics |= {"train/tokens_per_s": info["real"] / dt, "train/samples_per_s": len(plan[k]) / dt,
                                "train/epoch": epoch + (k + 1) / len(plan)}
                    self._log(metrics, progress.step)
                    if bar is not None:
                        bar.update(progress.step, f"epoch {epoch + 1}/{o.epochs} loss {metrics['train/loss']:.4f} "
                                                  f"mel_top1 {metrics['train/mel_top1']:.3f}")
                    if self.on_step is not None:
                        self.on_step(StepInfo(progress.step, epoch, k + 1, info["ids"], info["micro"],
                                              progress.micro_tokens, metrics))
                    end_of_epoch = k + 1 == len(plan)
                    stop = o.max_steps is not None and progress.step >= o.max_steps
                    if end_of_epoch:
                        progress.epoch, progress.step_in_epoch = epoch + 1, 0
                    if progress.step % o.val_interval == 0 or end_of_epoch or stop:
                        last_val = self._validate_and_save(progress)
                    if stop:
                        break
                if stop:
                    break
        finally:
            if bar is not None:
                bar.close()
        result = self._finish(progress, baseline, last_val, rates)
        for s in sinks:
            s.close()
        return result

    def _load_share(self, samples: list[D.Sample], step: list[int]) -> dict[int, D.LoadedSample]:
        share = D.rank_share(self.data, samples, step, self.dist.rank, self.dist.world)
        return {i: D.load_sample(self.data, samples[i]) for i in share}

    def _train_step(self, samples: list[D.Sample], step: list[int], loaded: dict[int, D.LoadedSample],
                    progress: Progress) -> tuple[dict[str, float], dict[str, Any]]:
        o, d = self.opts, self.dist
        share = list(loaded)
        text_n, mel_n = D.step_counts(self.data, samples, step)
        floor = max(self.data.cost(samples[i]) for i in step)  # one sample per micro-batch: cannot go lower
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None

        def attempt(micro_tokens: int) -> tuple[torch.Tensor, int, int]:
            torch.set_rng_state(rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, self.device)
            self.optimizer.zero_grad(set_to_none=True)
            failure = None
            try:
                out = self._accumulate(samples, share, loaded, micro_tokens, text_n, mel_n, progress.step + 1)
            except Exception as e:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
                if not is_oom(e):
                    raise
                failure = str(e).splitlines()[0][:200]
            if dd.any_rank(failure is not None, d):  # every rank retries together, none waits in a collective
                self.optimizer.zero_grad(set_to_none=True)
                raise RuntimeError(f"out of memory in step {progress.step + 1} "
                                   f"({failure or 'on another rank'})")
            return out

        def on_backoff(event: BackoffEvent) -> None:
            progress.oom_backoffs += 1
            log.warning("step %d: out of memory with micro-batches of %d tokens; running the same samples again with "
                        "%d-token micro-batches (twice the accumulation)", progress.step + 1, event.failed_batch_size,
                        event.next_batch_size)

        (sums, micro, padded), progress.micro_tokens = run_with_oom_backoff(
            attempt, progress.micro_tokens, min_batch=min(floor, progress.micro_tokens), on_backoff=on_backoff)
        dd.sum_gradients(self.params, d)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = o.max_grad_norm if o.max_grad_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        totals = torch.cat([sums, torch.tensor([micro, padded], device=self.device, dtype=torch.float64)])
        dd.all_reduce_sum(totals, d)
        text_sum, mel_sum, hits, real, micro_all, padded_all = totals.tolist()
        text_loss, mel_loss = text_sum / text_n, mel_sum / mel_n
        ids = [loaded[i].ids for i in share]
        if d.enabled:
            ids = [x for part in dd.gather_objects(ids, d) for x in part]
        metrics = {
            "train/loss": o.text_loss_weight * text_loss + o.mel_loss_weight * mel_loss,
            "train/text_loss": text_loss, "train/mel_loss": mel_loss, "train/mel_top1": hits / mel_n,
            "train/grad_norm": float(grad_norm), "train/lr": lrs.get("decay", lrs.get("no_decay", 0.0)),
            "train/padding_share": 1.0 - real / padded_all if padded_all else 0.0,
            "train/micro_batches": micro_all, "train/micro_batch_tokens": progress.micro_tokens,
            "train/memory_gb": _memory_gb(self.device), "train/oom_backoffs": progress.oom_backoffs,
        }
        if "new_rows" in lrs:
            metrics["train/lr_new_rows"] = lrs["new_rows"]
        if self.scaler is not None:
            metrics["train/loss_scale"] = float(self.scaler.get_scale())
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return metrics, {"real": int(real), "padded": int(padded_all), "micro": int(micro_all), "ids": ids}

    def _accumulate(self, samples: list[D.Sample], share: list[int], loaded: dict[int, D.LoadedSample],
                    micro_tokens: int, text_n: int, mel_n: int, step: int) -> tuple[torch.Tensor, int, int]:
        """Forward + backward of this rank's micro-batches; returns (sums, micro-batches, padded tokens)."""
        o = self.opts
        sums = torch.zeros(3, dtype=torch.float32, device=self.device)  # text CE, mel CE, mel hits
        micros = D.split_micro(self.data, samples, share, micro_tokens, o.pad_at_end) if share else []
        padded = real = 0
        for m, micro in enumerate(micros):
            if self.before_micro is not None:
                self.before_micro(step, m, [loaded[i].ids for i in micro])
            batch = D.collate([loaded[i] for i in micro], self.device.type == "cuda", o.pad_at_end).to(self.device)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                out = self.model(batch.speaker_latents, batch.emotion_vectors, batch.text_ids, batch.text_lengths,
                                 batch.codes, batch.code_lengths, pad_at_end=o.pad_at_end)
            ts = token_sums(out)
            text_sum, mel_sum = ts.text_loss.sum(), ts.mel_loss.sum()
            loss = o.text_loss_weight * text_sum / text_n + o.mel_loss_weight * mel_sum / mel_n
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            sums += torch.stack([text_sum.detach(), mel_sum.detach(), ts.mel_hits.sum().float()])
            padded += batch.padded_tokens
            real += batch.real_tokens
        return torch.cat([sums.double(), torch.tensor([real], dtype=torch.float64, device=self.device)]), len(micros), \
            padded

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self, micro_tokens: int) -> dict[str, float]:
        """Validation metrics over the whole validation set (all ranks together)."""
        o, d = self.opts, self.dist
        samples = self.val_samples
        languages = sorted({self.data.rows[s.target]["language"] for s in samples})
        unseen_any = any(self.data.rows[s.target]["speaker"] not in self.seen_speakers for s in samples)
        groups = ["", *(f"{lang}/" for lang in languages)] + (["seen_speakers/", "unseen_speakers/"] if unseen_any else [])
        index = {g: n for n, g in enumerate(groups)}
        sums = torch.zeros(len(groups), 5, dtype=torch.float64)
        micros = D.split_micro(self.data, samples, range(len(samples)), micro_tokens, o.pad_at_end)
        was_training = self.model.training
        self.model.eval()
        try:
            for micro in micros[d.rank::d.world]:
                batch = D.collate([D.load_sample(self.data, samples[i]) for i in micro],
                                  pad_at_end=o.pad_at_end).to(self.device)
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    out = self.model(batch.speaker_latents, batch.emotion_vectors, batch.text_ids, batch.text_lengths,
                                     batch.codes, batch.code_lengths, pad_at_end=o.pad_at_end)
                ts = token_sums(out)
                per = torch.stack([ts.text_loss, ts.text_tokens, ts.mel_loss, ts.mel_tokens, ts.mel_hits], dim=1)
                per = per.to("cpu", torch.float64)
                for j, lang in enumerate(batch.languages):
                    member = ["", f"{lang}/"]
                    if unseen_any:
                        member.append("seen_speakers/" if batch.speakers[j] in self.seen_speakers else "unseen_speakers/")
                    for g in member:
                        sums[index[g]] += per[j]
        finally:
            self.model.train(was_training)
        sums = dd.all_reduce_sum(sums.to(self.device), d).cpu()
        metrics: dict[str, float] = {}
        for g, n in index.items():
            text_sum, text_n, mel_sum, mel_n, hits = sums[n].tolist()
            if not mel_n:
                continue
            text_loss, mel_loss = text_sum / max(text_n, 1), mel_sum / mel_n
            metrics |= {f"val/{g}loss": o.text_loss_weight * text_loss + o.mel_loss_weight * mel_loss,
                        f"val/{g}text_loss": text_loss, f"val/{g}mel_loss": mel_loss, f"val/{g}mel_top1": hits / mel_n}
        return metrics

    def _check_best_metric(self, metrics: dict[str, float]) -> None:
        key = f"val/{self.opts.best_metric}"
        if key not in metrics:
            names = sorted(k.removeprefix("val/") for k in metrics if k.endswith("loss"))
            raise InputError(f"train.best_metric: {self.opts.best_metric!r} is not a validation metric of this run "
                             f"(choose one of: {', '.join(names)})")

    def _validate_and_save(self, progress: Progress) -> dict[str, float]:
        metrics: dict[str, float] = {}
        is_best = False
        if self.val_samples:
            metrics = self.validate(progress.micro_tokens)
            self._check_best_metric(metrics)
            self._log(metrics, progress.step)
            value = metrics[f"val/{self.opts.best_metric}"]
            if progress.best_value is None or value < progress.best_value:
                progress.best_value, progress.best_step, is_best = value, progress.step, True
            log.info("step %d validation: %s%s", progress.step, _brief(metrics), " (best)" if is_best else "")
        else:
            is_best = True  # without validation the newest checkpoint is the one to export
            progress.best_step = progress.step
        self._save(progress, is_best, metrics)
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def _save(self, progress: Progress, is_best: bool, metrics: dict[str, float]) -> None:
        d = self.dist
        states = dd.gather_objects(rng_state(), d)
        if not d.is_main:
            return
        state = {
            "format": FORMAT,
            "model": {k: v.detach().cpu() for k, v in official_state_dict(self.model).items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "progress": asdict(progress),
            "rng": states,
            "fingerprint": self.fingerprint,
            "options": asdict(self.opts),
            "world": d.world,
            "metrics": metrics,
        }
        path = self.ckdir.save(state, progress.step, is_best)
        log.info("saved %s%s", path.name, " (best)" if is_best else "")
        if self.on_checkpoint is not None:
            self.on_checkpoint(path, progress, is_best)

    def _log(self, metrics: dict[str, float], step: int) -> None:
        for s in self.sinks:
            s.log(metrics, step)

    def _write_run_info(self, progress: Progress) -> None:
        real = padded = 0
        for samples, plan in zip(self.epoch_samples, self.plans):
            for step in plan:
                for micro in D.split_micro(self.data, samples, step, progress.micro_tokens, self.opts.pad_at_end):
                    rows = [self.data.rows[samples[i].target] for i in micro]
                    real += sum(D.sample_cost(r["text_len"], r["code_len"]) for r in rows)
                    padded += D.padded_cost([r["text_len"] for r in rows], [r["code_len"] for r in rows],
                                            self.opts.pad_at_end)
        planned_padding = 1 - real / max(1, padded)
        write_json(self.out / "train.json", {
            "format": "indextts-train-run/1", "fingerprint": self.fingerprint, "options": asdict(self.opts),
            "inputs": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.inputs).items()
                       if k != "pairing"},
            "model": self.setup.describe(), "device": str(self.device), "world": self.dist.world,
            "cpu_threads": torch.get_num_threads(),
            "amp": str(self.amp_dtype).removeprefix("torch.") if self.amp_dtype else "off",
            "micro_batch_tokens": progress.micro_tokens, "loader_workers": self.workers,
            "steps_per_epoch": [len(p) for p in self.plans], "total_steps": self.total_steps,
            "samples_per_epoch": [len(s) for s in self.epoch_samples], "val_samples": len(self.val_samples),
            "planned_padding_share": round(planned_padding, 4),
        })

    # ------------------------------------------------------------------ the end
    def _finish(self, progress: Progress, baseline: dict[str, float], last_val: dict[str, float],
                rates: list[tuple[float, int, int, int, int]]) -> TrainResult:
        d, o = self.dist, self.opts
        throughput: dict[str, float] = {}
        if rates:
            secs = sum(r[0] for r in rates)
            throughput = {"steps": len(rates), "seconds": round(secs, 3),
                          "tokens_per_s": round(sum(r[1] for r in rates) / secs, 2),
                          "samples_per_s": round(sum(r[3] for r in rates) / secs, 3),
                          "padding_share": round(1 - sum(r[1] for r in rates) / max(1, sum(r[2] for r in rates)), 4),
                          "micro_batches_per_step": round(sum(r[4] for r in rates) / len(rates), 2)}
        export_dir, verified, unchanged = None, False, None
        if d.is_main and o.export and (self.ckdir.best.is_file() or self.ckdir.latest.is_file()):
            source = self.ckdir.best if self.ckdir.best.is_file() else self.ckdir.latest
            export_dir, verified, unchanged = self._export(source, progress)
        summary = {
            "steps": progress.step, "epochs_done": progress.epoch, "samples": progress.samples,
            "tokens": progress.tokens, "best_step": progress.best_step, "best_value": progress.best_value,
            "best_metric": o.best_metric, "baseline": baseline, "final": last_val,
            "forgetting": {k: round(last_val[k] - v, 6) for k, v in baseline.items()
                           if k in last_val and k.endswith("/loss")},
            "throughput": throughput, "oom_backoffs": progress.oom_backoffs,
            "micro_batch_tokens": progress.micro_tokens,
            "export": str(export_dir) if export_dir else None, "export_verified": verified,
            "base_rows_unchanged": unchanged,
        }
        path = self.out / "train_summary.json"
        if d.is_main:
            write_json(path, summary)
        return TrainResult(self.out, progress.step, progress.epoch, progress.best_step, progress.best_value, baseline,
                           last_val, export_dir, verified, unchanged, path, throughput)

    def _export(self, source: Path, progress: Progress) -> tuple[Path, bool, bool | None]:
        """Export ``source`` in the official layout, reload it strictly and check it is what was trained."""
        o = self.opts
        ck = load_file(source)
        load_state_dict_into(self.model, ck["model"], source)
        out = self.out / "export"
        result = export_checkpoint(self.model, out, self.bundle.checkpoint_dir, Path(self.inputs.tokenizer),
                                   self.setup.vocab_size, o.export_dtype)
        reloaded = load_gpt(out, strict=True)
        ours = official_state_dict(self.model)
        theirs = reloaded.state_dict()
        dtype = torch.float16 if o.export_dtype == "float16" else torch.float32
        same = all(torch.equal(theirs[k], v.detach().cpu().to(dtype if v.is_floating_point() else v.dtype))
                   for k, v in ours.items())
        if same and self.val_samples and o.export_dtype == "float32":
            micro = D.split_micro(self.data, self.val_samples, range(len(self.val_samples)), progress.micro_tokens,
                                  o.pad_at_end)[-1]
            batch = D.collate([D.load_sample(self.data, self.val_samples[i]) for i in micro], pad_at_end=o.pad_at_end)
            was = self.model.training
            self.model.eval()
            with torch.no_grad():
                a = self.model.cpu()(batch.speaker_latents, batch.emotion_vectors, batch.text_ids, batch.text_lengths,
                                     batch.codes, batch.code_lengths, pad_at_end=o.pad_at_end)
                b = reloaded(batch.speaker_latents, batch.emotion_vectors, batch.text_ids, batch.text_lengths,
                             batch.codes, batch.code_lengths, pad_at_end=o.pad_at_end)
            self.model.to(self.device).train(was)
            same = torch.equal(a.mel_logits, b.mel_logits) and torch.equal(a.text_logits, b.text_logits)
        unchanged = base_rows_digest(reloaded, self.setup.base_vocab) == self.base_digest \
            if o.freeze_base_rows and o.export_dtype == "float32" else None
        write_json(out / "indextts-export.json", {
            "format": "indextts-export/1", "source": source.name, "step": ck["progress"]["step"],
            "metrics": ck.get("metrics", {}), "fingerprint": ck["fingerprint"],
            "tokenizer": {"file": Path(self.inputs.tokenizer).name, "sha256": self.setup.tokenizer.sha256,
                          "vocab_size": self.setup.vocab_size, "base_vocab": self.setup.base_vocab},
            "number_text_tokens": self.setup.vocab_size, "text_rows": self.setup.vocab_size + 1,
            "dtype": o.export_dtype, "verified_reload": same, "base_rows_unchanged": unchanged,
            "files": result.files,
        })
        if not same:
            raise RuntimeError(f"{out}: the exported checkpoint does not reproduce the trained model")
        log.info("exported %s (step %d) to %s; strict reload verified", source.name, ck["progress"]["step"], out)
        return out, same, unchanged


def _is_index(path: Path) -> bool:
    """True for a preprocessed index manifest (rows with a feature shard), False for a pair file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: not found")
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    return "shard" in json.loads(line)
                except json.JSONDecodeError:
                    raise InputError(f"{path}:1: not JSON") from None
    raise InputError(f"{path}: empty")


def _index_manifests(path: Path) -> list[Path]:
    found = [path] + [path.parent / n for n in ("train_manifest.jsonl", "val_manifest.jsonl")
                      if (path.parent / n).is_file() and (path.parent / n).resolve() != path.resolve()]
    return found


def _brief(metrics: dict[str, float]) -> str:
    keys = ("val/loss", "val/text_loss", "val/mel_loss", "val/mel_top1")
    return ", ".join(f"{k.removeprefix('val/')} {metrics[k]:.4f}" for k in keys if k in metrics)


def _read_baseline(path: Path) -> dict[str, float]:
    if not path.is_file():
        return {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row.get("step") == 0 and any(k.startswith("val/") for k in row):
            return {k: v for k, v in row.items() if k.startswith("val/")}
    return {}


def train(inputs: TrainInputs, opts: TrainOptions = TrainOptions(), sinks: Sequence[MetricSink] = (),
          on_step: Hook | None = None, on_checkpoint: Hook | None = None,
          before_micro: Hook | None = None) -> TrainResult:
    """Fine-tune (see the module docstring).  Under torchrun, every rank calls this."""
    return Trainer(inputs, opts, sinks, on_step, on_checkpoint, before_micro).fit()
