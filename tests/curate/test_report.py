"""The curate report: its files, its numbers, its listening page."""

from __future__ import annotations

import json

import pytest

from indextts_core.curate.report import write_report

SETTINGS = {"min_duration_s": 1.0, "max_duration_s": 15.0, "min_dnsmos": 2.0, "max_cer": 0.3,
            "notes": ["ASR judge unreliable (CER 0.62 on 8 clips): no CER gate"]}


def kept_row(i: int, speaker: str, method: str, *, dnsmos: float | None = 3.2, cer: float | None = 0.05) -> dict:
    return {"id": f"k{i}", "audio": f"clips/k{i}.flac", "text": f"clip number {i}", "speaker": speaker,
            "language": "am", "duration": 2.0 + i % 5, "recording": f"{speaker}.flac", "start_s": 10.0 * i,
            "end_s": 10.0 * i + 2.0 + i % 5, "dnsmos": dnsmos, "cer": cer, "method": method}


def rejected_row(i: int, reason: str, *, audio: bool, text: str | None = "some text", **numbers) -> dict:
    return {"recording": "alice.flac", "start_s": float(i), "end_s": float(i) + 1.5, "duration": 1.5,
            "reason": reason, "detail": f"{reason} detail {i}", "numbers": numbers, "text": text,
            "audio": f"rejects/{reason}-{i}.flac" if audio else None}


RECORDINGS = [
    {"name": "alice.flac", "speaker": "alice", "duration_s": 1800.0, "method": "subtitles", "digest": "a" * 64,
     "status": "processed"},
    {"name": "bob.flac", "speaker": "bob", "duration_s": 1800.0, "method": "asr", "digest": "b" * 64,
     "status": "reused"},
    {"name": "broken.mp4", "speaker": "carol", "duration_s": None, "method": "transcript", "digest": "c" * 64,
     "status": "processed", "error": "ffmpeg could not decode the audio track"},
]


@pytest.fixture
def synthetic():
    kept = [kept_row(i, "alice" if i % 3 else "bob", "subtitles" if i % 3 else "asr") for i in range(20)]
    rejected = [rejected_row(0, "dnsmos", audio=True, text="<script>alert('x')</script> & co", dnsmos=1.4,
                             threshold=2.0),
                rejected_row(1, "dnsmos", audio=False, dnsmos=1.7, threshold=2.0),
                rejected_row(2, "too_short", audio=True, duration_s=0.4, threshold=1.0),
                rejected_row(3, "duplicate", audio=False, of="k1"),
                rejected_row(4, "cer", audio=True, text=None, cer=0.8, threshold=0.3)]
    return kept, rejected


