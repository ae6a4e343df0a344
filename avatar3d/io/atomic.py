"""Atomic outputs: write into a hidden temp sibling, rename onto the target only on success.

A reader never sees a half-written file or directory: either the old target (or nothing) or the
complete new one. On any exception -- including ``KeyboardInterrupt`` -- the temp sibling is
deleted and an existing target is left untouched.

Temp siblings are named ``.<name>.tmp-<pid>-<host>-<random>`` (plus an optional suffix for files, so
tools that guess a format from the extension still work), in the target's own directory so the final
``os.replace`` never crosses a filesystem. ``<pid>`` is the writing process and ``<host>`` a 4-hex tag
of its machine: a process killed outright (``kill -9``, power loss) cannot clean up, so every
``atomic_dir`` / ``atomic_file`` first removes the stale temp siblings it finds in the target's
directory (:func:`remove_stale_temps`): ours by name, and written by a process of this machine that
is no longer alive (or, for names without a pid from older versions or other machines, untouched for
:data:`STALE_AGE_S`).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
import shutil
import socket
import threading
import time
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

from .outputs import MARKER, OutputError, has_marker, write_marker

__all__ = ["atomic_dir", "atomic_file", "remove_stale_temps", "stale_temps", "temp_sibling"]

#: a temp sibling whose writer cannot be checked (no pid in its name, or another machine's) is stale
#: once it has not been modified for this long
STALE_AGE_S = 6 * 3600.0
_HOST = f"{zlib.crc32(socket.gethostname().encode()) & 0xFFFF:04x}"
# .<name>.<kind>-<pid>-<host>-<8 hex><suffix>, or the older .<name>.<kind>-<8 hex><suffix>
_TEMP = re.compile(
    r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?:(?P<pid>[0-9]+)-(?P<host>[0-9a-f]{4})-)?[0-9a-f]{8}(?P<sfx>\.[A-Za-z0-9]{1,8})?"
)
#: a directory is scanned for stale temps at most once per this many seconds per process
RESCAN_S = 60.0
_scanned: dict[str, float] = {}  # directory -> when this process last cleaned it
_scan_lock = threading.Lock()


def temp_sibling(path: str | os.PathLike[str], kind: str = "tmp", suffix: str = "") -> Path:
    """A fresh, not-yet-existing hidden sibling of ``path``: ``<dir>/.<name>.<kind>-<pid>-<host>-<random><suffix>``."""
    target = Path(path)
    while True:
        tag = f"{os.getpid()}-{_HOST}-{secrets.token_hex(4)}"
        candidate = target.with_name(f".{target.name}.{kind}-{tag}{suffix}")
        if not os.path.lexists(candidate):
            return candidate


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's), or cannot tell: keep
    return True


def _is_stale(entry: os.DirEntry, m: re.Match, now: float) -> bool:
    if m["pid"] is not None and m["host"] == _HOST:
        return int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"]))
    try:
        return now - entry.stat(follow_symlinks=False).st_mtime > STALE_AGE_S
    except OSError:
        return False


def stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """The stale ``.tmp-`` siblings of ``path`` (left by killed writers of this very output), not removed."""
    target = Path(path)
    now = time.time()
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return []
    out = []
    for entry in entries:
        m = _TEMP.fullmatch(entry.name)
        if m is not None and m["name"] == target.name and m["kind"] == "tmp" and _is_stale(entry, m, now):
            out.append(Path(entry.path))
    return out


def remove_stale_temps(directory: str | os.PathLike[str], force: bool = False) -> list[Path]:
    """Remove the temp siblings left in ``directory`` by killed writers; returns what was removed.

    Only names of this module's pattern are touched (``.<name>.tmp-...`` / ``.<name>.old-...``), and
    only when their process is gone (see the module docstring). A ``.old-`` sibling is the previous
    output moved aside during a directory swap: when its target is missing (the writer died between
    the two renames) it is put back instead of removed. A directory is scanned at most once per
    :data:`RESCAN_S` per process (writing many files into one directory stays linear) unless ``force``.
    """
    d = Path(directory)
    key = os.path.abspath(d)
    now = time.time()
    with _scan_lock:
        if not force and now - _scanned.get(key, -math.inf) < RESCAN_S:
            return []
        _scanned[key] = now
    removed: list[Path] = []
    try:
        entries = list(os.scandir(d))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.fullmatch(entry.name)
        if m is None or not _is_stale(entry, m, now):
            continue
        path = Path(entry.path)
        target = d / m["name"]
        if m["kind"] == "old" and not os.path.lexists(target):
            with contextlib.suppress(OSError):
                os.replace(path, target)  # the previous output, back in place (kept if this fails)
            continue
        _remove(path)
        if not os.path.lexists(path):
            removed.append(path)
    if removed:
        warnings.warn(
            f"removed {len(removed)} temporary file(s) left by an interrupted run in {d}",
            RuntimeWarning,
            stacklevel=3,
        )
    return removed


def _remove(path: Path) -> None:
    """Best-effort removal of a file, link or directory tree (used on cleanup paths only)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            path.unlink()
    except OSError:
        pass


