"""Calls to a Prefect server's REST API as Prefect's own client makes them: a 503 is the server's word for a
retryable database error (SQLite's 'database is locked' under a busy worker), so it is retried with a backoff
instead of failing the test. Any other status is returned as it came."""

from __future__ import annotations

import time

import httpx

RETRIES = 6
FIRST_WAIT_SECONDS = 0.5


def prefect_request(method: str, url: str, **kwargs) -> httpx.Response:
    response = httpx.request(method, url, timeout=30, **kwargs)
    for attempt in range(RETRIES):
        if response.status_code != httpx.codes.SERVICE_UNAVAILABLE:
            break
        time.sleep(FIRST_WAIT_SECONDS * 2**attempt)
        response = httpx.request(method, url, timeout=30, **kwargs)
    return response
