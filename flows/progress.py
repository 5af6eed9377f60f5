"""Live progress of a fit in a terminal; plain log lines everywhere else.

Every fit reports each compiled chunk of SVI steps as one INFO line (``tasks.model.inference.log_progress``)
whose record carries the ``FitProgress`` as ``record.fit_progress``. ``install`` puts a ``LiveFitProgress``
filter on the CLI's stderr handler when stderr is an interactive terminal and the process does not run
under a scheduler: it renders those records as one live display per fit (rich) and keeps them off that
handler; every other record passes unchanged (printed above a live display). Elsewhere nothing changes.

``BHM_PROGRESS=live`` forces the display (a demo recorded through a pipe), ``BHM_PROGRESS=plain`` the lines.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from tasks.model.inference import FitProgress

MODE_ENV = "BHM_PROGRESS"
LIVE, PLAIN = "live", "plain"

# Set in the process of a flow run that a Prefect worker or runner starts (a deployment's run):
# prefect.workers.base.BaseJobConfiguration._base_flow_run_environment, prefect.runner.
SCHEDULER_ENV = ("PREFECT__FLOW_RUN_ID",)

log = logging.getLogger(__name__)


def choose_mode(stream: TextIO, environ: Mapping[str, str] = os.environ) -> str:
    """``live`` or ``plain``: ``BHM_PROGRESS`` when it says; plain under a scheduler, or when ``stream``
    is not an interactive terminal; live otherwise."""
    forced = environ.get(MODE_ENV, "").strip().lower()
    if forced in (LIVE, PLAIN):
        return forced
    if forced:
        log.warning("%s=%r is neither %r nor %r: choosing by the terminal", MODE_ENV, forced, LIVE, PLAIN)
    if any(environ.get(name) for name in SCHEDULER_ENV):
        return PLAIN
    interactive = hasattr(stream, "isatty") and stream.isatty() and environ.get("TERM") != "dumb"
    return LIVE if interactive else PLAIN


def install(handler: logging.Handler, environ: Mapping[str, str] = os.environ) -> LiveFitProgress | None:
    """Put a live display on ``handler`` (writing to stderr) if ``choose_mode`` says live; the display, or None."""
    if choose_mode(sys.stderr, environ) != LIVE:
        return None
    forced = environ.get(MODE_ENV, "").strip().lower() == LIVE
    display = LiveFitProgress(Console(stderr=True, force_terminal=True if forced else None))
    handler.addFilter(display)
    atexit.register(display.close)  # a fit cut short (Ctrl-C, an error printed by the CLI) still leaves a clean terminal
    return display


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def render(progress: FitProgress) -> Group:
    """Two lines: the bar with steps and times; the loss, its trend and the series per step."""
    p = progress
    if p.stop_reason == "converged":
        times = f"converged in {_clock(p.seconds)}"
    elif p.stop_reason is not None:
        times = f"step cap reached in {_clock(p.seconds)}"
    else:
        times = f"{_clock(p.seconds)} elapsed, at most {_clock(p.seconds_left_at_most)} left"
    head = Table.grid(padding=(0, 1))
    head.add_row(
        Text("fit", style="bold"),
        ProgressBar(total=max(p.max_steps, p.step), completed=p.step, width=24),
        Text(f"{p.step:,}/{p.max_steps:,} steps"),
        Text(times),
    )
    trend = f"{p.relative_improvement:.1e}" if math.isfinite(p.relative_improvement) else "-"
    details = f"    loss/obs {p.loss:.5f}   improvement/chunk {trend}"
    if p.series_per_step is not None:
        details += f"   {p.series_per_step:,} series/step"
    if p.blocks_read is not None:
        details += f"   {p.blocks_read:,} series blocks read"
    return Group(head, Text(details, style="dim"))


class LiveFitProgress(logging.Filter):
    """On a handler: renders records that carry ``fit_progress`` as one live display per fit and drops
    them; lets every other record through. A display closes on the fit's last chunk, when a new fit starts
    (its step does not follow the last one), before a record at WARNING or above (a fit that raised is
    reported that way), and on ``close``. One fit at a time: concurrent fits would share the display."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console
        self._live: Live | None = None
        self._last_step = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        progress = getattr(record, "fit_progress", None)
        if progress is None:
            if record.levelno >= logging.WARNING:
                self.close()
            return True
        with self._lock:
            if self._live is not None and progress.step <= self._last_step:
                self._stop()  # a new fit: the last one ended without a last chunk (it raised)
            if self._live is None:
                # stdout stays where it is (it may be a file); stderr writes go above the display
                self._live = Live(console=self.console, auto_refresh=False, redirect_stdout=False, redirect_stderr=True)
                self._live.start()
            self._last_step = progress.step
            self._live.update(render(progress), refresh=True)
            if progress.stop_reason is not None:
                self._stop()
        return False

    @property
    def active(self) -> bool:
        return self._live is not None

    def close(self) -> None:
        """End the display shown now, if any, leaving its last frame in the terminal."""
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        if self._live is not None:
            live, self._live = self._live, None
            self._last_step = 0
            live.stop()
