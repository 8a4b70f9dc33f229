"""MLflow, in one place: the rest of the project never imports ``mlflow``.

Every call goes through :class:`mlflow.MlflowClient` with explicit run ids, so nothing depends on
MLflow's thread-local "active run" (Prefect runs tasks in worker threads).  Layout:

* one **parent run** per flow run (tags: Prefect flow-run id/name, deployment, git commit; params:
  the whole resolved config with secrets masked; artifact: ``config.yaml``);
* one **child run** per stage that actually runs (cached stages create none; the summary points at
  the run that produced their outputs), with the same tags, the stage's params, metrics, reports
  as artifacts, and dataset lineage through ``log_inputs``;
* the **model registry**: the versions training registers, their tags and the aliases promotion sets.

What the runs are called is :mod:`tasks.run_names`; where the store is, :mod:`tasks.tracking_store`;
closing the runs killed processes left RUNNING, :mod:`tasks.stale_runs` (with this module's client).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from indextts_core.config import PipelineConfig, config_to_dict, dump_config
from tasks.run_names import STAGE_NAMES, stage_run_name
from tasks.stale_runs import close_stale_runs, process_tags
from tasks.tracking_store import default_artifact_location, default_tracking_uri, first_use_lock

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


def start_parent_run(cfg: PipelineConfig, run_name: str, tags: Mapping[str, str]) -> TrackingRef:
    """Create the experiment if needed and open the parent run of a flow run."""
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_RUN_NAME, MLFLOW_SOURCE_NAME

    uri = default_tracking_uri(cfg)
    with first_use_lock(uri):  # two runs starting at once on a new store: one creates it, the other waits
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
def stage_run(ref: TrackingRef | None, stage: str,
              extra_tags: Mapping[str, str] | None = None) -> Iterator[StageRun | None]:
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
