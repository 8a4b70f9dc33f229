"""The IndexTTS-2.5 text vocabulary: a tiktoken rank file plus Whisper-style special tokens.

Facts below were read from the official repository ``index-tts/index-tts``
(``indextts/utils/tokenizer.py``, ``indextts/infer_v2_5.py``, ``indextts/gpt/model_v2.py``).

Vocabulary layout
-----------------
The checkpoint folder ships :data:`TIKTOKEN_FILE`, one mergeable token per line:
``<base64 of the token's bytes> <rank>``.  The rank is both the merge priority and the token id.
One entry of the official file is said to be the empty byte string, spelled ``=``
(Python's lenient ``base64.b64decode`` accepts it); :func:`parse_tiktoken_ranks` accepts it too.
The tokenizer is a ``tiktoken.Encoding`` over those ranks with the GPT-2 pre-tokeniser pattern
(:data:`PAT_STR`) and the special tokens of :func:`official_special_tokens` appended after the
ranks in a fixed order (special id = number of ranks + position).  At full size that is
58,836 ranks + 1,673 specials = 60,509 ids, the GPT's ``number_text_tokens``.

Languages
---------
The official ``LANGUAGES`` table holds 106 codes (:data:`LANGUAGE_CODES`).  A code's position
is its ``LANGUAGE_DICT`` value; ``lang_to_token`` lower-cases the code and falls back to
``common`` (position 105) for a code not in the table (:func:`language_index`).  The codes are
the table's own spelling, not ISO's canonical one (``jw`` for Javanese, ``haw``, ``yue``,
``zh/en``), so e.g. ``jv`` falls back to ``common``.  Only the FIRST 99 codes get a ``<|code|>``
special token (:func:`has_language_token`); ``yue``, ``minnan``, ``wuyu``, ``dialect``,
``zh/en``, ``en/zh`` and ``common`` have an embedding row but no token.  The GPT's
``lang_embedding`` has ``len(LANGUAGE_DICT) + 1 = 107`` rows (:data:`LANG_EMBEDDING_ROWS`) and
is indexed by the position; row 106 is never selected by ``lang_to_token``.  IndexTTS-2.5 was
released for :data:`RELEASED_LANGUAGES` (the web UI offers ZH, EN, JA, AR, ES; ``infer_v2_5``
also has a ``zhen`` branch).  The other rows exist but, as far as we know, were never trained.

How inference frames a text (what :func:`frame_text` reproduces)
-----------------------------------------------------------------
``infer_v2_5`` encodes each segment as
``tokenizer.encode(f"<|{lang.lower()}|> " + text, allowed_special="all")`` and appends one id
``1``.  It does not check that ``<|lang|>`` is a special token: for a language without one
(``yue``, ``zhen``, an unknown code) the prefix is encoded as plain text (``<|``, ``yue``, ``|>``
...), and ``lang_to_token`` then picks the language's row, or ``common`` for a code outside the
table (``zhen`` included).  The GPT (``UnifiedVoice.prepare_gpt_inputs`` in ``model_v2.py``,
the class ``infer_v2_5`` imports) then removes EVERY id equal to ``start_text_token`` (0) or
``stop_text_token`` (1) anywhere in the sequence and wraps what is left as ``[0, *ids, 1]``.
Ordinary text tokens whose rank is 0 or 1 are therefore silently dropped.  In GPT-2-ordered
byte-level files (Whisper's, and we believe this one) ranks 0 and 1 are ``b"!"`` and ``b'"'``,
so an exclamation mark or double quote that pre-tokenises to its own token never reaches the
model.  :class:`FramedText` lists what was dropped so the caller can report it.

Text pre-processing done by ``infer_v2_5`` before encoding (recorded here, NOT implemented):
characters are mapped through the front-end's ``char_rep_map``; with normalisation on,
``zh``/``zhen``/``en`` go through ``TextNormalizer`` and ``ja``/``es`` through NeMo text
normalisation; the text is lower-cased for ``ja``, ``zh``, ``zhen`` and ``en`` and upper-cased
for ``es``; pronunciation annotations ``<word|PRON>`` become
``<|SPECIAL_TOKEN_2|>PRON<|SPECIAL_TOKEN_2|>`` (word contains Chinese) or ``..._1...``
(otherwise), with ``PRON`` upper-cased and kana pronunciations written as plain text; ``ja`` goes
through a G2P step; finally every ``<|x|>`` tag in the text is upper-cased (so ``<|en|>`` inside
the text becomes the plain text ``<|EN|>``, while ``<|SPECIAL_TOKEN_1|>`` stays special) and the
text is split into segments of at most ``max_text_tokens_per_segment`` tokens (default 120).
:func:`frame_text` expects one such segment, already pre-processed.

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

import base64
import binascii
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tiktoken

from indextts_core.errors import InputError
from indextts_core.model.config import TIKTOKEN_FILE
from indextts_core.utils.fileio import sha256_bytes

OFFICIAL_NUM_RANKS = 58_836
OFFICIAL_N_VOCAB = 60_509
START_TEXT_ID = 0  # the GPT's start_text_token; also the id of the ordinary token ranked 0
STOP_TEXT_ID = 1  # the GPT's stop_text_token; also the id of the ordinary token ranked 1

# The GPT-2 pre-tokeniser pattern the official encoding uses.
PAT_STR = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# The official LANGUAGES table, in its order (position = LANGUAGE_DICT value = lang_embedding row).
LANGUAGE_CODES: tuple[str, ...] = (
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it",
    "id", "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur",
    "hr", "bg", "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn",
    "et", "mk", "br", "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si",
    "km", "sn", "yo", "so", "af", "oc", "ka", "be", "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo",
    "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl", "mg", "as", "tt", "haw", "ln", "ha",
    "ba", "jw", "su", "yue", "minnan", "wuyu", "dialect", "zh/en", "en/zh", "common",
)
NUM_LANGUAGE_TOKENS = 99  # get_encoding's default num_languages: codes that get a <|code|> token
LANG_EMBEDDING_ROWS = len(LANGUAGE_CODES) + 1  # nn.Embedding(len(LANGUAGE_DICT) + 1, dim) = 107
FALLBACK_LANGUAGE = "common"
RELEASED_LANGUAGES = ("zh", "en", "ja", "es", "ar")

_AUDIO_EVENTS = ("ASR", "AED", "SER", "Speech", "/Speech", "BGM", "/BGM", "Laughter", "/Laughter",
                 "Applause", "/Applause")
_EMOTIONS = ("HAPPY", "SAD", "ANGRY", "NEUTRAL")
_TASKS = ("translate", "transcribe", "startoflm", "startofprev", "nospeech", "notimestamps")
_TTS_VOCAL = ("TTS/B", "TTS/O", "TTS/Q", "TTS/A", "TTS/CO", "TTS/CL", "TTS/H")
_NUM_SPECIAL_SLOTS = 30  # <|SPECIAL_TOKEN_1|> .. <|SPECIAL_TOKEN_30|>
_NUM_TTS_SP = 13  # <|TTS/SP01|> .. <|TTS/SP13|>
_NUM_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|> in steps of 0.02 s


class TiktokenVocabError(InputError):
    """A rank file that cannot be used: unreadable, malformed, duplicated or incomplete ranks."""


class TiktokenFileMissing(TiktokenVocabError, FileNotFoundError):
    """The rank file does not exist; the message names the path."""


# ---------------------------------------------------------------------------------------------
# Languages


def language_index(code: str) -> int:
    """The official ``lang_to_token``: the code's position in :data:`LANGUAGE_CODES`.

    The code is lower-cased first; a code not in the table maps to ``common`` (105).
    """
    lowered = code.lower()
    if lowered not in LANGUAGE_CODES:
        lowered = FALLBACK_LANGUAGE
    return LANGUAGE_CODES.index(lowered)


def has_language_token(code: str, num_languages: int = NUM_LANGUAGE_TOKENS) -> bool:
    """Whether ``<|code|>`` (lower-cased) is a special token: the code is among the first ``num_languages``."""
    return code.lower() in LANGUAGE_CODES[:num_languages]


def has_embedding_row(code: str) -> bool:
    """Whether the code has its own ``lang_embedding`` row (any of the 106 codes) rather than ``common``'s."""
    return code.lower() in LANGUAGE_CODES


