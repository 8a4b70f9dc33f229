"""Tokenizer extension on a small base model (trained by the tests) and the demo corpus."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

from indextts_core.errors import ConfigError, InputError
from indextts_core.config import ExtendBpeConfig
from indextts_core.text.extend_bpe import BASE_PROBE, check_frontend, extend_bpe, read_sidecar
from indextts_core.text.frontend import TextFrontend
from tests_support import DEMO_DIR


@pytest.fixture(scope="module")
def fe() -> TextFrontend:
    return TextFrontend()


@pytest.fixture(scope="module")
def amharic(fe: TextFrontend) -> list[str]:
    rows = [json.loads(line) for line in (DEMO_DIR / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    return [fe(r["text"], "am") for r in rows if r["language"] == "am"]


@pytest.fixture(scope="module")
def probe(fe: TextFrontend) -> list[str]:
    return [fe(x, "base") for x in (BASE_PROBE).read_text(encoding="utf-8").splitlines() if x]


@pytest.fixture(scope="module")
def extended(base_tokenizer_path: Path, amharic: list[str], probe: list[str], fe: TextFrontend,
             tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("ext") / "extended_bpe.model"
    result = extend_bpe(base_tokenizer_path, {"am": amharic}, probe, out, ExtendBpeConfig(target_size=24000),
                        frontend=fe.fingerprint())
    return result


def _proto(path: Path) -> pb.ModelProto:
    proto = pb.ModelProto()
    proto.ParseFromString(path.read_bytes())
    return proto


def test_base_pieces_and_specs_are_byte_identical(extended, base_tokenizer_path: Path):
    base, ext = _proto(base_tokenizer_path), _proto(extended.model_path)
    n = len(base.pieces)
    assert extended.base_size == n and len(ext.pieces) == extended.vocab_size > n
    assert [p.SerializeToString() for p in ext.pieces[:n]] == [p.SerializeToString() for p in base.pieces]
    assert ext.normalizer_spec.SerializeToString() == base.normalizer_spec.SerializeToString()
    assert ext.trainer_spec.SerializeToString() == base.trainer_spec.SerializeToString()
    assert all(p.type == pb.ModelProto.SentencePiece.NORMAL for p in ext.pieces[n:])


def test_loads_with_plain_sentencepiece_and_keeps_special_ids(extended):
    sp = spm.SentencePieceProcessor(model_file=str(extended.model_path))
    assert sp.GetPieceSize() == extended.vocab_size
    assert (sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2)
    assert sp.Encode("ሰላም ነው?", out_type=str)  # the official TextTokenizer calls Encode this way


def test_no_new_language_unknowns_and_zero_drift(extended, amharic: list[str], probe: list[str],
                                                 base_tokenizer_path: Path):
    base = spm.SentencePieceProcessor(model_file=str(base_tokenizer_path))
    ext = spm.SentencePieceProcessor(model_file=str(extended.model_path))
    assert all(ext.unk_id() not in ext.EncodeAsIds(line) for line in amharic)
    assert sum(base.unk_id() in base.EncodeAsIds(line) for line in amharic) > 40  # the base could not
    assert [ext.EncodeAsIds(x) for x in probe] == [base.EncodeAsIds(x) for x in probe]
    assert extended.base_drift == 0.0
    stats = extended.languages["am"]
    assert stats.unk_char_rate_before > 0.8 and stats.unk_char_rate_after == 0.0
    assert stats.added_token_share > 0.5


def test_characters_first_then_useful_pieces(extended, base_tokenizer_path: Path):
    ext = _proto(extended.model_path)
    n = extended.base_size
    added = [p.piece for p in ext.pieces[n:]]
    chars, longer = added[: extended.chars_added], added[extended.chars_added:]
    assert all(len(c) == 1 for c in chars) and all(len(p.replace("▁", "")) > 1 for p in longer)
    assert extended.pieces_added == len(longer) > 0
    # the demo corpus is small: the stage stops short of 24000 and says so
    assert extended.stopped_early and "short of target_size=24000" in extended.note


def test_report_sidecar_and_frontend_record(extended, fe: TextFrontend):
    report = json.loads(extended.report_json.read_text())
    assert report["rows_rule"] == f"{extended.vocab_size} pieces -> number_text_tokens: {extended.vocab_size} -> " \
                                  f"{extended.vocab_size + 1} rows in text_embedding and text_head"
    assert report["added"] == {"characters": extended.chars_added, "pieces": extended.pieces_added}
    assert report["base_drift"]["changed_sentences"] == 0
    assert 0 < report["heldout_piece_usage"] <= 1
    assert extended.report_png.read_bytes()[:4] == b"\x89PNG"
    assert "| am |" in extended.report_md.read_text()
    side = read_sidecar(extended.model_path)
    assert side["vocab_size"] == extended.vocab_size and side["model_rows"] == extended.vocab_size + 1
    assert side["frontend"]["sha256"] == fe.fingerprint()["sha256"]
    check_frontend(extended.model_path, fe.fingerprint())
    with pytest.raises(InputError, match="front-end"):
        check_frontend(extended.model_path, {"name": "other", "version": "9", "sha256": "0" * 64})


def test_target_size_edge_cases(base_tokenizer_path: Path, amharic: list[str], probe: list[str], tmp_path: Path):
    n = len(_proto(base_tokenizer_path).pieces)
    with pytest.raises(ConfigError, match=f"below the base model's {n} pieces"):
        extend_bpe(base_tokenizer_path, {"am": amharic}, probe, tmp_path / "a.model",
                   ExtendBpeConfig(target_size=n - 1))
    same = extend_bpe(base_tokenizer_path, {"am": amharic}, probe, tmp_path / "b.model",
                      ExtendBpeConfig(target_size=n))
    assert same.vocab_size == n and (tmp_path / "b.model").read_bytes() == base_tokenizer_path.read_bytes()
    assert "no room for" in same.note and "stay <unk>" in same.note
    tight = extend_bpe(base_tokenizer_path, {"am": amharic}, probe, tmp_path / "c.model",
                       ExtendBpeConfig(target_size=n + 40))
    assert tight.vocab_size == n + 40 and tight.chars_added == 40 and tight.pieces_added == 0
    assert "no room for" in tight.note  # the rarest characters are the ones left out
    roomy = extend_bpe(base_tokenizer_path, {"am": amharic}, probe, tmp_path / "d.model",
                       ExtendBpeConfig(target_size=n + 140))
    assert roomy.vocab_size == n + 140 and not roomy.note


def test_latin_script_language_and_the_drift_bound(base_tokenizer_path: Path, probe: list[str], tmp_path: Path):
    """A new language in the base's own script: zero drift by default, bounded drift when allowed."""
    words = ["LA", "CASA", "ES", "GRANDE", "PERO", "EL", "PERRO", "COME", "MUCHO", "CON", "SU", "AMIGO", "TODOS",
             "LOS", "DIAS", "BAJO", "SOL", "CAMINAMOS", "HASTA", "PUEBLO"]
    lines = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(8)) for i in range(120)]
    strict = extend_bpe(base_tokenizer_path, {"es": lines}, probe, tmp_path / "s.model", ExtendBpeConfig())
    assert strict.base_drift == 0.0
    base = spm.SentencePieceProcessor(model_file=str(base_tokenizer_path))
    ext = spm.SentencePieceProcessor(model_file=str(strict.model_path))
    assert [ext.EncodeAsIds(x) for x in probe] == [base.EncodeAsIds(x) for x in probe]
    loose = extend_bpe(base_tokenizer_path, {"es": lines}, probe, tmp_path / "l.model",
                       ExtendBpeConfig(max_base_drift=0.3))
    assert loose.pieces_added > strict.pieces_added  # mined scores: the new language can use its pieces
    assert loose.base_drift <= 0.3
    assert loose.languages["es"].tokens_per_char_after < strict.languages["es"].tokens_per_char_after


