"""A line of text -> the GPT's text ids, for either release, as its official inference encodes it.

* IndexTTS-2 (:class:`SentencePieceText`): the front-end (:class:`~indextts_core.text.frontend.TextFrontend`)
  and the SentencePiece ``bpe.model``; no language id.
* IndexTTS-2.5 (:class:`TiktokenText`): the language's normaliser and the punctuation map, the
  case rule of ``infer_v2_5`` (lower-case for zh/en/ja, upper-case for es, unchanged otherwise),
  then ``"<|code|> " + text`` through the tiktoken vocabulary with ids 0/1 removed
  (:func:`~indextts_core.text.tiktoken_framing.frame_text`); the line also carries the
  ``lang_embedding`` row inference selects for ``code``.

``code`` is what a user passes as ``lang`` to the official 2.5 inference: it picks both the
``<|code|>`` prefix and the language row.  For a language 2.5 was not released for, the run
chooses (:func:`language_choice`): its own code, whose row is re-initialised from the mean of the
released languages' rows and trained, or a related released language's code (``ar`` for
Amharic), whose trained row is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from indextts_core.errors import ConfigError, InputError
from indextts_core.text.frontend import TextFrontend, punctuation_map

#: lang_row_init values: keep the checkpoint's row, or set it to the released languages' mean.
ROW_INITS = ("keep", "released_mean")


@dataclass(frozen=True)
class EncodedLine:
    ids: list[int]
    text: str = ""  # the normalised text that was encoded
    lang: int | None = None  # 2.5: the lang_embedding row; None for 2.0
    unknown: int = 0  # 2.0: <unk> ids (a byte-level 2.5 vocabulary has none)
    dropped: tuple[str, ...] = ()  # 2.5: text the GPT's 0/1 filter removes (e.g. '!' and '"')


class TextEncoder(Protocol):
    release: str

    def encode(self, line: str, language: str) -> EncodedLine: ...

    def fingerprint(self) -> dict[str, Any]: ...


@dataclass
class SentencePieceText:
    """IndexTTS-2: front-end text through ``bpe.model`` (one-character inputs skip normalisation)."""

    path: Path
    frontend: TextFrontend = field(default_factory=TextFrontend)
    release: str = "2.0"

    def __post_init__(self) -> None:
        from indextts_core.text.tokenizer import load_sentencepiece

        self.sp = load_sentencepiece(self.path)

    def encode(self, line: str, language: str) -> EncodedLine:
        ids = self.frontend.encode(self.sp, line, language)
        return EncodedLine(ids, self.frontend(line, language) if line else "", unknown=ids.count(self.sp.unk_id()))

    def fingerprint(self) -> dict[str, Any]:
        return self.frontend.fingerprint()


@dataclass(frozen=True)
class LanguageChoice:
    """The 2.5 language a run trains: the ``lang`` code for inference, its row and how the row starts."""

    language: str  # the data's language (ISO code)
    code: str  # the code passed to the official inference as ``lang`` (prefix and row)
    row: int  # lang_embedding row (LANGUAGE_DICT[code], ``common`` if not in the table)
    has_token: bool  # <|code|> is a special token (else the prefix is plain text, as inference does)
    released: bool  # the row was trained in the release
    row_init: str  # "keep" or "released_mean"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def language_choice(language: str, code: str | None = None, row_init: str | None = None) -> LanguageChoice:
    """Resolve the run's 2.5 language: ``code`` defaults to ``language`` itself; ``row_init`` to
    ``keep`` for a released language and ``released_mean`` otherwise (an untrained row is N(0, 1))."""
    from indextts_core.text.tiktoken_vocab import (
        LANGUAGE_CODES, RELEASED_LANGUAGES, has_language_token, language_index)

    chosen = (code or language.split("-")[0]).lower()
    released = chosen in RELEASED_LANGUAGES
    init = row_init or ("keep" if released else "released_mean")
    if init not in ROW_INITS:
        raise ConfigError(f"extend_bpe.lang_row_init: expected one of {list(ROW_INITS)}, got {init!r}")
    if chosen not in LANGUAGE_CODES and code:
        raise ConfigError(f"extend_bpe.lang_code: {code!r} is not in the official 2.5 language table; it would fall "
                          "back to 'common' (choose a listed code, e.g. a related released language: "
                          f"{', '.join(RELEASED_LANGUAGES)})")
    return LanguageChoice(language, chosen, language_index(chosen), has_language_token(chosen), released, init)


@dataclass
class TiktokenText:
    """IndexTTS-2.5: normalised text framed as ``infer_v2_5`` frames it, with the chosen language code
    for the run's language (:meth:`code_for`)."""

    path: Path
    choice: LanguageChoice | None = None  # None: every line's own language is its code
    frontend: TextFrontend = field(default_factory=TextFrontend)
    release: str = "2.5"
    force_code: str | None = None  # every line is spoken with this code (generate/synthesize --lang-code)

    def __post_init__(self) -> None:
        from indextts_core.text.tiktoken_vocab import load_tiktoken_vocab

        self.vocab = load_tiktoken_vocab(self.path)

    def code_for(self, language: str) -> str:
        """The ``lang`` code a line of ``language`` is spoken with: the run's choice for its own language,
        the line's own code otherwise (e.g. English replay lines in an Amharic run); ``force_code`` for
        every line when set."""
        base = language.split("-")[0].lower()
        if self.force_code is not None:
            return self.force_code.lower()
        if self.choice is not None and base == self.choice.language.split("-")[0].lower():
            return self.choice.code
        return base

    def normalise(self, line: str, language: str) -> str:
        """The data language's normaliser, then what ``infer_v2_5`` does for the ``lang`` code: WeText
        for zh/en (else the punctuation map), lower-case for zh/en/ja, upper-case for es.  Not done
        (as with ``text_normalization`` off): NeMo for ja/es, Japanese G2P, pronunciation tags."""
        norm = self.frontend.normalizers.get(language.split("-")[0].lower())
        text = norm(line) if norm is not None else line
        code = self.code_for(language)
        text = self.frontend.official.normalize(text) if code in ("zh", "en") else punctuation_map(text)
        if code in ("zh", "en", "ja"):
            return text.lower()
        return text.upper() if code == "es" else text

    def encode(self, line: str, language: str) -> EncodedLine:
        from indextts_core.text.tiktoken_framing import frame_text

        text = self.normalise(line, language)
        if not text.strip():
            return EncodedLine([], text)
        framed = frame_text(self.vocab, text, self.code_for(language))
        return EncodedLine(list(framed.ids), text, framed.lang_index, dropped=framed.dropped_pieces)

    def fingerprint(self) -> dict[str, Any]:
        fp = self.frontend.fingerprint()
        return fp | {"name": f"{fp['name']}-v25", "vocab_sha256": self.vocab.sha256,
                     "lang_code": self.choice.code if self.choice else None}


