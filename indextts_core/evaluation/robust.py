"""Robust figures next to the means: medians, the share of bad items, and failures counted.

A mean CER hides its shape: ten items at 5% and one at 300% (a runaway read as babble) average
32%.  Per model and language (and over all languages) :func:`robust_table` gives

* ``items``: the rows; ``scored``: those with a CER (speech, and a judge that knows the language);
* ``median_cer`` and ``over_half_cer``: the median CER and the share of scored items above 50% CER
  (:data:`BAD_CER`);
* ``silent``, ``runaway``: outputs that were not speech (:mod:`~indextts_core.evaluation.speech`:
  below the RMS floor or shorter than 0.3 s; never stopped before the code limit), counted, never
  scored; ``stop_failures``: items whose decoding reached the limit.

:func:`worst_first` orders item ids for the report, the worst of the last model first.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: An item above this CER counts as badly spoken (``over_half_cer``).
BAD_CER = 0.5
ALL = "all"


def _figures(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    cers = [float(r["cer"]) for r in rows if r.get("cer") is not None]
    return {"items": len(rows), "scored": len(cers),
            "median_cer": float(np.median(cers)) if cers else None,
            "over_half_cer": sum(c > BAD_CER for c in cers) / len(cers) if cers else None,
            "silent": sum(r.get("not_speech") == "silent" for r in rows),
            "runaway": sum(r.get("not_speech") == "runaway" for r in rows),
            "stop_failures": sum(bool(r.get("stop_failure")) for r in rows)}


def robust_table(rows: Sequence[Mapping[str, Any]], models: Sequence[str]) -> list[dict[str, Any]]:
    """One entry per (model, language) and per model over all languages, models in the given order."""
    by: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        by[(r["model"], r["language"])].append(r)
        by[(r["model"], ALL)].append(r)
    order = {m: i for i, m in enumerate(models)}
    keys = sorted(by, key=lambda k: (order.get(k[0], len(order)), k[1] == ALL, k[1]))
    return [{"model": model, "language": lang, **_figures(by[(model, lang)])} for model, lang in keys]


def _badness(row: Mapping[str, Any] | None) -> tuple[int, float]:
    if row is None:
        return (0, 0.0)
    if row.get("not_speech"):
        return (2, 0.0)
    return (1, float(row["cer"])) if row.get("cer") is not None else (0, -float(row.get("speaker_sim") or 0.0))


def worst_first(rows: Sequence[Mapping[str, Any]], model: str) -> list[str]:
    """Item ids, the worst under ``model`` first: outputs that were not speech, then by CER (highest first), then
    the unscored by speaker similarity (lowest first); ties keep the set's order."""
    order: list[str] = []
    mine: dict[str, Mapping[str, Any]] = {}
    for r in rows:
        if r["id"] not in mine and r["id"] not in order:
            order.append(r["id"])
        if r["model"] == model:
            mine[r["id"]] = r
    position = {item: i for i, item in enumerate(order)}
    return sorted(order, key=lambda i: (tuple(-x for x in _badness(mine.get(i))), position[i]))
