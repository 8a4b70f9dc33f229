"""infer_v2's text segmentation, on cases worked out from the official rules."""

from __future__ import annotations

from indextts_core.synthesis.segments import split_segments


def test_sentences_end_segments_and_short_neighbours_merge():
    tokens = ["▁HELLO", "▁WORLD", "▁.", "▁THIS", "▁IS", "▁."]
    assert split_segments(tokens) == [tokens]  # 3 + 3 tokens fit in 120: merged back
    assert split_segments(tokens, max_tokens=4) == [tokens[:3], tokens[3:]]


def test_commas_cut_the_running_segment():
    tokens = ["▁A", "▁B", "▁,", "▁C", "▁D"]
    assert split_segments(tokens) == [tokens]
    assert split_segments(tokens, max_tokens=4) == [tokens[:3], tokens[3:]]


def test_too_long_without_marks_is_cut_by_length_as_released():
    tokens = [f"▁T{i}" for i in range(10)]
    assert [len(s) for s in split_segments(tokens, max_tokens=4)] == [4, 1, 4, 1]
    assert sum(split_segments(tokens, max_tokens=4), []) == tokens  # nothing lost


def test_an_apostrophe_after_a_mark_goes_with_both_segments_as_released():
    tokens = ["▁IT", "▁IS", "▁.", "'", "▁OK", "▁."]
    assert split_segments(tokens, max_tokens=4) == [["▁IT", "▁IS", "▁.", "'"], ["'", "▁OK", "▁."]]


def test_empty():
    assert split_segments([]) == []
