"""Where the ``indextts-train`` commands log: one line per failure on the console, everything in a log file.

**The log file.**  Every command writes a full log: DEBUG from the project's loggers (``indextts_core``,
``tasks``, ``flows``), INFO from Prefect and the other libraries, every traceback, and every warning
the libraries raise (:func:`logging.captureWarnings`).  It is named ``<command>-<UTC time>.log`` and
starts in the per-user folder ``$XDG_STATE_HOME/indextts-train/logs/`` (``~/.local/state/...``, the
newest :data:`KEEP_LOGS` kept); once the command has loaded its run configuration it moves, with what
it holds, to ``<run.output_dir>/logs/`` (:func:`use_run_folder`), next to what the run writes.
``config``, which only prints, leaves it in the per-user folder.

**The console** (stderr) is for people: INFO lines from the project and Prefect, warnings and errors
from everyone, never a traceback, and no warning raised in a library's code (DeprecationWarning,
FutureWarning, UserWarning from torch, transformers, mlflow, ...): those are in the file.  A failed
stage says so in one ERROR line: Prefect's further lines about the same exception (the flow's
"Encountered exception", "Finished in state Failed") go to the file only.  A command that fails ends
with ``error: <message>`` (an unexpected exception: ``error: <Type>: <message>``, exit code 1) and
``full log: <path>`` (:func:`report_error`).  ``--verbose`` shows everything, tracebacks included.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rich.logging import RichHandler
from rich.markup import escape

from flows.printing import err_console

#: The project's loggers: DEBUG in the file, INFO and up on the console.
PROJECT_LOGGERS = ("indextts_core", "tasks", "flows")
#: Libraries that log every request or statement at INFO: WARNING and up only, in the file too.
CHATTY_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "matplotlib", "PIL", "httpx", "filelock",
                  "sqlalchemy.engine", "alembic", "huey")
#: Prefect lines that repeat a failure an ERROR line has said (or the command's ``error:`` line will).
SAID_ELSEWHERE = ("Finished in state Failed", "Finished in state Crashed", "Failed to write result")
#: Commands whose log stays in the per-user folder (they only print: no reason to create a run folder).
STAYS_IN_USER_FOLDER = frozenset({"config"})
#: Log files kept in the per-user folder (the oldest go first).
KEEP_LOGS = 50
#: A record with ``extra={NOT_ON_CONSOLE: True}`` goes to the log file only (the console says it otherwise).
NOT_ON_CONSOLE = "indextts_file_only"

_OWN_CODE = tuple(str(Path(__file__).resolve().parent.parent / name) + os.sep for name in PROJECT_LOGGERS)


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _exception_keys(exc: BaseException | None) -> set[str]:
    """``Type: message`` of an exception and of those it came from (the same failure, however wrapped)."""
    keys: set[str] = set()
    while exc is not None and len(keys) < 20:
        key = f"{type(exc).__name__}: {exc}"
        if key in keys:
            break
        keys.add(key)
        exc = exc.__cause__ or exc.__context__
    return keys


class ConsoleHandler(RichHandler):
    """The console's share of the log (see the module's docstring); ``verbose``: all of it, as it comes.

    It never changes a record (the log file, after it, gets the record whole): a line shown without its
    traceback is a copy.
    """

    def __init__(self, verbose: bool = False, level: int = logging.INFO):
        super().__init__(level=level, console=err_console, show_path=False, rich_tracebacks=False)
        self.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
        self.verbose = verbose
        self.failures: set[str] = set()  # exceptions an ERROR line has shown
        self.hid_tracebacks = False

    def emit(self, record: logging.LogRecord) -> None:
        shown = record if self.verbose else self.shown(record)
        if shown is not None:
            super().emit(shown)

    def shown(self, record: logging.LogRecord) -> logging.LogRecord | None:
        """What the console shows of ``record``: it, a copy without its traceback, or nothing (None)."""
        if getattr(record, NOT_ON_CONSOLE, False):
            return None
        if record.name == "py.warnings":  # a warning: on the console only when raised in the project's own code
            return record if str(record.args[0] if record.args else record.msg).startswith(_OWN_CODE) else None
        prefect = _under(record.name, ("prefect",))
        if record.levelno < logging.WARNING and not prefect and not _under(record.name, PROJECT_LOGGERS):
            return None  # a library's INFO: the file's
        if prefect and record.getMessage().startswith(SAID_ELSEWHERE):
            return None
        exc = record.exc_info[1] if isinstance(record.exc_info, tuple) else None
        if prefect and record.levelno >= logging.ERROR and exc is not None:
            # a task or flow run failing on an exception: the command ends on its ``error:`` line, which says
            # the same (and a retried attempt that then succeeds is no failure of the command): the file's
            self.failures |= _exception_keys(exc)
            self.hid_tracebacks = True
            return None
        if record.exc_info or record.exc_text or record.stack_info:
            record = copy.copy(record)
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            self.hid_tracebacks = True
        return record


class LogFile(logging.FileHandler):
    """A plain append-mode log file (opened at its first line) that can move, lines and all, to another folder."""

    def __init__(self, path: Path, header: str = ""):
        super().__init__(path, mode="a", encoding="utf-8", delay=True)
        formatter = logging.Formatter("%(asctime)s.%(msecs)03dZ %(levelname)-7s %(name)s: %(message)s",
                                      datefmt="%Y-%m-%dT%H:%M:%S")
        formatter.converter = time.gmtime
        self.setFormatter(formatter)
        self.header = header
        self.path = path  # as it is shown (relative when the run folder is)

    def _open(self) -> TextIO:
        stream = super()._open()
        if self.header and stream.tell() == 0:
            stream.write(self.header)
        return stream

    def move_to(self, folder: Path) -> None:
        """Continue in ``folder`` (created), with the lines written so far; where that fails, stay."""
        self.acquire()
        try:
            old = Path(self.baseFilename)
            if folder.resolve() == old.parent.resolve():
                return
            dest = _free_name(folder, old.name)
            folder.mkdir(parents=True, exist_ok=True)
            if self.stream is not None:
                self.stream.flush()
                self.stream.close()
                self.stream = None  # reopened, at its new place, by the next line
            if old.exists():
                shutil.move(old, dest)
            self.baseFilename, self.path = os.path.abspath(dest), dest
        except OSError as e:  # e.g. a read-only run folder: the run says so; the log stays where it is
            logging.getLogger(__name__).debug("the log stays in %s: %s", self.baseFilename, e)
        finally:
            self.release()


def _free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/<stem>-2.log``, ... when a file of that name is there already."""
    dest, n = folder / name, 1
    while dest.exists():
        n += 1
        dest = folder / f"{Path(name).stem}-{n}.log"
    return dest


