"""tasks.stages: retries only on transient I/O errors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from tasks.data.validate import InputValidationError, ValidationReport
from tasks.stages import transient_io_error


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (OSError("stale file handle"), True),
        (TimeoutError("read timed out"), True),
        (FileNotFoundError("train.csv"), False),
        (PermissionError("out/"), False),
        (IsADirectoryError("out/"), False),
        (ValueError("bad value"), False),
        (InputValidationError(ValidationReport(())), False),
    ],
)
def test_retry_condition_retries_only_transient_io_errors(error: BaseException, retry: bool) -> None:
    assert transient_io_error(None, None, SimpleNamespace(data=error)) is retry


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize(("error", "calls"), [(OSError, 2), (FileNotFoundError, 1)])
def test_a_task_is_retried_after_a_transient_error_only(error: type[BaseException], calls: int) -> None:
    attempts = []

    @task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=0, retry_condition_fn=transient_io_error)
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise error("first attempt fails")
        return "done"

    @flow
    def run_flaky() -> str:
        return flaky()

    if calls == 1:
        with pytest.raises(error):
            run_flaky()
    else:
        assert run_flaky() == "done"
    assert len(attempts) == calls
