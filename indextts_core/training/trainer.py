"""The GPT fine-tuning loop: token-budget steps, exact resume, validation, checkpoints, export.

One optimizer step = one planned group of samples (:func:`~indextts_core.training.data.plan_epoch`,
about ``batch_tokens`` padded tokens), whatever the hardware: each rank takes its share, cuts it
into micro-batches that fit in memory, and accumulates gradients.  The loss of every micro-batch
is divided by the token counts of the *whole* step (all micro-batches, all ranks), so the step's
gradient is the gradient of the step's mean loss, however it was split::

    loss = text_weight * sum(text CE) / text tokens of the step + mel_weight * sum(mel CE) / mel tokens of the step

The path of a step is two calls deep: the epoch loop (:meth:`Trainer._fit`) calls
:meth:`Trainer._train_step`, which holds the micro-batch loop itself and calls the objective,
:func:`~indextts_core.training.objective.loss_sums` (the model's forward pass and its per-token
losses), then steps the optimizer.  Out of memory in a step (on any rank: all ranks agree before
retrying): gradients are dropped, the random state goes back to where the step began, the
micro-batch budget halves (so accumulation doubles; :func:`~indextts_core.utils.oom.back_off`)
and the same samples run again; no sample is skipped or repeated.  The smaller budget is kept for
the rest of the run and saved in checkpoints; a step that runs out of memory even with one
sample per micro-batch raises :class:`~indextts_core.utils.oom.GpuOOM`.

Where a run starts is its settings' ``resume`` and ``warm_start``.  Resume continues with exactly
the next planned step: the plan is a function of the data, the seed and ``batch_tokens``;
checkpoints hold the position, the optimizer/scheduler/scaler state and every random generator
(with ``optimizer_state: latest`` only ``latest.pth`` holds AdamW's moments; resuming from another
file starts fresh moments and says so; see :mod:`indextts_core.training.checkpointing`).

Validation (:mod:`~indextts_core.training.validation`; every ``val_interval`` steps, at each epoch
end, and once at step 0 before any update, the baseline that makes forgetting visible).  Each
epoch's samples hold the replay languages (base languages, ``replay_languages``) at
``replay_share`` of the tokens (:func:`~indextts_core.training.data.mix_replay`), and every
validation checks their losses against the baseline: ``forgetting/<lang>``, and a warning with
``forgetting/alarm/<lang>`` above ``forgetting_alarm``.  At the
end the best checkpoint (by ``best_metric``) is exported in the official layout and verified.

The settings are the ``train:`` section of the run configuration (:class:`~indextts_core.config.TrainConfig`);
its "auto" values are resolved in :mod:`~indextts_core.training.autosize`.

(Over 500 lines: the loop, the step with its out-of-memory retry, and the run's records it
writes share the trainer's state; split further they would pass it all around.)

(Some 560 lines, on purpose: the epoch loop, the step, resume, validation and the export hooks share one
trainer's state, and the loop reads top to bottom as nanoGPT's does; the parts with no state of their own live in
the modules named above.)
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from indextts_core.config import TrainConfig
from indextts_core.model.bundle import ModelBundle, open_bundle
from indextts_core.model.vocab import base_rows_digest
from indextts_core.preprocess.pairs import PairingPolicy
from indextts_core.training import checkpointing as ck
from indextts_core.training.export import export
from indextts_core.training import data as D
from indextts_core.training import distributed as dd
from indextts_core.training.autosize import loader_workers, micro_budget, probe_model, resolve_amp
from indextts_core.training.lora import lora_spec
from indextts_core.training.metrics import JsonlSink, MetricSink, TensorBoardSink
from indextts_core.training.objective import loss_sums
from indextts_core.training.optim import build_optimizer, build_scheduler, clipped_warmup, param_groups, set_warmup
from indextts_core.training.records import (
    Hook,
    Progress,
    Rate,
    StepInfo,
    TrainInputs,
    TrainResult,
    summarize_throughput,
)
from indextts_core.training.samples import SampleSource, open_data, validation_samples
from indextts_core.training.setup import ModelSetup, check_index, check_language_rows, prepare_model
from indextts_core.synthesis.budget import tokens_per_second
from indextts_core.synthesis.chain import SAMPLE_RATE
from indextts_core.training.generation_watch import GenerationWatch
from indextts_core.training.listening import AudioSamples
from indextts_core.training.generation_watch import brief as listen_brief
from indextts_core.training.validation import (
    Validation,
    brief,
    check_best_metric,
    forgetting_metrics,
    forgetting_rises,
    forgetting_summary,
    read_baseline,
    warn_forgetting,
)
from indextts_core.text.extend_bpe import read_sidecar
from indextts_core.utils.fileio import write_json
from indextts_core.utils.oom import back_off, is_oom
from indextts_core.utils.progress import StepProgress

log = logging.getLogger(__name__)

#: Seconds between progress lines in the log (the progress bar only shows on a terminal).
PROGRESS_LOG_S = 30.0

#: Bump when the same inputs and settings would train different weights (invalidates cached results).
STAGE_VERSION = "1"


def _memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


class Trainer:
    def __init__(self, inputs: TrainInputs, cfg: TrainConfig, seed: int = 1234, sinks: Sequence[MetricSink] = (),
                 on_step: Hook | None = None, on_checkpoint: Hook | None = None, before_micro: Hook | None = None):
        self.inputs, self.cfg, self.seed = inputs, cfg, seed
        self.extra_sinks = list(sinks)
        self.on_step, self.on_checkpoint, self.before_micro = on_step, on_checkpoint, before_micro
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        self.dist = dd.init_distributed(cfg.device)
        self.device = self.dist.device
        self.out = Path(inputs.output_dir)
        self.ckdir = ck.CheckpointDir(self.out, cfg.keep_checkpoints, cfg.optimizer_state)
        # what checkpoints and train.json record as the settings
        self.options = {**cfg.model_dump(mode="json"), "seed": seed}

    # ------------------------------------------------------------------ set-up
    def _build(self) -> None:
        c, i = self.cfg, self.inputs
        self.bundle: ModelBundle = open_bundle(i.checkpoint_dir)
        self.setup: ModelSetup = prepare_model(self.bundle, Path(i.tokenizer), c.freeze_base_rows,
                                               c.freeze_conditioning, c.dropout, c.gradient_checkpointing,
                                               lora=lora_spec(c))
        self.data = open_data(Path(i.train), Path(i.val) if i.val is not None else None, i.feature_dir,
                              D.conditioning_positions(self.setup.model.cfg))
        check_index(self.data.meta, self.data.manifests[0].parent, self.setup.tokenizer, self.setup.base_gpt_sha256,
                    self.data.max_text_id(), Path(i.checkpoint_dir))
        check_language_rows(self.data.rows, self.setup.language, self.data.manifests[0].parent)
        self.policy = i.pairing or PairingPolicy(seed=self.seed)
        self.source = SampleSource(self.data, Path(i.train), c.fresh_prompts, self.policy)
        self.val = Validation(self.data, validation_samples(self.data, i.val, self.policy),
                              self.source.seen_speakers(), c.text_loss_weight, c.mel_loss_weight, c.pad_at_end)
        self.listen = GenerationWatch(self.data, self.val.samples, self.source.seen_speakers(), c.val_generate,
                                      c.val_generate_decoding, c.val_generate_max_ratio, self.seed)
        models = open_bundle(i.checkpoint_dir, i.w2v_bert_dir, i.codec_path, campplus_path=i.campplus_path,
                             bigvgan_dir=i.bigvgan_dir)
        self.audio = AudioSamples(models, Path(i.tokenizer), self.data, self.val.samples,
                                  c.val_audio_samples if self.dist.is_main else 0, c.val_audio_every, self.seed,
                                  c.val_audio_diffusion_steps, self.out / "samples", i.read_audio,
                                  c.val_generate_decoding, c.val_generate_max_ratio)
        # the plan of every epoch, up front: total steps for the schedule and the ETA; each epoch's samples with the
        # replay languages at their share of the tokens (train.replay_share; None: as the data has them)
        self.new_languages = run_languages(Path(i.tokenizer), self.setup)
        mixed = [D.mix_replay(self.data, self.source.epoch(e), c.replay_share, c.replay_languages,
                              self.new_languages, self.seed, e) for e in range(c.epochs)]
        self.epoch_samples = [m[0] for m in mixed]
        self.mixes = [m[1] for m in mixed]
        line = D.mix_line(self.mixes, c.replay_share)
        if self.dist.is_main and line:
            log.info("%s", line)
        self.plans = [D.plan_epoch(self.data, s, c.batch_tokens, self.seed, e, min_per_step=self.dist.world,
                                   pad_at_end=c.pad_at_end)
                      for e, s in enumerate(self.epoch_samples)]
        self.total_steps = sum(len(p) for p in self.plans)
        if c.max_steps is not None:
            self.total_steps = min(self.total_steps, c.max_steps)
        self.warmup_steps = clipped_warmup(c.warmup_steps, self.total_steps)
        if self.warmup_steps != c.warmup_steps:  # else the learning rate would never reach its peak
            log.warning("warmup_steps %d is longer than the run (%d steps): using %d", c.warmup_steps,
                        self.total_steps, self.warmup_steps)

        self.model = self.setup.model.to(self.device)
        self.amp_dtype, use_scaler = resolve_amp(c.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        self.groups = param_groups(self.model, c.learning_rate, c.weight_decay, c.new_rows_learning_rate,
                                   c.new_rows_weight_decay)
        self.params = [p for g in self.groups for p in g["params"]]
        self.optimizer = build_optimizer(self.groups, self.device)
        self.scheduler = build_scheduler(self.optimizer, self.warmup_steps, self.total_steps, c.min_lr_ratio)
        sampling = {"seed": self.seed, "batch_tokens": c.batch_tokens, "fresh_prompts": self.source.fresh,
                    "pad_at_end": c.pad_at_end}
        if self.source.fresh:
            sampling["pairing"] = asdict(self.policy)
        if c.replay_share is not None:  # (absent otherwise: the fingerprints of runs without replay are unchanged)
            sampling["replay"] = {"share": c.replay_share, "languages": list(c.replay_languages)}
        self.fingerprint = ck.fingerprint(self.setup, self.data, i, self.groups, sampling)
        self.base_digest = base_rows_digest(self.model, self.setup.base_vocab, self.setup.trained_base_rows)

    def _keep_warmup(self, progress: Progress, resumed: bool) -> None:
        """A resumed run warms up as it did before: the warm-up its checkpoint recorded (a checkpoint written before
        warm-ups were recorded: its run used the setting unclipped).  A new run records its own."""
        if progress.warmup_steps is None:
            progress.warmup_steps = self.cfg.warmup_steps if resumed else self.warmup_steps
        if progress.warmup_steps != self.warmup_steps:
            log.info("resumed run: keeping the warm-up of %d steps it started with (these settings give %d)",
                     progress.warmup_steps, self.warmup_steps)
            self.warmup_steps = progress.warmup_steps
            set_warmup(self.scheduler, self.warmup_steps, self.total_steps, self.cfg.min_lr_ratio)

    def _probe(self) -> int:
        rows = self.data.rows
        longest_text = max(r["text_len"] for r in rows)
        longest_code = max(r["code_len"] for r in rows)
        cfg = self.setup.model.cfg
        return probe_model(self.model, self.params, self.device, longest_text=longest_text, longest_code=longest_code,
                           longest_cost=D.sample_cost(longest_text, longest_code, conds=self.data.conds),
                           latents=1 if cfg.is_v25 else cfg.condition_num_latent, vocab_size=self.setup.vocab_size,
                           mel_codes=cfg.number_mel_codes, amp_dtype=self.amp_dtype, pad_at_end=self.cfg.pad_at_end,
                           margin=self.cfg.memory_margin)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> TrainResult:
        try:
            return self._fit()
        finally:
            dd.shutdown(self.dist)

    def _fit(self) -> TrainResult:
        c, d = self.cfg, self.dist
        self._build()
        start = ck.resume(self.ckdir, c, Path(self.inputs.tokenizer), self.model, self.optimizer, self.scheduler,
                          self.scaler, self.fingerprint, self.seed, d)
        progress = start.progress
        dd.broadcast_module(self.model, d)
        progress.micro_tokens = progress.micro_tokens or micro_budget(c.micro_batch_tokens, c.batch_tokens, d.world,
                                                                      self.device, self._probe)
        self.workers = loader_workers(c.workers, d.world)
        resumed_at = progress.step if (c.resume and not c.warm_start and progress.step) else None
        self._keep_warmup(progress, resumed_at is not None)
        sinks: list[MetricSink] = []
        if d.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            sinks = [JsonlSink(self.out / "metrics.jsonl", resumed_at), TensorBoardSink(self.out / "logs", resumed_at),
                     *self.extra_sinks]
            self._write_run_info(progress)
        self.sinks = sinks
        if start.fresh_moments is not None:  # the step where the optimizer's moments restarted, in the run's curves
            self._log({"train/fresh_optimizer_moments": 1.0}, progress.step)
        baseline: dict[str, float] = {}
        self.baseline = baseline  # what the forgetting alarm compares with (the main process's)
        last_val: dict[str, float] = {}
        self.model.train()
        if (progress.step == 0 or c.warm_start) and self.val:  # a warm start may begin at their step
            baseline = self._validate(progress.micro_tokens)
            check_best_metric(c.best_metric, baseline)
            progress.baseline = _recorded(baseline)  # saved in every checkpoint from now on
            self.baseline = baseline
            self._log(baseline | forgetting_metrics(self._rises(baseline), c.forgetting_alarm), progress.step)
            log.info("baseline (step %d, before any update of this run): %s", progress.step, brief(baseline))
            if self.listen:
                self._log({"time/generate_s": self.listen.seconds}, progress.step)
                log.info("baseline generation: %s", listen_brief(baseline, self.listen.seconds))
            self._speak(progress.step)
        elif d.is_main and self.val:
            # from the checkpoint (a resume on a fresh machine has no metrics file), else the first run's metrics file
            baseline = dict(progress.baseline) or read_baseline(self.out / "metrics.jsonl")
            if not baseline:
                log.warning("resuming at step %d without the step-0 baseline validation (the checkpoint predates it "
                            "and %s is missing): no forgetting numbers, and promotion against the base model is "
                            "not possible for this run", progress.step, self.out / "metrics.jsonl")
            self.baseline = baseline
        bar = StepProgress(self.total_steps, progress.step, "training") if d.is_main else None
        rates: list[Rate] = []
        last_line = time.monotonic()
        stop = c.max_steps is not None and progress.step >= c.max_steps  # a resumed run that already got there
        try:
            for epoch in range(progress.epoch, c.epochs):
                if stop:
                    break
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
                        bar.update(progress.step, f"epoch {epoch + 1}/{c.epochs} loss {metrics['train/loss']:.4f} "
                                                  f"mel_top1 {metrics['train/mel_top1']:.3f}")
                    if d.is_main and (time.monotonic() - last_line >= PROGRESS_LOG_S or progress.step == 1):
                        last_line = time.monotonic()  # a line for logs that show no progress bar (Prefect, files)
                        log.info("step %d/%d (epoch %d/%d): loss %.4f, mel_top1 %.3f, %.0f tokens/s",
                                 progress.step, self.total_steps, epoch + 1, c.epochs, metrics["train/loss"],
                                 metrics["train/mel_top1"], metrics["train/tokens_per_s"])
                    if self.on_step is not None:
                        self.on_step(StepInfo(progress.step, epoch, k + 1, info["ids"], info["micro"],
                                              progress.micro_tokens, metrics, self.total_steps))
                    end_of_epoch = k + 1 == len(plan)
                    stop = c.max_steps is not None and progress.step >= c.max_steps
                    if end_of_epoch:
                        progress.epoch, progress.step_in_epoch = epoch + 1, 0
                    if progress.step % c.val_interval == 0 or end_of_epoch or stop:
                        last_val = self._validate_and_save(progress)
                    if stop:
                        break
                if stop:
                    break
            if bar is not None:
                bar.close()
                bar = None
            return self._finish(progress, baseline, last_val, rates)
        finally:
            if bar is not None:
                bar.close()
            for s in sinks:  # flushed on failure too: a failed attempt's metrics are not lost
                s.close()

    def _load_share(self, samples: list[D.Sample], step: list[int]) -> dict[int, D.LoadedSample]:
        share = D.rank_share(self.data, samples, step, self.dist.rank, self.dist.world)
        return {i: D.load_sample(self.data, samples[i]) for i in share}

    def _train_step(self, samples: list[D.Sample], step: list[int], loaded: dict[int, D.LoadedSample],
                    progress: Progress) -> tuple[dict[str, float], dict[str, Any]]:
        """One optimizer step on the planned samples ``step`` (this rank's share is ``loaded``).

        Forward and backward of every micro-batch (the model call is :func:`loss_sums`), each loss
        scaled by the token counts of the whole step; on out of memory, the same samples again in
        micro-batches of half the tokens, from the same random state; then the gradients summed over
        ranks, clipped, and the optimizer and scheduler stepped.  Returns the step's metrics and
        its real / padded tokens, micro-batches (all ranks) and sample ids.
        """
        c, d = self.cfg, self.dist
        share = list(loaded)
        text_n, mel_n = D.step_counts(self.data, samples, step)
        micro_tokens = progress.micro_tokens
        floor = min(micro_tokens, max(self.data.cost(samples[i]) for i in step))  # one sample per micro-batch
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        while True:  # until the step fits (or even the floor does not: GpuOOM)
            torch.set_rng_state(rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, self.device)
            self.optimizer.zero_grad(set_to_none=True)
            failure = None
            try:
                sums = torch.zeros(3, dtype=torch.float32, device=self.device)  # text CE, mel CE, mel hits
                padded = real = 0
                micros = D.split_micro(self.data, samples, share, micro_tokens, c.pad_at_end) if share else []
                for m, micro in enumerate(micros):
                    if self.before_micro is not None:
                        self.before_micro(progress.step + 1, m, [loaded[i].ids for i in micro])
                    batch = D.collate([loaded[i] for i in micro], self.device.type == "cuda", c.pad_at_end,
                                      conds=self.data.conds).to(self.device)
                    ts = loss_sums(self.model, batch, self.amp_dtype, c.pad_at_end)
                    text_sum, mel_sum = ts.text_loss.sum(), ts.mel_loss.sum()
                    loss = c.text_loss_weight * text_sum / text_n + c.mel_loss_weight * mel_sum / mel_n
                    (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
                    sums += torch.stack([text_sum.detach(), mel_sum.detach(), ts.mel_hits.sum().float()])
                    padded += batch.padded_tokens
                    real += batch.real_tokens
            except Exception as e:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
                if not is_oom(e):
                    raise
                failure = str(e).splitlines()[0][:200]
            batch = ts = text_sum = mel_sum = loss = None  # a micro-batch's tensors (and graph) end with the attempt
            if not dd.any_rank(failure is not None, d):  # every rank retries together, none waits in a collective
                break
            self.optimizer.zero_grad(set_to_none=True)
            event = back_off(micro_tokens, floor,
                             f"out of memory in step {progress.step + 1} ({failure or 'on another rank'})"[:200])
            progress.oom_backoffs += 1
            log.warning("step %d: out of memory with micro-batches of %d tokens; running the same samples again with "
                        "%d-token micro-batches (twice the accumulation)", progress.step + 1, event.failed_batch_size,
                        event.next_batch_size)
            micro_tokens = event.next_batch_size
        progress.micro_tokens = micro_tokens  # kept for the rest of the run
        dd.sum_gradients(self.params, d)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = c.max_grad_norm if c.max_grad_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        totals = torch.cat([sums.double(), torch.tensor([real, len(micros), padded], dtype=torch.float64,
                                                        device=self.device)])
        dd.all_reduce_sum(totals, d)
        text_sum, mel_sum, hits, real, micro_all, padded_all = totals.tolist()
        text_loss, mel_loss = text_sum / text_n, mel_sum / mel_n
        ids = [loaded[i].ids for i in share]
        if d.enabled:
            ids = [x for part in dd.gather_objects(ids, d) for x in part]
        metrics = {
            "train/loss": c.text_loss_weight * text_loss + c.mel_loss_weight * mel_loss,
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

    # ------------------------------------------------------------------ validation and checkpoints
    def _validate(self, micro_tokens: int) -> dict[str, float]:
        metrics = self.val(self.model, micro_tokens, self.dist, self.device, self.amp_dtype)
        if self.listen:
            metrics |= self.listen(self.model, self.dist, self.device, self.amp_dtype)
        return metrics

    def _validate_and_save(self, progress: Progress) -> dict[str, float]:
        metrics: dict[str, float] = {}
        is_best = False
        if self.val:
            metrics = self._validate(progress.micro_tokens)
            check_best_metric(self.cfg.best_metric, metrics)
            self._log(metrics | self._forgetting(metrics, progress), progress.step)
            value = metrics[f"val/{self.cfg.best_metric}"]
            if progress.best_value is None or value < progress.best_value:
                progress.best_value, progress.best_step, is_best = value, progress.step, True
                progress.best_metrics = _recorded(metrics)
            log.info("step %d validation: %s%s", progress.step, brief(metrics), " (best)" if is_best else "")
            if self.listen:
                self._log({"time/generate_s": self.listen.seconds}, progress.step)
                log.info("step %d generation: %s", progress.step, listen_brief(metrics, self.listen.seconds))
            self._speak(progress.step, final=progress.step >= self.total_steps)
        else:
            is_best = True  # without validation the newest checkpoint is the one to export
            progress.best_step = progress.step
        self._save(progress, is_best, metrics)
        return metrics

    def _rises(self, metrics: dict[str, float]) -> dict[str, float]:
        return forgetting_rises(metrics, self.baseline, self.cfg.replay_languages, self.new_languages)

    def _forgetting(self, metrics: dict[str, float], progress: Progress) -> dict[str, float]:
        """The forgetting alarm of one validation: its metrics, a warning per replay language above the threshold,
        and each language's worst rise kept in ``progress`` (so it survives a resume)."""
        rises = self._rises(metrics)
        for lang, rise in rises.items():
            progress.forgetting_worst[lang] = max(rise, progress.forgetting_worst.get(lang, rise))
        if self.dist.is_main:
            warn_forgetting(progress.step, metrics, self.baseline, rises, self.cfg.forgetting_alarm)
        return forgetting_metrics(rises, self.cfg.forgetting_alarm)

    def _save(self, progress: Progress, is_best: bool, metrics: dict[str, float]) -> None:
        d = self.dist
        states = dd.gather_objects(ck.rng_state(), d)
        if not d.is_main:
            return
        state = ck.checkpoint(self.model, self.optimizer, self.scheduler, self.scaler, progress, states,
                              self.fingerprint, self.options, d.world, metrics)
        path = self.ckdir.save(state, progress.step, is_best)
        log.info("saved %s%s", path.name, " (best)" if is_best else "")
        if self.on_checkpoint is not None:
            self.on_checkpoint(path, progress, is_best)

    def _log(self, metrics: dict[str, float], step: int) -> None:
        for s in self.sinks:
            s.log(metrics, step)

    def _speak(self, step: int, final: bool = False) -> None:
        """The audio samples, when due: wavs to every sink that takes audio, their cost as a metric."""
        if not self.audio.due(final):
            return
        spoken = self.audio(self.model, step, self.device)
        for s in self.sinks:
            if hasattr(s, "log_audio"):
                for tag, wav, samples in spoken:
                    s.log_audio(tag, wav, samples, SAMPLE_RATE, step)
        self._log({"time/audio_samples_s": self.audio.seconds}, step)

    def _write_run_info(self, progress: Progress) -> None:
        planned_padding = D.planned_padding(self.data, self.epoch_samples, self.plans, progress.micro_tokens,
                                            self.cfg.pad_at_end)
        write_json(self.out / "train.json", {
            "format": "indextts-train-run/1", "fingerprint": self.fingerprint, "options": self.options,
            "inputs": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.inputs).items()
                       if k not in ("pairing", "read_audio")},
            "model": self.setup.describe(), "device": str(self.device), "world": self.dist.world,
            "cpu_threads": torch.get_num_threads(),
            "amp": str(self.amp_dtype).removeprefix("torch.") if self.amp_dtype else "off",
            "micro_batch_tokens": progress.micro_tokens, "loader_workers": self.workers,
            "steps_per_epoch": [len(p) for p in self.plans], "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "samples_per_epoch": [len(s) for s in self.epoch_samples], "val_samples": len(self.val.samples),
            "planned_padding_share": round(planned_padding, 4),
            "replay": {"share": self.cfg.replay_share, "languages": list(self.cfg.replay_languages),
                       "new_languages": list(self.new_languages), "epochs": [m.record() for m in self.mixes]},
        })

    # ------------------------------------------------------------------ the end
    def _finish(self, progress: Progress, baseline: dict[str, float], last_val: dict[str, float],
                rates: list[Rate]) -> TrainResult:
        d, c = self.dist, self.cfg
        throughput = summarize_throughput(rates)
        export_dir, verified, unchanged = None, False, None
        exported: dict[str, float] = {}
        if d.is_main and c.export and (self.ckdir.best.is_file() or self.ckdir.latest.is_file()):
            source = self.ckdir.best if self.ckdir.best.is_file() else self.ckdir.latest
            # the numbers of the checkpoint exported (the best one), not of the last validation
            exported = dict(progress.best_metrics) if source == self.ckdir.best else dict(last_val)
            check = self.val.batch(self.val.last_micro(progress.micro_tokens)) if self.val else None
            export_dir, verified, unchanged = export(
                self.model, source, self.out / "export", self.setup, self.bundle.checkpoint_dir,
                Path(self.inputs.tokenizer), c.export_dtype, self.base_digest if c.freeze_base_rows else None,
                check, self.device, c.pad_at_end, segment_rates=tokens_per_second(self.data.rows))
        summary = {
            "steps": progress.step, "epochs_done": progress.epoch, "samples": progress.samples,
            "tokens": progress.tokens, "best_step": progress.best_step, "best_value": progress.best_value,
            "best_metric": c.best_metric, "baseline": baseline, "final": last_val, "exported": exported,
            "forgetting": {k: round(last_val[k] - v, 6) for k, v in baseline.items()
                           if k in last_val and k.endswith("/loss")},
            "forgetting_alarm": forgetting_summary(baseline, last_val, progress.forgetting_worst,
                                                   c.replay_languages, self.new_languages, c.forgetting_alarm),
            "replay": [m.record() for m in self.mixes],
            "throughput": throughput, "oom_backoffs": progress.oom_backoffs,
            "micro_batch_tokens": progress.micro_tokens,
            "export": str(export_dir) if export_dir else None, "export_verified": verified,
            "base_rows_unchanged": unchanged, "model": self.setup.describe(), "fingerprint": self.fingerprint,
        }
        path = self.out / "train_summary.json"
        alarmed = sorted(lang for lang, f in summary["forgetting_alarm"].items() if f["alarm"])
        if d.is_main:
            write_json(path, summary)
            if alarmed:
                worst = summary["forgetting_alarm"]
                log.warning("forgetting alarm during this run: %s (worst rise above the step-0 baseline: %s)",
                            ", ".join(alarmed), ", ".join(f"{x} {100 * worst[x]['worst_rise']:.1f}%" for x in alarmed))
        return TrainResult(self.out, progress.step, progress.epoch, progress.best_step, progress.best_value, baseline,
                           last_val, export_dir, verified, unchanged, path, throughput, exported, progress.oom_backoffs,
                           summary["model"], self.fingerprint, summary["forgetting_alarm"], summary["replay"])


