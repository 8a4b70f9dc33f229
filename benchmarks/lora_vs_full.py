"""LoRA against full fine-tuning on the bundled demo, on a tiny IndexTTS-2 and a tiny IndexTTS-2.5 base.

    uv run python benchmarks/lora_vs_full.py                  # CPU: 2 bases x 2 modes, about 5 minutes
    uv run python benchmarks/lora_vs_full.py --device cuda --epochs 3 --lora-rank 16

The demo data is prepared once per base with the library's own stages (ingest, the tokenizer stage
-- extension for 2.0, coverage and language choice for 2.5 --, preprocess, pairs).  Each training
then runs in a fresh Python process, so its peak memory is its own, with the demo's settings
(``indextts_core/demo/demo.yaml``: 3 epochs, 1024-token steps, learning rate 1e-3) and the same seed; the
only difference between the two rows of a base is ``train.lora_rank``.

Reported per run: trainable parameters, AdamW state (two fp32 moments per trainable parameter),
the process's peak resident memory (on CPU it is set by importing torch, not by a 1.6M-parameter
model; on CUDA the peak allocated GPU memory is the number to read), seconds per optimizer step,
and the validation loss and mel top-1 at step 0 and at the end, with the LoRA row's ratio to the
full row measured in the same run.  Then the same freezing rules counted on the full-size released
configurations (built on the meta device, nothing allocated): what LoRA saves where it matters.
Not a test: it measures and prints, it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def prepare(root: Path, version: str) -> dict[str, str]:
    """Tiny base of ``version``, its tokenizer, the demo's features and pairs under ``root``."""
    from indextts_core.config import DEMO_DATASET_DIR, IngestConfig, load_config
    from indextts_core.data.ingest import ManifestInput, ingest
    from indextts_core.tiny import write_tiny_bundle
    from indextts_core.preprocess import (
        FeatureFolder,
        clips_from_manifests,
        featureset_id,
        model_folder_digests,
        prepare,
        preprocess,
    )
    from indextts_core.preprocess.pairs import PairingPolicy, build_pairs
    from indextts_core.text.encoder import language_choice
    from indextts_core.text.frontend import TextFrontend
    from indextts_core.text.tiktoken_stage import run_tiktoken_stage

    bundle = write_tiny_bundle(root / "base", seed=0, version=version)
    ingested = ingest([ManifestInput(DEMO_DATASET_DIR / "manifest.jsonl")], root / "dataset", IngestConfig(), seed=1234)
    clips = clips_from_manifests({"train": ingested.train, "val": ingested.val})
    fe = TextFrontend()
    if bundle.is_v25:
        tokenizer = run_tiktoken_stage(bundle.tokenizer_path, {"am": [c.text for c in clips if c.language == "am"]},
                                       language_choice("am"), root / "tokenizer", fe).model_path
    else:
        from indextts_core.config import ExtendBpeConfig
        from indextts_core.text.extend_bpe import extend_bpe, probe_lines

        corpus = {"am": [fe(c.text, "am") for c in clips if c.language == "am"]}
        tokenizer = extend_bpe(bundle.tokenizer_path, corpus, probe_lines(None, fe), root / "tokenizer" /
                               "extended_bpe.model", ExtendBpeConfig(), seed=1234, frontend=fe.fingerprint()).model_path
    cfg = load_config()
    out = root / "processed_data"
    featureset = featureset_id(model_folder_digests(bundle.checkpoint_dir), cfg.preprocess, bundle.hidden_layer)
    preprocess(prepare(clips, bundle, tokenizer, fe, cfg.preprocess), FeatureFolder(out / "features", featureset),
               out, cfg.preprocess, min_duration_s=cfg.ingest.min_duration_s, max_duration_s=cfg.ingest.max_duration_s)
    pool = [out / "train_manifest.jsonl", out / "val_manifest.jsonl"]
    build_pairs(pool[0], out / "GPT_pairs_train.jsonl", PairingPolicy(seed=1234), pool)
    build_pairs(pool[1], out / "GPT_pairs_val.jsonl", PairingPolicy(seed=1234), pool)
    return {"checkpoint": str(bundle.checkpoint_dir), "tokenizer": str(tokenizer),
            "train": str(out / "GPT_pairs_train.jsonl"), "val": str(out / "GPT_pairs_val.jsonl")}


