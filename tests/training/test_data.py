"""Training data: token-budget steps, micro-batches, rank shares, pair files, loading."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from indextts_core.errors import InputError
from indextts_core.preprocess.pairs import PairingPolicy
from indextts_core.model.bundle import open_bundle
from indextts_core.training import data as D


def conds_of(processed) -> int:
    return D.conditioning_positions(open_bundle(processed.checkpoint).gpt_config)


@pytest.fixture(scope="module")
def demo(processed):
    data = D.TrainingSet(D.pairs_manifests(processed.train_pairs), conds=conds_of(processed))
    return data, D.load_pairs(processed.train_pairs, data)


def test_conditioning_prefix_comes_from_the_model_config(processed, demo):
    data, _ = demo
    cfg = open_bundle(processed.checkpoint).gpt_config
    assert data.conds == cfg.condition_num_latent + 2 == 34  # 32 speaker latents + 2 speed rows
    assert D.sample_cost(10, 20, conds=data.conds) == data.conds + 12 + 22


def padding_share(data, samples, groups, pad_at_end=True) -> float:
    real = padded = 0
    for g in groups:
        rows = [data.rows[samples[i].target] for i in g]
        real += sum(D.sample_cost(r["text_len"], r["code_len"], conds=data.conds) for r in rows)
        padded += D.padded_cost([r["text_len"] for r in rows], [r["code_len"] for r in rows], pad_at_end,
                                conds=data.conds)
    return 1 - real / padded


def test_epoch_plan_covers_every_sample_once_within_the_budget(demo):
    data, samples = demo
    plan = D.plan_epoch(data, samples, 1024, seed=1, epoch=0)
    assert sorted(i for step in plan for i in step) == list(range(len(samples)))
    for step in plan:
        rows = [data.rows[samples[i].target] for i in step]
        assert len(step) == 1 or D.padded_cost([r["text_len"] for r in rows], [r["code_len"] for r in rows],
                                                conds=data.conds) <= 1024
    # deterministic for (data, seed, epoch, budget); another epoch or seed reorders
    assert plan == D.plan_epoch(data, samples, 1024, seed=1, epoch=0)
    assert plan != D.plan_epoch(data, samples, 1024, seed=1, epoch=1)
    assert plan != D.plan_epoch(data, samples, 1024, seed=2, epoch=0)


def test_length_sorted_steps_pad_less_than_random_batches(demo):
    data, samples = demo
    plan = D.plan_epoch(data, samples, 1024, seed=1, epoch=0)
    size = round(len(samples) / len(plan))
    order = list(range(len(samples)))
    random.Random(0).shuffle(order)
    fixed = [order[i:i + size] for i in range(0, len(order), size)]
    assert padding_share(data, samples, plan) < 0.5 * padding_share(data, samples, fixed)


def test_micro_batches_and_rank_shares_partition_a_step(demo):
    data, samples = demo
    step = max(D.plan_epoch(data, samples, 4096, seed=1, epoch=0), key=len)
    for budget in (4096, 700, 300, 1):
        micro = D.split_micro(data, samples, step, budget)
        assert sorted(i for m in micro for i in m) == sorted(step)
        costs = [D.padded_cost(*zip(*[(data.rows[samples[i].target]["text_len"], data.rows[samples[i].target]["code_len"])
                                      for i in m]), conds=data.conds) for m in micro]
        assert all(c <= budget or len(m) == 1 for c, m in zip(costs, micro))
    assert len(D.split_micro(data, samples, step, 1)) == len(step)  # the floor: one sample each
    shares = [D.rank_share(data, samples, step, r, 3) for r in range(3)]
    assert sorted(i for s in shares for i in s) == sorted(step)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    text_n, mel_n = D.step_counts(data, samples, step)
    assert text_n == sum(data.rows[samples[i].target]["text_len"] + 1 for i in step)


def test_every_rank_gets_a_sample_in_every_step(demo):
    data, samples = demo
    plan = D.plan_epoch(data, samples, 200, seed=1, epoch=0, min_per_step=4)  # tiny budget: single-sample steps
    assert all(len(s) >= 4 for s in plan)
    assert sorted(i for s in plan for i in s) == list(range(len(samples)))


def test_pair_file_errors_name_the_line(processed, tmp_path: Path):
    data = D.TrainingSet(D.pairs_manifests(processed.train_pairs), conds=conds_of(processed))
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"target": "spk01_am_001", "prompt": "spk01_am_002", "emotion": "spk01_am_002"}\n'
                   '{"target": "nope", "prompt": "spk01_am_002", "emotion": "spk01_am_002"}\n')
    with pytest.raises(InputError, match=r"pairs.jsonl:2: clip 'nope' is not in the index"):
        D.load_pairs(bad, data)
    bad.write_text('{"target": "spk01_am_001"}\n')
    with pytest.raises(InputError, match=r"pairs.jsonl:1: missing field\(s\) prompt, emotion"):
        D.load_pairs(bad, data)
    with pytest.raises(InputError, match="cannot tell which index"):
        D.pairs_manifests(bad)


def test_loading_and_collation(processed, demo):
    data, samples = demo
    loaded = [D.load_sample(data, s) for s in samples[:5]]
    batch = D.collate(loaded, conds=data.conds)
    assert batch.text_ids.shape == (5, int(batch.text_lengths.max()))
    assert batch.speaker_latents.shape[:2] == (5, 32) and batch.emotion_vectors.shape[0] == 5
    assert batch.real_tokens <= batch.padded_tokens
    assert [x.ids for x in loaded] == batch.sample_ids
    # threads only change timing, never order
    assert list(D.prefetch(lambda s: s.target, samples, workers=3, lookahead=4)) == [s.target for s in samples]


def test_fresh_samples_change_prompts_not_targets(demo):
    data, samples = demo
    targets = sorted({s.target for s in samples})
    policy = PairingPolicy(seed=5)
    e0, e1 = D.fresh_samples(data, targets, policy, 0), D.fresh_samples(data, targets, policy, 1)
    assert {s.target for s in e0} == {s.target for s in e1} == set(targets)
    assert e0 != e1 and e0 == D.fresh_samples(data, targets, policy, 0)
