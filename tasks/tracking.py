"""MLflow, in one place: the rest of the project never imports ``mlflow``.

Every call goes through :class:`mlflow.MlflowClient` with explicit run ids, so nothing depends on
MLflow's thread-local "active run" (Prefect runs tasks in worker threads).  Layout:

* one **parent run** per flow run (tags: Prefect flow-run id/name, deployment, git commit; params:
  the whole resolved config with secrets masked; artifact: ``config.yaml``);
* one **child run** per stage that actually runs (cached stages create none; the summary points at
  the run that produced their outputs), with the same tags, the stage's params, metrics, reports
  as artifacts, and dataset lineage through ``log_inputs``.

Default store: a sqlite database next to the run folders (``<run.output_dir>/../mlflow.db``), with
artifacts under ``mlartifacts/`` there or, when the artifact store is S3, under ``<store>/mlflow``.

Every run records the process that opened it (``indextts.host``, ``indextts.pid``,
``indextts.pid_started``).  A process killed outright cannot end its runs, so each new parent run
closes (status KILLED, tag ``indextts.closed_by`` = the new run) the runs of its experiment still
RUNNING whose process on this host is gone; runs of other hosts only after
``tracking.close_stale_runs_after_h`` hours.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import errno
import os
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from indextts_core.config import PipelineConfig, StorageConfig, config_to_dict, dump_config
from indextts_core.errors import OutputError

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_MAX_PARAM_CHARS = 6000


class TrackingRef(BaseModel):
    """What a task needs to attach a child run to the flow's parent run (picklable, no client)."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    tags: dict[str, str] = {}
    s3_endpoint_url: str | None = None
    run_names: dict[str, str] = {}  # stage -> its child run's name (what the run list shows)
    system_metrics_s: float | None = None  # sampling interval of system metrics on long stages; None: off


#: The settings that tell runs apart in the MLflow run list, per stage: (config path, short name).
LABELS: dict[str, tuple[tuple[str, str], ...]] = {
    "extend-bpe": (("extend_bpe.target_size", "vocab"),),
    "pairs": (("pairs.pairs_per_target", "ppt"),),
    "train": (("train.learning_rate", "lr"), ("train.epochs", "ep"), ("train.batch_tokens", "bt")),
    "evaluate": (("evaluate.max_items", "items"),),
}


#: Every stage that opens an MLflow run.
STAGE_NAMES = ("download", "ingest", "corpus", "extend-bpe", "preprocess", "pairs", "train", "evaluate", "promote")


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def stage_run_name(cfg: PipelineConfig, stage: str) -> str:
    """``train · lr=0.001 · ep=3 · bt=1024 · am``: the stage, the settings that tell its runs apart, the language."""
    parts = [stage]
    for path, short in LABELS.get(stage, ()):
        value: Any = cfg
        for name in path.split("."):
            value = getattr(value, name)
        parts.append(f"{short}={_short(value)}")
    return " · ".join([*parts, cfg.language])


def parent_run_name(cfg: PipelineConfig, flow_name: str) -> str:
    """``demo · finetune · lr=0.001 · ep=3 · bt=1024 · am``: the run, the flow, and the settings that tell its
    runs apart (the training's for the whole pipeline, the stage's for a one-stage flow), the language."""
    labels = stage_run_name(cfg, "train" if flow_name == "finetune" else flow_name).split(" · ")[1:]
    return " · ".join([cfg.run.name, flow_name, *labels])


def default_tracking_uri(cfg: PipelineConfig) -> str:
    if cfg.tracking.tracking_uri:
        return cfg.tracking.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    db = (cfg.run.output_dir.parent / "mlflow.db").resolve()
    return f"sqlite:///{db}"


def default_artifact_location(cfg: PipelineConfig) -> str:
    if cfg.storage.uri.startswith("s3://"):
        return cfg.storage.uri.rstrip("/") + "/mlflow"
    return (cfg.run.output_dir.parent / "mlartifacts").resolve().as_uri()


def git_commit() -> str:
    """The commit this code runs from: $GIT_COMMIT (images) or the checkout's HEAD (+ '-dirty')."""
    env = os.environ.get("GIT_COMMIT")
    if env:
        return env
    try:
        head = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists become JSON; long values are cut to MLflow's limit."""
    out: dict[str, str] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
            out[key] = text[:_MAX_PARAM_CHARS]
    return out


