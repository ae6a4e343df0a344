"""Output paths that never destroy a user's data, checked before any work starts.

Every directory the library writes (an avatar, a capture, an export folder, the demo folder) carries
a marker file, :data:`MARKER`. The rules:

* An existing output is refused unless the caller allows overwriting (the CLI's ``--overwrite``).
* Even then, a directory is replaced only if it carries the marker: a directory this library did
  not write (a user's folder, ``.``, ``$HOME``) is never replaced or deleted.
* An output that is, or contains, one of the command's inputs is refused (``fit clip.mp4 -o
  clip.mp4``, ``fit data/clip.mp4 -o data``).
* The parent directory must be creatable and writable, and a file output must have an allowed
  extension -- all checked before the work, so no error arrives after minutes of rendering.

:func:`avatar3d.io.atomic.atomic_dir` applies the marker rule again at the moment of the swap, so
the library's own API is protected too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from .._version import __version__
from ..errors import Avatar3DError

__all__ = ["MARKER", "OutputError", "check_output", "has_marker", "write_marker"]

MARKER = ".avatar3d-output"


class OutputError(Avatar3DError):
    """An output path that can't or mustn't be written."""


def write_marker(directory: str | os.PathLike[str], kind: str) -> Path:
    """Write the marker into ``directory`` (a temp dir about to become an output)."""
    p = Path(directory) / MARKER
    p.write_text(json.dumps({"written_by": "avatar3d", "kind": kind, "version": __version__}) + "\n")
    return p


def has_marker(directory: str | os.PathLike[str]) -> bool:
    """True when ``directory`` is a directory this library wrote (it holds :data:`MARKER`)."""
    p = Path(directory) / MARKER
    return p.is_file() and not p.is_symlink()


def _contains(outer: Path, inner: Path) -> bool:
    return inner == outer or outer in inner.parents


def _check_parent(path: Path) -> None:
    anc = path.parent
    while not anc.exists():
        if anc.is_symlink():  # a dangling link
            raise OutputError(f"cannot write {path}: {anc} is a broken link")
        anc = anc.parent
    if not anc.is_dir():
        raise OutputError(f"cannot write {path}: {anc} is not a directory")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: the directory {anc} is not writable")


def check_output(
    path: str | os.PathLike[str],
    *,
    kind: str,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    suffixes: Sequence[str] | None = None,
) -> Path:
    """Validate an output path before any work; returns it as a Path.

    Args:
        kind: "dir" for an output directory, "file" for an output file.
        overwrite: allow replacing an existing output (a directory only when it carries the marker).
        inputs: the command's input paths; the output may not be one of them or contain one.
        suffixes: allowed file extensions (lower case, with the dot), for ``kind="file"``.
    Raises:
        OutputError (one line) naming the path and the problem.
    """
    if kind not in ("dir", "file"):
        raise ValueError(f"kind must be 'dir' or 'file', got {kind!r}")
    p = Path(path)
    if str(path) == "" or p.name in ("", ".", ".."):
        raise OutputError(
            f"output {str(path)!r} is not a usable {'directory' if kind == 'dir' else 'file'} name"
        )
    target = p.expanduser().resolve()
    for inp in inputs:
        if inp is None:
            continue
        src = Path(inp).expanduser().resolve()
        if _contains(target, src):
            what = "is" if target == src else "contains"
            raise OutputError(f"output {p} {what} the input {inp}: choose another output path")
    if os.path.lexists(p):
        if p.is_symlink():
            raise OutputError(f"output {p} is a symbolic link: give a plain path")
        if kind == "file" and p.is_dir():
            raise OutputError(f"output {p} is a directory; give a file name")
        if kind == "dir" and not p.is_dir():
            raise OutputError(f"output {p} exists and is not a directory")
        if not overwrite:
            raise OutputError(f"output {p} already exists: pass --overwrite to replace it")
        if kind == "dir" and not has_marker(p):
            raise OutputError(
                f"output {p} is a directory avatar3d did not write (no {MARKER} marker): "
                "it is never replaced; choose another output path"
            )
    if suffixes is not None and kind == "file" and p.suffix.lower() not in suffixes:
        raise OutputError(f"output {p} must end with {' or '.join(suffixes)}")
    _check_parent(p)
    return p
