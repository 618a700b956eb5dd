"""Progress and log rendering.

Library code reports through `logging` (``logging.getLogger(__name__)``: per-epoch lines at
INFO, warnings at WARNING) and never prints; stdout stays clean for the CLI's JSON result line.
What a person sees is decided by whoever runs the code:

- a library user (a script, a notebook) gets logging records only: recstack installs no handler
  and draws no progress bar unless `set_progress` turns bars on;
- the `recstack` CLI calls `setup_logging`: on a terminal, records are rendered with Rich on
  stderr and bars are live (redrawn several times a second, their counts moved at least once a
  second); otherwise (a pipe, a file, CI) every record is one plain line on stderr and a bar
  becomes a plain INFO line every `LINE_EVERY_S` seconds.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

log = logging.getLogger(__name__)
console = Console(stderr=True)  # writes to the sys.stderr of the moment (test runners swap it)

MODES = ("off", "bar", "lines")
REFRESH_S = 1.0  # a bar's count moves at least this often (see ProgressBar.due)
LINE_EVERY_S = 10.0  # "lines" mode: one INFO line per bar this often
_mode = "off"  # library default: no bars, logging records only
_clock: Callable[[], float] = time.monotonic  # replaced in tests


def set_progress(mode: str) -> str:
    """Turn progress displays on or off for this process; returns the previous mode.

    mode: "bar" (Rich bars on stderr), "lines" (a plain INFO record every LINE_EVERY_S seconds
    per bar), "off" (none: the default) or "auto" ("bar" when stderr is a terminal, else "lines").
    """
    global _mode
    if mode == "auto":
        mode = "bar" if console.is_terminal else "lines"
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {', '.join(MODES)} or auto, got {mode!r}")
    previous, _mode = _mode, mode
    return previous


def progress_mode() -> str:
    return _mode


def bars_enabled() -> bool:
    """Whether a progress display is on (callers skip the work of feeding one otherwise)."""
    return _mode != "off"


# ---- progress ------------------------------------------------------------------------------------
class ProgressBar:
    """A determinate progress display of `total` units; a context manager.

    `update(0, completed=..., description=...)` and `advance(0, n)` mirror
    rich.progress.Progress's for its one task (id 0). The mode when it is made decides what is
    shown: a Rich bar ("bar"), an INFO record every `line_every` seconds ("lines"), nothing
    ("off"). `due()` tells a caller that updates only now and then (reading a GPU loss is a
    sync) when to update so that the display moves at least once every `REFRESH_S` seconds.
    """

    task_ids = (0,)

    def __init__(self, description: str, total: int, *, logger: logging.Logger | None = None,
                 mode: str | None = None, line_every: float = LINE_EVERY_S) -> None:
        self.description, self.total, self.completed = description, int(total), 0
        self.mode = mode or _mode
        self.logger = logger or log
        self.line_every = line_every
        self._rich: Progress | None = None
        if self.mode == "bar":
            self._rich = Progress(
                TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(), console=console, transient=True, refresh_per_second=4,
            )
            self._rich.add_task(description, total=total)
        self._t0 = self._last_update = self._last_line = _clock()

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def __enter__(self) -> ProgressBar:
        if self._rich is not None:
            self._rich.start()
        self._t0 = self._last_update = self._last_line = _clock()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._rich is not None:
            self._rich.stop()

    def due(self) -> bool:
        return self.enabled and _clock() - self._last_update >= REFRESH_S

    def advance(self, task_id: int = 0, advance: float = 1) -> None:
        self.update(task_id, completed=self.completed + advance)

    def update(self, task_id: int = 0, *, completed: float | None = None, description: str | None = None) -> None:
        if completed is not None:
            self.completed = completed
        if description is not None:
            self.description = description
        now = _clock()
        self._last_update = now
        if self._rich is not None:
            self._rich.update(self._rich.task_ids[0], completed=self.completed, description=self.description)
        elif self.mode == "lines" and now - self._last_line >= self.line_every:
            self._last_line = now
            pct = 100.0 * self.completed / self.total if self.total else 100.0
            self.logger.info("%s: %s/%s (%.0f%%) after %.0f s", self.description, f"{self.completed:g}",
                             self.total, pct, now - self._t0)


def bar(description: str, total: int, logger: logging.Logger | None = None) -> ProgressBar:
    """A determinate progress display; use as `with bar(...) as p: ... p.advance(0, n)`."""
    return ProgressBar(description, total, logger=logger)


@contextmanager
def step(description: str, logger: logging.Logger | None = None) -> Iterator[dict]:
    """A spinner with elapsed time while a step runs (bars on), then an INFO record with the
    step's duration. The yielded dict may receive a "done" message to log instead of the
    description."""
    info: dict = {}
    t0 = time.perf_counter()
    if _mode == "bar":
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=console, transient=True) as prog:
            prog.add_task(description, total=None)
            yield info
    else:
        yield info
    (logger or log).info("%s (%.1fs)", info.get("done", description), time.perf_counter() - t0,
                         extra={"done": True})


# ---- rendering (installed by the CLI) --------------------------------------------------------------
_LEVEL_PREFIX = {logging.WARNING: ("warning: ", "yellow"), logging.ERROR: ("error: ", "red"),
                 logging.CRITICAL: ("error: ", "red")}


class RichLogHandler(logging.Handler):
    """Renders records on the Rich console (stderr), above any live progress bar: INFO plain,
    DEBUG dim, warnings and errors prefixed in colour; a record may carry a Rich style in
    ``extra={"style": ...}``. Message text is never read as markup."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = Text()
            if record.levelno >= logging.WARNING:
                prefix, colour = _LEVEL_PREFIX.get(record.levelno, ("error: ", "red"))
                text.append(prefix, style=colour)
            elif getattr(record, "done", False):
                text.append("✓ ", style="green")
            style = getattr(record, "style", None) or ("dim" if record.levelno < logging.INFO else "")
            text.append(self.format(record), style=style)
            console.print(text, soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class PlainLogHandler(logging.Handler):
    """One plain line per record on the sys.stderr of the moment: time, then "warning: " /
    "error: " where it applies, then the message (no colour, no cursor movement). Silent where
    the console is (`console.quiet`: the other ranks of a torchrun job)."""

    def emit(self, record: logging.LogRecord) -> None:
        if console.quiet:
            return
        try:
            prefix = _LEVEL_PREFIX.get(record.levelno, ("debug: " if record.levelno < logging.INFO else "", ""))[0]
            stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
            sys.stderr.write(f"{stamp} {prefix}{self.format(record)}\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def setup_logging(verbosity: int = 0, *, rich: bool | None = None, progress: str | None = None) -> Callable[[], None]:
    """Render recstack's records on stderr (what the CLI does); returns a function that undoes it.

    verbosity: -1 warnings and errors only (and no progress display), 0 INFO, 1 or more DEBUG.
    rich: Rich rendering and live bars (default: when stderr is a terminal) or plain lines.
    progress: the progress mode (default: "bar" with Rich, "lines" without, "off" when quiet).
    """
    logger = logging.getLogger("recstack")
    rich = console.is_terminal if rich is None else rich
    handler: logging.Handler = RichLogHandler() if rich else PlainLogHandler()
    for h in list(logger.handlers):
        if isinstance(h, RichLogHandler | PlainLogHandler):
            logger.removeHandler(h)
    previous_level, previous_mode = logger.level, _mode
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG)
    set_progress(progress or ("off" if verbosity < 0 else "bar" if rich else "lines"))

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
        set_progress(previous_mode)

    return restore
