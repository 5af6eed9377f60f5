"""Who a process is, so that a later run can tell whether the process that left a run open is gone.

A process is named by its host, its pid and its start time (``/proc/<pid>/stat``, in clock ticks
since boot): a pid that the kernel reused for another process has another start time.
Pure: no Prefect, no MLflow.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot ("" where /proc is not there); raises
    ProcessLookupError when there is no such process."""
    try:
        text = open(f"/proc/{pid}/stat").read()
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    except OSError:
        return ""
    # The command name (field 2) is in parentheses and may hold spaces: split after the last ")".
    return text.rsplit(")", 1)[1].split()[19]


@dataclass(frozen=True)
class ProcessId:
    host: str
    pid: int
    start: str

    @classmethod
    def current(cls) -> ProcessId:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, _start_ticks(pid) if os.path.exists("/proc") else "")

    def tags(self, prefix: str = "bhm.") -> dict[str, str]:
        return {f"{prefix}host": self.host, f"{prefix}pid": str(self.pid), f"{prefix}process_start": self.start}

    @classmethod
    def from_tags(cls, tags: dict[str, str], prefix: str = "bhm.") -> ProcessId | None:
        try:
            return cls(tags[f"{prefix}host"], int(tags[f"{prefix}pid"]), tags.get(f"{prefix}process_start", ""))
        except (KeyError, ValueError):
            return None

    def is_gone(self) -> bool | None:
        """True when this process no longer runs, False when it does, None when it runs on another host."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        if not self.start:
            return False
        try:
            current = _start_ticks(self.pid)
        except ProcessLookupError:
            return True
        return bool(current) and current != self.start

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"
