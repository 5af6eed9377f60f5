"""Run locks: one run at a time on the same outputs, or in the same registry.

A lock is ``fcntl.flock`` on a small file; the kernel releases it when its process ends, however
it ends (a SIGKILL too), so a killed run never leaves a stale lock. The holder writes who it is
(pid, host, start time, what it runs) into the file, and a refused run names it. A second run
waits up to ``wait_seconds`` (``BHM_LOCK_WAIT_SECONDS`` for the flows, default 0: refuse at
once), then raises ``RunLockedError``. Pure: no Prefect, no MLflow.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

WAIT_ENV = "BHM_LOCK_WAIT_SECONDS"
POLL_SECONDS = 0.5


class RunLockedError(RuntimeError):
    """Another run holds the lock: its holder is named in the message."""

    def __init__(self, message: str, lock_file: Path, holder: dict) -> None:
        super().__init__(message)
        self.lock_file = lock_file
        self.holder = holder


def wait_seconds_from_env(default: float = 0.0) -> float:
    text = os.environ.get(WAIT_ENV, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{WAIT_ENV}={text!r} is not a number of seconds") from None
    if value < 0:
        raise ValueError(f"{WAIT_ENV} must be >= 0, got {value}")
    return value


def lock_file_for(path: str | Path) -> Path:
    """The lock file of an output: ``.<name>.lock`` beside it."""
    path = Path(path).expanduser().resolve()
    return path.with_name(f".{path.name}.lock")


def _holder_text(holder: dict) -> str:
    if not holder:
        return "an unknown process (it has not written its name yet)"
    return f"pid {holder.get('pid')} on {holder.get('host')}, running {holder.get('purpose')} since {holder.get('since')}"


def _read_holder(fd: int) -> dict:
    try:
        raw = os.pread(fd, 4096, 0)
        return json.loads(raw.decode()) if raw.strip() else {}
    except (OSError, ValueError):
        return {}


@contextmanager
def held(path: str | Path, purpose: str, wait_seconds: float = 0.0) -> Iterator[dict]:
    """Hold the lock file ``path`` for the block; yields the holder record written into it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_seconds
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
            holder = _read_holder(fd)
            if time.monotonic() >= deadline:
                waited_text = f" (waited {wait_seconds:g} s)" if wait_seconds else ""
                raise RunLockedError(
                    f"{purpose} refused: another run holds the lock {path}: {_holder_text(holder)}{waited_text}. "
                    f"Let it finish, or set {WAIT_ENV} to wait for it.",
                    path,
                    holder,
                )
            if not waited:
                log.warning("waiting up to %g s for %s: held by %s", wait_seconds, path, _holder_text(holder))
                waited = True
            time.sleep(POLL_SECONDS)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "purpose": purpose,
            "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        try:
            yield record
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def outputs_held(paths: Sequence[str | Path], purpose: str, wait_seconds: float | None = None) -> Iterator[list[Path]]:
    """Hold the lock of every output (``.<name>.lock`` beside each), taken in a fixed order so that
    two runs never wait on each other; yields the lock files. ``wait_seconds`` defaults to ``BHM_LOCK_WAIT_SECONDS`` (else 0)."""
    wait = wait_seconds_from_env() if wait_seconds is None else wait_seconds
    files = sorted({lock_file_for(p) for p in paths})
    with ExitStack() as stack:
        for file in files:
            stack.enter_context(held(file, purpose, wait))
        yield files
