"""``python -m indextts_core.training.launch SPEC.json``: one training process, e.g. one rank under torchrun.

The train stage writes the spec and starts ``torchrun ... -m indextts_core.training.launch SPEC.json``
on a machine with several GPUs; every rank runs :func:`~indextts_core.training.train` on the same
local files, and rank 0 writes the results (``train_summary.json``, ``metrics.jsonl``) the stage
reads back.  The spec is plain JSON:

* ``inputs``: the :class:`~indextts_core.training.TrainInputs` fields (paths as strings);
* ``options``: the ``train`` section (:class:`~indextts_core.config.TrainConfig`, with ``resume`` and
  ``warm_start``);
* ``seed``: the run's seed;
* ``storage``: the ``storage`` section without its secrets, to read ``store:`` / ``s3://`` prompt audio
  for the audio samples (credentials come from the environment the launcher inherits).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from indextts_core.config import PairsConfig, StorageConfig, TrainConfig
from indextts_core.training.records import TrainInputs, TrainResult

#: Fields never written into a spec (secrets travel in the environment, not in files).
SECRET_FIELDS = {"access_key_id", "secret_access_key", "access_key_id_file", "secret_access_key_file"}
_PATHS = {f.name for f in fields(TrainInputs)} - {"pairing", "read_audio"}


def write_spec(path: Path, inputs: TrainInputs, options: TrainConfig, seed: int,
               storage: StorageConfig | None = None) -> Path:
    """Write the spec a launched process reads (atomically); the pairing policy and audio reader are rebuilt there."""
    from indextts_core.utils.fileio import write_json

    plain = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(inputs).items()
             if k not in ("pairing", "read_audio")}
    spec: dict[str, Any] = {"inputs": plain, "options": options.model_dump(mode="json"), "seed": seed,
                            "pairing": ({"config": inputs.pairing.config.model_dump(mode="json"),
                                         "seed": inputs.pairing.seed} if inputs.pairing is not None else None),
                            "storage": storage.model_dump(mode="json", exclude=SECRET_FIELDS) if storage else None}
    write_json(path, spec)
    return path


def read_spec(path: Path) -> tuple[TrainInputs, TrainConfig, int]:
    """The training a spec describes: its inputs (with a pairing policy and an audio reader), options and seed."""
    from indextts_core.preprocess.pairs import PairingPolicy
    from indextts_core.store.objects import read_uri_bytes

    spec = json.loads(Path(path).read_text(encoding="utf-8"))
    given = {k: (Path(v) if k in _PATHS and v is not None else v) for k, v in spec["inputs"].items()}
    storage = StorageConfig(**spec["storage"]) if spec.get("storage") else None
    given_pairing = spec.get("pairing")
    pairing = (PairingPolicy(PairsConfig(**given_pairing["config"]), seed=int(given_pairing["seed"]))
               if given_pairing else None)
    inputs = TrainInputs(**given, pairing=pairing, read_audio=lambda uri: read_uri_bytes(uri, storage))
    return inputs, TrainConfig(**spec["options"]), int(spec["seed"])


def main(argv: list[str] | None = None) -> TrainResult:
    from indextts_core.training.trainer import train

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m indextts_core.training.launch SPEC.json")
    inputs, options, seed = read_spec(Path(args[0]))
    return train(inputs, options, seed=seed)


if __name__ == "__main__":  # pragma: no cover - started by torchrun
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
