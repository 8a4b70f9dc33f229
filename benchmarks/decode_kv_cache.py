"""Decoding speed: the KV cache against recomputing the whole sequence at every step, measured in the same run.

    uv run python benchmarks/decode_kv_cache.py                          # CPU, small random GPT, 200 codes
    uv run python benchmarks/decode_kv_cache.py --full --device cuda --tokens 600 --beams 3

A random GPT (``--full``: the released IndexTTS-2 shape, 1280 x 24) decodes the same prompts twice:
with the KV cache (each step runs one new position per row) and without it (each step runs the
prompt and every code so far), greedy or with beams.  The stop code is disabled so both runs make
exactly ``--tokens`` codes; both must produce the same codes (checked and printed).  Reported: codes
per second (all rows together) for each, and their ratio.  Not a test: it measures and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from indextts_core.config import GenerationConfig  # noqa: E402
from indextts_core.generation import build_prompt, decode  # noqa: E402
from indextts_core.model import GPTConfig, UnifiedVoice  # noqa: E402

SMALL_GPT = {
    "model_dim": 512, "layers": 8, "heads": 8, "max_text_tokens": 600, "max_mel_tokens": 1815,
    "number_text_tokens": 12000, "number_mel_codes": 8194, "start_mel_token": 8192, "stop_mel_token": 8193,
    "condition_module": {"output_size": 8, "linear_units": 16, "attention_heads": 2, "num_blocks": 1},
    "emo_condition_module": {"output_size": 8, "linear_units": 16, "attention_heads": 2, "num_blocks": 1},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the released model size (1280 x 24 layers)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tokens", type=int, default=200, help="codes generated per row")
    ap.add_argument("--batch", type=int, default=1, help="prompts decoded together")
    ap.add_argument("--beams", type=int, default=1, help="1 = greedy, else beam search")
    ap.add_argument("--text", type=int, default=40, help="text tokens per prompt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    device = torch.device(args.device)
    spec = json.loads((REPO / "tests" / "fixtures" / "indextts2_gpt_full_shapes.json").read_text())["gpt_config"] \
        if args.full else SMALL_GPT
    cfg = GPTConfig.from_dict(spec)
    torch.manual_seed(args.seed)
    model = UnifiedVoice(cfg, dropout=0.0).to(device).eval()
    with torch.no_grad():
        model.mel_head.bias[cfg.stop_mel_token] = -1e4  # never stop: both runs make exactly --tokens codes
    opts = GenerationConfig(do_sample=False, num_beams=args.beams, repetition_penalty=1.0 if args.beams == 1 else 10.0,
                            max_mel_tokens=args.tokens)
    g = torch.Generator().manual_seed(args.seed)
    text = torch.randint(2, min(cfg.number_text_tokens, 1000), (args.batch, args.text), generator=g).to(device)
    with torch.no_grad():
        conds = model.conditioning(torch.randn(args.batch, cfg.condition_num_latent, cfg.model_dim, generator=g
                                               ).to(device), torch.randn(args.batch, cfg.model_dim, generator=g).to(device))
        prompt = build_prompt(model, conds, text)
        decode(model, prompt, opts.model_copy(update={"max_mel_tokens": 4}))  # warm-up
    results = {}
    for name, use_cache in (("no cache", False), ("kv cache", True)):
        _sync(device)
        start = time.perf_counter()
        out = decode(model, prompt, opts, use_cache=use_cache)
        _sync(device)
        seconds = time.perf_counter() - start
        results[name] = {"seconds": seconds, "codes_per_s": args.batch * args.tokens / seconds, "out": out}
    same = torch.equal(results["no cache"]["out"].sequences, results["kv cache"]["out"].sequences)
    base = results["no cache"]["codes_per_s"]
    print(f"model {cfg.model_dim}x{cfg.layers} on {device}; {args.batch} prompt(s) of {args.text} text tokens; "
          f"{args.tokens} codes each; beams {args.beams}")
    print(f"{'decoding':<10} {'seconds':>8} {'codes/s':>9} {'ratio':>6}")
    for name, r in results.items():
        print(f"{name:<10} {r['seconds']:>8.2f} {r['codes_per_s']:>9.1f} {r['codes_per_s'] / base:>6.2f}")
    print(f"same codes with and without the cache: {same}")
    if args.json:
        args.json.write_text(json.dumps({
            "device": str(device), "model": f"{cfg.model_dim}x{cfg.layers}", "tokens": args.tokens,
            "batch": args.batch, "beams": args.beams, "same_codes": same,
            **{name: {k: v for k, v in r.items() if k != "out"} for name, r in results.items()}}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
