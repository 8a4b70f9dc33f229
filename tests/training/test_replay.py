"""Base-language replay (train.replay_share) and the forgetting alarm (train.forgetting_alarm)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from indextts_core.config import TrainConfig
from indextts_core.errors import InputError
from indextts_core.model.bundle import open_bundle
from indextts_core.training import data as D
from indextts_core.training.validation import (
    forgetting_metrics,
    forgetting_rises,
    forgetting_summary,
    warn_forgetting,
)

REPLAY, NEW = ["zh", "en"], ["am"]


@pytest.fixture(scope="module")
def demo(processed):
    """The demo's training pairs: Amharic (the new language) and English (replay)."""
    conds = D.conditioning_positions(open_bundle(processed.checkpoint).gpt_config)
    data = D.TrainingSet(D.pairs_manifests(processed.train_pairs), conds=conds)
    return data, D.load_pairs(processed.train_pairs, data)


def language(data, s) -> str:
    return data.rows[s.target]["language"]


def tokens(data, samples, replay: bool) -> int:
    return sum(data.cost(s) for s in samples if D.is_replay(language(data, s), REPLAY, NEW) == replay)


@pytest.mark.parametrize("share", [0.1, 0.2, 0.5])
def test_the_mix_reaches_the_share_of_tokens_keeping_every_new_sample_once(demo, share):
    data, samples = demo
    mixed, mix = D.mix_replay(data, samples, share, REPLAY, NEW, seed=1, epoch=0)
    new = [s for s in samples if language(data, s) == "am"]
    assert [s for s in mixed if language(data, s) == "am"] == new  # each once, in order
    assert {language(data, s) for s in mixed} == {"am", "en"}
    achieved = tokens(data, mixed, True) / (tokens(data, mixed, True) + tokens(data, mixed, False))
    assert mix.token_share == pytest.approx(achieved)
    longest = max(data.cost(s) for s in samples)  # within half a replay sample of the target
    assert abs(achieved - share) <= longest / 2 / tokens(data, mixed, False)
    assert mix.new_samples == len(new) and mix.new_tokens == tokens(data, mixed, False)
    assert mix.replay_available == len(samples) - len(new) and mix.replay_drawn == len(mixed) - len(new)
    record = mix.record()
    assert record["epoch"] == 0 and record["token_share"] == round(achieved, 4)
    line = D.mix_line([mix], share)
    assert f"train.replay_share {share:.2f}" in line and f"{100 * achieved:.1f}% of the tokens" in line


def test_more_replay_than_the_data_holds_draws_again(demo):
    data, samples = demo
    mixed, mix = D.mix_replay(data, samples, 0.9, REPLAY, NEW, seed=1, epoch=0)
    replay = [s for s in mixed if language(data, s) == "en"]
    assert mix.replay_drawn == len(replay) > mix.replay_available  # with replacement once the pool is used up
    assert len(set(replay)) == mix.replay_available  # every replay sample drawn before any repeats
    assert mix.token_share == pytest.approx(0.9, abs=0.02)


def test_the_mix_is_a_function_of_seed_and_epoch(demo):
    data, samples = demo
    plan = D.mix_replay(data, samples, 0.15, REPLAY, NEW, seed=1, epoch=0)
    assert plan == D.mix_replay(data, list(samples), 0.15, REPLAY, NEW, seed=1, epoch=0)  # what a resume plans
    assert plan[0] != D.mix_replay(data, samples, 0.15, REPLAY, NEW, seed=1, epoch=1)[0]
    assert plan[0] != D.mix_replay(data, samples, 0.15, REPLAY, NEW, seed=2, epoch=0)[0]


def test_no_share_keeps_the_natural_mix_and_measures_it(demo):
    data, samples = demo
    mixed, mix = D.mix_replay(data, samples, None, REPLAY, NEW, seed=1, epoch=0)
    assert mixed == list(samples) and mix.replay_drawn == mix.replay_available > 0
    assert mix.token_share == pytest.approx(tokens(data, samples, True) / sum(data.cost(s) for s in samples))
    # the run's own language is never replay, even when listed
    _, own = D.mix_replay(data, samples, None, ["en", "am"], ["am"], seed=1, epoch=0)
    assert own.replay_available == mix.replay_available
    assert D.is_replay("zh-CN", ["zh"]) and not D.is_replay("en", ["en"], ["en-US"])


