"""Loading without a second copy of the weights gives the model the old copy-in loading gave; writing and
optimizing in place never reach the file (benchmarks/load_memory.py measures the memory itself)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from indextts_core.model.checkpoint import (
    CheckpointError,
    export_checkpoint,
    load_gpt,
    load_state_dict_into,
    official_state_dict,
    read_config,
    read_state_dict,
    standalone,
)
from indextts_core.model.config import GPTConfig
from indextts_core.model.unified_voice import UnifiedVoice
from indextts_core.training.optim import build_optimizer, param_groups
from tests_support import FIXTURES

FOLDERS = [FIXTURES / "indextts2_gpt_tiny", FIXTURES / "indextts25_gpt_tiny"]


def old_load(root: Path, strict: bool = True) -> UnifiedVoice:
    """``load_gpt`` as it was: the model built with its random init, the file's tensors copied in."""
    data = read_config(root / "config.yaml")
    model = UnifiedVoice(GPTConfig.from_dict(data["gpt"], version=data.get("version")))
    load_state_dict_into(model, read_state_dict(root / "gpt.pth"), root / "gpt.pth", strict=strict)
    return model.eval()


def assert_same_model(a: UnifiedVoice, b: UnifiedVoice) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k
    assert [n for n, _ in a.named_buffers()] == [n for n, _ in b.named_buffers()]
    assert [(n, p.requires_grad) for n, p in a.named_parameters()] == \
        [(n, p.requires_grad) for n, p in b.named_parameters()]
    assert a.training == b.training


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def ckpt(request, tmp_path: Path) -> Path:
    dest = tmp_path / "ckpt"
    shutil.copytree(getattr(request, "param", FOLDERS[0]), dest)
    return dest


@pytest.mark.parametrize("ckpt", FOLDERS, indirect=True, ids=["2.0", "2.5"])
@pytest.mark.parametrize("mmap", [False, True], ids=["read", "mmap"])
def test_load_gpt_gives_the_old_model(ckpt: Path, mmap: bool):
    new, old = load_gpt(ckpt, mmap=mmap), old_load(ckpt)
    assert_same_model(new, old)
    params = list(new.parameters())
    assert all(p.is_contiguous() and p.requires_grad and not p.is_meta for p in params)
    assert len({p.untyped_storage().data_ptr() for p in params}) == len(params)  # nothing tied that was not
    assert all(not b.is_meta for b in new.buffers())


def test_float16_file_loads_as_float32(ckpt: Path):
    sd = read_state_dict(ckpt / "gpt.pth")
    torch.save({k: v.half() for k, v in sd.items()}, ckpt / "gpt.pth")
    assert_same_model(load_gpt(ckpt), old_load(ckpt))
    assert all(p.dtype == torch.float32 for p in load_gpt(ckpt, mmap=True).parameters())


def test_shared_and_viewed_tensors_in_the_file_become_separate_parameters(ckpt: Path):
    sd = read_state_dict(ckpt / "gpt.pth")
    both = torch.cat([sd["text_embedding.weight"].flatten(), sd["text_head.weight"].flatten()])
    sd["text_embedding.weight"] = both[:sd["text_embedding.weight"].numel()].view_as(sd["text_embedding.weight"])
    sd["text_head.weight"] = both[sd["text_embedding.weight"].numel():].view_as(sd["text_head.weight"])
    sd["final_norm.bias"] = sd["final_norm.weight"]  # one tensor under two keys
    torch.save(sd, ckpt / "gpt.pth")
    model = load_gpt(ckpt)
    assert_same_model(model, old_load(ckpt))
    with torch.no_grad():
        model.final_norm.weight.add_(1)
    assert not torch.equal(model.final_norm.weight, model.final_norm.bias)
    for p in (model.text_embedding.weight, model.text_head.weight):
        assert p.untyped_storage().nbytes() == p.numel() * p.element_size()


def test_strict_errors_are_unchanged(ckpt: Path):
    sd = read_state_dict(ckpt / "gpt.pth")
    del sd["final_norm.weight"]
    sd["extra.weight"] = torch.zeros(1)
    sd["mel_head.bias"] = torch.zeros(3)
    torch.save(sd, ckpt / "gpt.pth")
    with pytest.raises(CheckpointError) as new:
        load_gpt(ckpt)
    with pytest.raises(CheckpointError) as old:
        old_load(ckpt)
    assert str(new.value) == str(old.value)
    assert "missing (1): final_norm.weight" in str(new.value)