def _timestamp(step: int) -> str:
    """The timestamp token for ``step`` * 0.02 s, formatted with two decimals (``<|0.02|>``)."""
    hundredths = step * 2
    return f"<|{hundredths // 100}.{hundredths % 100:02d}|>"


def official_special_tokens(num_languages: int = NUM_LANGUAGE_TOKENS) -> tuple[str, ...]:
    """The special tokens in the order the official encoding appends them after the ranks.

    ``<|endoftext|>``, ``<|startoftranscript|>``, one ``<|code|>`` for each of the first
    ``num_languages`` codes, the 11 audio events, the 4 emotions, the 6 Whisper task tokens,
    ``<|SPECIAL_TOKEN_1..30|>``, the 20 TTS vocal tokens and 1501 timestamps ``<|0.00|>`` ..
    ``<|30.00|>``: 1,673 tokens with the default 99 languages.
    """
    if not 0 <= num_languages <= len(LANGUAGE_CODES):
        raise InputError(f"num_languages must be between 0 and {len(LANGUAGE_CODES)}, got {num_languages}")
    tokens = ["<|endoftext|>", "<|startoftranscript|>"]
    tokens += [f"<|{code}|>" for code in LANGUAGE_CODES[:num_languages]]
    tokens += [f"<|{name}|>" for name in _AUDIO_EVENTS + _EMOTIONS + _TASKS]
    tokens += [f"<|SPECIAL_TOKEN_{i}|>" for i in range(1, _NUM_SPECIAL_SLOTS + 1)]
    tokens += [f"<|{name}|>" for name in _TTS_VOCAL]
    tokens += [f"<|TTS/SP{i:02d}|>" for i in range(1, _NUM_TTS_SP + 1)]
    tokens += [_timestamp(step) for step in range(_NUM_TIMESTAMPS)]
    return tuple(tokens)


