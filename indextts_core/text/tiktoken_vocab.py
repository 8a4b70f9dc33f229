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

This module reads the vocabulary; :mod:`indextts_core.text.tiktoken_framing` encodes a text as
inference frames it, and :mod:`indextts_core.text.tiktoken_coverage` measures how well the
vocabulary covers a language.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

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


def _is_whole_utf8(data: bytes) -> bool:
    """Whether ``data`` is complete UTF-8 (no cut character)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# A tiny rank file for tests and demos


def gpt2_byte_order() -> list[int]:
    """The 256 byte values in GPT-2's rank order: printable bytes (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) first.

    With this order rank 0 is ``b"!"`` and rank 1 is ``b'"'``, as in GPT-2's and Whisper's files.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    rest = [b for b in range(256) if b not in set(printable)]
    return printable + rest
