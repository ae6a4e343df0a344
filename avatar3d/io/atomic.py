"""Atomic outputs: write into a hidden temp sibling, rename onto the target only on success.

A reader never sees a half-written file or directory: either the old target (or nothing) or the
complete new one. On any exception -- including ``KeyboardInterrupt`` -- the temp sibling is
deleted and an existing target is left untouched.

Temp siblings are named ``.<name>.tmp-<random>`` (plus an optional suffix for files, so tools that
guess a format from the extension still work), in the target's own directory so the final
``os.replace`` never crosses a filesystem.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_dir", "atomic_file", "temp_sibling"]


def temp_sibling(path: str | os.PathLike[str], kind: str = "tmp", suffix: str = "") -> Path:
    """A fresh, not-yet-existing hidden sibling of ``path``: ``<dir>/.<name>.<kind>-<random><suffix>``."""
    target = Path(path)
    while True:
        candidate = target.with_name(f".{target.name}.{kind}-{secrets.token_hex(4)}{suffix}")
        if not os.path.lexists(candidate):
            return candidate


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
    from .outputs import MARKER, OutputError, has_marker

    if not os.path.lexists(target):
        return
    if target.is_symlink() or not target.is_dir():
        raise OutputError(f"output {target} exists and is not a directory avatar3d wrote; it is never replaced")
    if has_marker(target) or not any(target.iterdir()):
        return
    raise OutputError(
        f"output {target} is a directory avatar3d did not write (no {MARKER} marker): "
        "it is never replaced; choose another output path"
    )


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], kind: str = "output") -> Iterator[Path]:
    """Yield an empty temp sibling directory; on success it becomes ``path``.

    The directory is marked as written by avatar3d (``kind`` is recorded in the marker, see
    :mod:`avatar3d.io.outputs`). An existing ``path`` is replaced only when it is an empty directory
    or carries that marker (checked before the body runs and again at the swap), and only after the
    body finished without exception; on any exception (``BaseException``, so also
    ``KeyboardInterrupt``) the temp directory is deleted and ``path`` is left as it was. Parent
    directories are created.
    """
    from .outputs import write_marker

    target = Path(path)
    _check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
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