def _client(tracking_uri: str, s3_endpoint_url: str | None = None) -> Any:
    import mlflow

    if s3_endpoint_url and not os.environ.get("MLFLOW_S3_ENDPOINT_URL"):
        os.environ["MLFLOW_S3_ENDPOINT_URL"] = s3_endpoint_url
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


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
def _first_use_lock(uri: str) -> Iterator[None]:
    """An exclusive lock next to a sqlite store while its schema and experiment are created."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    with file_lock(db.with_name(db.name + ".lock"), f"the MLflow store {db.name}"):
        yield


# ------------------------------------------------------------------------ runs a killed process left RUNNING

HOST_TAG, PID_TAG, PID_STARTED_TAG = "indextts.host", "indextts.pid", "indextts.pid_started"
CLOSED_BY_TAG, CLOSED_WHY_TAG = "indextts.closed_by", "indextts.closed_reason"


def process_tags() -> dict[str, str]:
    """Which process opens a run: host name, pid and the pid's start time (so a reused pid is not taken for it)."""
    import psutil

    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()),
            PID_STARTED_TAG: f"{psutil.Process().create_time():.3f}"}


def _process_gone(tags: Mapping[str, str]) -> bool:
    """Whether the process named by a run's :func:`process_tags` (on this host) no longer runs."""
    import psutil

    try:
        proc = psutil.Process(int(tags[PID_TAG]))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return True
        started = tags.get(PID_STARTED_TAG)
        return started is not None and abs(proc.create_time() - float(started)) > 1.0  # the pid was reused
    except psutil.NoSuchProcess:
        return True
    except (ValueError, KeyError, psutil.Error):
        return False  # unreadable: leave the run alone


def close_stale_runs(client: Any, experiment_id: str, closed_by: str, max_age_h: float | None = None) -> list[str]:
    """Close (KILLED) the runs of an experiment left RUNNING by a process that is gone; returns their ids.

    A run of this host is closed when its process no longer runs; a run of another host (or one without
    process tags) only when it started more than ``max_age_h`` hours ago (None: never).  Each closed run is
    tagged with ``closed_by`` (the run that closed it) and the reason.  Never raises: it is housekeeping."""
    host, now_ms, closed = socket.gethostname(), time.time() * 1000, []
    try:
        running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'",
                                     max_results=1000)
        for r in running:
            tags, run_id = r.data.tags, r.info.run_id
            if run_id == closed_by:
                continue
            if tags.get(HOST_TAG) == host and PID_TAG in tags:
                if not _process_gone(tags):
                    continue
                why = f"left RUNNING by process {tags[PID_TAG]} on {host}, which is gone (killed?)"
            elif max_age_h is not None and now_ms - (r.info.start_time or now_ms) > max_age_h * 3600e3:
                why = (f"RUNNING for more than {max_age_h:g} h (host {tags.get(HOST_TAG, 'unknown')}, "
                       "tracking.close_stale_runs_after_h)")
            else:
                continue
            client.set_tag(run_id, CLOSED_BY_TAG, closed_by)
            client.set_tag(run_id, CLOSED_WHY_TAG, why)
            client.set_terminated(run_id, status="KILLED")
            closed.append(run_id)
            log.info("closed MLflow run %s (%s)", run_id, why)
    except Exception as e:  # noqa: BLE001 - a view on old runs: never a reason to fail this one
        log.warning("could not close the MLflow runs earlier processes left RUNNING: %s", e)
    return closed


def end_run_if_running(ref: TrackingRef, run_id: str, status: str = "FINISHED",
                       tags: Mapping[str, str] | None = None) -> bool:
    """End run ``run_id`` with ``status`` unless something already ended it; True when this call ended it."""
    try:
        client = _client(ref.tracking_uri, ref.s3_endpoint_url)
        if client.get_run(run_id).info.status != "RUNNING":
            return False
        for k, v in (tags or {}).items():
            client.set_tag(run_id, k, v)
        client.set_terminated(run_id, status=status)
        return True
    except Exception:  # noqa: BLE001 - never mask the stage's own outcome
        log.exception("could not close MLflow run %s", run_id)
        return False


# ------------------------------------------------------------------------ S3 credentials for MLflow and Prefect

