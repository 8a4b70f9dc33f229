"""Where a deployment run's configuration comes from: a run YAML named by a flow parameter.

``config`` may be

* ``demo``: the bundled demo's settings (``indextts_core/demo/demo.yaml``, shipped inside the
  package, so it resolves wherever the worker runs);
* a path (relative to the run's working directory: the checkout a process worker runs in, or the
  image's ``/opt/indextts-train``, which ships ``configs/``);
* an ``s3://bucket/key.yaml`` URI (credentials as for the artifact store: the ``AWS_*``
  environment of the worker);
* ``variable://NAME``: a Prefect Variable holding the YAML text (or the same mapping as JSON), so a
  team changes the nightly run from the UI (Variables) without redeploying.

The file is read when the run starts, so edits reach the next scheduled run; nothing is baked in
at deploy time.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from indextts_core.config import (
    DEMO_CONFIG,
    ConfigError,
    PipelineConfig,
    StorageConfig,
    config_from_text,
    load_config,
)

VARIABLE = "variable://"
#: The name that stands for the bundled demo's run YAML (:data:`indextts_core.config.DEMO_CONFIG`).
DEMO = "demo"


def read_run_config(config: str, storage: StorageConfig | None = None,
                    overrides: Mapping[str, Any] | None = None) -> PipelineConfig:
    """The run configuration ``config`` names (see the module docstring) with dotted ``overrides`` on top
    (``{"train.epochs": 1}``, as ``--set`` does); errors name the file or override and the field."""
    overrides = dict(overrides or {})
    config = config.strip()
    if config == DEMO:
        return load_config(DEMO_CONFIG, overrides)
    if config.startswith(VARIABLE):
        from prefect.variables import Variable

        name = config.removeprefix(VARIABLE)
        value = Variable.get(name, default=None)
        if value is None:
            raise ConfigError(f"{config}: no Prefect Variable named {name!r} (create it in the UI under Variables, "
                              f"or `prefect variable set {name} \"$(cat run.yaml)\"`)")
        text = value if isinstance(value, str) else yaml.safe_dump(value)
        return config_from_text(text, config, overrides)
    if config.startswith("s3://"):
        from indextts_core.store.objects import ObjectNotFoundError, read_uri_bytes

        try:
            text = read_uri_bytes(config, storage or StorageConfig()).decode("utf-8")
        except (ObjectNotFoundError, FileNotFoundError):
            raise ConfigError(f"{config}: config file not found") from None
        return config_from_text(text, config, overrides)
    return load_config(Path(config).expanduser(), overrides)
