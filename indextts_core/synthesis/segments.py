"""The official text segmentation of both releases, side by side.

IndexTTS-2 (:func:`split_segments`): a line's tokens cut into segments of at most ``max_tokens`` (120).

What the official ``TextTokenizer.split_segments`` does, reproduced so a segment boundary falls
where the official inference puts it:

* a segment ends after a sentence mark (``.``, ``!``, ``?``, ``▁.``, ``▁?``, ``▁...``) once it
  holds more than 2 tokens;
* as soon as the running segment holds a comma (``,`` or ``▁,``) it is cut at its commas instead
  (the same rules, recursively), or, without a comma, at its hyphens;
* a segment longer than ``max_tokens`` is cut into ``max_tokens`` pieces;
* finally neighbours are merged while the merged length stays within ``max_tokens`` (once more
  than ``quick_streaming_tokens`` tokens have been seen) or within half of it.

One official quirk is kept on purpose: after a sentence mark followed by an apostrophe, the
apostrophe is appended to the ending segment *and* starts the next one (the official loop's
``i += 1`` does not skip it).

IndexTTS-2.5 (:func:`split_v25_text`, :func:`v25_segments`): the normalised text cut after sentence
and clause marks into segments within the token budget, each framed ``"<|code|> " + segment``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from indextts_core.errors import InputError
from indextts_core.text.encoder import TiktokenText

SENTENCE_MARKS = (".", "!", "?", "▁.", "▁?", "▁...")
COMMAS = (",", "▁,")
APOSTROPHES = ("'", "▁'")


def split_segments(tokens: list[str], max_tokens: int = 120, quick_streaming_tokens: int = 0,
                   marks: tuple[str, ...] = SENTENCE_MARKS) -> list[list[str]]:
    """Segments of ``tokens`` (sentencepiece pieces) as infer_v2 cuts them."""
    if not tokens:
        return []
    segments: list[list[str]] = []
    current: list[str] = []
    for i, token in enumerate(tokens):
        current.append(token)
        if not any(c in marks for c in COMMAS) and any(c in current for c in COMMAS):
            pieces = split_segments(current, max_tokens, quick_streaming_tokens, COMMAS)
        elif "-" not in marks and "-" in current:
            pieces = split_segments(current, max_tokens, quick_streaming_tokens, ("-",))
        elif len(current) <= max_tokens:
            if token in marks and len(current) > 2:
                if i < len(tokens) - 1 and tokens[i + 1] in APOSTROPHES:
                    current.append(tokens[i + 1])  # (and it is read again as the next token, as released)
                segments.append(current)
                current = []
            continue
        else:
            pieces = [current[j:j + max_tokens] for j in range(0, len(current), max_tokens)]
        segments.extend(pieces)
        current = []
    if current:
        segments.append(current)
    return _merge(segments, max_tokens, quick_streaming_tokens)


def _merge(segments: list[list[str]], max_tokens: int, quick_streaming_tokens: int) -> list[list[str]]:
    merged: list[list[str]] = []
    seen = 0
    for segment in segments:
        seen += len(segment)
        if not segment:
            continue
        if not merged:
            merged.append(segment)
        elif len(merged[-1]) + len(segment) <= max_tokens and seen > quick_streaming_tokens:
            merged[-1] = merged[-1] + segment
        elif len(merged[-1]) + len(segment) <= max_tokens / 2:
            merged[-1] = merged[-1] + segment
        else:
            merged.append(segment)
    return merged


#: Where infer_v2_5 may cut a 2.5 line: after any of these marks (the mark stays with the text before it).
V25_BREAK_AFTER = re.compile(r"(?<=[，。！？、；：,.!?;:\n])")


def _join_within(count: Callable[[str], int], chunks: list[str], budget: int) -> list[str]:
    """Neighbouring ``chunks`` joined, in order, while the joined text stays within ``budget`` tokens
    (chunks of single characters: a part cut between characters)."""
    segments, current = [], ""
    for chunk in chunks:
        if current and count(current + chunk) > budget:
            segments.append(current)
            current = chunk
        else:
            current += chunk
    return segments + [current] if current else segments


def split_v25_text(count: Callable[[str], int], text: str, budget: int) -> list[str]:
    """A normalised 2.5 line cut into segments of at most ``budget`` tokens (``count`` says how many a text has).

    infer_v2_5's rule: a line within the budget is one segment; otherwise it is cut after sentence
    and clause marks (:data:`V25_BREAK_AFTER`), a part still over the budget is cut between
    characters, and the pieces are joined back, in order, while they fit.  Joined, the segments are
    ``text``; only a single character worth more than ``budget`` tokens makes a longer segment.
    (The official code also keeps ``<|SPECIAL_TOKEN_n|>`` pronunciation spans whole; the encoder
    does not produce them.)
    """
    if count(text) <= budget:
        return [text]
    chunks: list[str] = []
    for part in V25_BREAK_AFTER.split(text):
        if part:
            chunks += [part] if count(part) <= budget else _join_within(count, list(part), budget)
    return _join_within(count, chunks, budget) or [text]


def v25_segments(encoder: TiktokenText, line: str, language: str, max_tokens: int,
                 text_positions: int) -> tuple[list[list[int]], int, tuple[str, ...]]:
    """A 2.5 line as segment text ids, its ``lang_embedding`` row and the text the GPT's 0/1 filter dropped.

    The budget per segment is ``min(max_tokens, text_positions - 2)`` minus the tokens of the
    ``<|code|> `` prefix (at least 1), as infer_v2_5 computes it; an empty line is an InputError.
    """
    from indextts_core.text.tiktoken_framing import frame_text, language_prefix

    text = encoder.normalise(line, language)
    if not text.strip():
        raise InputError(f"nothing to say after normalisation: {line!r}")
    code = encoder.code_for(language)

    def count(s: str) -> int:
        return len(encoder.vocab.encode(s))

    budget = max(1, min(max_tokens, text_positions - 2) - count(language_prefix(code)))
    framed = [frame_text(encoder.vocab, seg, code) for seg in split_v25_text(count, text, budget)]
    dropped = tuple(p for f in framed for p in f.dropped_pieces)
    return [list(f.ids) for f in framed], framed[0].lang_index, dropped