#: The configuration's S3 settings -> the environment variables boto3 (MLflow's artifact upload, Prefect's
#: result records) reads.  The key pair moves together: never one half from the config and one from the env.
_KEY_PAIR = (("access_key_id", "AWS_ACCESS_KEY_ID"), ("secret_access_key", "AWS_SECRET_ACCESS_KEY"))


def storage_env(storage: StorageConfig) -> dict[str, str]:
    """The AWS variables the configuration's ``storage.*`` settings give (key pair, region, endpoint).

    What the configuration says wins over the ambient environment for the run: a key pair given in
    ``storage.*`` is the one this run's S3 clients use, whatever ``$AWS_ACCESS_KEY_ID`` holds."""
    env: dict[str, str] = {}
    if storage.access_key_id and storage.secret_access_key:
        env |= {var: getattr(storage, name).get_secret_value() for name, var in _KEY_PAIR}
    if storage.region:
        env["AWS_DEFAULT_REGION"] = storage.region
    if storage.endpoint_url:
        env |= {"AWS_ENDPOINT_URL_S3": storage.endpoint_url, "MLFLOW_S3_ENDPOINT_URL": storage.endpoint_url}
    return env


@contextlib.contextmanager
def storage_environment(storage: StorageConfig) -> Iterator[dict[str, str]]:
    """While the block runs, every S3 client this process builds without explicit credentials (MLflow's artifact
    repository, the Prefect result block, boto3 in Dask workers started meanwhile) sees the configuration's
    ``storage.*`` credentials, region and endpoint (:func:`storage_env`); afterwards the environment is as it
    was.  Yields the names it set (never their values in a log)."""
    added = storage_env(storage)
    before = {var: os.environ.get(var) for var in added}
    os.environ.update(added)
    _forget_boto3_default_session(added)
    try:
        yield added
    finally:
        for var, value in before.items():
            if os.environ.get(var) != added[var]:
                continue  # changed by someone else meanwhile: theirs
            if value is None:
                del os.environ[var]
            else:
                os.environ[var] = value
        _forget_boto3_default_session(added)


def _forget_boto3_default_session(changed: Mapping[str, str]) -> None:
    """boto3's module-level session resolves credentials once and keeps them: when the variables change, drop
    it, so the next ``boto3.client(...)`` (MLflow's, Prefect's) reads the environment as it is now."""
    import sys

    boto3 = sys.modules.get("boto3")
    if changed and boto3 is not None:
        boto3.DEFAULT_SESSION = None


def start_parent_run(cfg: PipelineConfig, run_name: str, tags: Mapping[str, str]) -> TrackingRef:
    """Create the experiment if needed and open the parent run of a flow run."""
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_RUN_NAME, MLFLOW_SOURCE_NAME

    uri = default_tracking_uri(cfg)
    with _first_use_lock(uri):  # two runs starting at once on a new store: one creates it, the other waits
        client = _client(uri, cfg.storage.endpoint_url)
        exp = client.get_experiment_by_name(cfg.tracking.experiment)
        if exp is not None:
            exp_id = exp.experiment_id
        else:  # a tracking server keeps its own (proxied) artifact root; a local store gets ours
            local = not uri.startswith(("http://", "https://", "databricks"))
            exp_id = client.create_experiment(cfg.tracking.experiment,
                                              artifact_location=default_artifact_location(cfg) if local else None)
            # a "Machine learning" experiment: the UI opens it on the runs table (MLflow 3 guesses otherwise)
            client.set_experiment_tag(exp_id, "mlflow.experimentKind", "custom_model_development")
    all_tags = {"git.commit": git_commit(), "language": cfg.language, "run.name": cfg.run.name, **process_tags(),
                **tags}
    run = client.create_run(exp_id, run_name=run_name, tags={
        **all_tags, MLFLOW_RUN_NAME: run_name, MLFLOW_GIT_COMMIT: all_tags["git.commit"],
        MLFLOW_SOURCE_NAME: "flows/finetune.py:finetune"})
    run_id = run.info.run_id
    close_stale_runs(client, exp_id, run_id, cfg.tracking.close_stale_runs_after_h)
    params = flatten(config_to_dict(cfg))
    _log_params(client, run_id, params)
    client.log_text(run_id, dump_config(cfg), "config.yaml")
    return TrackingRef(tracking_uri=uri, experiment_id=exp_id, parent_run_id=run_id, tags=all_tags,
                       s3_endpoint_url=cfg.storage.endpoint_url,
                       run_names={stage: stage_run_name(cfg, stage) for stage in STAGE_NAMES},
                       system_metrics_s=cfg.tracking.system_metrics_s)


