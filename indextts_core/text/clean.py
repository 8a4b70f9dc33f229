"""Light text cleaning used by ingest and the corpus stage.

Only what is safe for every script: Unicode NFC, whitespace runs collapsed to one space, control
characters, zero-width spaces and byte-order marks removed.  Case, punctuation and script are left alone (Ge'ez
text stays Ge'ez); the model's own front-end (upper-casing, CJK splitting, punctuation map) is
applied later by the tokenizer stage.
"""

from __future__ import annotations

import re
import unicodedata

_WHITESPACE = re.compile(r"\s+", re.UNICODE)
# C0/C1 controls, zero-width spaces and the BOM; zero-width (non-)joiners (U+200C/U+200D) are
# meaningful in some scripts and kept.
_CONTROL = re.compile("[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u200b\u2060\ufeff]")


def clean_text(text: str) -> str:
    """NFC-normalise, drop control characters, collapse whitespace, strip."""
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub("", text)
    return _WHITESPACE.sub(" ", text).strip()


def script_of(ch: str) -> str:
    """A coarse script name for a character ('ETHIOPIC', 'LATIN', 'CJK', ...), or 'OTHER'."""
    if ch.isspace():
        return "SPACE"
    if ch.isdigit():
        return "DIGIT"
    name = unicodedata.name(ch, "")
    if not name:
        return "OTHER"
    first = name.split(" ", 1)[0]
    if first in ("CJK", "HIRAGANA", "KATAKANA", "HANGUL"):
        return first
    if unicodedata.category(ch).startswith("P"):
        return "PUNCTUATION"
    return first if first.isalpha() and first.isupper() else "OTHER"