def _fsync_file(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_replaceable(target: Path) -> None:
    """An existing ``target`` may be replaced only when it is an empty directory or one this library
    wrote (it carries the output marker); anything else is a user's data and is refused."""
    if not os.path.lexists(target):
        return
    if target.is_symlink() or not target.is_dir():
        raise OutputError(
            f"output {target} exists and is not a directory avatar3d wrote; it is never replaced"
        )
    if has_marker(target) or not any(target.iterdir()):
        return
    raise OutputError(
        f"output {target} is a directory avatar3d did not write (no {MARKER} marker): "
        "it is never replaced; choose another output path"
    )


@contextlib.contextmanager
def atomic_dir(
    path: str | os.PathLike[str], kind: str = "output", adopt: str | os.PathLike[str] | None = None
) -> Iterator[Path]:
    """Yield an empty temp sibling directory; on success it becomes ``path``.

    The directory is marked as written by avatar3d (``kind`` is recorded in the marker, see
    :mod:`avatar3d.io.outputs`). An existing ``path`` is replaced only when it is an empty directory
    or carries that marker (checked before the body runs and again at the swap), and only after the
    body finished without exception; on any exception (``BaseException``, so also
    ``KeyboardInterrupt``) the temp directory is deleted and ``path`` is left as it was. Parent
    directories are created.

    ``adopt``: a stale temp sibling of ``path`` (see :func:`stale_temps`) to continue in, instead of
    an empty directory (renamed to this process's temp name first, so nothing else removes it).
    """
    target = Path(path)
    _check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
    if adopt is not None:
        os.replace(adopt, tmp)
    remove_stale_temps(target.parent)
    if adopt is None:
        tmp.mkdir()
    try:
        write_marker(tmp, kind)
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if not tmp.is_dir():
        raise FileNotFoundError(f"atomic_dir: the temp directory {tmp} vanished before commit")
    try:
        _check_replaceable(target)
        if os.path.lexists(target):
            # rename() cannot replace a non-empty directory: move the old one aside first, then
            # swap, then delete it; if the swap fails put the old one back.
            old = temp_sibling(target, kind="old")
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old, target)
                raise
            _remove(old)
        else:
            os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temp sibling path (not created) to write to; on success it is renamed onto ``path``.

    ``suffix`` is appended to the temp name (default: ``path``'s own suffix, e.g. ``.mp4``) so
    libraries that pick a format from the extension behave. The body must create the file. An
    existing ``path`` is replaced only on success; on any exception the temp file is removed.
    Parent directories are created.
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"atomic_file: {target} is a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target.parent)
    tmp = temp_sibling(target, suffix=target.suffix if suffix is None else suffix)
    try:
        yield tmp
        if not os.path.lexists(tmp):
            raise FileNotFoundError(f"atomic_file: nothing was written to {tmp} for {target}")
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise
