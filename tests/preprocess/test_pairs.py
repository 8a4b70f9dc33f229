"""Prompt/target pairs: never self, deterministic, same speaker, emotion source, reporting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indextts_core.utils.fileio import read_jsonl, write_jsonl
from indextts_core.config import PairsConfig
from indextts_core.preprocess.pairs import PairingPolicy, build_pairs


def _rows(counts: dict[str, int]) -> list[dict]:
    return [{"id": f"{s}_{i}", "speaker": s, "language": "am"} for s, n in counts.items() for i in range(n)]


def test_prompts_are_other_clips_of_the_same_speaker_and_deterministic():
    rows = _rows({"a": 6, "b": 3, "c": 2})
    policy = PairingPolicy(PairsConfig(pairs_per_target=2), seed=7)
    pairs, stats = policy.pairs(rows)
    assert all(p.prompt != p.target for p in pairs)
    speaker = {r["id"]: r["speaker"] for r in rows}
    assert all(speaker[p.prompt] == speaker[p.target] == p.speaker for p in pairs)
    assert stats.pairs == len(pairs) == 6 * 2 + 3 * 2 + 2 * 1  # c's clips have one other clip each
    assert stats.short_of_prompts == 2
    per_target = {}
    for p in pairs:
        per_target.setdefault(p.target, []).append(p.prompt)
    assert all(len(set(v)) == len(v) for v in per_target.values())  # distinct prompts per target
    again, _ = PairingPolicy(PairsConfig(pairs_per_target=2), seed=7).pairs(list(reversed(rows)))
    assert sorted(pairs, key=lambda p: (p.target, p.prompt)) == sorted(again, key=lambda p: (p.target, p.prompt))
    other_seed, _ = PairingPolicy(PairsConfig(pairs_per_target=2), seed=8).pairs(rows)
    assert other_seed != pairs


def test_fresh_prompts_each_epoch():
    rows = _rows({"a": 20})
    policy = PairingPolicy(PairsConfig(pairs_per_target=1), seed=1)
    e0, e1 = policy.pairs(rows, epoch=0)[0], policy.pairs(rows, epoch=1)[0]
    assert e0 == policy.pairs(rows, epoch=0)[0]
    assert sum(a.prompt != b.prompt for a, b in zip(e0, e1)) > 10


def test_single_clip_speakers_are_reported_or_self_prompted():
    rows = _rows({"a": 4, "lonely": 1})
    pairs, stats = PairingPolicy().pairs(rows)
    assert "lonely" not in {p.speaker for p in pairs} and stats.skipped_speakers == {"lonely": 1}
    assert any("single clip" in w for w in stats.warnings)
    pairs, stats = PairingPolicy(PairsConfig(allow_self_prompt=True)).pairs(rows)
    (solo,) = [p for p in pairs if p.speaker == "lonely"]
    assert solo.prompt == solo.target == "lonely_0" and stats.self_prompted == 1


@pytest.mark.parametrize("source", ["prompt", "target", "mix"])
def test_emotion_source(source: str):
    pairs, _ = PairingPolicy(PairsConfig(pairs_per_target=3, emotion_source=source), seed=3).pairs(_rows({"a": 30}))
    from_target = sum(p.emotion == p.target for p in pairs)
    from_prompt = sum(p.emotion == p.prompt for p in pairs)
    assert from_target + from_prompt == len(pairs)
    if source == "prompt":
        assert from_prompt == len(pairs)
    elif source == "target":
        assert from_target == len(pairs)
    else:
        assert 0.3 * len(pairs) < from_target < 0.7 * len(pairs)


def test_imbalance_warning():
    _, stats = PairingPolicy(PairsConfig(pairs_per_target=1)).pairs(_rows({"big": 60, "s1": 3, "s2": 3, "s3": 3}))
    assert stats.imbalance == 20.0 and any("imbalance" in w for w in stats.warnings)


def test_build_pairs_files_with_a_val_pool(tmp_path: Path):
    train, val = tmp_path / "train_manifest.jsonl", tmp_path / "val_manifest.jsonl"
    write_jsonl(train, _rows({"a": 5, "b": 4}))
    write_jsonl(val, [{"id": "a_val", "speaker": "a", "language": "am"}, {"id": "b_val", "speaker": "b",
                                                                           "language": "am"}])
    # validation targets take prompts from every clip of their speaker (train included)
    result = build_pairs(val, tmp_path / "GPT_pairs_val.jsonl", PairingPolicy(PairsConfig(pairs_per_target=2)), [train, val])
    pairs = read_jsonl(result.path)
    assert len(pairs) == 4 and all(p["prompt"] != p["target"] for p in pairs)
    meta = json.loads(result.report_json.read_text())
    assert meta["manifests"] == ["val_manifest.jsonl", "train_manifest.jsonl"]
    assert meta["stats"]["per_speaker"] == {"a": 2, "b": 2}
    assert "| a | 2 |" in result.report_md.read_text()