def log_parent_metrics(ref: TrackingRef, metrics: Mapping[str, float]) -> None:
    """The run's headline numbers on the parent run (so the run list compares runs without expanding them)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, 0) for k, v in metrics.items() if isinstance(v, int | float)]
    if items:
        _client(ref.tracking_uri, ref.s3_endpoint_url).log_batch(ref.parent_run_id, metrics=items)


def _log_params(client: Any, run_id: str, params: Mapping[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100])


def end_run(ref: TrackingRef, run_id: str | None = None, status: str = "FINISHED") -> None:
    _client(ref.tracking_uri, ref.s3_endpoint_url).set_terminated(run_id or ref.parent_run_id, status=status)


def tag_run(ref: TrackingRef, tags: Mapping[str, str], run_id: str | None = None) -> None:
    client = _client(ref.tracking_uri, ref.s3_endpoint_url)
    for k, v in tags.items():
        client.set_tag(run_id or ref.parent_run_id, k, v)


def log_parent_artifact(ref: TrackingRef, local: Path, artifact_path: str | None = None) -> None:
    _client(ref.tracking_uri, ref.s3_endpoint_url).log_artifact(ref.parent_run_id, str(local), artifact_path)


@dataclass
class StageRun:
    """A child run being recorded.  Methods are thin and explicit about the run id."""

    client: Any
    run_id: str
    stage: str
    _step: dict[str, int] = field(default_factory=dict)

    def log_params(self, params: Mapping[str, Any]) -> None:
        _log_params(self.client, self.run_id, flatten(params))

    def log_metrics(self, metrics: Mapping[str, float | int], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if isinstance(v, int | float)]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_artifact(self, local: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(local), artifact_path)

    def log_artifacts(self, local_dir: Path, artifact_path: str | None = None) -> None:
        """Every file under ``local_dir``, keeping the folder's layout (a report with its audio)."""
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_input(self, name: str, uri: str, digest: str, context: str) -> None:
        """Dataset lineage: ``uri`` (store folder) with content ``digest`` was this run's ``context`` input."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        with warnings.catch_warnings():  # local paths match two equivalent registered source types
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            source = resolve_dataset_source(uri)
        dataset = MetaDataset(source, name=name, digest=digest[:36])
        self.client.log_inputs(self.run_id, datasets=[
            DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])])

    def record_backoff(self, failed_batch_size: int, next_batch_size: int, message: str) -> None:
        """One GPU out-of-memory backoff: a metric series plus the last event as tags."""
        n = self._step.get("oom", 0) + 1
        self._step["oom"] = n
        self.log_metrics({"oom_backoff_batch_size": next_batch_size, "oom_backoffs": n}, step=n)
        self.set_tags({"oom.last_failed_batch_size": str(failed_batch_size), "oom.last_message": message[:500]})


def open_stage_run(ref: TrackingRef, stage: str, extra_tags: Mapping[str, str] | None = None) -> StageRun:
    """Create a child run of the flow's parent run for ``stage`` (close it with :func:`close_stage_run`)."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

    client = _client(ref.tracking_uri, ref.s3_endpoint_url)
    name = ref.run_names.get(stage, stage)
    tags = {**ref.tags, "stage": stage, MLFLOW_PARENT_RUN_ID: ref.parent_run_id, MLFLOW_RUN_NAME: name,
            **(extra_tags or {})}
    return StageRun(client, client.create_run(ref.experiment_id, run_name=name, tags=tags).info.run_id, stage)


@contextlib.contextmanager
def system_metrics(ref: TrackingRef | None, run: StageRun | None) -> Iterator[None]:
    """MLflow's own system metrics (CPU, memory, disk, network; GPU with nvidia-ml-py and a GPU) on ``run``
    while the block runs, sampled every ``ref.system_metrics_s`` seconds."""
    if ref is None or run is None or not ref.system_metrics_s:
        yield
        return
    monitor = None
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run.run_id, sampling_interval=ref.system_metrics_s,
                                       tracking_uri=ref.tracking_uri)
        monitor.start()
    except Exception as e:  # noqa: BLE001 - a view on the machine: never a reason to fail the stage
        log.warning("system metrics off for %s: %s", run.stage, e)
        monitor = None
    try:
        yield
    finally:
        if monitor is not None:
            monitor.finish()


