"""The plain records a training run takes and gives: its inputs, its progress, each step, its result."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indextts_core.preprocess.pairs import PairingPolicy

Hook = Callable[..., None]
#: One optimizer step's (seconds, real tokens, padded tokens, samples, micro-batches).
Rate = tuple[float, int, int, int, int]


@dataclass
class TrainInputs:
    """What a run trains on and where it writes; where it starts (``resume``, ``warm_start``) is in TrainConfig."""

    checkpoint_dir: Path  # base model folder (official layout)
    tokenizer: Path  # the extended tokenizer
    train: Path  # a pair file (GPT_pairs_train.jsonl) or a preprocessed index manifest (fresh prompts)
    val: Path | None  # a pair file or index manifest; None: no validation
    output_dir: Path
    pairing: PairingPolicy | None = None  # prompt policy for fresh prompts (default: seed only)
    feature_dir: Path | None = None  # where the shards are, if not where preprocess.json says
    w2v_bert_dir: Path | None = None  # encoders for the audio samples, if not in the base folder's hf_cache/
    codec_path: Path | None = None
    campplus_path: Path | None = None  # synthesis models for the audio samples, if not in the base's hf_cache/
    bigvgan_dir: Path | None = None
    read_audio: Callable[[str], bytes] | None = None  # reads prompt audio (an s3:// row); default: local files


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
    # travel with every checkpoint (plain floats), so a run resumed from latest.pth on a fresh machine still knows
    # them: the validation before any update (the baseline) and the validation of the best checkpoint
    baseline: dict[str, float] = field(default_factory=dict)
    best_metrics: dict[str, float] = field(default_factory=dict)
    # the warm-up the run's schedule uses (after :func:`~indextts_core.training.optim.clipped_warmup`), so a resumed
    # run keeps it; None in checkpoints written before it was recorded
    warmup_steps: int | None = None
    # the largest relative rise of each replay language's validation loss above its baseline so far (the
    # forgetting alarm's record, kept across a resume)
    forgetting_worst: dict[str, float] = field(default_factory=dict)


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
    total_steps: int = 0  # the steps this run's schedule plans (for progress displays)


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
    exported: dict[str, float] = field(default_factory=dict)  # the validation of the exported checkpoint
    oom_backoffs: int = 0
    model: dict[str, Any] = field(default_factory=dict)  # vocab_size, trainable_parameters, ... (ModelSetup.describe)
    fingerprint: dict[str, Any] = field(default_factory=dict)  # the inputs' digests the run is bound to
    # per replay language: {"baseline", "last", "worst_rise", "alarm"} (validation.forgetting_summary)
    forgetting: dict[str, dict[str, Any]] = field(default_factory=dict)
    replay: list[dict[str, Any]] = field(default_factory=list)  # each epoch's mix (data.ReplayMix.record)

    @property
    def alarmed(self) -> list[str]:
        """The replay languages whose forgetting alarm went off during the run."""
        return sorted(lang for lang, f in self.forgetting.items() if f.get("alarm"))

    @classmethod
    def from_summary(cls, path: Path) -> TrainResult:
        """The result of a run that ended in another process (e.g. under torchrun), from its summary file."""
        s = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(Path(path).parent, s["steps"], s["epochs_done"], s["best_step"], s["best_value"], s["baseline"],
                   s["final"], Path(s["export"]) if s["export"] else None, s["export_verified"],
                   s["base_rows_unchanged"], Path(path), s["throughput"], s.get("exported", {}),
                   s.get("oom_backoffs", 0), s.get("model", {}), s.get("fingerprint", {}),
                   s.get("forgetting_alarm", {}), s.get("replay", []))


def summarize_throughput(rates: list[Rate]) -> dict[str, float]:
    """The run's throughput (``TrainResult.throughput``) from every step's :data:`Rate`."""
    if not rates:
        return {}
    secs = sum(r[0] for r in rates)
    return {"steps": len(rates), "seconds": round(secs, 3),
            "tokens_per_s": round(sum(r[1] for r in rates) / secs, 2),
            "samples_per_s": round(sum(r[3] for r in rates) / secs, 3),
            "padding_share": round(1 - sum(r[1] for r in rates) / max(1, sum(r[2] for r in rates)), 4),
            "micro_batches_per_step": round(sum(r[4] for r in rates) / len(rates), 2)}
