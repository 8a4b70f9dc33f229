"""Run one training in this process, optionally killing it hard (SIGKILL) at a given point.

Used by the resume tests as a separate process: ``python child.py '<json>'`` with keys ``inputs``
and ``options`` (TrainInputs / TrainConfig fields), ``seed``, ``threads`` (torch intra-op threads), and optionally
``kill_after_step`` (right after
that optimizer step, before anything else happens) or ``kill_after_checkpoint`` (right after the
checkpoint of that step is written).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from indextts_core.config import TrainConfig
from indextts_core.training import TrainInputs, train


def main(spec: dict) -> None:
    inputs = TrainInputs(**{k: Path(v) if k in {"checkpoint_dir", "tokenizer", "train", "val", "output_dir"} and v
                            else v for k, v in spec["inputs"].items()})
    kill_step, kill_ckpt = spec.get("kill_after_step"), spec.get("kill_after_checkpoint")
    if spec.get("threads"):  # CPU results are bit-reproducible for a fixed number of intra-op threads
        import torch

        torch.set_num_threads(spec["threads"])

    def on_step(info) -> None:
        if info.step == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_checkpoint(path, progress, is_best) -> None:
        if progress.step == kill_ckpt:
            os.kill(os.getpid(), signal.SIGKILL)

    train(inputs, TrainConfig(**spec["options"]), seed=spec.get("seed", 1234), on_step=on_step,
          on_checkpoint=on_checkpoint)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