def test_write_report_writes_every_file_and_the_numbers_add_up(tmp_path, synthetic):
    kept, rejected = synthetic
    summary = write_report(tmp_path, kept=kept, rejected=rejected, recordings=RECORDINGS, settings=SETTINGS,
                           seed=3, listen_kept=6)
    for name in ("report.json", "report.md", "report.html", "durations.png", "dnsmos.png", "cer.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["hours_in"] == pytest.approx(1.0)
    assert summary["recordings"] == {"count": 3, "processed": 2, "reused": 1, "failed": 1, "seconds": 3600.0}
    assert summary["errors"] == [{"recording": "broken.mp4", "error": "ffmpeg could not decode the audio track"}]
    assert summary["kept"]["clips"] == len(kept)
    assert summary["kept"]["seconds"] == pytest.approx(sum(r["duration"] for r in kept))
    by_reason = summary["rejected_by_reason"]
    assert sum(s["clips"] for s in by_reason.values()) == summary["rejected"]["clips"] == len(rejected)
    assert {k: v["clips"] for k, v in by_reason.items()} == {"dnsmos": 2, "cer": 1, "duplicate": 1, "too_short": 1}
    assert list(by_reason)[0] == "dnsmos"
    assert summary["rejected"]["hours"] == pytest.approx(5 * 1.5 / 3600, abs=1e-4)
    assert sum(s["clips"] for s in summary["speakers"].values()) == len(kept)
    assert summary["speakers"]["bob"]["clips"] == 7 and summary["speakers"]["bob"]["recordings"] == 1
    assert summary["methods"]["asr"] == {"recordings": 1, "kept_clips": 7,
                                         "kept_hours": pytest.approx(summary["speakers"]["bob"]["hours"])}
    assert summary["methods"]["transcript"]["kept_clips"] == 0
    assert summary["notes"] == SETTINGS["notes"] and "notes" not in summary["settings"]
    assert summary["dnsmos"]["measured"] == 20 and summary["not_drawn"] == {}
    assert summary["listening"]["rejected"] == {"dnsmos": 1, "cer": 1, "too_short": 1}
    assert len(summary["listening"]["kept"]) == 6


def test_listening_page_has_audio_and_escapes_text(tmp_path, synthetic):
    kept, rejected = synthetic
    summary = write_report(tmp_path, kept=kept, rejected=rejected, recordings=RECORDINGS, settings=SETTINGS,
                           seed=3, listen_kept=6)
    page = (tmp_path / "report.html").read_text()
    assert page.count("<audio controls") == 6 + 3
    assert 'src="rejects/dnsmos-0.flac"' in page and 'src="rejects/dnsmos-1.flac"' not in page
    for clip in summary["listening"]["kept"]:
        assert f'src="clips/{clip}.flac"' in page
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in page
    assert "ASR judge unreliable (CER 0.62 on 8 clips): no CER gate" in page
    assert "DNSMOS OVRL" in page and "dnsmos 1.4" in page
    md = (tmp_path / "report.md").read_text()
    assert "ASR judge unreliable" in md and "| dnsmos | 2 |" in md and "(rejects/too_short-2.flac)" in md
    assert md.count("(clips/k") == 6
    assert "<script>" not in md and "&lt;script&gt;" in md


def test_the_draw_is_seeded(tmp_path, synthetic):
    kept, rejected = synthetic
    args = dict(kept=kept, rejected=rejected, recordings=RECORDINGS, settings=SETTINGS, listen_kept=5)
    a = write_report(tmp_path / "a", seed=1, **args)["listening"]["kept"]
    b = write_report(tmp_path / "b", seed=1, **args)["listening"]["kept"]
    c = write_report(tmp_path / "c", seed=2, **args)["listening"]["kept"]
    assert a == b and a != c
    assert len(write_report(tmp_path / "d", seed=1, **{**args, "listen_kept": 100})["listening"]["kept"]) == 20


def test_missing_measurements_are_not_drawn_and_said(tmp_path):
    kept = [kept_row(i, "alice", "asr", dnsmos=None, cer=None) for i in range(4)]
    (tmp_path / "cer.png").write_bytes(b"stale")
    summary = write_report(tmp_path, kept=kept, rejected=[], recordings=RECORDINGS[:1],
                           settings={"min_dnsmos": None}, seed=0)
    assert (tmp_path / "durations.png").exists()
    assert not (tmp_path / "dnsmos.png").exists() and not (tmp_path / "cer.png").exists()
    assert set(summary["not_drawn"]) == {"dnsmos.png", "cer.png"}
    assert summary["dnsmos"] == {"measured": 0} and summary["rejected"]["clips"] == 0
    md, page = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    assert "dnsmos.png: not drawn" in md and "cer.png: not drawn" in page
    assert "cer.png'" not in page and "durations.png'" in page


def test_empty_run(tmp_path):
    summary = write_report(tmp_path, kept=[], rejected=[], recordings=[], settings={}, seed=0)
    assert summary["hours_in"] == 0 and summary["kept"]["clips"] == 0
    assert set(summary["not_drawn"]) == {"durations.png", "dnsmos.png", "cer.png"}
    assert (tmp_path / "report.html").exists() and (tmp_path / "report.md").exists()


def test_absolute_audio_paths_become_relative(tmp_path):
    row = kept_row(0, "alice", "subtitles")
    row["audio"] = str(tmp_path / "clips" / "k0.flac")
    write_report(tmp_path / "report", kept=[row], rejected=[], recordings=RECORDINGS[:1], settings={}, seed=0)
    assert 'src="../clips/k0.flac"' in (tmp_path / "report" / "report.html").read_text()
