"""Per-item scores: error rates after one shared text normalisation, speaker similarity.

Both sides of an error rate go through :func:`normalize_for_scoring` (Unicode NFKC, case folded,
every punctuation and symbol character removed: ASCII and Ethiopic punctuation alike, so a
transcript that writes ``።`` where the reference has ``.`` is not an error, whitespace collapsed).
CER is computed on characters with spaces removed (so word-boundary choices are not counted as
character errors) and WER on space-separated words, with ``jiwer``; WER only for languages written
with spaces between words (:data:`SPACELESS` lists those that are not).
"""

from __future__ import annotations

import re
import unicodedata

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


def cosine(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Cosine similarity of two speaker embeddings (any shape, flattened)."""
    x = torch.as_tensor(a, dtype=torch.float64).flatten()
    y = torch.as_tensor(b, dtype=torch.float64).flatten()
    return float(torch.nn.functional.cosine_similarity(x, y, dim=0))
