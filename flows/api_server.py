"""A temporary Prefect API for one CLI process, which never outlives it.

Without ``PREFECT_API_URL`` Prefect starts a temporary server of its own for each process; when
that process is killed (SIGKILL, OOM killer, a lost terminal) the server keeps running forever.
The CLI starts this one instead: the same server app, in a child process that watches its parent
and shuts down when the parent is gone (immediately on Linux through the parent-death signal,
within a second elsewhere by polling).

Run as ``python -m flows.api_server <parent pid> <port>``; the CLI does that through
:func:`start_temporary_api`.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
#: How often the server checks that its parent still lives (where no parent-death signal exists).
_POLL_S = 0.5


def _free_port() -> int:
    import socket

    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_temporary_api(timeout_s: float = 90.0) -> subprocess.Popen[bytes] | None:
    """Start a temporary API server bound to this process and point ``PREFECT_API_URL`` at it.

    Does nothing (returns None) when ``PREFECT_API_URL`` is already set: the user's server wins.
    """
    if os.environ.get("PREFECT_API_URL"):
        return None
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    with first_start_lock():  # two commands at once on a new prefect.db: one creates it, the other waits
        return _start(env, timeout_s)


def prefect_database() -> Path | None:
    """Prefect's sqlite database as the environment sets it (default ``$PREFECT_HOME/prefect.db``); None: not sqlite."""
    url = os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL") or os.environ.get(
        "PREFECT_API_DATABASE_CONNECTION_URL")
    if url:
        if not url.startswith("sqlite") or ":///" not in url or ":memory:" in url:
            return None
        return Path(url.split(":///", 1)[1])
    return Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser() / "prefect.db"


@contextlib.contextmanager
def first_start_lock() -> Iterator[None]:
    """Held while a temporary server starts: its start creates and migrates the database, and two servers
    migrating one new ``prefect.db`` at once fail (each then recovers only by retrying).  A lock file next to the
    database (``prefect.db.lock``) serialises the starts of every command of this machine that uses it."""
    db = prefect_database()
    if db is None:
        yield
        return
    from tasks.tracking_store import file_lock

    with file_lock(db.with_name(db.name + ".lock"), "Prefect's database lock"):
        yield


def _start(env: dict[str, str], timeout_s: float) -> subprocess.Popen[bytes]:
    import httpx

    for attempt in range(3):  # another process may take the port between choosing and binding it
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-m", "flows.api_server", str(os.getpid()), str(port)], env=env)
        url = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    _use_api(url)
                    atexit.register(_stop, proc)
                    log.info("temporary Prefect server on %s (pid %d); it stops with this command", url, proc.pid)
                    return proc
            time.sleep(0.2)
        _stop(proc)
        if time.monotonic() >= deadline:
            break
    raise RuntimeError(f"the temporary Prefect server did not start within {timeout_s:.0f} s; start one with "
                       "`prefect server start` and set PREFECT_API_URL, or raise "
                       "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")


#: Holds the settings override when Prefect was imported before the server started.
_SETTINGS = contextlib.ExitStack()


def _use_api(url: str) -> None:
    os.environ["PREFECT_API_URL"] = url  # for this process and every process it starts
    if "prefect" in sys.modules:  # Prefect read its settings at import: override them for this process too
        from prefect.settings import PREFECT_API_URL, temporary_settings

        _SETTINGS.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))


def servers_of(pid: int) -> list[int]:
    """The pids of temporary API servers started for process ``pid`` that still run (Linux: from /proc)."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            args = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"flows.api_server" in args and str(pid).encode() in args:
            found.append(int(d.name))
    return found


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _die_with_parent(parent: int, on_orphaned: threading.Event) -> None:
    """Arrange to stop when ``parent`` exits, however it exits."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    def watch() -> None:  # also covers a parent that died before prctl, and other systems
        while os.getppid() == parent:
            time.sleep(_POLL_S)
        on_orphaned.set()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str]) -> None:
    parent, port = int(argv[0]), int(argv[1])
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # until uvicorn takes over: nothing to shut down yet
    orphaned = threading.Event()
    _die_with_parent(parent, orphaned)

    import uvicorn

    from prefect.server.api.server import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(ephemeral=True, final=True), host="127.0.0.1", port=port,
                                           log_level="error", lifespan="on"))

    def stop_when_orphaned() -> None:
        orphaned.wait()
        if not server.started:  # no client ever saw it: nothing to finish
            os._exit(0)
        server.should_exit = True
        time.sleep(5)  # a graceful shutdown that hangs must still end
        os._exit(0)

    threading.Thread(target=stop_when_orphaned, name="orphan-stop", daemon=True).start()
    server.run()


if __name__ == "__main__":
    main(sys.argv[1:])
