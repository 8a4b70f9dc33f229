"""Gates a candidate must pass before promotion, whatever it gained on the new language.

A language fine-tune can cost what the base model could do: its Chinese and English, the speaker
similarity it reached there, the emotion it carried over from a prompt.  Promotion decides on the
new language (:mod:`~indextts_core.evaluation.promotion`); these gates then refuse a candidate that
lost too much of the rest, each measured against the base model on the same items:

* :func:`base_language_gate`: per base language (``train.replay_languages`` the evaluation said),
  the candidate's CER may not exceed the base's by more than ``promotion.max_base_regression``,
  nor its speaker similarity fall below the base's by more (the independent verifier's when the
  evaluation has it, else the model's own encoder's).  CER from a judge that is unreliable for the
  language is not used.
* :func:`emotion_gate`: the candidate must keep at least ``1 - promotion.max_emotion_loss`` of the
  base's emotion transfer (the evaluation's emotion probe, ``transfer_kept`` per language).

A check with no number on either side (outputs that were not speech, a language not evaluated) is
*not measured*: it refuses nothing, and the gate says so, so nobody reads "passed" as "checked".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

#: The speaker similarity a gate reads: the independent verifier's when there, else the model's own encoder's.
SIMILARITY_METRICS = ("speaker_sim_verifier", "speaker_sim")


@dataclass(frozen=True)
class Check:
    language: str
    metric: str
    base: float | None
    candidate: float | None
    loss: float | None  # how much worse the candidate is (positive: worse), in the metric's units
    passed: bool | None  # None: not measured
    note: str = ""


@dataclass(frozen=True)
class Gate:
    name: str
    passed: bool  # False only when a measured check failed
    measured: bool  # at least one check had numbers on both sides
    reason: str
    checks: list[Check] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def status(self) -> str:
        return "refused" if not self.passed else ("passed" if self.measured else "not measured")


def by_language(table: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{language: {model: {metric: mean}}}`` over every group of the language, from the evaluation summary's
    ``table`` (per language and group means with their ``n``): the group means pooled, weighted by ``n``."""
    sums: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for e in table:
        if e["language"] == "all" or not e.get("n"):
            continue
        acc = sums[(e["language"], e["model"], e["metric"])]
        acc[0] += float(e["mean"]) * int(e["n"])
        acc[1] += int(e["n"])
    out: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for (lang, model, metric), (total, n) in sorted(sums.items()):
        out[lang][model][metric] = total / n
    return {lang: dict(models) for lang, models in out.items()}


def _check(language: str, metric: str, base: float | None, candidate: float | None, lower_is_better: bool,
           limit: float, note: str = "") -> Check:
    if base is None or candidate is None:
        return Check(language, metric, base, candidate, None, None, note or "no figure for both models")
    loss = candidate - base if lower_is_better else base - candidate
    return Check(language, metric, base, candidate, loss, loss <= limit, note)


def _said(c: Check) -> str:
    if c.passed is None:
        return f"{c.language} {c.metric}: not measured ({c.note})"
    worse = "worse" if c.loss > 0 else "better"
    return f"{c.language} {c.metric} {c.candidate:.3f} vs base {c.base:.3f} ({abs(c.loss):.3f} {worse})"


def _gate(name: str, checks: Sequence[Check], limit_said: str) -> Gate:
    failed = [c for c in checks if c.passed is False]
    measured = any(c.passed is not None for c in checks)
    if failed:
        reason = f"{name} refused: " + "; ".join(_said(c) for c in failed) + f" ({limit_said})"
    elif measured:
        reason = f"{name} passed: " + "; ".join(_said(c) for c in checks) + f" ({limit_said})"
    else:
        reason = f"{name} not measured: " + ("; ".join(_said(c) for c in checks) or "nothing to check")
    return Gate(name, not failed, measured, reason, list(checks))


def base_language_gate(figures: Mapping[str, Mapping[str, Mapping[str, float]]], languages: Sequence[str],
                       max_regression: float, *, untrusted: Iterable[str] = (), candidate: str = "fine-tuned",
                       base: str = "base") -> Gate:
    """Refuse a candidate whose CER or speaker similarity on a base language regressed by more than
    ``max_regression`` against the base model (``figures``: :func:`by_language` of its evaluation)."""
    untrusted = set(untrusted)
    evaluated = [lang for lang in languages if figures.get(lang)]
    if not evaluated:
        return Gate("base-language gate", True, False, "base-language gate not measured: none of "
                    f"{', '.join(languages) or '(no base languages)'} was evaluated (train.replay_languages)")
    checks: list[Check] = []
    for lang in evaluated:
        models = figures[lang]
        mine, theirs = models.get(candidate, {}), models.get(base, {})
        if lang in untrusted:
            checks.append(Check(lang, "cer", theirs.get("cer"), mine.get("cer"), None, None,
                                "the judge is unreliable for it"))
        else:
            no_cer = "" if "cer" in mine and "cer" in theirs else "no CER: outputs not speech, or no judge"
            checks.append(_check(lang, "cer", theirs.get("cer"), mine.get("cer"), True, max_regression, no_cer))
        sim = next((m for m in SIMILARITY_METRICS if m in mine and m in theirs), SIMILARITY_METRICS[-1])
        checks.append(_check(lang, sim, theirs.get(sim), mine.get(sim), False, max_regression,
                             "" if sim in mine and sim in theirs else "no similarity: outputs not speech"))
    return _gate("base-language gate", checks, f"promotion.max_base_regression {max_regression:g}")


def emotion_gate(emotion: Mapping[str, Any] | None, max_loss: float, candidate: str = "fine-tuned") -> Gate:
    """Refuse a candidate that kept less than ``1 - max_loss`` of the base model's emotion transfer, per language
    (``emotion``: the evaluation's ``summary["emotion"]``; its ``transfer_kept[model][language]`` is the model's
    mean move toward the emotion prompt over the base model's, None when not measurable)."""
    kept_by_language = ((emotion or {}).get("transfer_kept") or {}).get(candidate) or {}
    checks = []
    for lang, kept in sorted(kept_by_language.items()):
        if lang == "all":
            continue
        if kept is None:
            checks.append(Check(lang, "transfer_kept", 1.0, None, None, None, "not measurable"))
        else:
            checks.append(Check(lang, "transfer_kept", 1.0, float(kept), 1.0 - float(kept),
                                1.0 - float(kept) <= max_loss))
    return _gate("emotion gate", checks, f"promotion.max_emotion_loss {max_loss:g}")
