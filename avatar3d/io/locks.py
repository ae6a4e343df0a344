"""An exclusive, advisory lock file that names its holder (POSIX ``flock``; elsewhere it does nothing).

The operating system drops the lock when its process dies, however it dies, so a lock left by a killed
run never blocks the next one; a live holder makes the next one fail at once with the holder's pid.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path


class PidLock:
    """Hold an exclusive lock on ``path`` until :meth:`release` (or the process's end).

    busy: builds the error raised when another live process holds it (given that process's pid, or
    "?" when it is not known)."""

    def __init__(self, path: str | os.PathLike, busy: Callable[[str], Exception]) -> None:
        self._fd: int | None = None
        try:
            import fcntl  # POSIX only
        except ImportError:
            return
        fd = os.open(Path(path), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise busy(other) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


__all__ = ["PidLock"]
