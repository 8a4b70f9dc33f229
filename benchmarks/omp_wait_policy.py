"""Synthesis next to another busy process: OpenMP's default wait policy against PASSIVE and one thread, same run.

    uv run python benchmarks/omp_wait_policy.py                 # one busy neighbour, 4 lines per setting
    uv run python benchmarks/omp_wait_policy.py --busy 0        # a quiet machine

A tiny random checkpoint (official layout, written once into a temporary folder) says the same line
``--lines`` times through :class:`indextts_core.synthesis.run.Synthesizer` (GPT codes, S2Mel with 10
flow-matching steps, BigVGAN), in a fresh process per setting, while ``--busy`` other processes spin
on the CPU (a test run, a second command, a browser):

* **default**: torch's threads with OpenMP's default wait policy (idle threads spin for a while);
* **PASSIVE**: ``OMP_WAIT_POLICY=PASSIVE``, what ``indextts-train`` sets unless the user did (idle
  threads sleep);
* **1 thread**: ``OMP_NUM_THREADS=1``.

Reported: the median and min seconds of one line (the first line, which warms up, is left out) per
setting, and each setting against the default.  Not a test: it measures and prints.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROMPT = REPO / "indextts_core" / "demo" / "dataset" / "audio" / "spk01_am_001.flac"
SETTINGS = {"default": {}, "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}, "1 thread": {"OMP_NUM_THREADS": "1"}}


def _child(folder: str, lines: int) -> None:
    import torch

    from indextts_core.config import GenerationConfig
    from indextts_core.model.bundle import open_bundle
    from indextts_core.synthesis.run import Synthesizer

    synth = Synthesizer(open_bundle(folder, hf_cache=Path(folder) / "hf_cache"), GenerationConfig(), device="cpu",
                        diffusion_steps=10)
    state = synth.prompt(PROMPT)
    seconds = []
    for k in range(lines):
        start = time.perf_counter()
        synth.speak("ሰላም ነው፣ እንኳን ደህና መጡ።", "am", state, torch.Generator().manual_seed(k))
        seconds.append(time.perf_counter() - start)
    print(json.dumps(seconds))


def _spin() -> None:
    while True:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--busy", type=int, default=1, help="Busy processes running next to the synthesis.")
    parser.add_argument("--lines", type=int, default=4)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args.child, args.lines)
    sys.path.insert(0, str(REPO))
    from indextts_core.tiny import write_tiny_bundle

    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    with tempfile.TemporaryDirectory(prefix="omp-wait-") as tmp:
        write_tiny_bundle(tmp, seed=0)
        spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
        for p in spinners:
            p.start()
        try:
            results = {}
            for name, extra in SETTINGS.items():
                out = subprocess.run([sys.executable, __file__, "--child", tmp, "--lines", str(args.lines)],
                                     env={**base, **extra, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                                     check=True)
                results[name] = json.loads(out.stdout.strip().splitlines()[-1])[1:]
        finally:
            for p in spinners:
                p.terminate()
    print(f"{os.cpu_count()} CPUs, {args.busy} busy process(es) alongside; seconds per line (first line left out)")
    default = statistics.median(results["default"])
    for name, seconds in results.items():
        median = statistics.median(seconds)
        print(f"{name:<9} median {median:6.2f} s  min {min(seconds):6.2f} s  {default / median:5.1f}x the default")


if __name__ == "__main__":
    main()
