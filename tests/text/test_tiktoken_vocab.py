"""The IndexTTS-2.5 tiktoken vocabulary on a tiny rank file written by the tests (no network)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from indextts_core.errors import InputError
from indextts_core.text.tiktoken_coverage import coverage_report
from indextts_core.text.tiktoken_framing import frame_text
from indextts_core.text.tiktoken_vocab import (
    LANG_EMBEDDING_ROWS,
    LANGUAGE_CODES,
    OFFICIAL_N_VOCAB,
    OFFICIAL_NUM_RANKS,
    RELEASED_LANGUAGES,
    TIKTOKEN_FILE,
    TiktokenFileMissing,
    TiktokenVocab,
    TiktokenVocabError,
    gpt2_byte_order,
    has_language_token,
    language_index,
    load_tiktoken_vocab,
    official_special_tokens,
)
from indextts_core.tiny.tiktoken import write_tiny_tiktoken

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, this is a tiny corpus for a tiny vocabulary.",
    "今天天气很好，我们去公园散步。",
    "我喜欢学习语言和音乐。",
    "مرحبا بالعالم، كيف حالك اليوم",
] * 3
MERGES = 400
SAMPLES = ["hello world 123", "今天天气很好，我们去公园散步。", "ሰላም ለዓለም", "مرحبا بالعالم", "mixed 中文 ሰላም and العربية"]


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    path = tmp_path_factory.mktemp("tiktoken") / TIKTOKEN_FILE
    return path, write_tiny_tiktoken(path, CORPUS, MERGES)


@pytest.fixture(scope="module")
def vocab(tiny_file: tuple[Path, int]) -> TiktokenVocab:
    return load_tiktoken_vocab(tiny_file[0])


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _byte_lines() -> list[str]:
    return [f"{base64.b64encode(bytes([b])).decode()} {rank}" for rank, b in enumerate(gpt2_byte_order())]


# --- the official layout ----------------------------------------------------------------------


def test_official_special_token_table() -> None:
    specials = official_special_tokens()
    assert len(specials) == 1673 == OFFICIAL_N_VOCAB - OFFICIAL_NUM_RANKS
    assert len(set(specials)) == len(specials)
    assert specials[:4] == ("<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|zh|>")
    assert specials[2 + 98] == "<|su|>" and specials[2 + 99] == "<|ASR|>"
    assert "<|yue|>" not in specials and "<|common|>" not in specials
    assert specials.index("<|translate|>") == 2 + 99 + 11 + 4
    assert specials.index("<|SPECIAL_TOKEN_1|>") == specials.index("<|notimestamps|>") + 1
    assert specials.index("<|TTS/B|>") == specials.index("<|SPECIAL_TOKEN_30|>") + 1
    assert specials.index("<|TTS/SP01|>") == specials.index("<|TTS/H|>") + 1
    assert specials[-1501:] == tuple(f"<|{i * 0.02:.2f}|>" for i in range(1501))
    assert specials[-1501] == "<|0.00|>" and specials[-1] == "<|30.00|>"


def test_language_table() -> None:
    assert len(LANGUAGE_CODES) == 106 and LANG_EMBEDDING_ROWS == 107
    assert language_index("en") == 0 and language_index("zh") == 1 and language_index("ZH") == 1
    assert language_index("am") == LANGUAGE_CODES.index("am") == 75
    assert language_index("ar") == 13 and language_index("yue") == 99
    assert language_index("xx") == language_index("zhen") == language_index("common") == 105
    assert has_language_token("am") and has_language_token("SU") and not has_language_token("yue")
    assert not has_language_token("common") and not has_language_token("xx")
    assert all(has_language_token(code) for code in RELEASED_LANGUAGES)


# --- the tiny rank file -----------------------------------------------------------------------


def test_tiny_file_layout(tiny_file: tuple[Path, int], vocab: TiktokenVocab) -> None:
    path, ranks = tiny_file
    assert 256 < ranks <= 256 + MERGES
    assert vocab.num_ranks == ranks
    assert vocab.n_vocab == ranks + len(official_special_tokens())
    assert vocab.token_bytes(0) == b"!" and vocab.token_bytes(1) == b'"'
    assert vocab.special_id("<|endoftext|>") == ranks
    assert vocab.special_id("<|startoftranscript|>") == ranks + 1
    assert vocab.special_id("<|en|>") == ranks + 2 == vocab.lang_token_id("EN")
    assert vocab.special_id("<|zh|>") == ranks + 3 == vocab.lang_token_id("zh")
    assert vocab.special_id("<|30.00|>") == vocab.n_vocab - 1
    assert vocab.lang_token_id("yue") is None and vocab.lang_token_id("xx") is None
    with pytest.raises(KeyError, match="not a special token"):
        vocab.special_id("<|yue|>")
    assert len(vocab.sha256) == 64


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip(vocab: TiktokenVocab, text: str) -> None:
    ids = vocab.encode(text)
    assert vocab.decode(ids) == text
    assert all(0 <= i < vocab.num_ranks for i in ids)


def test_specials_and_merges_encode(vocab: TiktokenVocab) -> None:
    assert vocab.encode("<|am|>")[0] == vocab.special_id("<|am|>")
    assert len(vocab.encode("今天天气很好")) < len("今天天气很好")  # merged beyond single characters


def test_empty_token_spelled_equals_is_accepted(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "v.tiktoken", [*_byte_lines(), "= 256"])
    vocab = load_tiktoken_vocab(path)
    assert vocab.num_ranks == 257 and vocab.token_bytes(256) == b""
    assert vocab.decode(vocab.encode("ሰላም")) == "ሰላም"


# --- framing as inference does ----------------------------------------------------------------


def test_frame_text_starts_with_language_token(vocab: TiktokenVocab) -> None:
    for lang, text in (("am", "ሰላም ለዓለም"), ("zh", "今天天气很好"), ("ZH", "今天天气很好")):
        framed = frame_text(vocab, text, lang)
        assert framed.ids[0] == vocab.lang_token_id(lang) == framed.lang_token_id
        assert 0 not in framed.ids and 1 not in framed.ids and framed.num_dropped == 0
        assert framed.lang_index == language_index(lang)
        assert vocab.decode(framed.ids) == f"<|{lang.lower()}|> {text}"
        assert framed.gpt_input() == (0, *framed.ids, 1)


def test_frame_text_reports_dropped_characters(vocab: TiktokenVocab) -> None:
    framed = frame_text(vocab, 'hello! "world"', "en")
    assert framed.dropped_ids == (0, 1, 1)
    assert framed.dropped_pieces == ("!", '"', '"')
    assert 0 not in framed.ids and 1 not in framed.ids
    assert vocab.decode(framed.ids) == "<|en|> hello world"


def test_frame_text_without_language_token_writes_the_tag_as_text(vocab: TiktokenVocab) -> None:
    framed = frame_text(vocab, "你好", "yue")
    assert framed.lang_token_id is None and framed.lang_index == 99
    assert all(i < vocab.num_ranks for i in framed.ids)  # no special id anywhere
    assert vocab.decode(framed.ids) == "<|yue|> 你好"
    assert frame_text(vocab, "hi", "zhen").lang_index == 105


# --- coverage ---------------------------------------------------------------------------------


def test_coverage_of_a_language_in_the_corpus(vocab: TiktokenVocab) -> None:
    report = coverage_report(vocab, ["今天天气很好，我们去公园散步。", "我喜欢学习语言和音乐。"], "zh")
    json.dumps(report)
    assert report["texts"] == 2 and report["characters"] == 26
    assert report["tokens_per_char"] < 1
    assert report["byte_fallback_chars"] == {} and report["byte_fallback_distinct"] == 0
    assert report["covered_share"] == 1.0
    assert report["has_language_token"] and report["has_embedding_row"] and report["released"]
    assert report["lang_index"] == 1 and report["dropped_ids"] == 0
    assert report["advice"].startswith("no vocabulary extension needed")


def test_coverage_of_an_unseen_script(vocab: TiktokenVocab) -> None:
    report = coverage_report(vocab, ["ሰላም ለዓለም", "ሰላም!"], "am")
    json.dumps(report)
    assert report["byte_fallback_chars"] == {"ም": 3, "ሰ": 2, "ላ": 2, "ለ": 2, "ዓ": 1}
    assert report["byte_fallback_distinct"] == 5 and report["byte_fallback_occurrences"] == 10
    assert report["covered_share"] < 0.5 and report["tokens_per_char"] > 1
    assert report["has_language_token"] and report["has_embedding_row"] and not report["released"]
    assert report["lang_index"] == 75
    assert report["dropped_ids"] == 1 and report["dropped_pieces"] == {"!": 1}
    assert "byte fallback" in report["advice"] and "tokens per character" in report["advice"]
    assert "untrained" in report["language_note"]


def test_coverage_of_nothing_is_an_error(vocab: TiktokenVocab) -> None:
    with pytest.raises(InputError, match="no text"):
        coverage_report(vocab, [], "am")


# --- errors -----------------------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / TIKTOKEN_FILE
    with pytest.raises(TiktokenFileMissing, match="nowhere") as info:
        load_tiktoken_vocab(path)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, InputError)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(("bad_line", "message"), [
    ("IQ==", "expected '<base64 token> <rank>'"),
    ("not-base64! 256", "not valid base64"),
    ("YWI= x", "not a non-negative integer"),
    ("YWI= -3", "not a non-negative integer"),
    ("YWI= 0", "duplicate rank 0"),
    ("IQ== 256", "duplicate token"),
])
def test_malformed_line_names_path_and_line(tmp_path: Path, bad_line: str, message: str) -> None:
    lines = _byte_lines()
    path = _write_lines(tmp_path / "bad.tiktoken", [*lines[:10], bad_line, *lines[10:]])
    with pytest.raises(TiktokenVocabError, match=message) as info:
        load_tiktoken_vocab(path)
    assert f"{path}: line 11" in str(info.value)


def test_incomplete_files_are_errors(tmp_path: Path) -> None:
    lines = _byte_lines()
    gap = _write_lines(tmp_path / "gap.tiktoken", [*lines, "YWI= 300"])
    with pytest.raises(TiktokenVocabError, match="rank 256 is missing"):
        load_tiktoken_vocab(gap)
    no_bytes = _write_lines(tmp_path / "bytes.tiktoken", lines[:200])
    with pytest.raises(TiktokenVocabError, match="56 of the 256 single bytes"):
        load_tiktoken_vocab(no_bytes)
    empty = _write_lines(tmp_path / "empty.tiktoken", [])
    with pytest.raises(TiktokenVocabError, match=f"{empty}: no ranks"):
        load_tiktoken_vocab(empty)
