"""How well an IndexTTS-2.5 vocabulary covers a language's text, and what inference does with the language.

A language without a trained ``lang_embedding`` row
---------------------------------------------------
Every one of the 106 codes has its own row, but only the released languages' rows were (as far
as we know) trained.  Untrained rows are most likely still ``nn.Embedding``'s default
``N(0, 1)`` initialisation, far larger than trained rows (the GPT's other embeddings start at
std 0.02), so feeding an untrained row as-is adds a large random vector to every text position:
a trap.  Two sound choices for fine-tuning a new language (say Amharic, ``am``):

(a) reuse a related released language's index (``am`` -> ``ar``) for ``lang_to_token``, keeping
    the trained row and changing nothing in the model; or
(b) use the language's own row, re-initialised from the mean of the released languages' rows and
    trained with the rest of the fine-tune.

Either way, the text prefix ``<|am|>`` is still the language's own special token (``am`` is
among the first 99 codes); its ``text_embedding`` row is untrained too and needs training.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from indextts_core.errors import InputError
from indextts_core.text.tiktoken_framing import frame_text, language_prefix
from indextts_core.text.tiktoken_vocab import (
    FALLBACK_LANGUAGE,
    NUM_LANGUAGE_TOKENS,
    RELEASED_LANGUAGES,
    TiktokenVocab,
    _is_whole_utf8,
    has_embedding_row,
    has_language_token,
    language_index,
)


def is_byte_fallback(vocab: TiktokenVocab, char: str) -> bool:
    """Whether ``char`` alone encodes into tokens that are pieces of it (no token holds the whole character)."""
    return not all(_is_whole_utf8(vocab.token_bytes(t)) for t in vocab.encoding.encode_ordinary(char))


def _covered_flags(vocab: TiktokenVocab, text: str, prefix: str) -> tuple[int, list[bool]]:
    """(text tokens, per character of ``text``: whether one token of the framed encoding spans all its bytes).

    The text tokens are those of ``prefix + text`` minus those of the prefix tag alone (the
    space after the tag belongs to the text's first token or is a token of its own).
    """
    ids = vocab.encode(prefix + text)
    boundaries: set[int] = set()
    offset = 0
    for token_id in ids:
        offset += len(vocab.token_bytes(token_id))
        boundaries.add(offset)
    start = len(prefix.encode("utf-8"))
    flags = []
    for char in text:
        end = start + len(char.encode("utf-8"))
        flags.append(not any(b in boundaries for b in range(start + 1, end)))
        start = end
    tag_tokens = len(vocab.encode(prefix.rstrip(" ")))
    return len(ids) - tag_tokens, flags


def language_note(lang: str, num_languages: int = NUM_LANGUAGE_TOKENS) -> str:
    """One sentence on what inference does with ``lang``'s tag and ``lang_embedding`` row (see the module docs)."""
    code = lang.lower()
    row = language_index(code)
    if has_language_token(code, num_languages):
        tag = f"<|{code}|> is a special token"
    else:
        tag = f"<|{code}|> is not a special token, so inference encodes it as plain text"
    if code in RELEASED_LANGUAGES:
        return f"{tag}; lang_embedding row {row} was trained ({code} is a released language)"
    if has_embedding_row(code):
        return (f"{tag}; lang_embedding row {row} is probably untrained (still its N(0,1) init): reuse a released "
                "language's index or re-initialise the row from the released rows' mean and train it")
    return (f"{tag}; {code!r} is not in the official table, so inference uses the row of "
            f"{FALLBACK_LANGUAGE!r} ({row})")


def coverage_report(vocab: TiktokenVocab, texts: Sequence[str], lang: str, *, min_coverage: float = 0.99,
                    top: int = 50) -> dict[str, Any]:
    """How well ``vocab`` covers ``texts`` of language ``lang``, framed as inference frames them.

    Returns a JSON-serialisable dict:

    * ``texts``, ``characters`` (code points, spaces included), ``text_tokens`` (excluding the
      ``<|lang|>`` tag) and ``tokens_per_char``;
    * ``covered_share``: of the non-whitespace characters, the share whose bytes all lie inside
      one token of the text's encoding;
    * ``byte_fallback_chars``: distinct characters that even on their own only encode as pieces
      (incomplete UTF-8), with their counts (the ``top`` most frequent), and their totals;
    * ``dropped_ids``/``dropped_pieces``: ordinary tokens the GPT's 0/1 filter removes;
    * language facts: ``lang_index``, ``has_language_token``, ``has_embedding_row``, ``released``
      and a ``language_note`` (:func:`language_note`);
    * ``advice``: "no extension needed" when nothing falls back to bytes and ``covered_share`` is
      at least ``min_coverage``; otherwise what falls back, the tokens per character and what that costs.
    """
    if not texts or not any(texts):
        raise InputError(f"coverage report for {lang!r}: no text given")
    prefix = language_prefix(lang)
    n_chars = n_tokens = n_checked = n_covered = 0
    char_counts: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    for text in texts:
        tokens, flags = _covered_flags(vocab, text, prefix)
        n_tokens += tokens
        n_chars += len(text)
        for char, covered in zip(text, flags):
            if not char.isspace():
                n_checked += 1
                n_covered += covered
                char_counts[char] += 1
        dropped.update(frame_text(vocab, text, lang).dropped_pieces)
    fallback = Counter({c: n for c, n in char_counts.items() if is_byte_fallback(vocab, c)})
    tokens_per_char = n_tokens / n_chars
    covered_share = n_covered / n_checked if n_checked else 1.0
    if not fallback and covered_share >= min_coverage:
        advice = (f"no vocabulary extension needed: {covered_share:.1%} of characters have a whole token "
                  f"({tokens_per_char:.2f} tokens per character)")
    else:
        advice = (f"byte fallback: {tokens_per_char:.2f} tokens per character, {covered_share:.1%} of characters "
                  "have a whole token")
        if fallback:
            shown = "".join(c for c, _ in fallback.most_common(10))
            advice += (f"; {len(fallback)} distinct characters ({sum(fallback.values())} occurrences) have no token "
                       f"of their own, e.g. {shown}")
        advice += (". Every character still encodes (byte-level vocabulary) and the GPT can learn the byte "
                   "sequences; the cost is longer text (max_text_tokens, training time)")
    return {
        "language": lang.lower(),
        "lang_index": language_index(lang),
        "has_language_token": has_language_token(lang, vocab.num_languages),
        "has_embedding_row": has_embedding_row(lang),
        "released": lang.lower() in RELEASED_LANGUAGES,
        "texts": len(texts),
        "characters": n_chars,
        "text_tokens": n_tokens,
        "tokens_per_char": round(tokens_per_char, 4),
        "covered_share": round(covered_share, 4),
        "byte_fallback_chars": dict(fallback.most_common(top)),
        "byte_fallback_distinct": len(fallback),
        "byte_fallback_occurrences": sum(fallback.values()),
        "dropped_ids": sum(dropped.values()),
        "dropped_pieces": dict(dropped.most_common()),
        "vocab_sha256": vocab.sha256,
        "n_vocab": vocab.n_vocab,
        "advice": advice,
        "language_note": language_note(lang, vocab.num_languages),
    }
