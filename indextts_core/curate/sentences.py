"""Text cut into sentences: what a transcript is placed on segments by, and where a long subtitle cue is split."""

from __future__ import annotations

#: Marks that always end a sentence: Ethiopic full stop, question mark, paragraph separator; ! ?; CJK.
_STRONG = frozenset("።፧፨!?。！？")
_DOTS = frozenset(".…")
#: Closing quotes and brackets that stay with the sentence they close.
_CLOSERS = frozenset("\"'”’»›)]）」』")
#: Titles written with a dot that do not end a sentence (English; single letters are handled generally).
_TITLES = frozenset({"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "mt", "ft", "gen", "col", "capt"})


def split_sentences(text: str) -> list[str]:
    """A transcript cut into sentences, each with its closing punctuation, whitespace collapsed.

    A sentence ends at a line break, at a run of ``። ፧ ፨ ! ? 。 ！ ？`` (with the closing quotes or
    brackets after it), and at a single ``.`` followed by whitespace (or the end) whose word before it
    is at least two letters or digits long and not a title (``Dr.``, ``Mr.``...).  So ``ዓ.ም.``,
    ``e.g.``, ``U.S.`` and ``3.14`` do not end one, ``1995.`` does and ``1.`` (a list item) does not.

    Limits: an abbreviation of two letters or more (``etc.``, ``Nov.``) ends a sentence when a space
    follows; an ellipsis (``...``, ``…``) never does; ``"Really?" she said.`` is cut after the quote;
    a hard-wrapped paragraph is cut at every wrap
    (each line break ends a sentence): that only makes the pieces shorter for the alignment.
    """
    sentences: list[str] = []
    buf: list[str] = []

    def flush() -> None:
        sentence = " ".join("".join(buf).split())
        if sentence:
            sentences.append(sentence)
        buf.clear()

    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "\n\r\u2028\u2029\x0b\x0c":
            flush()
            i += 1
            continue
        if ch not in _STRONG and ch not in _DOTS:
            buf.append(ch)
            i += 1
            continue
        j = i
        while j < n and (text[j] in _STRONG or text[j] in _DOTS):
            j += 1
        while j < n and text[j] in _CLOSERS:
            j += 1
        run = text[i:j]
        marks = run.rstrip("".join(_CLOSERS))
        if any(c in _STRONG for c in marks):
            ends = True
        elif marks == ".":
            ends = (j == n or text[j].isspace()) and _ends_with_word("".join(buf))
        else:  # an ellipsis
            ends = False
        buf.append(run)
        i = j
        if ends:
            flush()
    flush()
    return sentences


def _ends_with_word(before: str) -> bool:
    """Whether the text before a ``.`` ends in a word of two letters/digits or more that is not a title."""
    k = len(before)
    while k > 0 and before[k - 1].isalnum():
        k -= 1
    word = before[k:]
    return len(word) >= 2 and word.lower() not in _TITLES