def test_a_non_strict_load_missing_keys_is_built_for_real(ckpt: Path):
    sd = read_state_dict(ckpt / "gpt.pth")
    del sd["final_norm.weight"]
    torch.save(sd, ckpt / "gpt.pth")
    model = load_gpt(ckpt, strict=False)
    assert not any(t.is_meta for t in (*model.parameters(), *model.buffers()))
    assert torch.equal(model.final_norm.weight, torch.ones_like(model.final_norm.weight))  # LayerNorm's own init
    for k, v in sd.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_the_legacy_format_loads_with_mmap(ckpt: Path):
    sd = read_state_dict(ckpt / "gpt.pth")
    torch.save(sd, ckpt / "gpt.pth", _use_new_zipfile_serialization=False)
    assert_same_model(load_gpt(ckpt, mmap=True), old_load(ckpt))


def test_training_a_mapped_model_never_writes_the_file(ckpt: Path):
    before = sha256(ckpt / "gpt.pth")
    model = load_gpt(ckpt, mmap=True).train()
    groups = param_groups(model, lr=1e-2, weight_decay=0.1, new_rows_lr=1e-2, new_rows_weight_decay=0.0)
    optimizer = build_optimizer(groups, torch.device("cpu"))
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    with torch.no_grad():
        model.text_embedding.weight.mul_(3)
    assert not torch.equal(model.text_embedding.weight, read_state_dict(ckpt / "gpt.pth")["text_embedding.weight"])
    del model, optimizer, groups
    assert sha256(ckpt / "gpt.pth") == before
    assert_same_model(load_gpt(ckpt), old_load(ckpt))


def test_cpu_optimizer_gives_the_default_adamw_numbers():
    def run(make) -> list[torch.Tensor]:
        model = old_load(FOLDERS[0]).train()
        groups = param_groups(model, lr=1e-3, weight_decay=0.01, new_rows_lr=1e-2, new_rows_weight_decay=0.0)
        optimizer = make(groups)
        gen = torch.Generator().manual_seed(0)
        for _ in range(5):
            for g in groups:
                for p in g["params"]:
                    p.grad = torch.randn(p.shape, generator=gen)
            optimizer.step()
        return [p.detach().clone() for p in model.parameters()]

    new = run(lambda groups: build_optimizer(groups, torch.device("cpu")))
    old = run(lambda groups: torch.optim.AdamW(groups))  # torch's CPU default, what build_optimizer built before
    assert build_optimizer([{"params": [torch.nn.Parameter(torch.zeros(1))]}], torch.device("cpu")).defaults["fused"]
    for a, b in zip(new, old, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_export_saves_the_model_tensors_without_copying(ckpt: Path, tmp_path: Path, monkeypatch):
    model = load_gpt(ckpt)
    bpe = tmp_path / "bpe.model"
    bpe.write_bytes(b"tokenizer")
    saved_dicts = []
    save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f: (saved_dicts.append(obj), save(obj, f))[1])
    out = export_checkpoint(model, tmp_path / "out", ckpt, bpe, vocab_size=200)
    ours = official_state_dict(model)
    pointers = [{k: v.data_ptr() for k, v in d.items()} for d in saved_dicts]
    assert pointers == [{k: v.data_ptr() for k, v in ours.items()}]  # the model's own tensors were saved
    with open(tmp_path / "copied.pth", "wb") as f:  # what the export saved before: copies
        save({k: v.clone() for k, v in ours.items()}, f)
    assert out.gpt_path.read_bytes() == (tmp_path / "copied.pth").read_bytes()


def test_standalone_copies_only_views_and_shared_storage():
    seen: set[int] = set()
    whole = torch.arange(12.0)
    assert standalone(whole, seen) is whole
    view = standalone(whole[4:], seen)
    assert view is not whole and torch.equal(view, whole[4:]) and view.untyped_storage().nbytes() == 8 * 4
    again = standalone(whole, seen)  # its storage is already someone's
    assert again is not whole and torch.equal(again, whole)
    transposed = torch.zeros(3, 4).t()
    assert standalone(transposed, seen).is_contiguous()
