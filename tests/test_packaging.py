"""The distribution: its dependency pins, and a wheel that works from any folder.

torchaudio's wheels declare no torch requirement, so ``pip install .`` with loose pins paired torch
2.11.0 with torchaudio 2.11.1 (found in use: ``undefined symbol: torch_exception_get_what_without_backtrace``).
Exact pins in ``pyproject.toml``, equal to the lock's, make pip pick what ``uv sync --locked`` installs.

The wheel carries the demo (its dataset and run YAML, under ``indextts_core/demo/``): found in use, an
installed ``indextts-train run`` failed outside the checkout, which alone held them.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from tests_support import install_wheel, installed_env

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


#: Run in the installed copy: where the packages come from and where the demo resolves.
_PROBE = """
import json
import os
import flows, flows.cli, indextts_core, tasks
from indextts_core.config import DEMO_CONFIG, load_config
cfg = load_config(DEMO_CONFIG)
print(json.dumps({"modules": [m.__file__ for m in (flows, flows.cli, indextts_core, tasks)],
                  "config": str(DEMO_CONFIG), "source": cfg.ingest.source.source}))
"""


def test_the_installed_wheel_runs_the_demo_from_any_folder(tmp_path: Path):
    """Build the wheel (offline), install it into a folder, and from a folder that is not the checkout: the code
    comes from the installed copy, and the demo's run YAML and dataset (every clip the manifest names) are in it;
    `indextts-train config` with no --config prints the demo's settings, pure YAML on stdout."""
    site = install_wheel(tmp_path / "install")
    top = {p.name for p in site.iterdir()}
    assert top == {"flows", "tasks", "indextts_core", "indextts_train-0.1.0.dist-info"}, top
    entry = (site / "indextts_train-0.1.0.dist-info" / "entry_points.txt").read_text()
    assert "indextts-train = flows.cli:app" in entry

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env = {**env, **installed_env(site), "COLUMNS": "200", "NO_COLOR": "1"}
    probe = subprocess.run([sys.executable, "-c", _PROBE], cwd=elsewhere, env=env, capture_output=True, text=True,
                           timeout=120)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    for path in [*found["modules"], found["config"], found["source"]]:
        assert Path(path).resolve().is_relative_to(site.resolve()), path  # not the checkout
    dataset = Path(found["source"])
    rows = [json.loads(x) for x in (dataset / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 60 and all((dataset / r["audio"]).is_file() for r in rows)

    shown = subprocess.run([sys.executable, "-m", "flows.cli", "config"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert f"no --config: using the demo's settings ({found['config']})" in shown.stderr
    cfg = yaml.safe_load(shown.stdout)  # stdout is the YAML alone
    demo = yaml.safe_load(Path(found["config"]).read_text(encoding="utf-8"))
    assert cfg["train"]["learning_rate"] == demo["train"]["learning_rate"] == 1e-3
    assert cfg["run"]["output_dir"] == "runs/demo" and cfg["ingest"]["source"]["source"] == found["source"]
