"""Ingest: every rejection reason is reported with its file and line; nothing is dropped silently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests_support import DEMO_DIR, write_audio
from indextts_core.config import IngestConfig
from indextts_core.data.ingest import ManifestInput, ingest
from indextts_core.errors import ManifestError
from indextts_core.utils.fileio import read_json, read_jsonl, sha256_file
from indextts_core.store.objects import open_store


def _row(i: str, audio: str, text: str = "ሰላም ነው", speaker: str = "s1", **kw: object) -> str:
    return json.dumps({"id": i, "audio": audio, "text": text, "speaker": speaker, "language": "am", **kw},
                      ensure_ascii=False)


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    """A manifest with good rows and one row for every rejection reason."""
    d = tmp_path / "data"
    for name in ("good1", "good2", "good3", "dup"):
        write_audio(d / f"{name}.wav", seconds=1.2)
    write_audio(d / "short.wav", seconds=0.2)
    write_audio(d / "long.flac", seconds=3.5)
    (d / "corrupt.wav").write_bytes(b"RIFF1234WAVEfmt garbage garbage")
    (d / "empty.wav").write_bytes(b"")
    lines = [
        _row("good1", "good1.wav"),                              # 1
        _row("good2", str((d / "good2.wav").resolve())),         # 2 absolute path
        '{"id": "broken", "audio": "x.wav", ',                   # 3 invalid JSON
        json.dumps({"id": "noschema", "audio": "good3.wav"}),    # 4 missing text/speaker/language
        _row("good1", "dup.wav"),                                # 5 duplicate id
        _row("blank", "good3.wav", text=" \u200b\t\u00a0"),       # 6 whitespace-only text
        _row("missing", "nope.wav"),                             # 7 audio missing
        _row("corrupt", "corrupt.wav"),                          # 8 undecodable
        _row("empty", "empty.wav"),                              # 9 empty file
        _row("short", "short.wav"),                              # 10 too short
        _row("long", "long.flac"),                               # 11 too long
        _row("good3", "good3.wav", duration=9.0),                # 12 wrong declared duration: corrected
    ]
    (d / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


def test_every_rejection_reason_is_reported(messy: Path, tmp_path: Path):
    out = tmp_path / "out"
    opts = IngestConfig(min_duration_s=0.5, max_duration_s=3.0, max_rejected_fraction=1.0, val_fraction=0.0)
    result = ingest([ManifestInput(messy / "manifest.jsonl")], out, opts)
    rejects = read_jsonl(result.rejects)
    by_line = {r["line"]: r for r in rejects}
    expected = {3: "invalid_row", 4: "schema", 5: "duplicate_id", 7: "audio_missing", 8: "audio_decode",
                9: "audio_decode", 10: "too_short", 11: "too_long"}
    for line, code in expected.items():
        assert by_line[line]["reason_code"] == code, by_line[line]
        assert f"manifest.jsonl:{line}" in by_line[line]["reason"]
    assert "first seen at" in by_line[5]["reason"] and by_line[5]["id"] == "good1"
    assert "nope.wav" in by_line[7]["reason"]
    assert by_line[9]["reason"].endswith("audio file is empty (0 bytes)")
    assert "0.20 s is below min_duration_s=0.5" in by_line[10]["reason"]
    assert by_line[3]["row"].startswith('{"id": "broken"')  # the raw text is kept
    # nothing lost: every row read is either accepted or rejected
    accepted = read_jsonl(result.manifest)
    assert result.rows_read == 12 == len(accepted) + len(rejects)
    assert sorted(r["id"] for r in accepted) == ["good1", "good2", "good3"]
    report = read_json(result.report_json)
    assert report["rejected"] == len(rejects) and report["duration_corrected"] == 1
    assert report["rejected_by_reason"]["audio_decode"] == 2


def test_whitespace_only_text_is_rejected(messy: Path, tmp_path: Path):
    result = ingest([ManifestInput(messy / "manifest.jsonl")], tmp_path / "o",
                    IngestConfig(max_duration_s=3.0, max_rejected_fraction=1.0))
    reasons = {r["line"]: r["reason_code"] for r in read_jsonl(result.rejects)}
    assert reasons[6] == "empty_text"


def test_accepted_rows_are_complete(messy: Path, tmp_path: Path):
    result = ingest([ManifestInput(messy / "manifest.jsonl")], tmp_path / "o",
                    IngestConfig(max_duration_s=3.0, max_rejected_fraction=1.0))
    rows = {r["id"]: r for r in read_jsonl(result.manifest)}
    good1 = rows["good1"]
    assert good1["audio"] == str((messy / "good1.wav").resolve())
    assert good1["audio_sha256"] == sha256_file(messy / "good1.wav")
    assert good1["sample_rate"] == 22050 and good1["duration"] == pytest.approx(1.2, abs=1e-3)
    assert good1["source"].endswith("manifest.jsonl:1")
    assert rows["good3"]["duration"] == pytest.approx(1.2, abs=1e-3)  # measured, not the declared 9.0


def test_too_many_rejects_fail_after_writing_the_rejects_file(messy: Path, tmp_path: Path):
    out = tmp_path / "o"
    with pytest.raises(ManifestError, match=r"9 of 12 rows rejected \(75%\).*rejects\.jsonl"):
        ingest([ManifestInput(messy / "manifest.jsonl")], out, IngestConfig(max_duration_s=3.0))
    assert len(read_jsonl(out / "rejects.jsonl")) == 9


def test_nothing_usable_is_an_error(tmp_path: Path):
    (tmp_path / "m.jsonl").write_text(_row("a", "missing.wav") + "\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="no usable rows"):
        ingest([ManifestInput(tmp_path / "m.jsonl")], tmp_path / "o")


def test_several_manifests_and_formats_together(tmp_path: Path):
    lj = tmp_path / "lj"
    write_audio(lj / "wavs" / "x1.wav", seconds=1.0)
    (lj / "metadata.csv").write_text("x1|first|\n", encoding="utf-8")
    folder = tmp_path / "folder"
    write_audio(folder / "spkA" / "y1.ogg", seconds=1.0)
    (folder / "spkA" / "y1.txt").write_text("second", encoding="utf-8")
    result = ingest([ManifestInput(lj, language="en", speaker="lj"), ManifestInput(folder, language="en")],
                    tmp_path / "o", IngestConfig())
    rows = {r["id"]: r for r in read_jsonl(result.manifest)}
    assert rows["x1"]["speaker"] == "lj" and rows["spkA_y1"]["speaker"] == "spkA"
    assert result.rejected == 0


def test_s3_audio_uris(s3_bucket: str, tmp_path: Path):
    store = open_store(f"s3://{s3_bucket}")
    clip = write_audio(tmp_path / "c.flac", seconds=1.0)
    store.put_file(clip, "audio/c.flac")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(_row("c", f"s3://{s3_bucket}/audio/c.flac") + "\n"
                        + _row("gone", f"s3://{s3_bucket}/audio/gone.flac") + "\n", encoding="utf-8")
    result = ingest([ManifestInput(manifest)], tmp_path / "o", IngestConfig(max_rejected_fraction=1.0))
    (row,) = read_jsonl(result.manifest)
    assert row["audio"] == f"s3://{s3_bucket}/audio/c.flac" and row["audio_sha256"] == sha256_file(clip)
    (rej,) = read_jsonl(result.rejects)
    assert rej["reason_code"] == "audio_missing" and "gone.flac" in rej["reason"]


def test_demo_dataset_ingests_cleanly(tmp_path: Path):
    result = ingest([ManifestInput(DEMO_DIR / "manifest.jsonl")], tmp_path / "o", IngestConfig(), seed=1234)
    assert (result.rows_read, result.accepted, result.rejected) == (60, 60, 0)
    assert result.speakers == 4 and result.languages == {"am": 48, "en": 12}
    val = read_jsonl(result.val)
    assert {r["speaker"] for r in val} == {"spk01", "spk02", "spk03", "spk04"}
    assert result.histogram.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| spk01 |" in result.report_md.read_text(encoding="utf-8")


def test_store_copy_of_a_dataset_gets_store_uris(tmp_path: Path, demo_copy: Path):
    """In the flow, audio is written as its URI in the artifact store, sources relative to the dataset."""
    out = tmp_path / "o"
    result = ingest([ManifestInput(demo_copy / "manifest.jsonl")], out, IngestConfig(), dataset_root=demo_copy,
                    audio_base="s3://bucket/store/assets/dataset/abc")
    row = read_jsonl(result.manifest)[0]
    assert row["audio"] == "s3://bucket/store/assets/dataset/abc/audio/spk01_am_001.flac"
    assert row["source"] == "manifest.jsonl:1"


def test_other_trainers_field_names_are_mapped_not_rejected(tmp_path: Path):
    """Found in use: a manifest with ``audio_path``/``speaker_id`` (the community trainers' names) had 60 of 60 rows
    rejected.  Common names are recognised, others are mapped explicitly, and the report says what was renamed."""
    for name in ("a", "b", "c"):
        write_audio(tmp_path / "wavs" / f"{name}.wav", seconds=1.0)
    rows = [{"audio_path": "wavs/a.wav", "text": "hello there", "speaker_id": "s1", "language": "en"},
            {"audio_path": "wavs/b.wav", "text": "good morning", "speaker_id": "s1", "language": "en"}]
    (tmp_path / "community.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = ingest([ManifestInput(tmp_path / "community.jsonl")], tmp_path / "o", IngestConfig())
    kept = {r["id"]: (r["speaker"], Path(r["audio"]).name) for r in read_jsonl(result.manifest)}
    assert kept == {"a": ("s1", "a.wav"), "b": ("s1", "b.wav")} and result.rejected == 0
    assert result.report["fields_renamed"] == {"audio_path -> audio": 2, "speaker_id -> speaker": 2,
                                               "audio file name -> id": 2}
    assert "fields renamed from the manifest's own names: audio_path -> audio (2 rows)" in \
        (tmp_path / "o" / "report.md").read_text()
    # a name nobody guesses: mapped explicitly
    (tmp_path / "odd.jsonl").write_text(json.dumps({"clip": "wavs/c.wav", "words": "hi", "who": "s2",
                                                    "language": "en", "id": "c"}) + "\n", encoding="utf-8")
    odd = ingest([ManifestInput(tmp_path / "odd.jsonl", fields={"audio": "clip", "text": "words", "speaker": "who"})],
                 tmp_path / "o2", IngestConfig())
    assert [r["speaker"] for r in read_jsonl(odd.manifest)] == ["s2"]


def test_field_map_targets_are_checked():
    from indextts_core.config import ManifestSource
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="wav: not a manifest field"):
        ManifestSource(path="m.jsonl", fields={"wav": "audio_path"})
