"""Calls to a Prefect server's REST API as Prefect's own client makes them: a 503 is the server's word for a
retryable database error (SQLite's 'database is locked' under a busy worker), so it is retried with a backoff
instead of failing the test. Any other status is returned as it came."""

from __future__ import annotations

import time

import httpx

RETRIES = 6
FIRST_WAIT_SECONDS = 0.5


def prefect_request(method: str, url: str, **kwargs) -> httpx.Response:
    wait = FIRST_WAIT_SECONDS
    for _ in range(RETRIES):
        response = httpx.request(method, url, timeout=30, **kwargs)
        if response.status_code != httpx.codes.SERVICE_UNAVAILABLE:
            return response
        time.sleep(wait)
        wait *= 2
    return response
