"""Crash-safe file and folder replacement: write beside the target under a temporary name, flush
to disk, and rename into place in one step; a process killed at any moment leaves either the old
or the new version visible, never a part of one.

Temporary names are ``.<name>.<pid>.<random>.tmp`` in the target's folder (the same file system,
so that the rename is atomic): two writers never share one, and every write first removes
(``sweep_stale``) those that processes which died left beside its target. Folders are swapped with Linux's ``renameat2(RENAME_EXCHANGE)``, so that the
old folder stays visible until the new one takes its place; where the file system lacks it, two
renames (a window of microseconds in which the folder is missing). Pure: no Prefect, no MLflow.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2 << 0


def temp_path(path: str | Path) -> Path:
    """A new temporary name beside ``path``: ``.<name>.<pid>.<random>.tmp``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _stale_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(name)}\.(\d+)\.[0-9a-f]+\.(tmp|old)$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for item in folder.rglob("*"):
        if item.is_file():
            fsync_path(item)
    fsync_path(folder)


def write_file(path: str | Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` to a temporary name beside ``path``, flush it, rename it into place; returns ``path``.

    When ``write`` raises (a full disk, a bug), the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False when the system or file system cannot."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def write_folder(directory: str | Path, write: Callable[[Path], object]) -> Path:
    """``write(tmp)`` into a new temporary folder beside ``directory``, flush it, and swap it into place.

    An existing folder is replaced whole: readers see the old folder or the new one, never a mix.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(directory)
    tmp = temp_path(directory)
    tmp.mkdir()
    try:
        write(tmp)
        _fsync_tree(tmp)
        if directory.exists():
            if not _exchange(tmp, directory):
                old = tmp.with_suffix(".old")
                directory.rename(old)
                tmp.rename(directory)
                tmp = old
        else:
            tmp.rename(directory)
        fsync_path(directory.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return directory


def sweep_stale(path: str | Path) -> list[Path]:
    """Remove the temporary files and folders of ``path`` left by processes that died; returns them."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = _stale_pattern(path.name)
    removed = []
    for item in path.parent.iterdir():
        match = pattern.match(item.name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)
        removed.append(item)
    if removed:
        log.info("removed %d temporary files left by killed runs: %s", len(removed), ", ".join(p.name for p in removed))
    return removed
