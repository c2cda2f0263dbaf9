"""The one progress bar of ``cellseg segment``: images done / failed, rate, ETA, queue position.

:class:`RichDisplay` draws a live bar on a terminal (rich, when installed);
:class:`LineDisplay` writes a status line to stderr every few seconds elsewhere (logs, CI);
:class:`NullDisplay` says nothing (``--quiet``).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, Protocol, TextIO


@dataclass
class Snapshot:
    """What the bar shows."""

    total: int = 0
    done: int = 0
    failed: int = 0
    queue_position: int | None = None
    phase: str = "starting"

    @property
    def finished(self) -> int:
        return self.done + self.failed


class Display(Protocol):
    def start(self, snap: Snapshot) -> None: ...

    def update(self, snap: Snapshot) -> None: ...

    def stop(self) -> None: ...


class NullDisplay:
    def start(self, snap: Snapshot) -> None:
        pass

    def update(self, snap: Snapshot) -> None:
        pass

    def stop(self) -> None:
        pass


def _queue_text(position: int | None) -> str:
    return "" if position is None else f"queue {position}"


class LineDisplay:
    """One line per ``every_s`` seconds (and at the end) on ``stream``."""

    def __init__(self, stream: TextIO | None = None, every_s: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self._t0 = 0.0
        self._base = 0
        self._last = 0.0
        self._snap = Snapshot()

    def start(self, snap: Snapshot) -> None:
        self._t0 = self._last = time.monotonic()
        self._base = snap.finished
        self._snap = snap

    def update(self, snap: Snapshot) -> None:
        self._snap = snap
        if time.monotonic() - self._last >= self.every_s:
            self._write()

    def stop(self) -> None:
        self._write()

    def _write(self) -> None:
        s = self._snap
        self._last = time.monotonic()
        elapsed = max(self._last - self._t0, 1e-9)
        rate = (s.finished - self._base) / elapsed
        left = s.total - s.finished
        eta = f"ETA {left / rate:.0f} s" if rate > 0 and left else ""
        parts = [f"{s.phase}: {s.done}/{s.total} done", f"{s.failed} failed", f"{rate:.2f} img/s"]
        parts += [p for p in (eta, _queue_text(s.queue_position)) if p]
        self.stream.write(", ".join(parts) + "\n")
        self.stream.flush()


class RichDisplay:
    """A rich live progress bar; log records go above it through :meth:`log_handler`."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class RateColumn(ProgressColumn):
            def render(self, task: Any) -> Text:
                speed = task.finished_speed or task.speed
                return Text("" if speed is None else f"{speed:.2f} img/s")

        self.console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[green]{task.fields[done]} done[/] [red]{task.fields[failed]} failed"),
            RateColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[queue]}"),
            console=self.console,
            transient=False,
        )
        self._task: Any = None

    def log_handler(self) -> logging.Handler:
        from rich.logging import RichHandler

        return RichHandler(console=self.console, show_path=False, show_time=False)

    def start(self, snap: Snapshot) -> None:
        self._progress.start()
        self._task = self._progress.add_task(
            snap.phase,
            total=snap.total,
            completed=snap.finished,
            done=snap.done,
            failed=snap.failed,
            queue=_queue_text(snap.queue_position),
        )

    def update(self, snap: Snapshot) -> None:
        if self._task is None:
            return
        self._progress.update(
            self._task,
            description=snap.phase,
            completed=snap.finished,
            done=snap.done,
            failed=snap.failed,
            queue=_queue_text(snap.queue_position),
        )

    def stop(self) -> None:
        self._progress.stop()


def make_display(quiet: bool = False) -> Display:
    """The bar for this terminal: rich on a TTY when installed, else a status line."""
    if quiet:
        return NullDisplay()
    if sys.stderr.isatty():
        try:
            return RichDisplay()
        except ImportError:
            pass
    return LineDisplay()