def child(spec: dict) -> None:
    """One training run in this process; prints one JSON line of measurements."""
    import torch

    from indextts_core.config import TrainConfig
    from indextts_core.training import TrainInputs, train

    torch.manual_seed(0)
    opts = TrainConfig(epochs=spec["epochs"], batch_tokens=1024, learning_rate=spec["lr"], new_rows_learning_rate=3e-3,
                       warmup_steps=5, val_interval=1000, val_audio_samples=0, val_generate=0, device=spec["device"],
                       lora_rank=spec["lora_rank"], lora_alpha=2.0 * max(1, spec["lora_rank"]), export=False)
    d = spec["data"]
    out = Path(spec["out"])
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    inputs = TrainInputs(Path(d["checkpoint"]), Path(d["tokenizer"]), Path(d["train"]), Path(d["val"]), out)
    result = train(inputs, opts)
    seconds = time.perf_counter() - start
    info = json.loads((out / "train.json").read_text())["model"]
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    print(json.dumps({
        "trainable": info["trainable_parameters"], "frozen": info["frozen_parameters"],
        "adam_state_mb": round(info["trainable_parameters"] * 8 / 2**20, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_before_training_mb": round(rss_before, 1),
        "gpu_peak_mb": round(gpu_peak, 1) if gpu_peak is not None else None,
        "steps": result.steps, "s_per_step": round(seconds / max(1, result.steps), 4),
        "val_loss_0": round(result.baseline["val/loss"], 4), "val_loss": round(result.final["val/loss"], 4),
        "mel_top1_0": round(result.baseline["val/mel_top1"], 4), "mel_top1": round(result.final["val/mel_top1"], 4),
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lora-rank", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of both modes (the demo's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="lora-bench-") as tmp:
        for version in ("2.0", "2.5"):
            data = prepare(Path(tmp) / version, version)
            for mode, rank in (("full", 0), (f"lora r{args.lora_rank}", args.lora_rank)):
                spec = {"data": data, "epochs": args.epochs, "lr": args.lr, "device": args.device, "lora_rank": rank,
                        "out": str(Path(tmp) / version / f"train-{rank}")}
                proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                                      text=True)
                if proc.returncode:
                    raise SystemExit(f"{version} {mode} failed:\n{proc.stderr[-3000:]}")
                rows.append({"base": version, "mode": mode, **json.loads(proc.stdout.strip().splitlines()[-1])})
    cols = ["base", "mode", "trainable", "adam_state_mb", "rss_before_training_mb", "peak_rss_mb", "gpu_peak_mb",
            "steps", "s_per_step", "val_loss_0", "val_loss", "mel_top1_0", "mel_top1"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    for version in ("2.0", "2.5"):
        full, lora = (r for r in rows if r["base"] == version)
        print(f"{version}: LoRA/full trainable parameters {lora['trainable'] / full['trainable']:.4f}, "
              f"s/step {lora['s_per_step'] / full['s_per_step']:.2f}, "
              f"peak RSS {lora['peak_rss_mb'] / full['peak_rss_mb']:.3f}, "
              f"validation loss drop {lora['val_loss_0'] - lora['val_loss']:.3f} "
              f"vs {full['val_loss_0'] - full['val_loss']:.3f}")
    full_size_counts(args.lora_rank)


def full_size_counts(rank: int, new_pieces: int = 12000) -> None:
    """Trainable parameters of full fine-tuning and of LoRA on the released full-size configurations.

    The rules are the trainer's (``prepare_model``): precomputed conditioners frozen, base text rows
    frozen (2.0: ``new_pieces`` rows appended by the tokenizer stage; 2.5: none), of 2.5's
    ``lang_embedding`` one row trains and of its text rows the new language's ``<|code|>``; with LoRA the stack,
    heads and mel embeddings train only through the adapters.
    """
    import torch

    from indextts_core.model import GPTConfig, UnifiedVoice
    from indextts_core.training.lora import ADAPTER_SUFFIXES, LoRASpec, apply_lora
    from indextts_core.training.setup import PRECOMPUTED

    print(f"\nfull-size configurations (meta device), LoRA rank {rank}, default targets:")
    print("| base | full fine-tuning trainable | LoRA trainable | ratio | AdamW state + grads, full | same, LoRA |")
    print("|---|---|---|---|---|---|")
    for name, version in (("indextts2_gpt_full_shapes.json", None), ("indextts25_gpt_full_shapes.json", "2.5")):
        ref = json.loads((REPO / "tests" / "fixtures" / name).read_text())
        cfg = GPTConfig.from_dict(ref["gpt_config"], version=version)
        with torch.device("meta"):
            model = UnifiedVoice(cfg)
        d = cfg.model_dim

        def count(*modules: str) -> int:
            return sum(p.numel() for m in modules if hasattr(model, m) for p in getattr(model, m).parameters())

        total = count(*dict(model.named_children()))
        frozen = count(*PRECOMPUTED, "speed_emb", "text_embedding", "text_head", "lang_embedding")
        # 2.0: the new text rows; 2.5: the language row and its <|code|> text row
        extra = 2 * d if cfg.is_v25 else new_pieces * (2 * d + 1)
        full = total - frozen + extra
        with torch.device("meta"):
            apply_lora(model.gpt, LoRASpec(rank=rank))
        lora = sum(p.numel() for n, p in model.named_parameters() if n.endswith(ADAPTER_SUFFIXES)) + extra
        gb = 12 / 2**30  # 4 bytes of gradient + 8 of AdamW moments per trainable fp32 parameter
        print(f"| {'2.5' if cfg.is_v25 else '2.0'} | {full:,} | {lora:,} | {lora / full:.4f} | {full * gb:.2f} GB | "
              f"{lora * gb:.2f} GB |")


if __name__ == "__main__":
    main()
