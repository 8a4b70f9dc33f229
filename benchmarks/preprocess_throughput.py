"""Preprocessing throughput: length-sorted batches against one clip at a time, measured in the same run.

    uv run python benchmarks/preprocess_throughput.py                      # tiny random bundle, demo clips
    uv run python benchmarks/preprocess_throughput.py --checkpoint checkpoints --device cuda --repeat 10

Decodes the demo clips (repeated ``--repeat`` times) once, then times the model work (Wav2Vec2-BERT
features, semantic codes, speaker latents, emotion vectors) both ways over the same clips, after a
warm-up pass, and reports clips per second and audio seconds per second for each, and their ratio.
Also times the whole stage (``preprocess``: tokenizing, decoding, gates, batching, shards, index) end to end,
on a local feature folder (naming the feature set, which hashes the checkpoint folder, is not timed).
Not a test: it measures and prints, it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from indextts_core.config import DEMO_DATASET_DIR, PreprocessConfig  # noqa: E402
from indextts_core.data.audio import load_audio  # noqa: E402
from indextts_core.model.bundle import open_bundle  # noqa: E402
from indextts_core.tiny import write_tiny_bundle  # noqa: E402
from indextts_core.preprocess import (  # noqa: E402
    CPU_BATCH_SECONDS,
    Clip,
    FeatureExtractor,
    FeatureFolder,
    featureset_id,
    length_batches,
    model_folder_digests,
    prepare,
    preprocess,
    probe_batch_seconds,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, help="checkpoint folder (default: a tiny random bundle)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeat", type=int, default=2, help="times the 60 demo clips are used")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="bench-preprocess-"))
    bundle = open_bundle(args.checkpoint) if args.checkpoint else write_tiny_bundle(tmp / "tiny")
    rows = [json.loads(x) for x in (DEMO_DATASET_DIR / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    audio = [str(DEMO_DATASET_DIR / r["audio"]) for r in rows] * args.repeat
    waves = [load_audio(a, 16000).samples for a in audio]
    seconds_of_audio = sum(len(w) for w in waves) / 16000
    torch.set_grad_enabled(False)
    extract = FeatureExtractor(bundle, device)
    budget = probe_batch_seconds(extract, waves, device) if device.type == "cuda" else CPU_BATCH_SECONDS
    batches = length_batches([len(w) / 16000 for w in waves], budget)
    extract(waves[:2])  # warm-up (kernels, allocator)

    solo = timed(lambda: [extract([w]) for w in waves], device)
    batched = timed(lambda: [extract([waves[i] for i in b]) for b in batches], device)

    clips = [Clip(id=f"c{i}", audio=a, text=rows[i % len(rows)]["text"], speaker=rows[i % len(rows)]["speaker"],
                  language=rows[i % len(rows)]["language"], split="train") for i, a in enumerate(audio)]
    tok = bundle.tokenizer_path
    from indextts_core.text.frontend import TextFrontend

    cfg = PreprocessConfig(device=device.type, max_batch_seconds=budget, max_unk_share=1.0)
    features = FeatureFolder(tmp / "out" / "features",
                             featureset_id(model_folder_digests(bundle.checkpoint_dir), cfg, bundle.hidden_layer))
    start = time.perf_counter()
    result = preprocess(prepare(clips, bundle, tok, TextFrontend(), cfg), features, tmp / "out", cfg,
                        extract=extract, min_duration_s=0.5, max_duration_s=36.0)  # the model's ~36 s limit
    stage = time.perf_counter() - start

    n = len(waves)
    figures = {
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                 f" ({torch.get_num_threads()} threads)"),
        "model": "tiny random bundle" if not args.checkpoint else str(args.checkpoint),
        "clips": n, "audio_seconds": round(seconds_of_audio, 1), "batch_budget_seconds": round(budget, 1),
        "batches": len(batches), "mean_clips_per_batch": round(n / len(batches), 1),
        "one_at_a_time": {"seconds": round(solo, 3), "clips_per_s": round(n / solo, 2),
                          "audio_s_per_s": round(seconds_of_audio / solo, 2)},
        "batched": {"seconds": round(batched, 3), "clips_per_s": round(n / batched, 2),
                    "audio_s_per_s": round(seconds_of_audio / batched, 2)},
        "speedup_batched_vs_one_at_a_time": round(solo / batched, 2),
        "whole_stage": {"seconds": round(stage, 3), "clips_per_s": round(n / stage, 2),
                        "indexed": result.indexed, "rejected": result.rejected},
    }
    print(f"device: {figures['device']}; model: {figures['model']}")
    print(f"{n} clips, {seconds_of_audio:.1f} s of audio; batch budget {budget:.1f} s -> {len(batches)} batches")
    print(f"{'':24}{'seconds':>10}{'clips/s':>10}{'audio s/s':>11}")
    for name in ("one_at_a_time", "batched"):
        f = figures[name]
        print(f"{name:24}{f['seconds']:>10}{f['clips_per_s']:>10}{f['audio_s_per_s']:>11}")
    print(f"batched / one at a time: {figures['speedup_batched_vs_one_at_a_time']}x")
    w = figures["whole_stage"]
    print(f"whole stage (decode, gates, shards, index): {w['seconds']} s, {w['clips_per_s']} clips/s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
