"""Manifest readers: JSONL, LJSpeech, audio folder; provenance of every row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests_support import write_audio
from indextts_core.errors import ManifestError
from indextts_core.data.manifest import detect_format, parse_row, read_manifest


def test_jsonl_rows_carry_file_and_line(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    path.write_text(
        json.dumps({"id": "a", "audio": "a.wav", "text": "hi", "speaker": "s", "language": "en"}) + "\n\n"
        + '{"id": "b", "audio": "b.wav", "text": "x"\n'
        + "[1, 2]\n",
        encoding="utf-8",
    )
    rows = list(read_manifest(path))
    assert [(r.line, r.error is None) for r in rows] == [(1, True), (3, False), (4, False)]
    assert rows[0].base_dir == str(tmp_path.resolve())
    assert "invalid JSON" in rows[1].error and rows[1].where == f"{path}:3"
    assert "expected a JSON object" in rows[2].error
    assert parse_row(rows[0]).id == "a"


def test_jsonl_defaults_fill_missing_fields_only(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"id": "a", "audio": "a.wav", "text": "hi", "speaker": "s1"}) + "\n"
                    + json.dumps({"id": "b", "audio": "b.wav", "text": "hi", "language": "en"}) + "\n",
                    encoding="utf-8")
    a, b = (parse_row(r) for r in read_manifest(path, language="am", speaker="dflt"))
    assert (a.language, a.speaker) == ("am", "s1")
    assert (b.language, b.speaker) == ("en", "dflt")


def test_schema_errors_name_the_field(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"id": "", "audio": "a.wav", "speaker": "s", "language": "english",
                                "duration": -1}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as e:
        parse_row(next(read_manifest(path)))
    for field in ("'id'", "'text'", "'language'", "'duration'"):
        assert field in str(e.value)


def test_extra_fields_are_kept(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"id": "a", "audio": "a.wav", "text": "t", "speaker": "s", "language": "am",
                                "gender": "f", "emotion": "happy"}) + "\n", encoding="utf-8")
    row = parse_row(next(read_manifest(path)))
    assert row.model_dump()["gender"] == "f" and row.emotion == "happy"


def test_ljspeech_folder(tmp_path: Path):
    root = tmp_path / "LJSpeech-mini"
    write_audio(root / "wavs" / "LJ001-0001.wav")
    write_audio(root / "wavs" / "LJ001-0002.wav")
    (root / "metadata.csv").write_text(
        "LJ001-0001|Printing, in 1 sense|Printing, in one sense\n"
        "LJ001-0002|No normalized column\n"
        "broken-line-without-text\n",
        encoding="utf-8",
    )
    assert detect_format(root) == "ljspeech"
    rows = list(read_manifest(root, language="en"))
    first, second = parse_row(rows[0]), parse_row(rows[1])
    assert first.text == "Printing, in one sense"  # the normalized column wins
    assert second.text == "No normalized column"
    assert first.audio == "wavs/LJ001-0001.wav" and first.speaker == "LJSpeech-mini"
    assert rows[2].error and rows[2].line == 3


def test_audio_folder_speaker_from_subfolder(tmp_path: Path):
    root = tmp_path / "corpus"
    write_audio(root / "alice" / "c1.flac")
    (root / "alice" / "c1.txt").write_text("hello from alice\n", encoding="utf-8")
    write_audio(root / "bob" / "day1" / "c2.wav")
    (root / "bob" / "day1" / "c2.txt").write_text("hello from bob", encoding="utf-8")
    write_audio(root / "top.wav")
    (root / "top.txt").write_text("at the root", encoding="utf-8")
    write_audio(root / "alice" / "orphan.wav")  # no transcript
    (root / "bob" / "lonely.txt").write_text("no audio", encoding="utf-8")
    assert detect_format(root) == "folder"
    rows = list(read_manifest(root, language="en"))
    good = {parse_row(r).id: parse_row(r) for r in rows if r.error is None}
    assert good["alice_c1"].speaker == "alice" and good["alice_c1"].audio == "alice/c1.flac"
    assert good["bob_day1_c2"].speaker == "bob"
    assert good["top"].speaker == "corpus"
    errors = {Path(r.source).name: r.error for r in rows if r.error}
    assert errors == {"orphan.wav": "no transcript (.txt file with the same name)",
                      "lonely.txt": "transcript without an audio file"}


def test_missing_manifest_and_unknown_format(tmp_path: Path):
    with pytest.raises(ManifestError, match="manifest not found"):
        list(read_manifest(tmp_path / "nope.jsonl"))
    with pytest.raises(ManifestError, match="unknown manifest format"):
        list(read_manifest(tmp_path, "csv"))


def test_non_utf8_line_is_a_row_error_naming_its_line(tmp_path: Path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"text": "ok"}\n{"text": "caf\xe9"}\n'.encode("latin-1"))
    first, second = read_manifest(path)
    assert first.error is None and second.line == 2
    assert second.error == "not UTF-8 text (invalid continuation byte at byte 14 of the line)"