def recorded_choice(tokenizer: str | Path) -> LanguageChoice | None:
    """The language choice the 2.5 tokenizer stage recorded next to ``tokenizer`` (None: none recorded)."""
    import json

    side = Path(tokenizer).with_suffix(".json")
    if not side.is_file():
        return None
    try:
        recorded = json.loads(side.read_text(encoding="utf-8")).get("language_choice")
        return LanguageChoice(**recorded) if recorded else None
    except (ValueError, TypeError, AttributeError) as e:
        raise InputError(f"{side}: unreadable language_choice ({e}); re-run the tokenizer stage") from None


def open_text_encoder(tokenizer: str | Path, v25: bool, choice: LanguageChoice | None = None,
                      frontend: TextFrontend | None = None,
                      force_code: str | None = None) -> SentencePieceText | TiktokenText:
    """The encoder for a checkpoint's tokenizer file (``bpe.model`` or the 2.5 ``.tiktoken``).

    2.5 without ``choice``: the one the tokenizer stage recorded next to the file, if any; otherwise
    each line's own language is its ``lang`` code.  ``force_code`` (2.5): every line's code (checked
    against the official table).
    """
    fe = frontend or TextFrontend()
    if v25:
        if force_code is not None:
            force_code = language_choice(force_code, force_code).code  # refuses a code outside the table
        return TiktokenText(Path(tokenizer), choice or recorded_choice(tokenizer), fe, force_code=force_code)
    return SentencePieceText(Path(tokenizer), fe)


def tokenizer_in(folder: str | Path, name: str) -> Path:
    """The tokenizer stage's file in ``folder``: the 2.5 ``.tiktoken`` when the stage kept one, else ``name``
    (``extend_bpe.output_name``, the extended ``bpe.model``)."""
    from indextts_core.text.tiktoken_vocab import TIKTOKEN_FILE

    folder = Path(folder)
    return folder / TIKTOKEN_FILE if (folder / TIKTOKEN_FILE).is_file() else folder / name
