"""Does the model speak? Stop, length and repetition of generated codes, per item and summed per group.

* ``stop_rate``: share of items that produced the stop code before the limit (a model that never
  stops reads 0);
* ``length_ratio``: generated codes / the reference clip's codes (about 1 for a model that says
  the sentence at the speaker's pace; the limit caps it);
* ``longest_run``: the longest run of one repeated code (a stuck model grows it);
* ``repeated_4gram``: share of the item's 4-grams that already occurred earlier in it (a looping
  model approaches 1).
"""

from __future__ import annotations

from collections.abc import Sequence

#: The metric names, in the order :func:`item_metrics` returns them.
NAMES = ("stop_rate", "length_ratio", "longest_run", "repeated_4gram")


def longest_run(codes: Sequence[int]) -> int:
    best = run = 0
    prev = None
    for c in codes:
        run = run + 1 if c == prev else 1
        best, prev = max(best, run), c
    return best


def repeated_ngram_share(codes: Sequence[int], n: int = 4) -> float:
    grams = [tuple(codes[i:i + n]) for i in range(len(codes) - n + 1)]
    if not grams:
        return 0.0
    seen: set[tuple[int, ...]] = set()
    repeats = 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)


def item_metrics(codes: Sequence[int], stopped: bool, reference_length: int) -> tuple[float, ...]:
    """One item's values of :data:`NAMES`."""
    return (float(stopped), len(codes) / max(reference_length, 1), float(longest_run(codes)),
            repeated_ngram_share(codes))
