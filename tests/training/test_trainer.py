"""The trainer end to end on the tiny bundle: learning, export, exact resume, refusals, OOM, data parallel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from indextts_core.errors import InputError
from indextts_core.model.checkpoint import load_gpt, read_state_dict
from indextts_core.utils.oom import GpuOOM
from indextts_core.config import TrainConfig
from indextts_core.training import TrainInputs, train
from indextts_core.training.metrics import read_metrics

HERE = Path(__file__).resolve().parent
OPTS = TrainConfig(epochs=2, batch_tokens=1024, learning_rate=1e-3, new_rows_learning_rate=3e-3, warmup_steps=2,
                    val_interval=4, val_audio_samples=0)
STEPS = 42  # 2 epochs x 21 steps of <= 1024 padded tokens on the demo pairs
EPOCH = 21


def inputs(processed, out: Path, **kw) -> TrainInputs:
    return TrainInputs(processed.checkpoint, processed.tokenizer, processed.train_pairs, processed.val_pairs, out, **kw)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


class Recorder:
    def __init__(self):
        self.steps: dict[int, list] = {}

    def __call__(self, info) -> None:
        self.steps[info.step] = info.sample_ids


@pytest.fixture(scope="module")
def reference(processed, tmp_path_factory):
    """One uninterrupted run, with the samples of every step."""
    out = tmp_path_factory.mktemp("reference") / "trained_ckpts"
    rec = Recorder()
    result = train(inputs(processed, out), OPTS, on_step=rec)
    return out, result, rec.steps


def run_child(spec: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    return subprocess.run([sys.executable, str(HERE / "child.py"), json.dumps(spec, default=str)], env=env,
                          capture_output=True, text=True, timeout=300)


def test_training_learns_keeps_base_rows_and_exports_an_official_checkpoint(reference, processed):
    out, result, steps = reference
    assert result.steps == STEPS and len(steps) == STEPS and result.epochs_done == 2
    # every training pair once per epoch
    pairs = [json.loads(line) for line in processed.train_pairs.read_text().splitlines()]
    want = sorted((p["target"], p["prompt"], p["emotion"]) for p in pairs)
    for epoch in range(2):
        seen = sorted(tuple(x) for s in range(epoch * EPOCH + 1, (epoch + 1) * EPOCH + 1) for x in steps[s])
        assert seen == want
    # validation losses fall from the step-0 baseline, per language too
    assert result.final["val/loss"] < result.baseline["val/loss"] - 0.3
    assert result.final["val/mel_top1"] > result.baseline["val/mel_top1"]
    assert {"val/am/loss", "val/en/loss"} <= set(result.final)

    # the export: the official layout, strict reload, vocabulary from the tokenizer
    export = result.export_dir
    assert result.export_verified
    meta = json.loads((export / "indextts-export.json").read_text())
    vocab = meta["tokenizer"]["vocab_size"]
    model = load_gpt(export, strict=True)
    assert model.cfg.number_text_tokens == vocab and model.text_embedding.weight.shape[0] == vocab + 1
    assert (export / processed.tokenizer.name).read_bytes() == processed.tokenizer.read_bytes()
    assert meta["step"] == result.best_step and meta["fingerprint"]["vocab_size"] == vocab

    # base rows byte-identical to the base checkpoint; new rows trained
    base = read_state_dict(processed.checkpoint / "gpt.pth")
    trained = read_state_dict(export / "gpt.pth")
    n = meta["tokenizer"]["base_vocab"]
    for key in ("text_embedding.weight", "text_head.weight", "text_head.bias"):
        assert torch.equal(trained[key][:n], base[key][:n]), key
    from indextts_core.model.bundle import open_bundle
    from indextts_core.training.setup import prepare_model

    start = prepare_model(open_bundle(processed.checkpoint), processed.tokenizer).model.state_dict()
    assert not torch.equal(trained["text_embedding.weight"][n:vocab], start["text_embedding.weight"][n:vocab])
    # frozen conditioning stays the base's (the cached latents were computed with it)
    for key in base:
        if key.startswith(("conditioning_encoder", "perceiver_encoder", "emo_", "speed_emb")):
            assert torch.equal(trained[key], base[key]), key
    assert result.base_rows_unchanged is True


def test_logs_checkpoints_and_retention(reference):
    out, result, _ = reference
    # the last 3 step files, plus latest and best; no temporary files
    assert sorted(p.name for p in out.glob("model_step*.pth")) == ["model_step36.pth", "model_step40.pth",
                                                                   "model_step42.pth"]
    assert not list(out.glob(".*.tmp"))
    assert_bit_identical(weights(out / "latest.pth"), weights(out / "model_step42.pth"))
    best = torch.load(out / "best.pth", weights_only=True)
    assert best["progress"]["step"] == result.best_step
    assert best["metrics"]["val/loss"] == pytest.approx(result.best_value)
    ck = torch.load(out / "latest.pth", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "progress", "rng", "fingerprint"} <= set(ck)
    assert {"python", "numpy", "torch"} <= set(ck["rng"][0])
    assert set(ck["fingerprint"]) >= {"tokenizer_sha256", "vocab_size", "model_config_sha256",
                                      "base_checkpoint_sha256", "data_sha256"}

    rows = read_metrics(out / "metrics.jsonl")
    train_steps = [r["step"] for r in rows if "train/loss" in r]
    assert train_steps == list(range(1, STEPS + 1))
    first = next(r for r in rows if "train/loss" in r)
    for key in ("train/loss", "train/text_loss", "train/mel_loss", "train/mel_top1", "train/lr", "train/grad_norm",
                "train/tokens_per_s", "train/samples_per_s", "train/padding_share", "train/memory_gb"):
        assert key in first, key
    val_steps = [r["step"] for r in rows if "val/loss" in r]
    assert val_steps == [0, 4, 8, 12, 16, 20, 21, 24, 28, 32, 36, 40, 42]  # baseline, every 4, epoch ends
    assert max(r["train/padding_share"] for r in rows if "train/loss" in r) < 0.15

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (out / "logs").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events))
    acc.Reload()
    assert ({"train/loss", "train/text_loss", "train/mel_loss", "train/mel_top1", "val/loss"}
            <= set(acc.Tags()["scalars"]))
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, STEPS + 1))
    info = json.loads((out / "train.json").read_text())
    assert info["steps_per_epoch"] == [EPOCH, EPOCH] and info["planned_padding_share"] < 0.1


def test_training_logs_generation_at_step_0_and_every_validation(reference):
    out, result, _ = reference
    rows = read_metrics(out / "metrics.jsonl")
    gen_steps = [r["step"] for r in rows if "gen/stop_rate" in r]
    val_steps = [r["step"] for r in rows if "val/loss" in r]
    assert gen_steps == val_steps and gen_steps[0] == 0
    first = next(r for r in rows if "gen/stop_rate" in r)
    assert {"gen/am/stop_rate", "gen/en/stop_rate", "gen/am/length_ratio", "gen/en/repeated_4gram"} <= set(first)
    assert any("time/generate_s" in r for r in rows)
    assert "gen/stop_rate" in result.baseline  # the base model's reading, for comparison


@pytest.mark.slow
@pytest.mark.parametrize("kill", [{"kill_after_step": 6}, {"kill_after_checkpoint": EPOCH}],
                         ids=["mid-epoch", "epoch-boundary"])
def test_killed_run_resumed_with_auto_ends_bit_identical(kill, reference, processed, tmp_path: Path):
    ref_out, _, ref_steps = reference
    out = tmp_path / "trained_ckpts"
    spec = {"inputs": {**asdict(inputs(processed, out)), "pairing": None},
            "options": OPTS.model_copy(update={"resume": "auto"}).model_dump(), "seed": 1234,
            "threads": torch.get_num_threads(), **kill}
    proc = run_child(spec)
    assert proc.returncode == -9, proc.stderr[-2000:]  # SIGKILL: no clean-up ran
    saved = torch.load(out / "latest.pth", weights_only=True)["progress"]
    if "kill_after_checkpoint" in kill:
        assert (saved["step"], saved["epoch"], saved["step_in_epoch"]) == (EPOCH, 1, 0)
    else:
        assert (saved["step"], saved["epoch"], saved["step_in_epoch"]) == (4, 0, 4)
    rec = Recorder()
    result = train(inputs(processed, out), OPTS.model_copy(update={"resume": "auto"}), on_step=rec)
    # continues with exactly the next step, replays nothing it had saved, ends on the same weights
    assert sorted(rec.steps) == list(range(saved["step"] + 1, STEPS + 1))
    assert all(rec.steps[s] == ref_steps[s] for s in rec.steps)
    assert result.steps == STEPS
    assert_bit_identical(weights(out / "latest.pth"), weights(ref_out / "latest.pth"))
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows if "train/loss" in r] == list(range(1, STEPS + 1))  # no duplicated points
    assert result.baseline == pytest.approx(reference[1].baseline)


def test_resume_from_a_given_checkpoint_file(reference, processed, tmp_path: Path):
    ref_out, _, ref_steps = reference
    out = tmp_path / "trained_ckpts"
    shutil.copytree(ref_out, out)
    rec = Recorder()
    train(inputs(processed, out), OPTS.model_copy(update={"resume": str(out / "model_step36.pth")}), on_step=rec)
    assert sorted(rec.steps) == list(range(37, STEPS + 1))
    assert_bit_identical(weights(out / "latest.pth"), weights(ref_out / "latest.pth"))


def test_mismatched_checkpoint_is_refused_and_warm_start_keeps_only_weights(reference, processed, tmp_path: Path):
    ref_out, _, _ = reference
    out = tmp_path / "trained_ckpts"
    shutil.copytree(ref_out, out)
    # other data: a pair file with one pair fewer
    data = tmp_path / "processed_data"
    shutil.copytree(processed.data, data, ignore=shutil.ignore_patterns("features"))
    (data / "features").symlink_to(processed.data / "features")
    lines = (data / "GPT_pairs_train.jsonl").read_text().splitlines()
    (data / "GPT_pairs_train.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    other = TrainInputs(processed.checkpoint, processed.tokenizer, data / "GPT_pairs_train.jsonl",
                        data / "GPT_pairs_val.jsonl", out)
    auto = OPTS.model_copy(update={"resume": "auto"})
    refused = r"refusing to resume(.|\n)*training data .*\(data_sha256\)(.|\n)*--warm-start"
    with pytest.raises(InputError, match=refused):
        train(other, auto)
    with pytest.raises(InputError, match=r"sample order"):
        train(inputs(processed, out), auto.model_copy(update={"batch_tokens": 2048}))
    # a fresh run into a folder holding checkpoints is refused rather than mixed in
    with pytest.raises(InputError, match="already holds checkpoints"):
        train(inputs(processed, out), OPTS)
    # a deliberate warm start: the weights only, a new run from step 0, in a new folder
    new = tmp_path / "warm"
    rec = Recorder()
    opts = OPTS.model_copy(update={"max_steps": 3, "export": False, "resume": str(out / "best.pth"),
                                   "warm_start": True})
    result = train(TrainInputs(processed.checkpoint, processed.tokenizer, data / "GPT_pairs_train.jsonl",
                               data / "GPT_pairs_val.jsonl", new), opts, on_step=rec)
    assert sorted(rec.steps) == [1, 2, 3] and result.steps == 3
    # the step-0 validation ran on the warm-started weights, not the base
    assert result.baseline["val/loss"] < reference[1].baseline["val/loss"] - 0.3


def test_oom_in_a_step_halves_micro_batches_and_keeps_the_samples(processed, tmp_path: Path):
    opts = OPTS.model_copy(update={"max_steps": 8, "micro_batch_tokens": 1024, "export": False,
                           "dropout": 0.0})
    ref, rec_ref = tmp_path / "ref", Recorder()
    train(inputs(processed, ref), opts, on_step=rec_ref)
    fired = []

    def fault(step: int, micro: int, ids) -> None:
        if step == 3 and not fired:
            fired.append(step)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")

    out, rec = tmp_path / "oom", Recorder()
    infos = []
    train(inputs(processed, out), opts, on_step=lambda i: (rec(i), infos.append(i)), before_micro=fault)
    assert fired == [3]
    assert rec.steps == rec_ref.steps  # same samples in every step, none skipped or repeated
    assert [i.micro_tokens for i in infos] == [1024, 1024] + [512] * 6  # halved from the failed step on
    assert infos[2].micro_batches >= 2  # the failed step ran again as more, smaller micro-batches
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["oom_backoffs"] == 1 and summary["micro_batch_tokens"] == 512
    # with padding at the end of each sample the split does not change the step's gradient
    a, b = weights(ref / "latest.pth"), weights(out / "latest.pth")
    base = read_state_dict(processed.checkpoint / "gpt.pth")
    moved = max((a[k] - base[k]).abs().max().item() for k in base if base[k].shape == a[k].shape)
    diff = max((a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point())
    assert diff < 0.01 * moved, (diff, moved)  # summation-order noise only (Adam amplifies it near zero)

    def always(step: int, micro: int, ids) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    with pytest.raises(GpuOOM):
        train(inputs(processed, tmp_path / "never"), opts, before_micro=always)


def test_invalid_best_metric_names_the_choices(processed, tmp_path: Path):
    opts = OPTS.model_copy(update={"best_metric": "fr/loss", "max_steps": 1})
    with pytest.raises(InputError, match=r"best_metric: 'fr/loss'.*am/loss"):
        train(inputs(processed, tmp_path / "x"), opts)


def test_fresh_prompts_each_epoch_from_an_index_manifest(processed, tmp_path: Path):
    rec = Recorder()
    opts = OPTS.model_copy(update={"export": False})
    train(TrainInputs(processed.checkpoint, processed.tokenizer, processed.data / "train_manifest.jsonl",
                      processed.val_pairs, tmp_path / "fresh"), opts, on_step=rec)
    info = json.loads((tmp_path / "fresh" / "train.json").read_text())
    epochs = [[tuple(x) for s, ids in rec.steps.items() if (s <= info["steps_per_epoch"][0]) == (e == 0) for x in ids]
              for e in (0, 1)]
    assert {t for t, _, _ in epochs[0]} == {t for t, _, _ in epochs[1]}  # the same targets
    assert set(epochs[0]) != set(epochs[1])  # with other prompts
    assert all(t != p for t, p, _ in epochs[0] + epochs[1])  # never prompted by themselves


def test_a_failed_run_flushes_its_metrics(processed, tmp_path: Path):
    """A metric sink that buffers (MLflow's does, 500 metrics at a time) is flushed when training fails."""

    class Buffered:
        def __init__(self):
            self.pending, self.flushed = [], []

        def log(self, metrics, step):
            self.pending.append((step, dict(metrics)))

        def close(self):
            self.flushed += self.pending
            self.pending = []

    def crash(info):
        if info.step == 3:
            raise RuntimeError("the machine went away")

    sink = Buffered()
    with pytest.raises(RuntimeError, match="went away"):
        train(inputs(processed, tmp_path / "out"), OPTS.model_copy(update={"export": False}), sinks=[sink],
              on_step=crash)
    assert sorted({step for step, _ in sink.flushed}) == [0, 1, 2, 3] and not sink.pending


def test_exporting_the_same_weights_again_gives_the_same_bytes(processed, tmp_path: Path):
    """A rerun that exports the same checkpoint again makes the same folder (one artifact, one digest)."""

    opts = OPTS.model_copy(update={"max_steps": 2})
    first = train(inputs(processed, tmp_path / "out"), opts)
    before = _file_hashes(first.export_dir)
    again = train(inputs(processed, tmp_path / "out"), opts.model_copy(update={"resume": "auto"}))
    assert again.export_dir == first.export_dir and again.steps == first.steps == 2  # max_steps holds on resume
    assert _file_hashes(again.export_dir) == before
    assert not list(first.export_dir.parent.glob(".export*"))  # nothing half-written left behind


def _file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (the Qwen emotion folder included), by relative path."""
    from indextts_core.utils.fileio import sha256_file

    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}
