"""Promotion by measured quality: does the new model beat the one in use?

The candidate (the fine-tuned model of this run) is compared with the incumbent: the current
champion when there is one, else the base model, on one metric (``promotion.metric``: CER by
default when an ASR model is configured, else validation loss).  It wins when it is better by more
than ``min_improvement`` and, with ``require_significant``, when the paired bootstrap interval of
the difference excludes zero.  A missing or non-finite number on either side never promotes (a
resume that lost its baseline, a champion recorded without the metric).  The decision keeps its
numbers, so it can be recorded on the registered version and shown in the report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

LOWER_IS_BETTER = {"cer": True, "wer": True, "speaker_sim": False, "val_loss": True}


@dataclass(frozen=True)
class Decision:
    promote: bool
    metric: str
    candidate: float | None
    incumbent: float | None
    incumbent_name: str  # "champion v3", "base model"
    difference: float | None = None  # candidate - incumbent
    low: float | None = None  # its interval, when paired scores exist
    high: float | None = None
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def tags(self, prefix: str = "promotion.") -> dict[str, str]:
        return {f"{prefix}{k}": "" if v is None else str(v) for k, v in self.as_dict().items()}


def finite_number(value: Any) -> float | None:
    """A recorded number as a float; None when missing or not a finite number ('', 'nan', NaN)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def choose_metric(configured: str, has_asr: bool) -> str:
    if configured != "auto":
        return configured
    return "cer" if has_asr else "val_loss"


def decide(metric: str, candidate: Any, incumbent: Any, incumbent_name: str, *,
           interval: Mapping[str, float] | None = None, min_improvement: float = 0.0,
           require_significant: bool = False) -> Decision:
    """Promote when the candidate beats the incumbent on ``metric`` (see the module docstring)."""
    lower = LOWER_IS_BETTER[metric]
    candidate, incumbent = finite_number(candidate), finite_number(incumbent)
    if candidate is None:
        return Decision(False, metric, None, incumbent, incumbent_name,
                        reason=f"the candidate has no {metric} (not measured), so nothing shows it is better")
    if incumbent is None:  # a lost baseline, a champion without the metric: nothing to beat is not a win
        return Decision(False, metric, candidate, None, incumbent_name, reason=(
            f"no {incumbent_name} {metric} to compare with (not recorded, or not a number), so nothing shows the "
            f"candidate ({metric} {candidate:.4f}) is better: not promoted; set the alias by hand if it should serve"))
    diff = candidate - incumbent
    gain = -diff if lower else diff
    low = high = None
    if interval is not None:
        low, high = float(interval["low"]), float(interval["high"])
    direction = "lower" if lower else "higher"
    if gain <= min_improvement:
        why = (f"{metric} {candidate:.4f} vs {incumbent_name} {incumbent:.4f}: not {direction} by more than "
               f"{min_improvement}")
        return Decision(False, metric, candidate, incumbent, incumbent_name, diff, low, high, why)
    if require_significant:
        if low is None or high is None:
            return Decision(False, metric, candidate, incumbent, incumbent_name, diff, None, None,
                            f"{metric} improved by {gain:.4f} but no paired interval exists to show it is significant")
        excludes_zero = high < 0 if lower else low > 0
        if not excludes_zero:
            return Decision(False, metric, candidate, incumbent, incumbent_name, diff, low, high,
                            f"{metric} improved by {gain:.4f}, but its interval [{low:.4f}, {high:.4f}] includes 0")
    return Decision(True, metric, candidate, incumbent, incumbent_name, diff, low, high,
                    f"{metric} {candidate:.4f} vs {incumbent_name} {incumbent:.4f}: {direction} by {gain:.4f}")