def user_log_folder() -> Path:
    """The per-user folder of the logs: ``$XDG_STATE_HOME/indextts-train/logs`` (``~/.local/state/...``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "indextts-train" / "logs"


def _prune(folder: Path, keep: int) -> None:
    try:
        logs = sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime)
        for old in logs[:max(0, len(logs) - keep)]:
            old.unlink(missing_ok=True)
    except OSError:
        pass


def _new_log_file(command: str) -> LogFile | None:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    header = f"indextts-train {command}: started {stamp}, pid {os.getpid()}, in {os.getcwd()}\n"
    for folder in (user_log_folder(), Path(tempfile.gettempdir()) / f"indextts-train-{os.getuid()}" / "logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _prune(folder, KEEP_LOGS - 1)
            return LogFile(_free_name(folder, f"{command}-{stamp}.log"), header)  # written from its first line on
        except OSError:
            continue
    return None  # nowhere to write: the console is all there is


@dataclass
class _Logging:
    command: str
    verbose: bool
    console: ConsoleHandler
    file: LogFile | None


_current: _Logging | None = None


def setup(command: str | None, verbose: bool = False, quiet: bool = False) -> None:
    """The logging of one command: the console handler and the log file on the root logger (replacing any
    handlers there), the levels, library warnings into the log."""
    global _current
    if _current is not None and _current.file is not None:
        _current.file.close()
    command = command or "indextts-train"
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
        handler.close()
    console = ConsoleHandler(verbose, logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    root.addHandler(console)
    file = _new_log_file(command)
    if file is not None:
        file.setLevel(logging.DEBUG)
        root.addHandler(file)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # mlflow gives its loggers a stderr handler of their own unless told not to: then they log here
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    logging.captureWarnings(False)  # (again: a test's warnings capture may have put its own hook back since)
    logging.captureWarnings(True)
    _current = _Logging(command, verbose, console, file)


def log_path() -> Path | None:
    """The current command's log file (None: none could be written, or no command set logging up)."""
    return _current.file.path if _current is not None and _current.file is not None else None


def use_run_folder(output_dir: Path) -> None:
    """Move the command's log into ``<output_dir>/logs/`` (its run configuration is known now)."""
    if _current is not None and _current.file is not None and _current.command not in STAYS_IN_USER_FOLDER:
        _current.file.move_to(Path(output_dir) / "logs")


def report_error(message: str, exc: BaseException | None = None) -> None:
    """A failed command's last words: ``error: <message>`` and ``full log: <path>`` on the console; the
    message with the traceback in the log file (on the console too with ``--verbose``)."""
    verbose = _current is not None and _current.verbose
    logging.getLogger("flows.cli").error("%s", message, exc_info=exc, extra={NOT_ON_CONSOLE: not verbose})
    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)
    path = log_path()
    if path is not None:
        err_console.print(f"full log: {path}", highlight=False, soft_wrap=True)


def report_success() -> None:
    """After a command that worked: where the full log is, if the console left out a traceback."""
    if _current is not None and _current.console.hid_tracebacks and log_path() is not None:
        err_console.print(f"full log: {log_path()}", highlight=False, soft_wrap=True)


def unexpected_error(exc: Exception) -> str:
    """The ``error:`` line's message for an exception nobody expected: ``<Type>: <message>``."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
