"""How IndexTTS-2.5 inference frames a text for the GPT, reproduced over a :class:`TiktokenVocab`.

Facts below were read from the official repository ``index-tts/index-tts``
(``indextts/infer_v2_5.py``, ``indextts/gpt/model_v2.py``).

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
"""

from __future__ import annotations

from dataclasses import dataclass

from indextts_core.text.tiktoken_vocab import START_TEXT_ID, STOP_TEXT_ID, TiktokenVocab, language_index


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
