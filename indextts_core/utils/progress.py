"""Progress reporting for long loops: a rich progress bar on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("indextts_core.utils.progress")


def track(items: Iterable[T], total: int | None = None, description: str = "working",
          log_every_s: float = 10.0) -> Iterator[T]:
    """Yield ``items`` while showing progress.

    On an interactive terminal this draws a rich progress bar with an ETA; elsewhere (CI, log
    files, Prefect workers) it logs ``description: done/total`` at most every ``log_every_s``
    seconds and once at the end.
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, transient=True) as progress:
            yield from progress.track(items, total=total, description=description)
        return
    start = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= log_every_s:
            last = now
            log.info("%s: %d/%s", description, done, total if total is not None else "?")
    log.info("%s: %d done in %.1fs", description, done, time.monotonic() - start)


class StepProgress:
    """Progress of a loop that may start part-way (a resumed run): a rich bar with ETA, or log lines.

    ``update(done, info)`` sets the completed count and a short status text (e.g. the loss).
    """

    def __init__(self, total: int, done: int = 0, description: str = "working", log_every_s: float = 30.0):
        self.total, self.start_done, self.description = total, done, description
        self.log_every_s = log_every_s
        self._start = self._last = time.monotonic()
        self._bar = None
        if sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=False)
            self._task = self._bar.add_task(description, total=total, completed=done, info="")
            self._bar.start()

    def eta_s(self, done: int) -> float | None:
        ran = done - self.start_done
        if ran <= 0:
            return None
        return (time.monotonic() - self._start) / ran * (self.total - done)

    def update(self, done: int, info: str = "") -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, info=info)
            return
        now = time.monotonic()
        if now - self._last >= self.log_every_s or done >= self.total:
            self._last = now
            eta = self.eta_s(done)
            eta_text = f", ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}" if eta is not None else ""
            log.info("%s: %d/%d%s %s", self.description, done, self.total, eta_text, info)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
