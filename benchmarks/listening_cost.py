"""What listening costs: audio samples during training and the evaluation stage, against training itself.

    uv run python benchmarks/listening_cost.py                     # the demo config, CPU
    uv run python benchmarks/listening_cost.py --config run.yaml --set train.device=cuda

Runs the ``finetune`` flow twice on the same configuration in a fresh folder: once as configured
(audio samples during training, then the evaluation), once with ``train.val_audio_samples=0`` and
``evaluate.enabled=false`` (the baseline, measured in the same run).  Reported:

* the train stage's wall time with and without samples, their difference and ratio, and the
  samples' own time as the trainer logged it (``time/audio_samples_s``: readings, items, seconds);
* the evaluation: items, seconds per model, seconds per item, generated audio seconds and the
  real-time factor, and its time as a share of the train stage's.

Not a test: it measures and prints (the tiny demo model's numbers say what the plumbing costs on a
CPU; run it with a real checkpoint on a GPU for real figures).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from indextts_core.config import DEMO_CONFIG, load_config  # noqa: E402
from indextts_core.training.metrics import read_metrics  # noqa: E402


def run_once(config: Path, overrides: list[str], root: Path, name: str) -> dict:
    from flows.finetune import finetune

    cfg = load_config(config, [*overrides, f"run.name={name}", f"run.output_dir={root / name}",
                               f"storage.uri={root / name / 'store'}",
                               f"tracking.tracking_uri=sqlite:///{root / 'mlflow.db'}"])
    summary = finetune(cfg)
    rows = {r.stage: r for r in summary.stages}
    (ckpts,) = (cfg.run.output_dir / cfg.train.output_name).iterdir()
    readings = [m["time/audio_samples_s"] for m in read_metrics(ckpts / "metrics.jsonl") if "time/audio_samples_s" in m]
    samples = ckpts / "samples"
    items = sum(len(list(d.glob("*.wav"))) for d in samples.iterdir()) if samples.is_dir() else 0
    out = {"train_s": rows["train"].seconds, "steps": summary.results["train"]["metrics"]["steps"],
           "sample_readings": len(readings), "sample_items": items, "samples_s": sum(readings)}
    if "evaluate" in rows:
        ev = json.loads((cfg.run.output_dir / "evaluate" / "evaluation.json").read_text())
        out |= {"eval_stage_s": rows["evaluate"].seconds, "eval_items": ev["evalset"]["items"],
                "eval_models": {k: v["seconds"] for k, v in ev["models"].items()}, "eval_audio_s": ev["audio_s"],
                "eval_s": ev["seconds"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=DEMO_CONFIG)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    from flows.cli_support import prefect_defaults

    prefect_defaults()
    with tempfile.TemporaryDirectory(prefix="listening-cost-") as tmp:
        root = Path(tmp)
        base = run_once(args.config, [*args.overrides, "train.val_audio_samples=0", "evaluate.enabled=false"],
                        root, "baseline")
        full = run_once(args.config, args.overrides, root, "listening")
    print(f"\nconfig: {args.config}  overrides: {args.overrides or '-'}")
    print(f"train stage, no samples (baseline): {base['train_s']:.1f} s for {base['steps']} steps")
    extra = full["train_s"] - base["train_s"]
    print(f"train stage, with samples:          {full['train_s']:.1f} s  "
          f"(+{extra:.1f} s, x{full['train_s'] / base['train_s']:.2f})")
    if full["sample_readings"]:
        print(f"  audio samples: {full['sample_readings']} readings, {full['sample_items']} items, "
              f"{full['samples_s']:.1f} s logged ({full['samples_s'] / full['sample_readings']:.1f} s per reading, "
              f"{full['samples_s'] / max(full['sample_items'], 1):.2f} s per item)")
    if "eval_s" in full:
        per_item = {k: v / full["eval_items"] for k, v in full["eval_models"].items()}
        print(f"evaluation stage: {full['eval_stage_s']:.1f} s ({full['eval_stage_s'] / base['train_s']:.2f} x the "
              f"baseline train stage); {full['eval_items']} items; per model "
              + ", ".join(f"{k} {v:.1f} s ({per_item[k]:.2f} s/item)" for k, v in full["eval_models"].items())
              + f"; {full['eval_audio_s']:.1f} s of audio generated, real-time factor "
              f"{full['eval_s'] / max(full['eval_audio_s'], 1e-9):.2f} (evaluation seconds / audio seconds)")


if __name__ == "__main__":
    main()