# ---------------------------------------------------------------------------------------------
# Reading the rank file


def _decode_token(field_text: str) -> bytes:
    """The bytes of one base64 field; an all-``=`` field is the empty token (as the official reader allows)."""
    if field_text and set(field_text) == {"="}:
        return b""
    return base64.b64decode(field_text, validate=True)


def parse_tiktoken_ranks(text: str, source: str) -> dict[bytes, int]:
    """Parse rank-file text into ``{token bytes: rank}``; errors name ``source`` and the line number.

    Blank lines are skipped.  Each other line must be ``<base64> <rank>`` with a non-negative
    decimal rank.  A repeated rank or repeated token is an error, and so are ranks that are not
    exactly ``0 .. N-1`` (tiktoken gives special tokens the ids after the last rank) and a file
    missing any of the 256 single bytes (tiktoken cannot encode text containing such a byte).
    """
    ranks: dict[bytes, int] = {}
    line_of_rank: dict[int, int] = {}
    line_of_token: dict[bytes, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"{source}: line {number}"
        if len(parts) != 2:
            raise TiktokenVocabError(f"{where}: expected '<base64 token> <rank>', got {line.strip()[:80]!r}")
        token_field, rank_field = parts
        if not (rank_field.isascii() and rank_field.isdigit()):
            raise TiktokenVocabError(f"{where}: rank {rank_field[:40]!r} is not a non-negative integer")
        try:
            token = _decode_token(token_field)
        except (binascii.Error, ValueError) as e:
            raise TiktokenVocabError(f"{where}: token {token_field[:40]!r} is not valid base64 ({e})") from None
        rank = int(rank_field)
        if rank in line_of_rank:
            raise TiktokenVocabError(f"{where}: duplicate rank {rank} (already on line {line_of_rank[rank]})")
        if token in line_of_token:
            raise TiktokenVocabError(f"{where}: duplicate token {token!r} (already on line {line_of_token[token]})")
        line_of_rank[rank] = number
        line_of_token[token] = number
        ranks[token] = rank
    if not ranks:
        raise TiktokenVocabError(f"{source}: no ranks (empty file)")
    if max(line_of_rank) != len(ranks) - 1:
        missing = min(set(range(len(ranks))) - set(line_of_rank))
        raise TiktokenVocabError(f"{source}: ranks must be 0..{len(ranks) - 1} without gaps; rank {missing} is "
                                 "missing")
    missing_bytes = [b for b in range(256) if bytes([b]) not in ranks]
    if missing_bytes:
        shown = ", ".join(f"0x{b:02x}" for b in missing_bytes[:8])
        raise TiktokenVocabError(f"{source}: {len(missing_bytes)} of the 256 single bytes have no rank ({shown}"
                                 f"{', ...' if len(missing_bytes) > 8 else ''}); a byte-level vocabulary needs all")
    return ranks


def build_encoding(ranks: dict[bytes, int], name: str,
                   num_languages: int = NUM_LANGUAGE_TOKENS) -> tiktoken.Encoding:
    """The official ``tiktoken.Encoding``: ``ranks``, :data:`PAT_STR` and the special tokens after the ranks.

    Built directly from its parts, so nothing is downloaded.
    """
    specials = official_special_tokens(num_languages)
    special_ids = {token: len(ranks) + position for position, token in enumerate(specials)}
    return tiktoken.Encoding(name=name, pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens=special_ids,
                             explicit_n_vocab=len(ranks) + len(specials))


@dataclass(frozen=True)
class TiktokenVocab:
    """A loaded IndexTTS-2.5 text vocabulary (see :func:`load_tiktoken_vocab`)."""

    path: Path
    sha256: str  # of the rank file's bytes
    num_ranks: int  # mergeable tokens; the first special id
    num_languages: int  # codes with a <|code|> token
    encoding: tiktoken.Encoding = field(repr=False, compare=False)

    @property
    def n_vocab(self) -> int:
        """Ranks plus special tokens: the GPT's ``number_text_tokens`` (60,509 for the official file)."""
        return self.encoding.n_vocab

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with every special token allowed (``allowed_special="all"``, as inference)."""
        return self.encoding.encode(text, allowed_special="all")

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; incomplete UTF-8 becomes U+FFFD."""
        return self.encoding.decode(list(ids))

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (a special token's bytes are its text)."""
        return self.encoding.decode_single_token_bytes(token_id)

    def special_id(self, token: str) -> int:
        """The id of special token ``token`` (e.g. ``"<|endoftext|>"``); KeyError if it is not one."""
        if token not in self.encoding.special_tokens_set:
            raise KeyError(f"{token!r} is not a special token of {self.path.name}")
        return self.encoding.encode_single_token(token)

    def lang_token_id(self, code: str) -> int | None:
        """The id of ``<|code|>`` (lower-cased), or None when the language has no special token."""
        if not has_language_token(code, self.num_languages):
            return None
        return self.special_id(f"<|{code.lower()}|>")


def load_tiktoken_vocab(path: str | Path, num_languages: int = NUM_LANGUAGE_TOKENS) -> TiktokenVocab:
    """Read a ``.tiktoken`` rank file and build the official encoding (no network).

    Raises :class:`TiktokenFileMissing` (a ``FileNotFoundError`` and an ``InputError``) naming the
    path when the file does not exist, and :class:`TiktokenVocabError` naming the path (and line)
    when it cannot be read or parsed.
    """
    path = Path(path)
    if not path.is_file():
        raise TiktokenFileMissing(f"{path}: tiktoken rank file not found (IndexTTS-2.5 ships {TIKTOKEN_FILE} "
                                  "in the checkpoint folder)")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TiktokenVocabError(f"{path}: not a text file ({e})") from None
    ranks = parse_tiktoken_ranks(text, str(path))
    encoding = build_encoding(ranks, path.name, num_languages)
    return TiktokenVocab(path=path, sha256=sha256_bytes(data), num_ranks=len(ranks),
                         num_languages=num_languages, encoding=encoding)


# ---------------------------------------------------------------------------------------------
# Framing a text as inference does


@dataclass(frozen=True)
class FramedText:
    """The text ids one 2.5 inference segment hands the GPT, and what the GPT's 0/1 filter removed.

    ``ids`` are the ids after the filter (the GPT then wraps them as :meth:`gpt_input`).
    ``dropped_ids``/``dropped_pieces`` are the removed ids and their decoded text, in order.
    """

    ids: tuple[int, ...]
    dropped_ids: tuple[int, ...]
    dropped_pieces: tuple[str, ...]
    lang_index: int  # the lang_embedding row inference selects (language_index)
    lang_token_id: int | None  # id of <|lang|>, None when the prefix was encoded as plain text
    prefix: str  # the text prepended before encoding, "<|lang|> "

    @property
    def num_dropped(self) -> int:
        return len(self.dropped_ids)

    def gpt_input(self) -> tuple[int, ...]:
        """``ids`` wrapped in the GPT's start (0) and stop (1) text tokens, as ``prepare_gpt_inputs`` does."""
        return (START_TEXT_ID, *self.ids, STOP_TEXT_ID)


def language_prefix(lang: str) -> str:
    """The prefix inference writes before a segment: ``"<|lang|> "`` with the code lower-cased."""
    return f"<|{lang.lower()}|> "


def frame_text(vocab: TiktokenVocab, text: str, lang: str) -> FramedText:
    """Encode ``text`` exactly as IndexTTS-2.5 inference feeds it to the GPT.

    Encodes ``"<|lang|> " + text`` with every special allowed; when ``<|lang|>`` is not a special
    token of ``vocab`` the prefix becomes plain-text tokens, as in inference.  Then removes every
    id 0 or 1, as the GPT's input preparation does (the stop id inference appends is removed
    there too, so it is not added here).  ``text`` should already be pre-processed (see the module
    docs); this function does no normalisation.
    """
    prefix = language_prefix(lang)
    kept: list[int] = []
    dropped: list[int] = []
    for token_id in vocab.encode(prefix + text):
        (dropped if token_id in (START_TEXT_ID, STOP_TEXT_ID) else kept).append(token_id)
    pieces = tuple(vocab.token_bytes(i).decode("utf-8", errors="replace") for i in dropped)
    return FramedText(ids=tuple(kept), dropped_ids=tuple(dropped), dropped_pieces=pieces,
                      lang_index=language_index(lang), lang_token_id=vocab.lang_token_id(lang), prefix=prefix)


# ---------------------------------------------------------------------------------------------
# Coverage of a language's characters


def _is_whole_utf8(data: bytes) -> bool:
    """Whether ``data`` is complete UTF-8 (no cut character)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


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


# ---------------------------------------------------------------------------------------------
# A tiny rank file for tests and demos


def gpt2_byte_order() -> list[int]:
    """The 256 byte values in GPT-2's rank order: printable bytes (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) first.

    With this order rank 0 is ``b"!"`` and rank 1 is ``b'"'``, as in GPT-2's and Whisper's files.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    rest = [b for b in range(256) if b not in set(printable)]
    return printable + rest
