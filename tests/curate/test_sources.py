"""Curate inputs: recordings found in folders, files and s3:// prefixes, their sidecars, speakers, digests, decoding."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from indextts_core.config import CurateConfig
from indextts_core.curate import sources
from indextts_core.curate.sources import decode_recording, list_recordings, load_speaker_map, read_text
from indextts_core.curate.types import Recording
from indextts_core.errors import InputError
from tests_support import write_audio

SRT = "1\n00:00:00,100 --> 00:00:00,900\nhello\n"
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


def _cfg(*sources_: object, **kw: object) -> CurateConfig:
    return CurateConfig(sources=[str(s) for s in sources_], **kw)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    write_audio(root / "book" / "ch01.flac", 1.0)
    (root / "book" / "ch01.srt").write_text(SRT)
    (root / "book" / "ch01.json").write_text(json.dumps({"speaker": "Abebe", "title": "one"}))
    write_audio(root / "book" / "ch02.wav", 0.5).rename(root / "book" / "ch02.WAV")  # suffixes: case ignored
    (root / "book" / "ch02.txt").write_text("\ufeffThe whole chapter.", encoding="utf-8")
    write_audio(root / "bare.wav", 0.3)
    write_audio(root / ".cache" / "skip.wav", 0.3)  # hidden: skipped
    write_audio(root / "._bare.wav", 0.3)
    (root / "notes.md").write_text("not audio")
    (root / "orphan.srt").write_text(SRT)
    return root


def test_folder_pairs_sidecars_by_stem(folder: Path):
    recs = list_recordings(_cfg(folder))
    assert [r.name for r in recs] == ["bare.wav", "book/ch01.flac", "book/ch02.WAV"]
    bare, ch01, ch02 = recs
    assert (bare.method, bare.speaker, bare.subtitles, bare.transcript, bare.sidecar) == (
        "asr", "bare", None, None, None)
    assert ch01.method == "subtitles" and ch01.subtitles == str(folder / "book" / "ch01.srt")
    assert ch01.sidecar == str(folder / "book" / "ch01.json") and ch01.speaker == "Abebe"
    assert ch02.method == "transcript" and ch02.speaker == "ch02" and ch02.transcript.endswith("ch02.txt")
    assert bare.uri == str(folder / "bare.wav") and bare.size == (folder / "bare.wav").stat().st_size
    assert read_text(ch02.transcript) == "The whole chapter."


def test_file_source_is_named_by_its_file_name(folder: Path):
    [rec] = list_recordings(_cfg(folder / "book" / "ch01.flac"))
    assert (rec.name, rec.speaker, rec.subtitles) == ("ch01.flac", "Abebe", str(folder / "book" / "ch01.srt"))
    with pytest.raises(InputError, match="no recordings there"):
        list_recordings(_cfg(folder / "book" / "ch01.srt"))


def test_speaker_map_json_by_name_file_name_or_stem(folder: Path, tmp_path: Path):
    path = tmp_path / "speakers.json"
    path.write_text(json.dumps({"book/ch02.WAV": "Sara", "ch01.flac": "Mulu", "bare": "Kebede", "unused": "x"}))
    assert [r.speaker for r in list_recordings(_cfg(folder, speaker_map=str(path)))] == ["Kebede", "Mulu", "Sara"]
    path.write_text(json.dumps({"bare": ["not", "a", "name"]}))
    with pytest.raises(InputError, match="speakers.json: speaker of 'bare' must be"):
        list_recordings(_cfg(folder, speaker_map=str(path)))
    path.write_text("{\n  \"bare\": 1,,\n}")
    with pytest.raises(InputError, match=r"speakers\.json:2: not valid JSON"):
        list_recordings(_cfg(folder, speaker_map=str(path)))


def test_speaker_map_csv_and_its_bad_line(folder: Path, tmp_path: Path):
    path = tmp_path / "speakers.csv"
    path.write_text("recording,speaker\nbare.wav, Kebede \n\n\"book/ch02.WAV\",Sara\n")
    assert [r.speaker for r in list_recordings(_cfg(folder, speaker_map=str(path)))] == ["Kebede", "Abebe", "Sara"]
    assert load_speaker_map(str(path)) == {"bare.wav": "Kebede", "book/ch02.WAV": "Sara"}
    path.write_text("recording,speaker\nbare.wav,Kebede\nch01.flac\n")
    with pytest.raises(InputError, match=r"speakers\.csv:3: expected two columns"):
        list_recordings(_cfg(folder, speaker_map=str(path)))
    path.write_text("bare,A\nbare,B\n")
    with pytest.raises(InputError, match=r"speakers\.csv:2: 'bare' is mapped to 'A' above"):
        load_speaker_map(str(path))
    with pytest.raises(InputError, match=r"must be a \.json or \.csv"):
        list_recordings(_cfg(folder, speaker_map=str(tmp_path / "speakers.yaml")))


def test_bad_sidecar_json_names_the_file(folder: Path):
    (folder / "book" / "ch01.json").write_text("{oops")
    with pytest.raises(InputError, match=r"ch01\.json:1: sidecar is not valid JSON"):
        list_recordings(_cfg(folder))
    (folder / "book" / "ch01.json").write_text(json.dumps({"speaker": {"id": 3}}))
    with pytest.raises(InputError, match=r"ch01\.json: field 'speaker' must name a speaker"):
        list_recordings(_cfg(folder))
    (folder / "book" / "ch01.json").write_text(json.dumps({"narrator": 7}))
    assert list_recordings(_cfg(folder, speaker_field="narrator"))[1].speaker == "7"


def test_duplicate_names_missing_and_empty_sources(folder: Path, tmp_path: Path):
    other = tmp_path / "other"
    write_audio(other / "bare.wav", 0.2)
    with pytest.raises(InputError, match=rf"two recordings named 'bare.wav': {folder / 'bare.wav'} and "
                                         rf"{other / 'bare.wav'}"):
        list_recordings(_cfg(folder, other))
    with pytest.raises(InputError, match=rf"{tmp_path / 'nowhere'}: no such file or folder"):
        list_recordings(_cfg(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.srt").write_text(SRT)
    with pytest.raises(InputError, match=r"empty: no recordings there"):
        list_recordings(_cfg(tmp_path / "empty"))
    assert list_recordings(_cfg()) == []


def test_ambiguous_sidecars_are_errors(folder: Path):
    (folder / "book" / "ch01.vtt").write_text("WEBVTT\n\n00:01.000 --> 00:02.000\nhi\n")
    with pytest.raises(InputError, match=r"ch01\.srt and .*ch01\.vtt"):
        list_recordings(_cfg(folder))
    (folder / "book" / "ch01.vtt").unlink()
    write_audio(folder / "book" / "ch01.wav", 0.2)
    with pytest.raises(InputError, match=r"ch01\.flac and .*ch01\.wav share the stem 'ch01'"):
        list_recordings(_cfg(folder))


def _digests(folder: Path) -> dict[str, str]:
    return {r.name: r.digest for r in list_recordings(_cfg(folder))}


def test_digest_follows_audio_and_sidecar_content_only(folder: Path, monkeypatch: pytest.MonkeyPatch):
    before = _digests(folder)
    assert len(set(before.values())) == 3
    (folder / "book" / "ch01.srt").touch()
    (folder / "notes.md").write_text("other")
    assert _digests(folder) == before
    (folder / "book" / "ch01.srt").write_text(SRT.replace("hello", "hullo"))
    after = _digests(folder)
    assert after["book/ch01.flac"] != before["book/ch01.flac"]
    assert {k: v for k, v in after.items() if k != "book/ch01.flac"} == {
        k: v for k, v in before.items() if k != "book/ch01.flac"}
    (folder / "bare.txt").write_text("a transcript now")
    now = _digests(folder)
    assert now["bare.wav"] != before["bare.wav"]
    monkeypatch.setattr(sources, "_BLOCK", 7)  # streamed in blocks: the block size does not change it
    assert _digests(folder) == now


def test_read_text_rejects_non_utf8(tmp_path: Path):
    (tmp_path / "t.txt").write_bytes("caf\u00e9".encode("latin-1"))
    with pytest.raises(InputError, match=r"t\.txt: not UTF-8 text \(byte 3"):
        read_text(str(tmp_path / "t.txt"))


def _rec(path: Path) -> Recording:
    return Recording(path.name, str(path), "spk", "0" * 64, path.stat().st_size)


def test_decode_soundfile_format_and_resample(tmp_path: Path):
    path = write_audio(tmp_path / "a.flac", 0.5, sr=16000, channels=2)
    wav = decode_recording(_rec(path))
    assert (wav.sample_rate, len(wav.samples), wav.channels) == (16000, 8000, 2)
    assert decode_recording(_rec(path), sample_rate=8000).samples.shape == (4000,)


def _ffmpeg(src: Path, dest: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), *args, str(dest)], check=True)
    return dest


@needs_ffmpeg
def test_decode_video_and_m4a_through_ffmpeg(tmp_path: Path):
    wav = write_audio(tmp_path / "tone.wav", 1.0, sr=16000, channels=2)
    m4a = _ffmpeg(wav, tmp_path / "tone.m4a", "-c:a", "aac")
    out = decode_recording(_rec(m4a), sample_rate=8000)
    assert out.sample_rate == 8000 and abs(out.duration - 1.0) < 0.1 and 0.3 < out.peak < 0.8
    mp4 = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=black:s=32x32:d=1",
                    "-i", str(wav), "-shortest", "-c:v", "mpeg4", "-c:a", "aac", str(mp4)], check=True)
    video = decode_recording(_rec(mp4))
    assert video.sample_rate == 16000 and abs(video.duration - 1.0) < 0.1
    spectrum = np.abs(np.fft.rfft(video.samples[2000:10000]))
    assert abs(np.argmax(spectrum) * 16000 / 8000 - 440) < 5


def test_ffmpeg_missing_and_failing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    if shutil.which("ffmpeg") is not None:
        with pytest.raises(InputError, match=r"broken\.mp4: ffmpeg cannot decode it: .*\S"):
            decode_recording(_rec(bad))
    monkeypatch.setattr(sources.shutil, "which", lambda _name: None)
    with pytest.raises(InputError, match=r"broken\.mp4: decoding \.mp4 needs ffmpeg.*install ffmpeg"):
        decode_recording(_rec(bad))


def test_s3_prefix_and_object_sources(s3_bucket: str, folder: Path, tmp_path: Path):
    import boto3

    client = boto3.client("s3")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        client.upload_file(str(path), s3_bucket, f"rec/{path.relative_to(folder).as_posix()}")
    local = {r.name: r for r in list_recordings(_cfg(folder))}
    remote = list_recordings(_cfg(f"s3://{s3_bucket}/rec"))
    assert [r.name for r in remote] == list(local)
    for r in remote:
        assert (r.digest, r.size, r.speaker, r.method) == (
            local[r.name].digest, local[r.name].size, local[r.name].speaker, local[r.name].method)
    ch01 = remote[1]
    assert ch01.uri == f"s3://{s3_bucket}/rec/book/ch01.flac" and ch01.subtitles == f"s3://{s3_bucket}/rec/book/ch01.srt"
    assert read_text(ch01.subtitles) == SRT
    assert np.allclose(decode_recording(ch01).samples, decode_recording(local["book/ch01.flac"]).samples)
    [one] = list_recordings(_cfg(f"s3://{s3_bucket}/rec/book/ch01.flac"))
    assert (one.name, one.subtitles, one.digest) == ("ch01.flac", ch01.subtitles, ch01.digest)
    with pytest.raises(InputError, match=rf"s3://{s3_bucket}/nothing: no objects found"):
        list_recordings(_cfg(f"s3://{s3_bucket}/nothing"))
    if shutil.which("ffmpeg") is not None:
        m4a = _ffmpeg(write_audio(tmp_path / "t.wav", 0.5, sr=16000), tmp_path / "t.m4a", "-c:a", "aac")
        client.upload_file(str(m4a), s3_bucket, "video/t.m4a")
        [rec] = list_recordings(_cfg(f"s3://{s3_bucket}/video"))
        assert abs(decode_recording(rec).duration - 0.5) < 0.1
