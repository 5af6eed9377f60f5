"""A fit's progress: plain INFO lines by default and under a scheduler; one live display per fit in a terminal
(flows.progress), fed by the records of tasks.model.inference.log_progress."""

from __future__ import annotations

import atexit
import io
import logging

import jax
import pytest
from rich.console import Console

from flows import cli, progress
from tasks.model.inference import FitProgress, log_progress

FIT_LOGGER = "tasks.model.inference"
SHOW_CURSOR = "\x1b[?25h"  # written once by each display when it stops


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def chunk(step: int, max_steps: int = 1000, stop: str | None = None, series: int | None = None, blocks: int | None = None) -> FitProgress:
    return FitProgress(step, max_steps, 2.0 - step / 1000, 1e-2, step / 100, series, stop, blocks)


@pytest.fixture
def fit_log():
    """The fit logger at INFO with one handler writing plain lines to ``lines``; (logger, handler, lines)."""
    logger = logging.getLogger(FIT_LOGGER)
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield logger, handler, lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def live_display(handler: logging.Handler) -> tuple[progress.LiveFitProgress, io.StringIO]:
    screen = io.StringIO()
    display = progress.LiveFitProgress(Console(file=screen, force_terminal=True, width=100, color_system=None))
    handler.addFilter(display)
    return display, screen


@pytest.mark.parametrize(
    ("tty", "environ", "mode"),
    [
        (True, {}, "live"),
        (False, {}, "plain"),  # a pipe, a log file, cron
        (True, {"PREFECT__FLOW_RUN_ID": "6f1c0d2e-0000-0000-0000-000000000000"}, "plain"),  # a worker's flow run
        (True, {"TERM": "dumb"}, "plain"),
        (True, {"BHM_PROGRESS": "plain"}, "plain"),
        (False, {"BHM_PROGRESS": "live"}, "live"),
        (True, {"BHM_PROGRESS": "live", "PREFECT__FLOW_RUN_ID": "x"}, "live"),
        (False, {"BHM_PROGRESS": "fancy"}, "plain"),  # not a mode: warned, then chosen as without it
    ],
)
def test_the_mode_follows_the_terminal_the_scheduler_and_bhm_progress(tty: bool, environ: dict, mode: str) -> None:
    assert progress.choose_mode(Stream(tty), environ) == mode


def test_plain_mode_keeps_the_info_line(fit_log) -> None:
    _, handler, lines = fit_log
    assert progress.install(handler, {"BHM_PROGRESS": "plain"}) is None
    assert handler.filters == []
    log_progress(chunk(200))
    assert lines.getvalue() == f"INFO {FIT_LOGGER}: step 200/1000  loss/obs 1.80000  rel.improvement/chunk 1.00e-02  2.0s\n"


def test_a_streamed_fit_says_how_many_series_blocks_it_read(fit_log) -> None:
    logger, handler, lines = fit_log
    log_progress(chunk(300, series=512, blocks=96))
    assert lines.getvalue().rstrip().endswith("3.0s  96 series blocks read")
    display, screen = live_display(handler)
    log_progress(chunk(400, series=512, blocks=128))
    assert "512 series/step   128 series blocks read" in screen.getvalue()
    display.close()


def test_the_record_carries_the_progress(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=FIT_LOGGER)
    log_progress(chunk(100, series=8))
    (record,) = caplog.records
    assert record.fit_progress == chunk(100, series=8)


def test_live_mode_shows_steps_loss_and_times_and_not_the_plain_line(fit_log) -> None:
    logger, handler, lines = fit_log
    display, screen = live_display(handler)
    log_progress(chunk(100, series=512))
    log_progress(chunk(200, series=512))
    assert display.active
    logger.info("an unrelated line")  # passes as it is
    shown = screen.getvalue()
    assert "200/1,000 steps" in shown and "loss/obs 1.80000" in shown and "improvement/chunk 1.0e-02" in shown
    assert "0:02 elapsed, at most 0:08 left" in shown and "512 series/step" in shown
    assert lines.getvalue() == f"INFO {FIT_LOGGER}: an unrelated line\n"


def test_the_remaining_time_is_an_upper_bound_to_the_step_cap() -> None:
    assert chunk(200).seconds_left_at_most == pytest.approx(8.0)  # 2 s for 200 steps, 800 to the cap
    assert chunk(200, stop="converged").seconds_left_at_most == 0.0


def test_a_display_closes_on_the_last_chunk_and_each_fit_gets_its_own(fit_log) -> None:
    _, handler, _ = fit_log
    display, screen = live_display(handler)
    log_progress(chunk(500))
    log_progress(chunk(1000, stop="max_steps"))
    assert not display.active and "step cap reached in 0:10" in screen.getvalue()
    log_progress(chunk(100))
    log_progress(chunk(200, stop="converged"))
    assert not display.active and "converged in 0:02" in screen.getvalue()
    assert screen.getvalue().count(SHOW_CURSOR) == 2


def test_a_display_closes_when_the_fit_raises(fit_log) -> None:
    logger, handler, lines = fit_log
    display, screen = live_display(handler)
    log_progress(chunk(300))
    logger.error("the fit diverged")  # how a failed task is reported: the display ends first
    assert not display.active and "ERROR" in lines.getvalue()
    log_progress(chunk(300))
    log_progress(chunk(100))  # a new fit, the last one said nothing more: a fresh display
    assert display.active
    display.close()  # the CLI's exit (atexit): nothing left open
    assert not display.active and screen.getvalue().count(SHOW_CURSOR) == 3


def test_the_cli_installs_the_display_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BHM_PROGRESS", "live")
    root = logging.getLogger()
    level = root.level
    cli.setup_logging(logging.INFO)
    (handler,) = [h for h in root.handlers if getattr(h, "_bhm_cli", False)]
    try:
        (display,) = handler.filters
        assert isinstance(display, progress.LiveFitProgress)
        atexit.unregister(display.close)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_a_real_fit_drives_one_display(fit_log) -> None:
    from tasks import panel_pipeline as pp
    from tasks.config import PanelFitConfig
    from tasks.data.panel_demo import generate_panel_demo
    from tasks.data.panel_encode import encode_panel

    _, handler, lines = fit_log
    display, screen = live_display(handler)
    demo = generate_panel_demo(seed=3, n_stores=4, n_departments=2, products_per_department=2, n_weeks=30, horizon=4)
    tables = demo.tables()
    config = PanelFitConfig(max_steps=200, chunk_steps=50, subsample_size=8)  # 8 of 16 series per step
    _, fit = pp.fit_encoded(encode_panel(tables), tables.spec, config, jax.random.key(0), on_progress=log_progress)
    shown = screen.getvalue()
    assert not display.active and screen.getvalue().count(SHOW_CURSOR) == 1
    assert f"{fit.n_steps}/200 steps" in shown and "8 series/step" in shown and "loss/obs" in shown
    assert ("converged in" if fit.converged else "step cap reached in") in shown
    assert "step 50/200" not in lines.getvalue()
