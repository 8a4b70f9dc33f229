"""Grouped validation: loss, text_loss, mel_loss and mel_top1 overall, per language, and for seen / unseen speakers.

Runs in eval mode, so it is deterministic and touches no random generator.  Every rank takes its
share of the micro-batches and the sums are reduced over all ranks.

The forgetting alarm reads the replay languages' (base languages the model already speaks) losses
against the step-0 baseline: :func:`forgetting_rises`, :func:`forgetting_metrics` (``forgetting/<lang>``,
the relative rise, and ``forgetting/alarm/<lang>``, 1 when it is above ``train.forgetting_alarm``)
and :func:`forgetting_summary` (what the run's result says per language).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from indextts_core.errors import InputError
from indextts_core.training import data as D
from indextts_core.training import distributed as dd
from indextts_core.training.objective import loss_sums

log = logging.getLogger(__name__)


class Validation:
    """The validation samples of a run and how their metrics are grouped and weighted."""

    def __init__(self, data: D.TrainingSet, samples: Sequence[D.Sample], seen_speakers: set[str],
                 text_weight: float, mel_weight: float, pad_at_end: bool = True):
        self.data, self.samples, self.seen_speakers = data, list(samples), seen_speakers
        self.text_weight, self.mel_weight, self.pad_at_end = text_weight, mel_weight, pad_at_end

    def __bool__(self) -> bool:
        return bool(self.samples)

    @torch.no_grad()
    def __call__(self, model: nn.Module, micro_tokens: int, dist: dd.Dist, device: torch.device,
                 amp_dtype: torch.dtype | None) -> dict[str, float]:
        """Validation metrics over the whole validation set (all ranks together)."""
        data, samples = self.data, self.samples
        languages = sorted({data.rows[s.target]["language"] for s in samples})
        unseen_any = any(data.rows[s.target]["speaker"] not in self.seen_speakers for s in samples)
        groups = ["", *(f"{lang}/" for lang in languages)]
        if unseen_any:
            groups += ["seen_speakers/", "unseen_speakers/"]
        index = {g: n for n, g in enumerate(groups)}
        sums = torch.zeros(len(groups), 5, dtype=torch.float64)
        micros = D.split_micro(data, samples, range(len(samples)), micro_tokens, self.pad_at_end)
        was_training = model.training
        model.eval()
        try:
            for micro in micros[dist.rank::dist.world]:
                batch = self.batch(micro).to(device)
                ts = loss_sums(model, batch, amp_dtype, self.pad_at_end)
                per = torch.stack([ts.text_loss, ts.text_tokens, ts.mel_loss, ts.mel_tokens, ts.mel_hits], dim=1)
                per = per.to("cpu", torch.float64)
                for j, lang in enumerate(batch.languages):
                    member = ["", f"{lang}/"]
                    if unseen_any:
                        seen = batch.speakers[j] in self.seen_speakers
                        member.append("seen_speakers/" if seen else "unseen_speakers/")
                    for g in member:
                        sums[index[g]] += per[j]
        finally:
            model.train(was_training)
        sums = dd.all_reduce_sum(sums.to(device), dist).cpu()
        metrics: dict[str, float] = {}
        for g, n in index.items():
            text_sum, text_n, mel_sum, mel_n, hits = sums[n].tolist()
            if not mel_n:
                continue
            text_loss, mel_loss = text_sum / max(text_n, 1), mel_sum / mel_n
            metrics |= {f"val/{g}loss": self.text_weight * text_loss + self.mel_weight * mel_loss,
                        f"val/{g}text_loss": text_loss, f"val/{g}mel_loss": mel_loss, f"val/{g}mel_top1": hits / mel_n}
        return metrics

    def batch(self, micro: Sequence[int]) -> D.Batch:
        """The (CPU) batch of the validation samples ``micro``."""
        return D.collate([D.load_sample(self.data, self.samples[i]) for i in micro], pad_at_end=self.pad_at_end,
                         conds=self.data.conds)

    def last_micro(self, micro_tokens: int) -> list[int]:
        """The last (shortest) validation micro-batch: the one the export is checked on."""
        return D.split_micro(self.data, self.samples, range(len(self.samples)), micro_tokens, self.pad_at_end)[-1]


def check_best_metric(best_metric: str, metrics: dict[str, float]) -> None:
    key = f"val/{best_metric}"
    if key not in metrics:
        names = sorted(k.removeprefix("val/") for k in metrics if k.endswith("loss"))
        raise InputError(f"train.best_metric: {best_metric!r} is not a validation metric of this run "
                         f"(choose one of: {', '.join(names)})")


def brief(metrics: dict[str, float]) -> str:
    keys = ("val/loss", "val/text_loss", "val/mel_loss", "val/mel_top1")
    return ", ".join(f"{k.removeprefix('val/')} {metrics[k]:.4f}" for k in keys if k in metrics)


def read_baseline(path: Path) -> dict[str, float]:
    """The baseline validation (and generation) metrics of a run, from its metrics file (kept there by the first
    run of a resumed one): the first validation row, logged before any update (step 0, or a warm start's step)."""
    if not path.is_file():
        return {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if any(k.startswith("val/") for k in row):
            return {k: v for k, v in row.items() if k.startswith(("val/", "gen/"))}
    return {}


def forgetting_rises(metrics: Mapping[str, float], baseline: Mapping[str, float], replay: Iterable[str],
                     new: Iterable[str] = ()) -> dict[str, float]:
    """``{language: relative rise}`` of each replay language's validation loss (``val/<lang>/loss``) above its
    baseline: ``loss / baseline - 1`` (negative when it fell).  Languages without a positive baseline are left out."""
    replay, new = list(replay), list(new)
    rises: dict[str, float] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) != 3 or parts[0] != "val" or parts[2] != "loss" or not D.is_replay(parts[1], replay, new):
            continue
        base = baseline.get(key)
        if base is not None and base > 0:
            rises[parts[1]] = float(value) / float(base) - 1.0
    return rises


def forgetting_metrics(rises: Mapping[str, float], threshold: float | None) -> dict[str, float]:
    """The metrics of one validation: ``forgetting/<lang>`` (the rise) and ``forgetting/alarm/<lang>`` (1.0 when it
    is above ``threshold``, else 0.0; no alarm metric when the alarm is off)."""
    out = {f"forgetting/{lang}": rise for lang, rise in rises.items()}
    if threshold is not None:
        out |= {f"forgetting/alarm/{lang}": float(rise > threshold) for lang, rise in rises.items()}
    return out


def warn_forgetting(step: int, metrics: Mapping[str, float], baseline: Mapping[str, float],
                    rises: Mapping[str, float], threshold: float | None) -> list[str]:
    """A WARNING line per replay language whose rise is above ``threshold``; the languages that alarmed."""
    if threshold is None:
        return []
    alarmed = sorted(lang for lang, rise in rises.items() if rise > threshold)
    for lang in alarmed:
        key = f"val/{lang}/loss"
        log.warning("forgetting alarm at step %d: %s validation loss %.4f is %.1f%% above its step-0 baseline %.4f "
                    "(train.forgetting_alarm %.0f%%); more replay (train.replay_share) or a lower learning rate "
                    "keeps more of the base", step, lang, metrics[key], 100 * rises[lang], baseline[key],
                    100 * threshold)
    return alarmed


def forgetting_summary(baseline: Mapping[str, float], last: Mapping[str, float], worst: Mapping[str, float],
                       replay: Iterable[str], new: Iterable[str], threshold: float | None) -> dict[str, dict]:
    """Per replay language in the baseline: ``{"baseline", "last", "worst_rise", "alarm"}`` (``last`` None without a
    later validation; ``worst`` is the largest rise seen at any validation of the run)."""
    out: dict[str, dict] = {}
    for lang in forgetting_rises(baseline, baseline, replay, new):
        key = f"val/{lang}/loss"
        rise = worst.get(lang, 0.0)
        out[lang] = {"baseline": round(float(baseline[key]), 6),
                     "last": round(float(last[key]), 6) if key in last else None,
                     "worst_rise": round(rise, 6), "alarm": threshold is not None and rise > threshold}
    return out