def test_a_share_without_replay_clips_is_an_error_naming_the_field_and_languages(demo):
    data, samples = demo
    with pytest.raises(InputError, match=r"train\.replay_share.*train\.replay_languages: zh.*languages found: am, en"):
        D.mix_replay(data, samples, 0.2, ["zh"], NEW, seed=1, epoch=0)
    D.mix_replay(data, samples, None, ["zh"], NEW, seed=1, epoch=0)  # no share asked: nothing to refuse


def test_the_alarm_fires_above_the_threshold_only(caplog):
    baseline = {"val/loss": 2.0, "val/am/loss": 3.0, "val/en/loss": 2.0, "val/zh/loss": 1.0}
    now = {"val/loss": 1.8, "val/am/loss": 6.0, "val/en/loss": 2.4, "val/zh/loss": 1.05}
    rises = forgetting_rises(now, baseline, REPLAY, NEW)
    assert rises == pytest.approx({"en": 0.2, "zh": 0.05})  # am is the new language: never an alarm
    assert forgetting_metrics(rises, 0.1) == pytest.approx({"forgetting/en": 0.2, "forgetting/zh": 0.05,
                                                            "forgetting/alarm/en": 1.0, "forgetting/alarm/zh": 0.0})
    assert forgetting_metrics(rises, None) == pytest.approx({"forgetting/en": 0.2, "forgetting/zh": 0.05})
    with caplog.at_level(logging.WARNING):
        assert warn_forgetting(7, now, baseline, rises, 0.1) == ["en"]
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "step 7" in line and "en validation loss 2.4000" in line and "20.0% above" in line and "2.0000" in line
    assert warn_forgetting(7, now, baseline, rises, 0.25) == [] and warn_forgetting(7, now, baseline, rises, None) == []
    summary = forgetting_summary(baseline, now, {"en": 0.2, "zh": 0.05}, REPLAY, NEW, 0.1)
    assert summary == {"en": {"baseline": 2.0, "last": 2.4, "worst_rise": 0.2, "alarm": True},
                       "zh": {"baseline": 1.0, "last": 1.05, "worst_rise": 0.05, "alarm": False}}


OPTS = TrainConfig(epochs=1, batch_tokens=1024, learning_rate=1e-3, new_rows_learning_rate=3e-3, warmup_steps=2,
                   val_interval=100, val_audio_samples=0, val_generate=0, export=False)


def test_a_training_run_records_the_mix_and_the_alarm(processed, tmp_path: Path, caplog, monkeypatch):
    """Validations after step 0 read English 20% above its baseline (forced): with forgetting_alarm 0.1 the alarm
    reaches the log, the metrics, the summary and the result; at 0.25 it stays quiet."""
    from indextts_core.training import TrainInputs, TrainResult, train
    from indextts_core.training.metrics import read_metrics
    from indextts_core.training.trainer import Trainer

    real = Trainer._validate
    seen: dict[str, float] = {}

    def forced(self, micro_tokens):
        metrics = real(self, micro_tokens)
        if not seen:
            seen.update(metrics)
        else:
            metrics["val/en/loss"] = seen["val/en/loss"] * 1.2
        return metrics

    monkeypatch.setattr(Trainer, "_validate", forced)
    out = tmp_path / "run"
    cfg = OPTS.model_copy(update={"replay_share": 0.2, "forgetting_alarm": 0.1, "max_steps": 4, "val_interval": 2})
    with caplog.at_level(logging.WARNING):
        result = train(TrainInputs(processed.checkpoint, processed.tokenizer, processed.train_pairs,
                                   processed.val_pairs, out), cfg)
    run = json.loads((out / "train.json").read_text())
    assert run["replay"]["share"] == 0.2 and run["replay"]["new_languages"] == ["am"]
    (epoch,) = run["replay"]["epochs"]
    assert epoch["token_share"] == pytest.approx(0.2, abs=0.05) and epoch["replay_drawn"] > 0
    assert result.replay == run["replay"]["epochs"]
    validations = [r for r in read_metrics(out / "metrics.jsonl") if "val/loss" in r]
    assert [r["step"] for r in validations] == [0, 2, 4]
    assert validations[0]["forgetting/en"] == 0.0 and validations[0]["forgetting/alarm/en"] == 0.0
    for r in validations[1:]:
        assert r["forgetting/en"] == pytest.approx(0.2) and r["forgetting/alarm/en"] == 1.0
        assert "forgetting/am" not in r
    en = result.forgetting["en"]
    assert en["alarm"] is True and en["worst_rise"] == pytest.approx(0.2, abs=1e-5)
    assert en["baseline"] == pytest.approx(seen["val/en/loss"], abs=1e-5)
    assert en["last"] == pytest.approx(1.2 * seen["val/en/loss"], abs=1e-5)
    assert result.alarmed == ["en"]
    assert any("forgetting alarm at step 2: en" in r.getMessage() for r in caplog.records)
    again = TrainResult.from_summary(result.summary_path)
    assert again.forgetting == result.forgetting and again.replay == result.replay

    seen.clear()  # the same rise under a higher threshold: measured, no alarm
    quiet = train(TrainInputs(processed.checkpoint, processed.tokenizer, processed.train_pairs, processed.val_pairs,
                              tmp_path / "quiet"), cfg.model_copy(update={"forgetting_alarm": 0.25}))
    assert quiet.forgetting["en"]["worst_rise"] == pytest.approx(0.2) and quiet.alarmed == []


