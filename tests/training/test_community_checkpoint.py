"""Warm starts from community-trainer checkpoints (``latest.pth`` / ``model_step{N}.pth``)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest
import torch

from indextts_core.config import TrainConfig
from indextts_core.errors import InputError
from indextts_core.model.bundle import open_bundle
from indextts_core.model.checkpoint import official_state_dict
from indextts_core.model.unified_voice import UnifiedVoice
from indextts_core.training import TrainInputs, train
from indextts_core.training import checkpointing as ck
from indextts_core.training import distributed as dd
from indextts_core.training.optim import build_optimizer, build_scheduler, param_groups, warmup_cosine
from indextts_core.training.setup import prepare_model

CFG = TrainConfig(epochs=2, batch_tokens=1024, learning_rate=1e-3, new_rows_learning_rate=3e-3, warmup_steps=2,
                  val_interval=4, val_audio_samples=0, val_generate=0)
TOTAL = 40  # the schedule length of the unit tests' scheduler
STEP = 7


def their_model(processed) -> UnifiedVoice:
    """A plain (unsplit) UnifiedVoice with the run's text rows, as a community trainer has it."""
    ours = prepare_model(open_bundle(processed.checkpoint), processed.tokenizer).model
    model = UnifiedVoice(ours.cfg)
    model.load_state_dict(official_state_dict(ours))
    return model