def test_bad_inputs_are_named(base_tokenizer_path: Path, tmp_path: Path):
    with pytest.raises(InputError, match="base tokenizer model not found"):
        extend_bpe(tmp_path / "missing.model", {"am": ["ሰላም"]}, [], tmp_path / "x.model")
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(InputError, match="not a SentencePiece model"):
        extend_bpe(tmp_path / "junk.model", {"am": ["ሰላም"]}, [], tmp_path / "x.model")
    with pytest.raises(InputError, match="no text"):
        extend_bpe(base_tokenizer_path, {"am": ["  "]}, [], tmp_path / "x.model")


def test_cli_extend_bpe_as_the_seed_writes_it(base_tokenizer_path: Path, tmp_path: Path, prefect_env: dict[str, str]):
    from tests_support import cli

    shutil.copy(base_tokenizer_path, tmp_path / "bpe.model")
    out = cli("extend-bpe", "--base-model", str(tmp_path / "bpe.model"), "--manifests",
              str(DEMO_DIR / "manifest.jsonl"), "--output-model", str(tmp_path / "tokenizers" / "extended_bpe.model"),
              "--target-size", "24000", cwd=tmp_path,
              env=prefect_env).stdout
    assert "300 -> " in out and "base ids 0..299 unchanged" in out and "base-language drift: 0.00%" in out
    assert (tmp_path / "tokenizers" / "extended_bpe.json").is_file()
    helptext = cli("extend-bpe", "--help").stdout
    for flag in ("--base-model", "--manifests", "--output-model", "--target-size", "--max-base-drift",
                 "--language", "--min-char-count"):
        assert flag in helptext


def test_raw_text_through_the_official_front_end_alone_has_no_unk(base_tokenizer_path: Path, amharic: list[str],
                                                                  probe: list[str], fe: TextFrontend,
                                                                  tmp_path: Path):
    """Found in use: the extension mined text after the Amharic normaliser (``።`` -> ``.``), so raw Amharic typed
    into the official inference hit ``<unk>`` on 43 of the 48 demo sentences.  The raw lines' characters get pieces
    now, and the report shows ``<unk>`` on raw text next to normalised text."""
    rows = [json.loads(line) for line in (DEMO_DIR / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    raw = [fe.official_only(r["text"]) for r in rows if r["language"] == "am"]
    assert sum("።" in x for x in raw) > 40  # the official steps keep the Ethiopic full stop
    old = extend_bpe(base_tokenizer_path, {"am": amharic}, probe, tmp_path / "old" / "m.model",
                     ExtendBpeConfig(target_size=24000))
    new = extend_bpe(base_tokenizer_path, {"am": amharic}, probe, tmp_path / "new" / "m.model",
                     ExtendBpeConfig(target_size=24000), raw_corpus={"am": raw})

    def unk_lines(model: Path) -> int:
        sp = spm.SentencePieceProcessor(model_file=str(model))
        return sum(sp.unk_id() in sp.EncodeAsIds(x) for x in raw)

    assert unk_lines(old.model_path) > 40 and unk_lines(new.model_path) == 0
    assert new.languages["am"].unk_char_rate_raw == 0.0 and new.languages["am"].unk_char_rate_after == 0.0
    assert "after, raw text" in new.report_md.read_text()
    assert [p for p in _proto(new.model_path).pieces if p.piece == "።"]  # the Ethiopic full stop is a piece
