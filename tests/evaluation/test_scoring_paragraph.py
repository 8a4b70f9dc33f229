"""last_sentence_cer: the paragraph probe's last sentence against the transcript's best-matching tail."""

from __future__ import annotations

import random

import pytest

from indextts_core.evaluation.scoring import _tail_distance, last_sentence_cer


def _edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        diag, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diag + (x != y))
    return row[-1]


def test_tail_distance_is_the_minimum_over_start_positions():
    rng = random.Random(0)
    for _ in range(500):
        ref = "".join(rng.choice("abc") for _ in range(rng.randint(1, 6)))
        hyp = "".join(rng.choice("abc") for _ in range(rng.randint(0, 12)))
        assert _tail_distance(ref, hyp) == min(_edit_distance(ref, hyp[s:]) for s in range(len(hyp) + 1))


def test_last_sentence_said_at_the_end():
    sentences = ("The first one.", "Then the last one.")
    assert last_sentence_cer(sentences, "the first one then the last one") == 0.0
    assert last_sentence_cer(sentences, "something else entirely, then the last one!") == 0.0


def test_missing_last_sentence_is_about_one():
    sentences = ("The first one.", "Quiet zebras jump.")
    assert last_sentence_cer(sentences, "the first one") == pytest.approx(1.0, abs=0.2)
    assert last_sentence_cer(sentences, "") == 1.0
    assert last_sentence_cer(sentences, "...") == 1.0
    assert last_sentence_cer(sentences, "the first one and a long ramble about nothing") <= 1.0  # never above


def test_trailing_babble_costs():
    sentences = ("A.", "Then the last one.")
    clean = last_sentence_cer(sentences, "a then the last one")
    babble = last_sentence_cer(sentences, "a then the last one la la")
    assert clean == 0.0 and babble == pytest.approx(4 / len("thenthelastone"))


def test_ethiopic_punctuation_and_spaces_are_ignored():
    sentences = ("ሰላም ነው።", "ደህና ነህ፧")
    assert last_sentence_cer(sentences, "ሰላም ነው. ደህናነህ?") == 0.0
    assert last_sentence_cer(sentences, "ሰላም ነው፡ደህና፡ነህ።") == 0.0


def test_errors():
    with pytest.raises(ValueError, match="no sentences"):
        last_sentence_cer([], "x")
    with pytest.raises(ValueError, match="empty"):
        last_sentence_cer(["a", "።"], "x")
