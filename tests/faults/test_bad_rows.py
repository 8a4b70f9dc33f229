"""Bad input is reported per row (file, line, reason), never a whole-manifest failure, never trained on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from indextts_core.config import IngestConfig
from indextts_core.data.ingest import ManifestInput, ingest
from tests_support import DEMO_DIR


def _demo_rows(n: int) -> list[dict]:
    return [json.loads(x) for x in (DEMO_DIR / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[:n]]


def _dataset(tmp_path: Path, lines: list[bytes]) -> Path:
    root = tmp_path / "data"
    shutil.copytree(DEMO_DIR / "audio", root / "audio")
    (root / "manifest.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return root / "manifest.jsonl"


def _run(manifest: Path, out: Path):
    result = ingest([ManifestInput(manifest)], out, IngestConfig(max_rejected_fraction=1.0))
    rejects = [json.loads(x) for x in result.rejects.read_text(encoding="utf-8").splitlines()]
    return result, rejects


def test_bom_non_utf8_line_and_punctuation_only_text(tmp_path: Path):
    rows = _demo_rows(5)
    rows[3]["text"] = "?!... -- ,"
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in rows]
    lines[0] = b"\xef\xbb\xbf" + lines[0]  # a BOM before row 1: row 1 is kept
    lines[2] = lines[2].replace(b'"text": "', b'"text": "\xff\xfe', 1)  # one line that is not UTF-8
    result, rejects = _run(_dataset(tmp_path, lines), tmp_path / "out")
    by_line = {r["line"]: r for r in rejects}
    assert result.accepted == 3 and set(by_line) == {3, 4}  # rows 1, 2 and 5 kept
    assert by_line[3]["reason_code"] == "invalid_row" and "not UTF-8 text" in by_line[3]["reason"]
    assert "manifest.jsonl:3" in by_line[3]["reason"]
    assert by_line[4]["reason_code"] == "no_speakable_text"


def test_a_truncated_wav_is_rejected_not_trained_on(tmp_path: Path):
    rows = _demo_rows(2)
    rows[1]["audio"] = "audio/cut.wav"
    manifest = _dataset(tmp_path, [json.dumps(r, ensure_ascii=False).encode() for r in rows])
    wav = manifest.parent / "audio" / "cut.wav"
    sf.write(wav, np.full(44100, 0.1, dtype=np.float32), 22050, subtype="PCM_16")  # 2.0 s declared
    wav.write_bytes(wav.read_bytes()[: 44 + 2 * 14700])  # 0.67 s present
    result, rejects = _run(manifest, tmp_path / "out")
    (bad,) = rejects
    assert result.accepted == 1 and bad["line"] == 2 and "truncated" in bad["reason"]
    assert "declares 2.00 s but the file holds 0.67 s" in bad["reason"]


def test_audio_outside_the_stored_dataset_is_a_reject_not_a_local_path(tmp_path: Path):
    """A worker elsewhere could never read an absolute path on this machine: the row says so."""
    rows = _demo_rows(2)
    elsewhere = tmp_path / "elsewhere" / "x.flac"
    elsewhere.parent.mkdir()
    shutil.copy(DEMO_DIR / rows[1]["audio"], elsewhere)
    rows[1]["audio"] = str(elsewhere)
    manifest = _dataset(tmp_path, [json.dumps(r, ensure_ascii=False).encode() for r in rows])
    result = ingest([ManifestInput(manifest)], tmp_path / "out", IngestConfig(max_rejected_fraction=1.0),
                    dataset_root=manifest.parent, audio_base="store://datasets/d")
    (bad,) = [json.loads(x) for x in result.rejects.read_text(encoding="utf-8").splitlines()]
    assert result.accepted == 1 and bad["reason_code"] == "audio_outside_dataset" and bad["line"] == 2
