"""Per-item scores: error rates after one shared text normalisation, speaker similarity.

Both sides of an error rate go through :func:`normalize_for_scoring` (Unicode NFKC, case folded,
every punctuation and symbol character removed: ASCII and Ethiopic punctuation alike, so a
transcript that writes ``።`` where the reference has ``.`` is not an error, whitespace collapsed).
CER is computed on characters with spaces removed (so word-boundary choices are not counted as
character errors) and WER on space-separated words, with ``jiwer``; WER only for languages written
with spaces between words (:data:`SPACELESS` lists those that are not).

For a paragraph, :func:`last_sentence_cer` scores only its last sentence against the best-matching
tail of the transcript: did the model get to the end and stop there?
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np
import torch

#: Languages whose script does not separate words with spaces: only CER is meaningful there.
SPACELESS = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo", "yue", "wuu"})
_SPACES = re.compile(r"\s+")


def base_language(language: str) -> str:
    return language.split("-")[0].split("_")[0].lower()


def has_words(language: str) -> bool:
    """Whether WER is meaningful for ``language`` (its words are separated by spaces)."""
    return base_language(language) not in SPACELESS


def normalize_for_scoring(text: str) -> str:
    """The text both a reference and a transcript are compared as."""
    text = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(" " if unicodedata.category(c)[0] in "PSZC" else c for c in text)
    return _SPACES.sub(" ", kept).strip()


def char_error_rate(reference: str, hypothesis: str) -> float:
    """Character edits / reference characters, spaces ignored (1.0 for an empty transcript)."""
    import jiwer

    ref = normalize_for_scoring(reference).replace(" ", "")
    hyp = normalize_for_scoring(hypothesis).replace(" ", "")
    if not ref:
        raise ValueError(f"reference {reference!r} is empty after normalisation")
    return float(jiwer.cer(ref, hyp)) if hyp else 1.0


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word edits / reference words (1.0 for an empty transcript)."""
    import jiwer

    ref, hyp = normalize_for_scoring(reference), normalize_for_scoring(hypothesis)
    if not ref:
        raise ValueError(f"reference {reference!r} is empty after normalisation")
    return float(jiwer.wer(ref, hyp)) if hyp else 1.0


def _tail_distance(ref: str, hyp: str) -> int:
    """The fewest edits turning ``ref`` into some tail ``hyp[s:]`` (free start, fixed end).

    Semi-global edit distance, one row per reference character: row ``i`` holds, for every prefix
    ``hyp[:j]``, the fewest edits turning ``ref[:i]`` into a suffix of ``hyp[:j]``; row 0 is all
    zeros (the start is free).  The insertions within a row (``D[i][j-1] + 1``) are a running
    minimum, ``j + cummin(T[k] - k)``, so each row is a few numpy operations.
    """
    h = np.fromiter((ord(c) for c in hyp), dtype=np.int64, count=len(hyp))
    steps = np.arange(len(hyp) + 1, dtype=np.int64)
    prev = np.zeros(len(hyp) + 1, dtype=np.int64)
    for i, c in enumerate(ref, 1):
        best = prev + 1  # ref[i-1] deleted
        best[1:] = np.minimum(best[1:], prev[:-1] + (h != ord(c)))  # matched or substituted
        best[0] = i
        prev = steps + np.minimum.accumulate(best - steps)  # then hyp characters inserted
    return int(prev[-1])


def last_sentence_cer(sentences: Sequence[str], transcript: str) -> float:
    """The CER of the last of ``sentences`` against the best-matching tail of ``transcript``.

    Both sides are normalised like :func:`char_error_rate` (spaces removed); the score is the
    minimum over start positions ``s`` of ``edit_distance(last, hyp[s:]) / len(last)``: where the
    last sentence starts is free, but everything after it counts, so trailing babble costs its
    characters.  It never exceeds 1.0 (the empty tail costs exactly ``len(last)`` edits), so 1.0
    means no better than not saying the last sentence at all; an empty transcript gives 1.0.
    """
    if not sentences:
        raise ValueError("no sentences to score")
    last = normalize_for_scoring(sentences[-1]).replace(" ", "")
    hyp = normalize_for_scoring(transcript).replace(" ", "")
    if not last:
        raise ValueError(f"last sentence {sentences[-1]!r} is empty after normalisation")
    if not hyp:
        return 1.0
    return _tail_distance(last, hyp) / len(last)


def cosine(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Cosine similarity of two speaker embeddings (any shape, flattened)."""
    x = torch.as_tensor(a, dtype=torch.float64).flatten()
    y = torch.as_tensor(b, dtype=torch.float64).flatten()
    return float(torch.nn.functional.cosine_similarity(x, y, dim=0))
