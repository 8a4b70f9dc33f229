"""A shim: the seed guide's ``python tools/tokenizer/extend_bpe.py ...`` is ``indextts-train extend-bpe ...``.

The arguments are passed on unchanged to the ``extend-bpe`` command of :mod:`flows.cli` (the same code,
flags, outputs and messages; ``indextts-train extend-bpe --help`` lists them).  Run it with the project's
Python (its virtual environment active, or ``uv run python ...``); relative paths are relative to the
folder it is run from, as for the command.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, whatever the cwd

from flows.cli import app  # noqa: E402

if __name__ == "__main__":
    app(["extend-bpe", *sys.argv[1:]], prog_name="indextts-train")
