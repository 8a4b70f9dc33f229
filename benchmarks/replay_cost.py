"""What base-language replay costs per epoch: the demo trained without and with ``train.replay_share``.

    uv run python benchmarks/replay_cost.py                       # CPU: the demo's data, none vs 0.2
    uv run python benchmarks/replay_cost.py --shares none,0.1,0.2 --repeats 2 --device cuda

The demo's data (Amharic, the new language, and English, a replay language: the base speaks it) is
prepared once with the library's own stages (ingest, tokenizer extension, preprocess, pairs) on the
tiny 2.0 base.  Each training then runs in a fresh Python process with the demo's settings
(``indextts_core/demo/demo.yaml``: 3 epochs, 1024-token steps, learning rate 1e-3, seed 1234),
validating at each epoch end only, without audio samples or decoding (their cost does not depend
on the mix); the only difference between the rows is ``train.replay_share`` ("none": the data's
natural mix, every clip once).  With ``--repeats`` the settings are run in turn, that many times;
each row shows the fastest run's seconds (the least disturbed by other work on the machine).

Reported per setting: replay samples drawn and their share of the tokens (``train.json``), tokens
and optimizer steps per epoch, training seconds per epoch (the steps' own time, no validation),
and each replay language's validation loss at step 0 and at the end with its rise (what the
forgetting alarm reads), plus the new language's; then the ratios of each setting to the first.
Not a test: it measures and prints, it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def prepare(root: Path) -> dict[str, str]:
    """The tiny 2.0 base, its extended tokenizer, the demo's features and pairs under ``root`` (as
    ``benchmarks/lora_vs_full.py`` prepares them)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from lora_vs_full import prepare as prepare_demo

    return prepare_demo(root, "2.0")


def child(spec: dict) -> None:
    """One training run in this process; prints one JSON line of measurements."""
    from indextts_core.config import DEMO_CONFIG, load_config
    from indextts_core.training import TrainInputs, train

    demo = load_config(DEMO_CONFIG)
    opts = demo.train.model_copy(update={
        "replay_share": spec["share"], "val_interval": 10**6, "val_audio_samples": 0, "val_generate": 0,
        "device": spec["device"], "export": False})
    d, out = spec["data"], Path(spec["out"])
    result = train(TrainInputs(Path(d["checkpoint"]), Path(d["tokenizer"]), Path(d["train"]), Path(d["val"]), out),
                   opts, seed=demo.run.seed)
    run = json.loads((out / "train.json").read_text())
    epochs = run["replay"]["epochs"]
    groups = ("seen_speakers", "unseen_speakers")
    losses = {k.split("/")[1]: (result.baseline[k], result.final[k]) for k in result.final
              if k.count("/") == 2 and k.endswith("/loss") and k.split("/")[1] not in groups}
    print(json.dumps({
        "epochs": len(epochs), "replay_available": epochs[0]["replay_available"],
        "replay_drawn": statistics.mean(e["replay_drawn"] for e in epochs),
        "token_share": statistics.mean(e["token_share"] for e in epochs),
        "tokens_per_epoch": statistics.mean(e["new_tokens"] + e["replay_tokens"] for e in epochs),
        "steps_per_epoch": statistics.mean(run["steps_per_epoch"]),
        "s_per_epoch": result.throughput["seconds"] / len(epochs),
        "losses": losses, "replay": sorted(result.forgetting),
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shares", default="none,0.2", help="comma-separated train.replay_share values (none: natural)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per setting, in turn; the median is shown")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    shares = [None if s.strip().lower() == "none" else float(s) for s in args.shares.split(",")]
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="replay-bench-") as tmp:
        data = prepare(Path(tmp))
        for r in range(args.repeats):
            for share in shares:
                name = "none" if share is None else f"{share:g}"
                spec = {"data": data, "share": share, "device": args.device, "out": str(Path(tmp) / f"{name}-{r}")}
                proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                                      text=True)
                if proc.returncode:
                    raise SystemExit(f"replay_share {name} failed:\n{proc.stderr[-3000:]}")
                runs.setdefault(name, []).append(json.loads(proc.stdout.strip().splitlines()[-1]))
    rows = []
    for name, measured in runs.items():
        first = measured[0]
        row = {"replay_share": name, **{k: statistics.median(m[k] for m in measured) for k in (
            "replay_drawn", "token_share", "tokens_per_epoch", "steps_per_epoch")},
               "s_per_epoch": min(m["s_per_epoch"] for m in measured)}  # the least disturbed run
        for lang, (before, after) in sorted(first["losses"].items()):
            kind = "replay" if lang in first["replay"] else "new"
            row[f"{lang} ({kind}) val loss"] = f"{before:.3f} -> {after:.3f} ({100 * (after / before - 1):+.1f}%)"
        row["replay_available"] = first["replay_available"]
        rows.append(row)
    base = rows[0]
    for row in rows:
        row["tokens x"] = round(row["tokens_per_epoch"] / base["tokens_per_epoch"], 3)
        row["seconds x"] = round(row["s_per_epoch"] / base["s_per_epoch"], 3)
        row["token_share"] = f"{100 * row['token_share']:.1f}%"
        row["s_per_epoch"] = round(row["s_per_epoch"], 3)
        row["replay_drawn"] = round(row["replay_drawn"], 1)
        row["tokens_per_epoch"] = round(row["tokens_per_epoch"])
        row["steps_per_epoch"] = round(row["steps_per_epoch"], 1)
    cols = list(dict.fromkeys(k for row in rows for k in row))
    print(f"demo, {args.device}, {args.repeats} run(s) per setting (seconds: the fastest); ratios against replay_share "
          f"{base['replay_share']}")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "")) for c in cols) + " |")


if __name__ == "__main__":
    main()
