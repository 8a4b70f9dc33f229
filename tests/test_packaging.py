"""The distribution's dependency pins: torch and torchaudio at patch versions that load together.

torchaudio's wheels declare no torch requirement, so ``pip install .`` with loose pins paired torch
2.11.0 with torchaudio 2.11.1 (found in use: ``undefined symbol: torch_exception_get_what_without_backtrace``).
Exact pins in ``pyproject.toml``, equal to the lock's, make pip pick what ``uv sync --locked`` installs.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {}
    for dep in deps:
        m = re.fullmatch(r"(torch|torchaudio)==(\d+\.\d+\.\d+)", dep.replace(" ", ""))
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_torch_and_torchaudio_are_pinned_to_the_locked_patch_versions():
    pins = _pins()
    assert set(pins) == {"torch", "torchaudio"}, "torch and torchaudio need exact ==X.Y.Z pins in pyproject.toml"
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = {p["name"]: p["version"] for p in lock["package"] if p["name"] in pins}
    assert locked == pins
    assert pins["torch"].rsplit(".", 1)[0] == pins["torchaudio"].rsplit(".", 1)[0]  # one release line
    for name, version in pins.items():  # and this environment is that pair (it imports: the suite runs on it)
        assert importlib.metadata.version(name).split("+")[0] == version
