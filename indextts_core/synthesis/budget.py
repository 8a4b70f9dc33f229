"""How many text tokens one spoken segment may hold, measured per language.

The official inference cuts a long line into segments of at most ``max_text_tokens_per_segment``
text tokens (120, :mod:`indextts_core.synthesis.segments`).  120 was tuned for Chinese, about 4.3
text tokens per second of speech, so about 28 s per segment; a Latin-script language runs about 3.1
tokens per second, and alignment holds only to about 25-30 s of speech per segment.  The budget is
therefore a duration: the language's measured text tokens per second times ``max_segment_s``.

* :func:`tokens_per_second`: the rate per language, from preprocessing manifest rows
  (``language``, ``text_len``, ``duration``); the training stage records it, with the budget it
  gives, in the export's ``indextts-export.json`` (:func:`segments_record`, key ``segments``);
* :func:`segment_budget`: a rate and a duration -> the most tokens per segment;
* :func:`resolve_segment_budget`: what synthesis uses for a model folder and a language:
  ``generation.max_text_tokens_per_segment`` when set, else the folder's measured rate times
  ``generation.max_segment_s``, else infer_v2's 120.

The official inference ignores the sidecar; only our ``synthesize``/``evaluate`` read it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from indextts_core.config import GenerationConfig

log = logging.getLogger(__name__)

#: infer_v2's ``max_text_tokens_per_segment``.
DEFAULT_SEGMENT_TOKENS = 120
#: The smallest measured budget: a pathological rate (a clip of mostly silence, a mislabelled
#: duration) must not cut speech into one- or two-token segments, which the GPT cannot say well.
MIN_SEGMENT_TOKENS = 8
#: The export's sidecar (ours; the official inference ignores it).
SIDECAR = "indextts-export.json"
#: ``generation.max_segment_s``'s default: the seconds of speech the export's recorded budgets are for.
DEFAULT_MAX_SEGMENT_S: float = GenerationConfig.model_fields["max_segment_s"].default


def tokens_per_second(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Text tokens per second of speech, per language, from preprocessing manifest rows.

    Per language: ``tokens_per_s`` = sum(``text_len``) / sum(``duration``) (None when no row of the
    language is usable), ``clips`` and ``seconds`` (the rows used) and ``skipped`` (rows of the
    language without a usable ``text_len`` or a positive ``duration``, left out).  Rows without a
    ``language`` are left out too and logged.
    """
    sums: dict[str, list[float]] = {}  # language -> [tokens, seconds, clips, skipped]
    no_language = 0
    for row in rows:
        language = row.get("language")
        if not language:
            no_language += 1
            continue
        acc = sums.setdefault(str(language), [0.0, 0.0, 0, 0])
        tokens, seconds = row.get("text_len"), row.get("duration")
        if not _number(tokens) or not _number(seconds) or seconds <= 0 or tokens < 0:
            acc[3] += 1
            continue
        acc[0] += tokens
        acc[1] += seconds
        acc[2] += 1
    if no_language:
        log.warning("tokens per second: %d row(s) without a language left out", no_language)
    rates = {}
    for language in sorted(sums):
        tokens, seconds, clips, skipped = sums[language]
        if skipped:
            log.warning("tokens per second (%s): %d row(s) without text_len or duration left out", language, skipped)
        rates[language] = {"tokens_per_s": round(tokens / seconds, 4) if seconds > 0 else None,
                           "clips": int(clips), "seconds": round(seconds, 3), "skipped": int(skipped)}
    return rates


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def segment_budget(tokens_per_s: float, max_segment_s: float) -> int:
    """The most text tokens in a segment of at most ``max_segment_s`` seconds of speech at ``tokens_per_s``.

    ``floor(tokens_per_s * max_segment_s)`` (a hair of tolerance, so 4.3 x 20 is 86, not 85), and at
    least :data:`MIN_SEGMENT_TOKENS`; a rate or duration that is not a positive number is a ValueError.
    """
    if not (_number(tokens_per_s) and tokens_per_s > 0 and _number(max_segment_s) and max_segment_s > 0):
        raise ValueError(f"segment budget: tokens_per_s={tokens_per_s!r} and max_segment_s={max_segment_s!r} "
                         "must be positive numbers")
    return max(MIN_SEGMENT_TOKENS, math.floor(tokens_per_s * max_segment_s + 1e-6))


def segments_record(rates: Mapping[str, Mapping[str, Any]],
                    max_segment_s: float = DEFAULT_MAX_SEGMENT_S) -> dict[str, Any]:
    """The export sidecar's ``segments`` record from :func:`tokens_per_second`'s rates (languages without
    a rate left out): the rate, the clips it was measured on and the budget per language at ``max_segment_s``."""
    measured = {lang: r for lang, r in sorted(rates.items()) if r.get("tokens_per_s")}
    return {
        "tokens_per_second": {lang: r["tokens_per_s"] for lang, r in measured.items()},
        "clips": {lang: r["clips"] for lang, r in measured.items()},
        "max_segment_s": max_segment_s,
        "max_text_tokens_per_segment": {lang: segment_budget(r["tokens_per_s"], max_segment_s)
                                        for lang, r in measured.items()},
    }


def measured_rate(model_dir: Path | None, language: str) -> float | None:
    """The language's text tokens per second recorded in ``model_dir``'s sidecar; None when there is none
    (no folder, no sidecar, no ``segments`` record or no rate for the language; an unreadable sidecar is logged)."""
    if model_dir is None:
        return None
    path = Path(model_dir) / SIDECAR
    if not path.is_file():
        return None
    try:
        rate = json.loads(path.read_text(encoding="utf-8")).get("segments", {}).get("tokens_per_second", {}) \
            .get(language)
    except (OSError, ValueError, AttributeError) as e:
        log.warning("%s: cannot read its segments record (%s); using the default segment budget", path, e)
        return None
    return float(rate) if _number(rate) and rate > 0 else None


def resolve_segment_budget(model_dir: Path | None, language: str, opts: GenerationConfig) -> tuple[int, str]:
    """The segment budget for ``language`` with the model in ``model_dir``, and where it came from.

    In order: ``opts.max_text_tokens_per_segment`` when set (``"configured"``); the folder's measured
    rate times ``opts.max_segment_s`` (``"measured: X tokens/s × Y s"``); infer_v2's 120 (``"infer_v2 default"``).
    """
    if opts.max_text_tokens_per_segment is not None:
        return int(opts.max_text_tokens_per_segment), "configured"
    rate = measured_rate(model_dir, language)
    if rate is not None:
        return segment_budget(rate, opts.max_segment_s), f"measured: {rate:g} tokens/s × {opts.max_segment_s:g} s"
    return DEFAULT_SEGMENT_TOKENS, "infer_v2 default"
