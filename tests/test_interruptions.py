"""A job stopped part-way: SIGTERM unwinds `bhm` (exit 143, the previous handler restored), and a first run
stopped while MLflow builds its database leaves no database behind, so that the next run starts clean."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows import cli
from tasks.track import tracking


def test_sigterm_unwinds_the_command_with_exit_143(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    unwound = []

    def handler(args) -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            return 0
        finally:
            unwound.append(True)  # a `with` block or a flow engine gets to clean up

    monkeypatch.setattr(cli, "cmd_validate", handler)  # main() builds its parser from the module's handlers
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["validate"]) == cli.EXIT_TERMINATED == 143
    assert unwound == [True]
    assert "terminated (SIGTERM)" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_first_run_stopped_while_the_database_is_built_leaves_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tracking.TRACKING_URI_ENV, raising=False)

    def stopped(source, target):  # the tables exist in the temporary file when the job is stopped
        assert Path(source).stat().st_size > 0
        raise KeyboardInterrupt

    monkeypatch.setattr(tracking.os, "link", stopped)
    with pytest.raises(KeyboardInterrupt):
        tracking.tracking_uri(tmp_path)
    assert not (tmp_path / tracking.DB_FILE).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    monkeypatch.undo()
    monkeypatch.delenv(tracking.TRACKING_URI_ENV, raising=False)
    uri = tracking.tracking_uri(tmp_path)
    assert (tmp_path / tracking.DB_FILE).is_file()
    assert [e.name for e in MlflowClient(uri).search_experiments()] == ["Default"]
    assert tracking.tracking_uri(tmp_path) == uri  # an existing database is used as it is
