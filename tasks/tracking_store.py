"""Where the MLflow tracking store is, how to open its UI, and the lock that guards a sqlite store's first use.

Default store: a sqlite database next to the run folders (``<run.output_dir>/../mlflow.db``), with
artifacts under ``mlartifacts/`` there or, when the artifact store is S3, under ``<store>/mlflow``;
``tracking.tracking_uri`` or ``$MLFLOW_TRACKING_URI`` names another.  :func:`file_lock` also guards
Prefect's sqlite database (``flows/api_server.py``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from indextts_core.config import PipelineConfig
from indextts_core.errors import OutputError


def default_tracking_uri(cfg: PipelineConfig) -> str:
    """``tracking.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else the sqlite store next to the run folders."""
    if cfg.tracking.tracking_uri:
        return cfg.tracking.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    db = (cfg.run.output_dir.parent / "mlflow.db").resolve()
    return f"sqlite:///{db}"


def default_artifact_location(cfg: PipelineConfig) -> str:
    """Where a new experiment in a local store keeps its artifacts: ``<store>/mlflow`` on S3, else ``mlartifacts/``."""
    if cfg.storage.uri.startswith("s3://"):
        return cfg.storage.uri.rstrip("/") + "/mlflow"
    return (cfg.run.output_dir.parent / "mlartifacts").resolve().as_uri()


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """A link to the run in the MLflow UI (for a sqlite store: the command that serves the UI, too)."""
    path = f"#/experiments/{experiment_id}/runs/{run_id}"
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/{path}"
    return f"http://127.0.0.1:5000/{path} (start the UI: mlflow ui --backend-store-uri {tracking_uri})"


#: Errors that mean "this machine refuses writes there" (not a transient fault).
_REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS)


@contextlib.contextmanager
def file_lock(path: Path, what: str = "the lock") -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created, with its folder, if needed) while the block runs.

    A folder this machine may not write to is an :class:`OutputError` naming it (``what`` says what was to go
    there); the lock goes with the process, so a killed holder never blocks the next one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")  # noqa: SIM115 - closed below
    except OSError as e:
        if e.errno not in _REFUSED:
            raise
        raise OutputError(f"{path.parent}: not writable ({e.strerror or e}), and {what} goes there; make the folder "
                          "writable, or choose another one (for the MLflow store next to the run folders: another "
                          "run.output_dir, or tracking.tracking_uri / MLFLOW_TRACKING_URI)") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def first_use_lock(uri: str) -> Iterator[None]:
    """An exclusive lock next to a sqlite store while its schema and experiment are created."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    with file_lock(db.with_name(db.name + ".lock"), f"the MLflow store {db.name}"):
        yield
