"""A tiny byte-level tiktoken vocabulary learned from a few sentences, in the released rank-file layout.

For tests and the tiny IndexTTS-2.5 bundle: ranks 0..255 are the single bytes in GPT-2's order
(:func:`~indextts_core.text.tiktoken_vocab.gpt2_byte_order`), the rest are merges learned from the
corpus (:func:`learn_merges`) that never cut a UTF-8 character.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import regex

from indextts_core.text.tiktoken_vocab import PAT_STR, _is_whole_utf8, gpt2_byte_order
from indextts_core.utils.fileio import atomic_write

def _utf8_length(lead: int) -> int:
    """The length of the UTF-8 sequence a lead byte starts, or 0 for a continuation/invalid byte."""
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


def _is_char_prefix(data: bytes) -> bool:
    """Whether ``data`` is the start (or all) of ONE character: a lead byte and its continuation bytes."""
    length = _utf8_length(data[0])
    return 1 < len(data) <= length and all(0x80 <= b <= 0xBF for b in data[1:])


def _may_merge(left: bytes, right: bytes) -> bool:
    """Merge rule of the tiny trainer: two runs of whole characters, or bytes within one character."""
    return (_is_whole_utf8(left) and _is_whole_utf8(right)) or _is_char_prefix(left + right)


def learn_merges(corpus: Iterable[str], merges: int) -> list[bytes]:
    """Greedy byte-pair merges: up to ``merges`` new tokens, most frequent adjacent pair first.

    The corpus is pre-tokenised with :data:`PAT_STR`; pairs are counted within chunks.  Ties go
    to the smallest merged bytes.  Unlike a plain byte-level BPE trainer, a pair may only join
    bytes of one character or two runs of whole characters, so every character seen often
    enough becomes a token before it joins its neighbours.  Stops early when no pair is left.
    """
    words: Counter[tuple[bytes, ...]] = Counter()
    for text in corpus:
        for chunk in regex.findall(PAT_STR, text):
            words[tuple(bytes([b]) for b in chunk.encode("utf-8"))] += 1
    learned: list[bytes] = []
    seen: set[bytes] = set()
    while len(learned) < merges:
        pairs: Counter[tuple[bytes, bytes]] = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                if _may_merge(*pair):
                    pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p[0] + p[1], p[0]))
        merged = best[0] + best[1]
        if merged not in seen:
            seen.add(merged)
            learned.append(merged)
        words = Counter({_apply_merge(word, best): count for word, count in words.items()})
    return learned


def _apply_merge(word: tuple[bytes, ...], pair: tuple[bytes, bytes]) -> tuple[bytes, ...]:
    """``word`` with every non-overlapping occurrence of ``pair`` (left to right) joined into one token."""
    out: list[bytes] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def write_tiny_tiktoken(path: str | Path, corpus: list[str], merges: int) -> int:
    """Write a small valid rank file: the 256 bytes in GPT-2 order, then merges learned from ``corpus``.

    Ranks 0..255 are the single bytes in :func:`gpt2_byte_order` (so ranks 0 and 1, the ids the
    GPT's filter drops, are ``!`` and ``"`` as we believe they are in the official file); ranks
    256.. are the merges of :func:`learn_merges`.  Every text encodes and decodes losslessly.
    Returns the number of ranks written.
    """
    tokens = [bytes([b]) for b in gpt2_byte_order()] + learn_merges(corpus, merges)
    with atomic_write(path) as f:
        for rank, token in enumerate(tokens):
            f.write(f"{base64.b64encode(token).decode('ascii')} {rank}\n")
    return len(tokens)