def attach_stage_run(ref: TrackingRef, run_id: str, stage: str) -> StageRun:
    """A handle on an existing child run (for work spread over several tasks or processes)."""
    return StageRun(_client(ref.tracking_uri, ref.s3_endpoint_url), run_id, stage)


def close_stage_run(run: StageRun, status: str = "FINISHED") -> None:
    try:
        run.client.set_terminated(run.run_id, status=status)
    except Exception:  # noqa: BLE001 - never mask the stage's own error
        log.exception("could not close MLflow run %s", run.run_id)


@contextlib.contextmanager
def stage_run(ref: TrackingRef | None, stage: str, extra_tags: Mapping[str, str] | None = None) -> Iterator[StageRun | None]:
    """Open a child run of the flow's parent run for ``stage``; FAILED if the block raises."""
    if ref is None:
        yield None
        return
    run = open_stage_run(ref, stage, extra_tags)
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    finally:
        close_stage_run(run, status)


def search_runs(tracking_uri: str, experiment: str, filter_string: str = "") -> list[Any]:
    """Runs of an experiment (for tests and reports)."""
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return list(client.search_runs([exp.experiment_id], filter_string=filter_string, max_results=1000))


class MlflowMetricSink:
    """A trainer metric sink that records on a stage run, in batches (one request per ``flush_every`` metrics)."""

    def __init__(self, run: StageRun, flush_every: int = 500):
        self.run, self.flush_every = run, flush_every
        self._pending: list[Any] = []

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        while self._pending:  # MLflow takes at most 1000 metrics per batch
            batch, self._pending = self._pending[:1000], self._pending[1000:]
            self.run.client.log_batch(self.run.run_id, metrics=batch)

    def log_audio(self, tag: str, wav: Path, samples: Any, sample_rate: int, step: int) -> None:
        """The wav as an artifact, ``samples/step_<N>/<file>``: listen to it in the run's artifact view."""
        self.run.log_artifact(wav, f"samples/step_{step:06d}")

    def close(self) -> None:
        self.flush()


def register_model(ref: TrackingRef, name: str, source: str, run_id: str, tags: Mapping[str, str],
                   description: str = "") -> str:
    """A new version of registered model ``name`` pointing at ``source`` (the exported folder); returns it.

    ``create_model_version`` with an explicit source: ``register_model("runs:/...")`` fails for a
    plain checkpoint folder (it is not an MLflow-logged model) and leaves an empty model behind.
    """
    from mlflow.exceptions import MlflowException

    client = _client(ref.tracking_uri, ref.s3_endpoint_url)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="IndexTTS2 GPT fine-tuned by indextts-train (official "
                                       "checkpoint layout; load it with the official inference code).")
    mv = client.create_model_version(name, source=source, run_id=run_id, tags={k: str(v) for k, v in tags.items()},
                                     description=description)
    return str(mv.version)


def model_version_by_alias(ref: TrackingRef, name: str, alias: str) -> dict[str, Any] | None:
    """The version of registered model ``name`` that ``alias`` points at: version, source, tags; None if unset."""
    from mlflow.exceptions import MlflowException

    client = _client(ref.tracking_uri, ref.s3_endpoint_url)
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return {"version": str(mv.version), "source": mv.source, "run_id": mv.run_id, "tags": dict(mv.tags or {})}


def set_model_alias(ref: TrackingRef, name: str, alias: str, version: str) -> None:
    _client(ref.tracking_uri, ref.s3_endpoint_url).set_registered_model_alias(name, alias, version)


def tag_model_version(ref: TrackingRef, name: str, version: str, tags: Mapping[str, Any]) -> None:
    client = _client(ref.tracking_uri, ref.s3_endpoint_url)
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, str(v))


def model_version(ref: TrackingRef, name: str, version: str) -> dict[str, Any] | None:
    """Version ``version`` of registered model ``name`` (source, run, tags), or None if this registry lacks it."""
    from mlflow.exceptions import MlflowException

    try:
        mv = _client(ref.tracking_uri, ref.s3_endpoint_url).get_model_version(name, version)
    except MlflowException:
        return None
    return {"version": str(mv.version), "source": mv.source, "run_id": mv.run_id, "tags": dict(mv.tags or {})}
