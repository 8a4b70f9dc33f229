"""The curate stage in the pipeline: before ingest when curate.sources is set; its clips stored once, in the store's
units, which ingest reads by their store: keys; a recording added later is the only one processed."""

from __future__ import annotations

from pathlib import Path

import pytest

from curate_support import RECORDINGS, copy_recordings
from flows.stage import stage_flow
from indextts_core.utils.fileio import read_jsonl
from tests_support import make_cfg, statuses

pytestmark = pytest.mark.slow


def test_ingest_takes_the_curated_recordings_and_a_new_recording_is_the_only_one_processed(tmp_path: Path):
    src = copy_recordings(tmp_path / "recordings", ["lecture_spk05.flac", "story_spk06.flac"])
    options = {"curate.sources": [str(src)], "curate.speaker_map": str(RECORDINGS / "speakers.csv"), "curate.min_dnsmos": None, "ingest.val_min_speaker_clips": 2,
               "download.asr": {"source": "tiny://0"}}
    first = stage_flow(make_cfg(tmp_path, options), "ingest")
    assert statuses(first) == {"download": "ran", "curate": "ran", "ingest": "ran"}
    curated = first.results["curate"]["metrics"]
    assert curated["recordings_processed"] == 2 and curated["kept"] > 10
    # the tiny random Whisper cannot read Amharic: said so, and the given text is kept without a CER gate
    assert "cannot read this language" in first.results["curate"]["data"]["judge"]
    manifest = read_jsonl(Path(first.results["ingest"]["artifact"]["uri"]) / "manifest.jsonl")
    assert len(manifest) == curated["kept"] and {r["speaker"] for r in manifest} == {"spk05", "spk06"}
    assert all(r["audio"].startswith("store:curate/units/") for r in manifest)  # the units' clips, not copies
    store = Path(first.store)
    assert len(list(store.glob("curate/units/*/*/unit.json"))) == 2
    assert not list((store / "artifacts" / "curate").rglob("clips"))  # the stage's output holds no clip copies

    copy_recordings(src, ["interview_spk07.flac"])
    second = stage_flow(make_cfg(tmp_path, options), "ingest")
    again = second.results["curate"]["metrics"]
    assert (again["recordings_processed"], again["recordings_reused"]) == (1, 2)
    assert len(list(store.glob("curate/units/*/*/unit.json"))) == 3  # the store shows the one new unit
    assert again["rejected.no_text"] >= 5 and again["kept"] == curated["kept"]  # no trusted judge for the interview
