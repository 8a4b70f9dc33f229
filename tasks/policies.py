"""Policies every stage task shares: which errors are retried, how cache keys are built, OOM backoff.

* **Retries.**  :func:`retry_on_transient` is the ``retry_condition_fn`` of every stage task: it
  retries network, S3 and I/O faults and GPU out-of-memory at the floor (:class:`GpuOOM`), and
  never retries deterministic errors (bad config, bad manifest, corrupt files: ``InputError``) or
  programming errors.
* **Caching.**  :class:`StageCache` keys a stage on exactly what determines its output: the config
  fields the stage declares, the content digests of its input artifacts, and the stage's code
  version; combined with Prefect's ``TASK_SOURCE``.  Results persist in the artifact store, so
  the cache holds across processes, flow runs and machines sharing a bucket.
* **GPU OOM.**  The in-process halving loop is :func:`indextts_core.utils.oom.run_with_oom_backoff`; here
  are the hooks that record each backoff on the MLflow run and the Prefect log, and that start a
  Prefect retry of the task from a smaller batch.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prefect.cache_policies import TASK_SOURCE, CachePolicy
from prefect.utilities.hashing import hash_objects
from indextts_core.errors import InputError, StorageError
from indextts_core.utils.oom import BackoffEvent, GpuOOM, batch_for_attempt
from tasks.keys import config_subset, stable
from tasks.result_storage import ResultJSON

log = logging.getLogger(__name__)

_TRANSIENT_ERRNOS = {errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE,
                     errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EAGAIN, errno.EIO, errno.ESTALE}


def is_transient(exc: BaseException) -> bool:
    """Would running the same thing again plausibly succeed?"""
    if isinstance(exc, InputError):
        return False
    if isinstance(exc, GpuOOM):
        return True
    if isinstance(exc, StorageError):
        return exc.transient
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    try:  # botocore's connection-level errors (no HTTP response at all)
        from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

        if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError):
            return True
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    return False


def retry_on_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only transient faults."""
    try:
        state.result()
    except Exception as e:  # noqa: BLE001 - the point is to look at it
        retry = is_transient(e)
        # a retry is news on the console; a deterministic failure is said by the command's error line (DEBUG: the log's)
        log.log(logging.INFO if retry else logging.DEBUG, "%s failed with %s: %s", getattr(task_run, "name", "task"),
                type(e).__name__, "retrying" if retry else "not retrying (deterministic)")
        return retry
    return False


#: Decorator settings shared by every stage task (the flow overrides retries/delays from config).
STAGE_TASK_OPTIONS: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": [10, 60],
    "retry_jitter_factor": 0.2,
    "retry_condition_fn": retry_on_transient,
    "persist_result": True,
    "result_serializer": ResultJSON(),  # never pickle: results are read back from a shared store
}


@dataclass
class StageCache(CachePolicy):
    """Cache key = stage name + code version + declared config fields + input artifact digests.

    The task must take the run configuration as ``cfg``; its other parameters (artifact refs,
    plain values) are hashed by content, except those listed in ``ignore`` (run context: MLflow
    ids, paths).
    """

    stage: str = ""
    version: str = ""
    config_keys: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ("cfg", "ctx")

    def key_parts(self, inputs: dict[str, Any]) -> dict[str, Any]:
        cfg = inputs["cfg"]
        return {
            "stage": self.stage,
            "version": self.version,
            "config": config_subset(cfg, self.config_keys),
            "inputs": {k: stable(v) for k, v in sorted(inputs.items()) if k not in self.ignore},
        }

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        return hash_objects(self.key_parts(inputs), raise_on_failure=True)


def stage_cache(stage: str, version: str, config_keys: Iterable[str],
                ignore: tuple[str, ...] = ("cfg", "ctx")) -> CachePolicy:
    """The cache policy of a deterministic stage: :class:`StageCache` + the task's own source."""
    return StageCache(stage=stage, version=version, config_keys=tuple(config_keys), ignore=ignore) + TASK_SOURCE


# ----------------------------------------------------------------------------- GPU OOM


@dataclass
class OomRecorder:
    """``on_backoff`` for :func:`run_with_oom_backoff`: logs each halving and records it on MLflow."""

    stage_run: Any | None  # tasks.tracking.StageRun
    logger: logging.Logger | logging.LoggerAdapter = field(default_factory=lambda: log)
    events: list[BackoffEvent] = field(default_factory=list)

    def __call__(self, event: BackoffEvent) -> None:
        self.events.append(event)
        self.logger.warning("GPU out of memory at batch size %d, backing off to %d", event.failed_batch_size,
                            event.next_batch_size)
        if self.stage_run is not None:
            self.stage_run.record_backoff(event.failed_batch_size, event.next_batch_size, event.message)


def attempt_batch_size(batch_size: int, min_batch: int = 1) -> int:
    """The batch size this attempt of the current Prefect task starts from (halved per retry)."""
    from prefect.runtime import task_run

    attempt = task_run.run_count or 1
    return batch_for_attempt(batch_size, attempt, min_batch)

