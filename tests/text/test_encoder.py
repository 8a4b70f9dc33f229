"""One text-encoder interface for both releases, the 2.5 tokenizer stage and the language choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indextts_core.errors import ConfigError
from indextts_core.text.encoder import (
    SentencePieceText,
    TiktokenText,
    language_choice,
    open_text_encoder,
    recorded_choice,
    tokenizer_in,
)
from indextts_core.text.frontend import TextFrontend
from indextts_core.text.tiktoken_stage import run_tiktoken_stage
from indextts_core.text.tiktoken_vocab import TIKTOKEN_FILE, language_index
from indextts_core.tiny.tiktoken import write_tiny_tiktoken

LINES = ["Hello, World!", "ሰላም ለዓለም። 2015 ዓ.ም.", "¡Hola, señor!"]


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("v25") / TIKTOKEN_FILE
    write_tiny_tiktoken(path, ["hello world", "hola señor", "ሰላም ለዓለም"], merges=60)
    return path


def test_the_2_0_encoder_is_the_front_end_and_sentencepiece(base_tokenizer_path: Path, tiny_tokenizer):
    enc = open_text_encoder(base_tokenizer_path, v25=False)
    fe = TextFrontend()
    assert isinstance(enc, SentencePieceText)
    for line in ("Hello, world!", "你好", "x"):
        out = enc.encode(line, "en")
        assert out.ids == fe.encode(tiny_tokenizer, line, "en") and out.lang is None
        assert out.text == fe(line, "en")
    assert enc.encode("ሰላም", "am").unknown > 0  # the base tokenizer has no Ethiopic pieces


def test_the_2_5_encoder_normalises_as_infer_v2_5_and_frames_with_the_language(vocab_file: Path):
    enc = open_text_encoder(vocab_file, v25=True)
    assert isinstance(enc, TiktokenText)
    assert enc.normalise("Hello, World!", "en") == "hello, world!"  # zh/en/ja: lower-case
    assert enc.normalise("¡Hola, señor!", "es") == "¡HOLA, SEÑOR!"  # es: upper-case
    am = enc.normalise("ሰላም፣ ለዓለም። 2015", "am")
    assert "፣" not in am and "።" not in am and "2015" not in am  # Ethiopic marks mapped, number spelled out
    line = enc.encode("Hello, World!", "en")
    assert line.lang == language_index("en") == 0
    assert line.ids[0] == enc.vocab.lang_token_id("en")
    assert 0 not in line.ids and 1 not in line.ids and line.dropped == ("!",)  # rank 0 is '!' in the tiny file
    assert enc.encode("   ", "en").ids == []


def test_language_choice_defaults_and_errors():
    am = language_choice("am")
    assert (am.code, am.row, am.released, am.row_init, am.has_token) == ("am", 75, False, "released_mean", True)
    reuse = language_choice("am", "ar")
    assert (reuse.code, reuse.row, reuse.row_init) == ("ar", language_index("ar"), "keep")
    assert language_choice("pt-BR").code == "pt"
    with pytest.raises(ConfigError, match="lang_code"):
        language_choice("am", "amh")
    with pytest.raises(ConfigError, match="lang_row_init"):
        language_choice("am", None, "zeros")


def test_the_tiktoken_stage_keeps_the_vocabulary_and_records_the_choice(vocab_file: Path, tmp_path: Path):
    choice = language_choice("am", "ar")
    result = run_tiktoken_stage(vocab_file, {"am": [LINES[1]] * 3}, choice, tmp_path)
    assert result.model_path.read_bytes() == vocab_file.read_bytes()  # every base id preserved: same file
    assert recorded_choice(result.model_path) == choice
    side = json.loads(result.sidecar_path.read_text())
    assert side["format"] == "indextts-tokenizer-v25/1" and side["frontend"]["lang_code"] == "ar"
    m = result.metrics()
    assert m["pieces_added"] == 0 and m["lang_row"] == language_index("ar") and m["am.tokens_per_char"] > 0
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "`ar`" in report and "row 13" in report and "trained in the release" in report
    # the encoder opened on the stage's file uses the recorded code for every line
    enc = open_text_encoder(result.model_path, v25=True)
    assert enc.encode(LINES[1], "am").lang == language_index("ar")
    assert tokenizer_in(tmp_path, "extended_bpe.model") == result.model_path
    assert tokenizer_in(tmp_path / "nothing", "extended_bpe.model").name == "extended_bpe.model"
    assert recorded_choice(vocab_file) is None  # no stage ran next to the base file
