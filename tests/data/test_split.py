"""Deterministic per-speaker train/validation split."""

from __future__ import annotations

import random

from indextts_core.data.split import split_by_speaker


def _rows(counts: dict[str, int], lang: str = "am") -> list[dict]:
    return [{"id": f"{spk}_{i:03d}", "speaker": spk, "language": lang} for spk, n in counts.items() for i in range(n)]


def test_every_eligible_speaker_is_in_val_and_singletons_stay_in_train():
    rows = _rows({"big": 40, "mid": 5, "three": 3, "two": 2, "one": 1})
    train, val = split_by_speaker(rows, 0.1, 3, seed=7)
    val_by = {s: sum(r["speaker"] == s for r in val) for s in ("big", "mid", "three", "two", "one")}
    assert val_by == {"big": 4, "mid": 1, "three": 1, "two": 0, "one": 0}
    assert len(train) + len(val) == len(rows)
    assert {r["id"] for r in train}.isdisjoint({r["id"] for r in val})
    assert any(r["speaker"] == "one" for r in train)


def test_split_is_deterministic_and_independent_of_row_order():
    rows = _rows({"a": 20, "b": 11, "c": 7})
    _, val1 = split_by_speaker(rows, 0.2, 3, seed=1)
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    _, val2 = split_by_speaker(shuffled, 0.2, 3, seed=1)
    assert {r["id"] for r in val1} == {r["id"] for r in val2}
    _, val3 = split_by_speaker(rows, 0.2, 3, seed=2)
    assert {r["id"] for r in val1} != {r["id"] for r in val3}


def test_each_language_of_a_speaker_is_stratified():
    rows = _rows({"s": 10}, "am") + [{"id": f"s_en_{i}", "speaker": "s", "language": "en"} for i in range(4)]
    _, val = split_by_speaker(rows, 0.1, 3, seed=3)
    assert sorted(r["language"] for r in val) == ["am", "en"]


def test_growing_data_keeps_most_validation_clips():
    before = _rows({"a": 100})
    after = _rows({"a": 120})
    _, v1 = split_by_speaker(before, 0.1, 3, seed=5)
    _, v2 = split_by_speaker(after, 0.1, 3, seed=5)
    kept = {r["id"] for r in v1} & {r["id"] for r in v2}
    assert len(kept) >= 8  # of 10: new clips displace few old validation clips


def test_never_puts_a_whole_speaker_in_val():
    train, val = split_by_speaker(_rows({"x": 3}), 0.9, 3, seed=0)
    assert len(val) == 2 and len(train) == 1


def test_zero_fraction_means_no_val():
    rows = _rows({"x": 10})
    assert split_by_speaker(rows, 0.0, 3, seed=0) == (rows, [])


def test_held_out_speakers_go_entirely_to_validation():
    rows = [{"id": f"{s}_{i}", "speaker": s, "language": "am"} for s in ("a", "b", "c") for i in range(10)]
    train, val = split_by_speaker(rows, 0.2, 3, seed=1, val_speakers=["c"])
    assert {r["speaker"] for r in train} == {"a", "b"}
    assert {r["id"] for r in val} >= {f"c_{i}" for i in range(10)}
    assert sum(r["speaker"] == "a" for r in val) == 2  # the others still hold out a share of their clips
    train, val = split_by_speaker(rows, 0.0, 3, seed=1, val_speakers=["b"])
    assert {r["speaker"] for r in val} == {"b"} and len(train) == 20
