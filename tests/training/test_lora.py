"""LoRA adapters on the official tiny GPT: exact identity when fresh, official key names, merge, round trips."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from indextts_core.errors import ConfigError
from indextts_core.model.checkpoint import load_gpt
from indextts_core.model.gpt2 import Conv1D
from indextts_core.training.lora import (
    LoRALinear,
    LoRASpec,
    apply_lora,
    check_merged_keys,
    has_lora,
    load_lora_state_dict,
    lora_parameters,
    lora_state_dict,
    merge_lora,
    parameter_count,
    trainable_parameter_count,
)
from tests_support import FIXTURES

GPT_DIR = FIXTURES / "indextts2_gpt_tiny"
DEFAULT_PER_LAYER = 4  # c_attn, attn.c_proj, c_fc, mlp.c_proj
#: Linear-layout targets too: with and without bias (the perceivers' ``to_q`` has none).
LINEAR_TARGETS = ("emo_layer", "mel_head", "text_head", "to_q")


@pytest.fixture(scope="module")
def inputs() -> dict:
    torch.set_num_threads(2)
    return torch.load(GPT_DIR / "cases.pt", map_location="cpu", weights_only=True)["inputs"]


def fresh_model() -> nn.Module:
    return load_gpt(GPT_DIR).eval()


def run(model: nn.Module, i: dict):
    spk = model.speaker_latents(i["cond_feats"], i["cond_lengths"])
    emo = model.emotion_vector(i["emo_feats"], i["emo_lengths"])
    return model(spk, emo, i["text_ids"], i["text_lengths"], i["mel_codes"], i["mel_lengths"])


def loss(model: nn.Module, i: dict) -> torch.Tensor:
    """Text + mel cross-entropy (both heads get gradients)."""
    out = run(model, i)
    return (F.cross_entropy(out.mel_logits.float().flatten(0, 1), out.mel_targets.flatten())
            + F.cross_entropy(out.text_logits.float().flatten(0, 1), out.text_targets.flatten()))


def train_steps(model: nn.Module, i: dict, steps: int, lr: float = 1e-2) -> None:
    opt = torch.optim.AdamW(lora_parameters(model), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss(model, i).backward()
        opt.step()


def randomize_b(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_b.copy_(torch.randn(m.lora_b.shape, generator=g) * 0.05)


# ------------------------------------------------------------------------ spec


@pytest.mark.parametrize("kwargs, field", [
    ({"rank": 0}, "lora.rank"),
    ({"rank": 2.5}, "lora.rank"),
    ({"alpha": 0.0}, "lora.alpha"),
    ({"alpha": -1.0}, "lora.alpha"),
    ({"dropout": 1.0}, "lora.dropout"),
    ({"dropout": -0.1}, "lora.dropout"),
    ({"targets": ()}, "lora.targets"),
    ({"targets": "attn.c_attn"}, "lora.targets"),
    ({"targets": ("attn..c_attn",)}, "lora.targets"),
])
def test_spec_validation_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        LoRASpec(**kwargs)


def test_spec_scale_and_list_targets():
    spec = LoRASpec(rank=8, alpha=4.0, targets=["attn.c_attn"])  # type: ignore[arg-type]
    assert spec.scale == 0.5
    assert spec.targets == ("attn.c_attn",)
    assert LoRASpec().scale == 2.0


# ------------------------------------------------------------------------ target matching


def test_default_targets_wrap_four_modules_per_layer():
    model = fresh_model()
    names = apply_lora(model, LoRASpec(rank=4))
    assert len(names) == DEFAULT_PER_LAYER * len(model.gpt.h) == 8
    assert names == sorted(names)
    assert all(isinstance(model.get_submodule(n), LoRALinear) for n in names)
    assert {n.split(".", 3)[3] for n in names} == {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}
    assert has_lora(model)


def test_target_matches_whole_components():
    model = fresh_model()
    assert apply_lora(model, LoRASpec(rank=2, targets=("attn.c_proj",))) == ["gpt.h.0.attn.c_proj",
                                                                           "gpt.h.1.attn.c_proj"]
    assert isinstance(model.gpt.h[0].mlp.c_proj, Conv1D)
    assert apply_lora(fresh_model(), LoRASpec(rank=2, targets=("h.1.mlp.c_fc",))) == ["gpt.h.1.mlp.c_fc"]


def test_full_name_wraps_an_nn_linear():
    model = fresh_model()
    assert apply_lora(model, LoRASpec(rank=2, targets=("emo_layer",))) == ["emo_layer"]
    assert isinstance(model.emo_layer, LoRALinear) and model.emo_layer.base_class is nn.Linear
    assert not isinstance(model.emovec_layer, LoRALinear)


@pytest.mark.parametrize("target, suggested", [("attn.c_att", "gpt.h.*.attn.c_attn"), ("no_such_layer", None),
                                               ("h.7.attn.c_attn", "gpt.h.*.attn.c_attn"), ("emo_layr", "emo_layer")])
def test_unknown_target_raises_naming_it(target, suggested):
    model = fresh_model()
    with pytest.raises(ConfigError) as e:
        apply_lora(model, LoRASpec(targets=("attn.c_attn", target)))
    msg = str(e.value)
    assert repr(target) in msg and "available" in msg
    if suggested:
        assert suggested in msg.split("any index): ")[1].split(",")[0]  # the closest suggestion comes first
    assert not has_lora(model)  # nothing wrapped when a target is bad


def test_apply_twice_raises():
    model = fresh_model()
    apply_lora(model, LoRASpec(rank=2))
    with pytest.raises(ConfigError, match="already"):
        apply_lora(model, LoRASpec(rank=2, targets=("emo_layer",)))


def test_state_dict_keys_are_base_keys_plus_adapters():
    base_keys = list(fresh_model().state_dict())
    model = fresh_model()
    names = apply_lora(model, LoRASpec(rank=2, targets=LoRASpec().targets + LINEAR_TARGETS))
    keys = list(model.state_dict())
    adapter_keys = [k for k in keys if k.endswith((".lora_a", ".lora_b"))]
    assert [k for k in keys if k not in adapter_keys] == base_keys
    assert sorted(adapter_keys) == sorted(f"{n}.{s}" for n in names for s in ("lora_a", "lora_b"))
    assert "gpt.h.0.attn.c_attn.weight" in keys and "gpt.h.0.attn.c_attn.bias" in keys


def test_only_wrapped_base_tensors_are_frozen():
    model = fresh_model()
    model.text_embedding.weight.requires_grad_(False)  # the caller's choice survives
    apply_lora(model, LoRASpec(rank=2, targets=("attn.c_attn", "emo_layer")))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"text_embedding.weight", "emo_layer.weight", "emo_layer.bias"} | {
        f"gpt.h.{i}.attn.c_attn.{s}" for i in range(2) for s in ("weight", "bias")}


# ------------------------------------------------------------------------ the layer itself


@pytest.mark.parametrize("cls", [Conv1D, nn.Linear])
def test_layer_output_is_base_plus_scaled_update(cls):
    torch.manual_seed(0)
    base = cls(8, 12)
    x = torch.randn(3, 5, 8)
    expected_base = base(x)
    holder = nn.Sequential(base)
    apply_lora(holder, LoRASpec(rank=3, alpha=6.0, targets=("0",)))
    layer = holder[0]
    assert layer.weight is base.weight and layer.lora_a.shape == (3, 8) and layer.lora_b.shape == (12, 3)
    assert torch.equal(holder(x), expected_base)
    with torch.no_grad():
        layer.lora_b.normal_()
    manual = expected_base + x @ layer.lora_a.T @ layer.lora_b.T * 2.0
    torch.testing.assert_close(holder(x), manual)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_adapters_follow_base_dtype(dtype):
    holder = nn.Sequential(nn.Linear(4, 6).to(dtype), Conv1D(6, 4).to(dtype))
    apply_lora(holder, LoRASpec(rank=2, targets=("0", "1")))
    assert all(p.dtype == dtype for p in lora_parameters(holder))
    assert holder(torch.randn(2, 4, dtype=dtype)).dtype == dtype


def test_dropout_is_stochastic_in_train_mode_only():
    torch.manual_seed(0)
    holder = nn.Sequential(nn.Linear(16, 16))
    apply_lora(holder, LoRASpec(rank=4, dropout=0.5, targets=("0",)))
    with torch.no_grad():
        holder[0].lora_b.normal_()
    x = torch.randn(4, 16)
    holder.train()
    assert not torch.equal(holder(x), holder(x))
    holder.eval()
    assert torch.equal(holder(x), holder(x))


# ------------------------------------------------------------------------ on the tiny GPT


def test_fresh_adapters_give_identical_outputs(inputs):
    with torch.no_grad():
        ref = run(fresh_model(), inputs)
        model = fresh_model()
        apply_lora(model, LoRASpec(rank=4, targets=LoRASpec().targets + LINEAR_TARGETS))
        out = run(model, inputs)
    assert torch.equal(out.mel_logits, ref.mel_logits)
    assert torch.equal(out.text_logits, ref.text_logits)


def test_one_step_changes_only_adapters(inputs):
    model = fresh_model()
    apply_lora(model, LoRASpec(rank=4, targets=LoRASpec().targets + ("emo_layer",)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(lora_parameters(model), lr=1e-2)
    opt.zero_grad()
    run(model, inputs).mel_logits.float().pow(2).mean().backward()
    opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith((".lora_a", ".lora_b")) for k in changed)
    assert all(k in changed for k in before if k.endswith(".lora_b"))
    assert model.gpt.h[0].attn.c_attn.weight.grad is None and model.emo_layer.bias.grad is None


def test_merge_keeps_outputs_and_official_keys(inputs, tmp_path):
    base_keys = list(fresh_model().state_dict())
    model = fresh_model()
    spec = LoRASpec(rank=4, alpha=8.0, targets=LoRASpec().targets + LINEAR_TARGETS)
    names = apply_lora(model, spec)
    train_steps(model, inputs, steps=3)
    assert all(m.lora_b.abs().sum() > 0 for m in model.modules() if isinstance(m, LoRALinear))
    model.eval()
    with torch.no_grad():
        base_out = run(fresh_model(), inputs).mel_logits
        adapted = run(model, inputs)
    assert not torch.allclose(adapted.mel_logits, base_out, atol=1e-3)  # training did something

    with pytest.raises(ConfigError, match="merge_lora"):
        check_merged_keys(model.state_dict(), base_keys)
    assert merge_lora(model) == names
    assert not has_lora(model)
    assert type(model.gpt.h[0].attn.c_attn) is Conv1D and type(model.emo_layer) is nn.Linear
    assert all(p.requires_grad for p in model.parameters())
    sd = model.state_dict()
    assert list(sd) == base_keys
    check_merged_keys(sd, base_keys)
    with torch.no_grad():
        merged = run(model, inputs)
    torch.testing.assert_close(merged.mel_logits, adapted.mel_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(merged.text_logits, adapted.text_logits, atol=1e-5, rtol=0)

    torch.save(sd, tmp_path / "merged.pth")
    reloaded = fresh_model()
    reloaded.load_state_dict(torch.load(tmp_path / "merged.pth", weights_only=True), strict=True)
    with torch.no_grad():
        assert torch.equal(run(reloaded, inputs).mel_logits, merged.mel_logits)


def test_merge_without_adapters_is_a_no_op():
    model = fresh_model()
    keys = list(model.state_dict())
    assert merge_lora(model) == []
    assert list(model.state_dict()) == keys


def test_check_merged_keys_lists_missing_and_unexpected():
    with pytest.raises(ConfigError) as e:
        check_merged_keys({"a.weight": torch.zeros(1), "x.lora_a": torch.zeros(1)}, ["a.weight", "a.bias"])
    msg = str(e.value)
    assert "missing (1): a.bias" in msg and "unexpected (1): x.lora_a" in msg


def test_lora_state_dict_round_trip(inputs):
    spec = LoRASpec(rank=4, targets=LoRASpec().targets + ("mel_head",))
    source = fresh_model()
    apply_lora(source, spec)
    randomize_b(source)
    sd = lora_state_dict(source)
    assert set(sd) == {k for k in source.state_dict() if k.endswith((".lora_a", ".lora_b"))}
    assert all(not t.requires_grad for t in sd.values())
    sd["mel_head.lora_b"].zero_()  # a copy: the model keeps its own values
    assert source.mel_head.lora_b.abs().sum() > 0
    sd = lora_state_dict(source)

    target = fresh_model()
    apply_lora(target, spec)
    load_lora_state_dict(target, sd)
    with torch.no_grad():
        assert torch.equal(run(target, inputs).mel_logits, run(source, inputs).mel_logits)


def test_load_lora_state_dict_is_strict():
    spec = LoRASpec(rank=2)
    model = fresh_model()
    apply_lora(model, spec)
    good = lora_state_dict(model)

    missing = dict(good)
    del missing["gpt.h.1.mlp.c_fc.lora_a"]
    with pytest.raises(ConfigError, match=r"missing \(1\): gpt\.h\.1\.mlp\.c_fc\.lora_a"):
        load_lora_state_dict(model, missing)
    with pytest.raises(ConfigError, match=r"unexpected \(1\): emo_layer\.lora_a"):
        load_lora_state_dict(model, good | {"emo_layer.lora_a": torch.zeros(2, 64)})
    wrong = good | {"gpt.h.0.attn.c_attn.lora_b": torch.zeros(192, 3)}
    with pytest.raises(ConfigError, match=r"wrong shape \(1\): gpt\.h\.0\.attn\.c_attn\.lora_b"):
        load_lora_state_dict(model, wrong)
    with pytest.raises(ConfigError, match="no LoRA adapters"):
        load_lora_state_dict(fresh_model(), good)


def test_parameter_counts():
    model = fresh_model()
    total = parameter_count(model)
    assert trainable_parameter_count(model) == total
    names = apply_lora(model, LoRASpec(rank=4))
    for n, p in model.named_parameters():
        p.requires_grad_(n.endswith((".lora_a", ".lora_b")))
    expected = sum(4 * (m.in_features + m.out_features) for m in (model.get_submodule(n) for n in names))
    # per layer (dim 64): c_attn 64->192, attn.c_proj 64->64, c_fc 64->256, mlp.c_proj 256->64
    assert expected == 2 * 4 * ((64 + 192) + (64 + 64) + (64 + 256) + (256 + 64))
    assert trainable_parameter_count(model) == expected
    assert parameter_count(model) == total + expected
