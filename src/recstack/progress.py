"""Progress display on stderr (stdout stays clean for the JSON result line)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


@contextmanager
def step(description: str) -> Iterator[dict]:
    """A spinner with elapsed time while a step runs, then a one-line summary with its duration.

    The yielded dict may receive a "done" message to print instead of the description.
    """
    info: dict = {}
    t0 = time.perf_counter()
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
        console=console, transient=True,
    ) as prog:
        prog.add_task(description, total=None)
        yield info
    dt = time.perf_counter() - t0
    console.print(f"[green]✓[/green] {info.get('done', description)} [dim]({dt:.1f}s)[/dim]")


def bar(description: str, total: int) -> Progress:
    """A determinate progress bar; use as `with bar(...) as p: ... p.advance(0, n)`."""
    prog = Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console, transient=True,
    )
    prog.add_task(description, total=total)
    return prog