def community_file(processed, path: Path, *, alias: bool = True, **extra) -> tuple[dict, UnifiedVoice]:
    """torch.save of what the community trainers write, after two AdamW steps over model.parameters()."""
    torch.manual_seed(0)
    model = their_model(processed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    for _ in range(2):
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        opt.step()
        sched.step()
    sd = model.state_dict()
    if alias:  # what post_init_gpt2_config adds: a second name for the mel embedding
        sd["gpt.wte.weight"] = sd["mel_embedding.weight"]
    obj = {"model": sd, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": None,
           "epoch": 1, "step": STEP, **extra}
    torch.save(obj, path)
    return obj, model


class Ours:
    """This run's model, optimizer and schedule, built as the trainer builds them."""

    def __init__(self, processed, cfg: TrainConfig = CFG):
        self.setup = prepare_model(open_bundle(processed.checkpoint), processed.tokenizer, cfg.freeze_base_rows,
                                   cfg.freeze_conditioning, cfg.dropout)
        self.model = self.setup.model
        groups = param_groups(self.model, cfg.learning_rate, cfg.weight_decay, cfg.new_rows_learning_rate,
                              cfg.new_rows_weight_decay)
        self.optimizer = build_optimizer(groups, torch.device("cpu"))
        self.scheduler = build_scheduler(self.optimizer, cfg.warmup_steps, TOTAL, cfg.min_lr_ratio)
        self.peaks = [g["initial_lr"] for g in self.optimizer.param_groups]  # the schedule's base rates
        self.factor = warmup_cosine(cfg.warmup_steps, TOTAL, cfg.min_lr_ratio)

    def resume(self, processed, out: Path, path: Path, warm_start: bool = True):
        cfg = CFG.model_copy(update={"resume": str(path), "warm_start": warm_start})
        return ck.resume(ck.CheckpointDir(out), cfg, processed.tokenizer, self.model, self.optimizer, self.scheduler,
                         None, {}, 1234, dd.Dist()).progress


def their_moments(obj: dict, model: UnifiedVoice) -> dict[str, dict]:
    """Their optimizer state by parameter name (index = position in model.parameters())."""
    names = [n for n, _ in model.named_parameters()]
    return {names[i]: s for i, s in obj["optimizer"]["state"].items()}


def assert_weights_equal(ours: torch.nn.Module, theirs: UnifiedVoice) -> None:
    a, b = official_state_dict(ours), theirs.state_dict()
    assert a.keys() == b.keys()
    assert not [k for k in a if not torch.equal(a[k], b[k])]


def test_community_checkpoint_warm_starts_with_weights_step_and_optimizer_state(processed, tmp_path, caplog):
    path = tmp_path / "trained_ckpts" / f"model_step{STEP}.pth"
    path.parent.mkdir()
    obj, theirs = community_file(processed, path, batch_idx=3, best_val=2.5)
    ours = Ours(processed)
    caplog.set_level(logging.INFO)
    progress = ours.resume(processed, tmp_path / "out", path)

    assert_weights_equal(ours.model, theirs)
    assert (progress.step, progress.epoch, progress.step_in_epoch) == (STEP, 0, 0)
    # the schedule is where it is after STEP steps: the next step uses factor(STEP) of each group's peak
    assert ours.scheduler.last_epoch == STEP
    for g, peak in zip(ours.optimizer.param_groups, ours.peaks):
        assert g["lr"] == pytest.approx(peak * ours.factor(STEP))
    assert ours.scheduler.get_last_lr() == [g["lr"] for g in ours.optimizer.param_groups]

    moments = their_moments(obj, theirs)
    params = dict(ours.model.named_parameters())
    trained = {n for n, p in params.items() if p.requires_grad}
    for name in trained - {n for n in params if n.startswith(("text_embedding.", "text_head."))}:
        state = ours.optimizer.state[params[name]]
        assert torch.equal(state["exp_avg"], moments[name]["exp_avg"]), name
        assert torch.equal(state["exp_avg_sq"], moments[name]["exp_avg_sq"]), name
        assert float(state["step"]) == 2.0
    # the new text rows get their rows of the whole tensor's moments; the frozen base rows get none
    n_base = ours.setup.base_vocab
    for key, param in (("text_embedding.weight", "text_embedding.weight_new"),
                       ("text_head.weight", "text_head.weight_new"), ("text_head.bias", "text_head.bias_new")):
        assert torch.equal(ours.optimizer.state[params[param]]["exp_avg"], moments[key]["exp_avg"][n_base:])
    frozen = [n for n, p in params.items() if not p.requires_grad]
    assert frozen and not any(params[n] in ours.optimizer.state for n in frozen)

    all_names = [n for n, _ in theirs.named_parameters()]
    not_trained = [n for n in all_names if n in frozen]
    taken = len(all_names) - len(not_trained)
    text = caplog.text
    assert (f"optimizer state: {taken} of {len(all_names)} parameters taken from {path.name} "
            f"({len(not_trained)} skipped: not trained in this run: {len(not_trained)})") in text
    assert f"its step count {STEP}: the next step is {STEP + 1}" in text
    assert "starts at the beginning of its first epoch" in text and "batch_idx, best_val" in text
    assert "1 alias keys dropped" in text


def test_training_continues_from_their_step_at_the_scheduled_learning_rate(processed, tmp_path):
    path = tmp_path / "latest.pth"
    community_file(processed, path)
    out = tmp_path / "out"
    steps: list[int] = []
    opts = CFG.model_copy(update={"max_steps": STEP + 2, "export": False, "resume": str(path), "warm_start": True})
    result = train(TrainInputs(processed.checkpoint, processed.tokenizer, processed.train_pairs, None, out), opts,
                   on_step=lambda info: steps.append(info.step))
    assert steps == [STEP + 1, STEP + 2] and result.steps == STEP + 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    lr = {r["step"]: r["train/lr"] for r in rows if "train/lr" in r}
    factor = warmup_cosine(opts.warmup_steps, STEP + 2, opts.min_lr_ratio)  # total steps = max_steps here
    assert lr == pytest.approx({STEP + 1: opts.learning_rate * factor(STEP),
                                STEP + 2: opts.learning_rate * factor(STEP + 1)})
    # what it saves is one of our checkpoints, at the continued step
    saved = torch.load(out / "latest.pth", map_location="cpu", weights_only=True)
    assert saved["format"] == ck.FORMAT and saved["progress"]["step"] == STEP + 2


def test_optimizer_state_of_another_shape_is_skipped_and_the_rest_kept(processed, tmp_path, caplog):
    path = tmp_path / "latest.pth"
    obj, theirs = community_file(processed, path)
    index = [n for n, _ in theirs.named_parameters()].index("mel_head.bias")
    state = obj["optimizer"]["state"][index]
    state["exp_avg"] = torch.zeros(state["exp_avg"].shape[0] + 1)
    torch.save(obj, path)
    ours = Ours(processed)
    caplog.set_level(logging.INFO)
    ours.resume(processed, tmp_path / "out", path)

    params = dict(ours.model.named_parameters())
    assert params["mel_head.bias"] not in ours.optimizer.state
    moments = their_moments(obj, theirs)
    for name in ("mel_head.weight", "final_norm.weight", "gpt.h.0.attn.c_attn.weight"):
        assert torch.equal(ours.optimizer.state[params[name]]["exp_avg"], moments[name]["exp_avg"])
    assert "skipped: shape differs: mel_head.bias; not trained in this run:" in caplog.text


def test_model_only_latest_warm_starts_at_step_0_with_a_fresh_optimizer(processed, tmp_path, caplog):
    theirs = their_model(processed)
    with torch.no_grad():
        theirs.mel_head.bias.add_(1.0)  # not the base weights
    path = tmp_path / "latest.pth"
    torch.save(theirs.state_dict(), path)
    ours = Ours(processed)
    caplog.set_level(logging.INFO)
    progress = ours.resume(processed, tmp_path / "out", path)
    assert_weights_equal(ours.model, theirs)
    assert progress.step == 0 and not ours.optimizer.state and ours.scheduler.last_epoch == 0
    assert "no training state" in caplog.text


def test_a_file_with_pickled_objects_is_refused_naming_the_file(processed, tmp_path):
    path = tmp_path / "latest.pth"
    sd = their_model(processed).state_dict()
    torch.save({"model": sd, "step": STEP, "args": argparse.Namespace(lr=1e-4)}, path)
    ours = Ours(processed)
    with pytest.raises(InputError) as e:
        ours.resume(processed, tmp_path / "out", path)
    msg = str(e.value)
    assert str(path) in msg and "pickled Python objects (here: argparse.Namespace)" in msg
    assert 'torch.load("latest.pth", map_location="cpu", weights_only=False)' in msg
    assert '"latest_tensors.pth")' in msg and "--resume latest_tensors.pth --warm-start" in msg


def test_resuming_a_community_checkpoint_without_warm_start_says_to_warm_start(processed, tmp_path):
    path = tmp_path / "latest.pth"
    community_file(processed, path)
    ours = Ours(processed)
    with pytest.raises(InputError, match=r"not one of this platform's training checkpoints(.|\n)*step 7(.|\n)*"
                                         r"--resume .*latest.pth --warm-start"):
        ours.resume(processed, tmp_path / "out", path, warm_start=False)


def test_text_rows_for_another_tokenizer_are_refused_with_both_shapes(processed, tmp_path):
    base = open_bundle(processed.checkpoint).load_gpt(strict=True)  # the base vocabulary's rows
    path = tmp_path / "latest.pth"
    torch.save({"model": base.state_dict(), "step": 3, "epoch": 0}, path)
    ours = Ours(processed)
    rows = base.text_embedding.weight.shape
    want = tuple(official_state_dict(ours.model)["text_embedding.weight"].shape)
    with pytest.raises(InputError) as e:
        ours.resume(processed, tmp_path / "out", path)
    msg = str(e.value)
    assert str(path) in msg and f"text_embedding.weight has shape {tuple(rows)}" in msg and f"needs {want}" in msg
    assert f"{rows[0] - 1}-piece tokenizer" in msg and "Train with the tokenizer" in msg


@pytest.mark.parametrize("case", ["subset", "groups"])
def test_optimizer_state_that_cannot_be_matched_is_skipped_with_a_warning(processed, tmp_path, caplog, case):
    path = tmp_path / "latest.pth"
    obj, theirs = community_file(processed, path)
    groups = obj["optimizer"]["param_groups"]
    if case == "subset":  # an optimizer over only some parameters
        groups[0]["params"] = groups[0]["params"][:-1]
        del obj["optimizer"]["state"][len(groups[0]["params"])]
    else:  # decay / no-decay groups: the order is not model.parameters()
        ids = groups[0]["params"]
        groups[:] = [{**groups[0], "params": ids[::2]}, {**groups[0], "params": ids[1::2], "weight_decay": 0.0}]
    torch.save(obj, path)
    ours = Ours(processed)
    caplog.set_level(logging.INFO)
    progress = ours.resume(processed, tmp_path / "out", path)
    assert progress.step == STEP and not ours.optimizer.state
    assert_weights_equal(ours.model, theirs)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    why = "cannot be matched by order" if case == "subset" else "2 parameter groups and no parameter names"
    assert any(m.startswith(f"optimizer state: none taken from {path.name}") and why in m for m in warned)
