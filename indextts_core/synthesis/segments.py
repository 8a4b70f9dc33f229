"""infer_v2's text segmentation: a line's tokens cut into segments of at most ``max_tokens`` (120).

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
"""

from __future__ import annotations

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
