"""MLflow runs a killed process left RUNNING: which process opened each run, and closing those whose process is gone.

Every run records the process that opened it (``indextts.host``, ``indextts.pid``,
``indextts.pid_started``).  A process killed outright cannot end its runs, so each new parent run
closes (status KILLED, tag ``indextts.closed_by`` = the new run) the runs of its experiment still
RUNNING whose process on this host is gone; runs of other hosts only after
``tracking.close_stale_runs_after_h`` hours.  The MLflow client comes from :mod:`tasks.tracking`.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


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