def test_the_train_task_tags_the_alarm_and_marks_the_validation_table(tmp_path: Path):
    from indextts_core.training import TrainResult
    from tasks.progress import validation_rows
    from tasks.train import mark_forgetting, result_metrics, result_tags

    def result(forgetting, replay=()) -> TrainResult:
        return TrainResult(tmp_path, 4, 1, 4, 1.0, {}, {}, None, False, None, tmp_path / "s.json",
                           forgetting=forgetting, replay=list(replay))

    alarmed = result({"en": {"baseline": 2.0, "last": 2.4, "worst_rise": 0.2, "alarm": True},
                      "zh": {"baseline": 1.0, "last": 1.0, "worst_rise": 0.0, "alarm": False}},
                     [{"replay_available": 9, "token_share": 0.19}, {"replay_available": 9, "token_share": 0.21}])
    assert result_tags(alarmed) == {"forgetting.alarm": "en"}
    assert result_tags(result({})) == {"forgetting.alarm": ""}
    assert result_metrics(alarmed) == pytest.approx({"forgetting.en.worst_rise": 0.2, "forgetting.zh.worst_rise": 0.0,
                                                     "replay.token_share": 0.2})
    metrics = {"val/loss": 2.0, "val/am/loss": 3.0, "val/en/loss": 2.4, "forgetting/en": 0.2,
               "forgetting/alarm/en": 1.0}
    rows = {r["group"]: r for r in mark_forgetting(validation_rows(metrics, 8), metrics)}
    assert rows["en"]["forgetting"] == "+20.0%" and rows["en"]["alarm"] == "ALARM"
    assert rows["all"]["forgetting"] == rows["am"]["alarm"] == ""
    plain = {"val/loss": 2.0}  # no replay language: the table as before
    assert mark_forgetting(validation_rows(plain, 8), plain) == validation_rows(plain, 8)


def test_a_resumed_replay_run_trains_the_same_samples_and_another_share_is_refused(processed, tmp_path: Path):
    from indextts_core.training import TrainInputs, train

    def run(out: Path, **update) -> dict[int, list]:
        steps: dict[int, list] = {}
        train(TrainInputs(processed.checkpoint, processed.tokenizer, processed.train_pairs, processed.val_pairs, out),
              OPTS.model_copy(update={"replay_share": 0.3, "val_generate": 0, **update}),
              on_step=lambda info: steps.__setitem__(info.step, info.sample_ids))
        return steps

    whole = run(tmp_path / "whole", max_steps=6)
    run(tmp_path / "part", max_steps=3)
    rest = run(tmp_path / "part", max_steps=6, resume="auto")
    assert sorted(rest) == [4, 5, 6] and all(rest[k] == whole[k] for k in rest)
    with pytest.raises(InputError, match=r"refusing to resume(.|\n)*sample order"):
        run(tmp_path / "part", max_steps=8, resume="auto", replay_share=0.1)
