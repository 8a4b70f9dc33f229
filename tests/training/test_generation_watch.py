"""Validation that listens: stop rate, length ratio and repetition of decoded validation pairs."""

from __future__ import annotations

import pytest
import torch

from indextts_core.generation.metrics import item_metrics, longest_run, repeated_ngram_share
from indextts_core.model.bundle import open_bundle
from indextts_core.preprocess.pairs import PairingPolicy
from indextts_core.training import distributed as dd
from indextts_core.training.data import conditioning_positions
from indextts_core.training.generation_watch import GenerationWatch
from indextts_core.training.samples import open_data, validation_samples
from indextts_core.training.setup import prepare_model

SOLO = dd.Dist(rank=0, world=1, local_rank=0)


def test_item_metrics():
    assert longest_run([3, 3, 3, 5, 5, 3]) == 3 and longest_run([]) == 0
    assert repeated_ngram_share([1, 2, 3, 4, 1, 2, 3, 4]) == pytest.approx(1 / 5)
    assert repeated_ngram_share([1, 2, 1, 2, 1, 2, 1, 2]) == pytest.approx(3 / 5)  # a loop
    assert repeated_ngram_share([1, 2, 3]) == 0.0
    assert item_metrics([7, 7, 8], True, 6) == (1.0, 0.5, 2.0, 0.0)


@pytest.fixture(scope="module")
def watch_setup(processed):
    model = prepare_model(open_bundle(processed.checkpoint), processed.tokenizer, True, True, 0.0, False).model
    model.eval()
    data = open_data(processed.train_pairs, processed.val_pairs, None, conditioning_positions(model.cfg))
    samples = validation_samples(data, processed.val_pairs, PairingPolicy(seed=1))
    seen = {data.rows[s.target]["speaker"] for s in samples[:2]}  # some speakers "unseen", to get both groups
    return model, data, samples, seen


def _watch(watch_setup, n=6, decoding="greedy"):
    model, data, samples, seen = watch_setup
    return model, GenerationWatch(data, samples, seen, n, decoding, 2.0, seed=5)


def test_groups_are_per_language_and_speaker_and_readings_repeat(watch_setup):
    model, watch = _watch(watch_setup, decoding="infer_v2")
    languages = {watch.data.rows[s.target]["language"] for s in watch.samples}
    assert len(watch.samples) == 6 and languages == {"am", "en"}  # spread over the languages
    first = watch(model, SOLO, torch.device("cpu"), None)
    for group in ("", "am/", "en/", "seen_speakers/", "unseen_speakers/"):
        for name in ("stop_rate", "length_ratio", "longest_run", "repeated_4gram"):
            assert f"gen/{group}{name}" in first
    assert first["gen/items"] == 6 and watch.seconds > 0
    assert watch(model, SOLO, torch.device("cpu"), None) == first  # same pairs, same random streams


def test_a_model_that_never_stops_is_visible_at_once(watch_setup):
    model, watch = _watch(watch_setup)
    stop = model.cfg.stop_mel_token
    with torch.no_grad():
        saved = model.mel_head.bias[stop].item()
        try:
            model.mel_head.bias[stop] = -1e4  # never stops
            never = watch(model, SOLO, torch.device("cpu"), None)
            model.mel_head.bias[stop] = 1e4  # stops at once
            at_once = watch(model, SOLO, torch.device("cpu"), None)
        finally:
            model.mel_head.bias[stop] = saved
    assert never["gen/stop_rate"] == 0.0 and never["gen/length_ratio"] > 1.9  # at the cap (2x the reference + 10)
    assert at_once["gen/stop_rate"] == 1.0 and at_once["gen/length_ratio"] == 0.0
