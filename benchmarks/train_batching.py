"""Training throughput: token-budget batching from length buckets against fixed-size random batches.

    uv run python benchmarks/train_batching.py                               # CPU, small model, 192 samples
    uv run python benchmarks/train_batching.py --full --device cuda --samples 4000 --budget 12288

A realistic length mix (clip durations log-normal around 6 s, 1-30 s; 50 semantic codes per second;
7-12 text tokens per second) is trained on for one pass, three ways, from the same initial weights:

* ``fixed-random``: shuffled, a fixed number of samples per batch (the community trainers), with
  the released per-segment padding; the batch size gives the same *mean* tokens per batch as the
  token budget;
* ``budget-released``: the trainer's plan (``plan_epoch``: length-sorted windows packed to the
  token budget), still with the released padding layout;
* ``budget-packed``: the trainer's default, plan + padding at the end of each sample.

Each batch is one optimizer step (forward, backward, AdamW) on random ids of those lengths.  Reported
per strategy: padding share of the computed positions, real (unpadded) tokens per second, samples
per second, and the ratio to ``fixed-random`` measured in the same run.  On CUDA it also reports
model FLOPs utilisation (MFU) against the device's dense bf16 peak (``--peak-tflops`` to override).
Not a test: it measures and prints, it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from indextts_core.model import GPTConfig, UnifiedVoice  # noqa: E402
from indextts_core.training.data import (  # noqa: E402
    Batch,
    Sample,
    conditioning_positions,
    padded_cost,
    plan_epoch,
    sample_cost,
)
from indextts_core.training.objective import loss_sums  # noqa: E402

#: Dense bf16 tensor-core peaks (FLOP/s) of common training GPUs, by a substring of the device name.
PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "4090": 165e12}

SMALL_GPT = {
    "model_dim": 256, "layers": 4, "heads": 4, "max_text_tokens": 600, "max_mel_tokens": 1815,
    "number_text_tokens": 12000, "number_mel_codes": 8194, "start_mel_token": 8192, "stop_mel_token": 8193,
    "condition_module": {"output_size": 8, "linear_units": 16, "attention_heads": 2, "num_blocks": 1},
    "emo_condition_module": {"output_size": 8, "linear_units": 16, "attention_heads": 2, "num_blocks": 1},
}


@dataclass
class Lengths:
    """The two things batching looks at, for synthetic samples (``plan_epoch`` reads rows and costs)."""

    rows: list[dict[str, int]]
    conds: int  # conditioning prefix positions (``conditioning_positions`` of the model config)

    def cost(self, s: Sample) -> int:
        r = self.rows[s.target]
        return sample_cost(r["text_len"], r["code_len"], conds=self.conds)


def length_mix(n: int, seed: int, max_text: int, max_codes: int, conds: int) -> Lengths:
    rng = np.random.default_rng(seed)
    seconds = np.clip(rng.lognormal(math.log(6.0), 0.55, n), 1.0, 30.0)
    codes = np.minimum(np.round(seconds * 50), max_codes).astype(int)
    text = np.minimum(np.round(seconds * rng.uniform(7, 12, n)), max_text).astype(int)
    return Lengths([{"text_len": int(t), "code_len": int(c)} for t, c in zip(text, codes)], conds)


def fixed_batches(data: Lengths, budget: int, seed: int) -> list[list[int]]:
    mean_cost = sum(data.cost(Sample(i, i, i)) for i in range(len(data.rows))) / len(data.rows)
    size = max(1, round(budget / mean_cost))
    order = list(range(len(data.rows)))
    random.Random(seed).shuffle(order)
    return [order[i:i + size] for i in range(0, len(order), size)]


def gpt_flops_per_token(model: UnifiedVoice, mean_len: float) -> float:
    """6N for the matmuls a token goes through (GPT blocks, heads) + the attention scores (12 L d T)."""
    n = sum(p.numel() for name, p in model.named_parameters()
            if name.startswith(("gpt.", "text_head", "mel_head")) and p.ndim >= 2)
    return 6 * n + 12 * model.cfg.layers * model.cfg.model_dim * mean_len


def run(model: UnifiedVoice, data: Lengths, batches: list[list[int]], pad_at_end: bool, device: torch.device,
        amp: torch.dtype | None, warmup: int) -> dict[str, float]:
    cfg = model.cfg
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5,
                            fused=device.type == "cuda" or None)
    g = torch.Generator().manual_seed(0)
    real = padded = samples = 0
    seconds = 0.0
    lens_sum = 0
    for k, batch in enumerate(batches):
        rows = [data.rows[i] for i in batch]
        tl = torch.tensor([r["text_len"] for r in rows])
        cl = torch.tensor([r["code_len"] for r in rows])
        b = len(rows)
        inputs = Batch(torch.randn(b, cfg.condition_num_latent, cfg.model_dim, generator=g),
                       torch.randn(b, cfg.model_dim, generator=g),
                       torch.randint(2, cfg.number_text_tokens, (b, int(tl.max())), generator=g), tl,
                       torch.randint(0, cfg.number_mel_codes - 2, (b, int(cl.max())), generator=g), cl,
                       [], [], [], 0, 0).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        ts = loss_sums(model, inputs, amp, pad_at_end)
        loss = 0.2 * ts.text_loss.sum() / ts.text_tokens.sum() + 0.8 * ts.mel_loss.sum() / ts.mel_tokens.sum()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if k >= warmup:
            seconds += time.perf_counter() - start
            real += sum(data.cost(Sample(i, i, i)) for i in batch)
            padded += padded_cost(tl.tolist(), cl.tolist(), pad_at_end, conds=data.conds)
            samples += b
            lens_sum += sum(data.cost(Sample(i, i, i)) ** 2 for i in batch)
    return {"batches": len(batches) - warmup, "samples": samples, "seconds": round(seconds, 3),
            "padding_share": round(1 - real / padded, 4), "tokens_per_s": round(real / seconds, 1),
            "samples_per_s": round(samples / seconds, 3), "mean_len": lens_sum / max(real, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--full", action="store_true", help="the released full-size GPT config (1280 x 24 layers)")
    ap.add_argument("--samples", type=int, default=192)
    ap.add_argument("--budget", type=int, default=8192, help="padded tokens per batch (train.batch_tokens)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--peak-tflops", type=float, help="dense bf16 peak of the GPU, for MFU")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.full:
        spec = json.loads((REPO / "tests" / "fixtures" / "indextts2_gpt_full_shapes.json").read_text())["gpt_config"]
    else:
        spec = SMALL_GPT
    cfg = GPTConfig.from_dict(spec)
    amp = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if device.type == "cuda" else None
    torch.manual_seed(args.seed)
    template = UnifiedVoice(cfg, dropout=0.0)
    for name in ("conditioning_encoder", "perceiver_encoder", "emo_conditioning_encoder", "emo_perceiver_encoder",
                 "emo_layer", "emovec_layer"):
        getattr(template, name).requires_grad_(False)
    state = {k: v.clone() for k, v in template.state_dict().items()}
    data = length_mix(args.samples, args.seed, cfg.max_text_tokens, cfg.max_mel_tokens,
                      conditioning_positions(cfg))
    samples = [Sample(i, i, i) for i in range(len(data.rows))]
    strategies = {
        "fixed-random": (fixed_batches(data, args.budget, args.seed), False),
        "budget-released": (plan_epoch(data, samples, args.budget, args.seed, 0, pad_at_end=False), False),
        "budget-packed": (plan_epoch(data, samples, args.budget, args.seed, 0, pad_at_end=True), True),
    }
    warmup = 2
    results = {}
    for name, (batches, packed) in strategies.items():
        template.load_state_dict(state)
        model = template.to(device).train()
        results[name] = run(model, data, batches, packed, device, amp, warmup)
    base = results["fixed-random"]["tokens_per_s"]
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    if device.type == "cuda" and peak is None:
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAKS.items() if k in name), None)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, "
          f"{torch.get_num_threads()} threads), model {'full-size' if args.full else 'small'} "
          f"{cfg.model_dim}x{cfg.layers}, {args.samples} samples, budget {args.budget} tokens, "
          f"amp {str(amp).removeprefix('torch.') if amp else 'off'}")
    print(f"{'strategy':<17}{'batches':>8}{'padding':>9}{'tokens/s':>11}{'samples/s':>11}{'vs fixed':>10}"
          + ("      MFU" if peak else ""))
    for name, r in results.items():
        r["speedup_vs_fixed_random"] = round(r["tokens_per_s"] / base, 3)
        line = (f"{name:<17}{r['batches']:>8}{r['padding_share']:>9.1%}{r['tokens_per_s']:>11.0f}"
                f"{r['samples_per_s']:>11.2f}{r['speedup_vs_fixed_random']:>9.2f}x")
        if peak:
            r["mfu"] = round(gpt_flops_per_token(template, r["mean_len"]) * r["tokens_per_s"] / peak, 4)
            line += f"{r['mfu']:>9.1%}"
        print(line)
    if device.type != "cuda":
        print("MFU: not measured (no CUDA device; run with --full --device cuda on a GPU)")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                        indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