def run_languages(tokenizer: Path, setup: ModelSetup) -> list[str]:
    """The languages this run teaches (never replay): 2.5, the tokenizer stage's language choice; 2.0, the languages
    the tokenizer was extended with (its sidecar); none known: every replay language counts as replay."""
    if setup.language:
        return [str(setup.language["language"])]
    return [str(x) for x in (read_sidecar(tokenizer) or {}).get("languages", [])]


def _recorded(metrics: dict[str, float]) -> dict[str, float]:
    """The validation (and generation) numbers of a step as plain floats (what a checkpoint keeps of them)."""
    return {k: float(v) for k, v in metrics.items() if k.startswith(("val/", "gen/"))}


def train(inputs: TrainInputs, cfg: TrainConfig = TrainConfig(), *, seed: int = 1234, sinks: Sequence[MetricSink] = (),
          on_checkpoint: Hook | None = None, on_step: Hook | None = None,
          before_micro: Hook | None = None) -> TrainResult:
    """Fine-tune (see the module docstring) with the ``train:`` settings ``cfg`` (``cfg.resume`` and
    ``cfg.warm_start`` say where the run starts).  Under torchrun, every rank calls this."""
    return Trainer(inputs, cfg, seed, sinks, on_step, on_checkpoint, before_micro).fit()
