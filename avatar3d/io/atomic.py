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


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temp sibling directory; on success it becomes ``path``.

    An existing ``path`` (file or directory) is replaced only after the body finished without
    exception; on any exception (``BaseException``, so also ``KeyboardInterrupt``) the temp
    directory is deleted and ``path`` is left as it was. Parent directories are created.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if not tmp.is_dir():
        raise FileNotFoundError(f"atomic_dir: the temp directory {tmp} vanished before commit")
    try:
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
