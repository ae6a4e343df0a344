"""A fit's working directory (``--workdir``): what it was made for, checked before it is reused.

A workdir holds the capture of a video (``capture/``) and the training checkpoints. ``workdir.json``
records the input it belongs to (its path and content digest) and the capture settings. Reusing the
workdir for another input, or its capture with other capture settings, is a one-line
:class:`WorkdirError` naming both; a checkpoint from another config is handled by
:mod:`avatar3d.train.checkpoint` (set aside, training starts over). While a fit runs it holds an
exclusive lock on ``<workdir>/.lock``: a second fit on the same workdir is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .errors import ConfigError
from .io.atomic import atomic_file
from .io.locks import PidLock

RECORD = "workdir.json"
FORMAT = "avatar3d-workdir"
_FULL_BELOW = 64 << 20  # files up to this size are hashed whole
_SAMPLES, _CHUNK = 64, 1 << 16  # larger ones: their size and 64 chunks of 64 KiB spread over them


class WorkdirError(ConfigError):
    """A ``--workdir`` holds the work of another input, or settings that do not match."""


def file_digest(path: str | os.PathLike) -> str:
    """A fast content digest (blake2b, 32 hex) of a file: whole up to 64 MiB, else its size and 64
    evenly spread 64 KiB chunks (an edit that keeps the size and misses every chunk goes unseen)."""
    h = hashlib.blake2b(digest_size=16)
    size = os.path.getsize(path)
    h.update(str(size).encode())
    with open(path, "rb") as f:
        if size <= _FULL_BELOW:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            for k in range(_SAMPLES):
                f.seek(max(0, size - _CHUNK) * k // (_SAMPLES - 1))
                h.update(f.read(_CHUNK))
    return h.hexdigest()


def capture_digest(root: str | os.PathLike) -> str:
    """Digest of a CaptureSet directory: its ``transforms.json`` and ``tracking.safetensors``."""
    h = hashlib.blake2b(digest_size=16)
    for name in ("transforms.json", "tracking.safetensors"):
        p = Path(root) / name
        h.update(file_digest(p).encode() if p.is_file() else b"-")
    return h.hexdigest()


def input_digest(path: str | os.PathLike) -> str:
    """:func:`capture_digest` of a capture directory, :func:`file_digest` of a video file."""
    return capture_digest(path) if Path(path).is_dir() else file_digest(path)


def _differences(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k} {old.get(k)!r} there, {new.get(k)!r} now" for k in keys)


def _legacy_source(work: Path) -> str | None:
    """The source recorded in the capture of a workdir made before ``workdir.json`` existed."""
    t = work / "capture" / "transforms.json"
    if not t.is_file():
        return None
    try:
        return str(json.loads(t.read_text()).get("source") or "")
    except (OSError, ValueError, AttributeError):
        return ""


def _check_record(work: Path, old: dict, source: Path, digest: str, capture: dict | None) -> None:
    was = old.get("input", {})
    if was.get("digest") != digest:
        if str(source.resolve()) == was.get("path"):
            why = f"{source} changed since {work} was made for it"
        else:
            why = f"--workdir {work} holds the work of {was.get('path', '?')}, not of {source} (their contents differ)"
        raise WorkdirError(f"{why}: use a new --workdir for {source}, or remove {work}")
    if capture is not None and (work / "capture").exists() and old.get("capture") not in (None, capture):
        raise WorkdirError(
            f"{work / 'capture'} was made with other capture settings ({_differences(old['capture'], capture)}): "
            f"use a new --workdir, or remove {work / 'capture'} to capture again"
        )


def _check_legacy(work: Path, source: Path, digest: str) -> None:
    made = _legacy_source(work)
    if made is None:
        return
    same = (
        bool(made)
        and Path(made).is_file()
        and (Path(made).resolve() == source.resolve() or file_digest(made) == digest)
    )
    if not same:
        raise WorkdirError(
            f"--workdir {work} holds the capture of {made or 'an unknown video'}, not of {source}: "
            f"use a new --workdir for {source}, or remove {work}"
        )


def check_workdir(work: str | os.PathLike, source: str | os.PathLike, capture: dict | None) -> None:
    """Check that ``work`` may be used for ``source`` (a video, or a capture directory when
    ``capture`` is None) captured with the settings ``capture``, then record both in it.

    Raises :class:`WorkdirError` when the workdir was made for another input (by content) or its
    capture with other settings.
    """
    work, source = Path(work), Path(source)
    digest = input_digest(source)
    if source.is_dir() and (work / "capture").is_dir() and capture_digest(work / "capture") == digest:
        return  # fitting the workdir's own capture: the record (of its video) stays
    rec = work / RECORD
    old = None
    if rec.is_file():
        try:
            old = json.loads(rec.read_text())
        except (OSError, ValueError):
            old = None
    if isinstance(old, dict) and old.get("format") == FORMAT:
        _check_record(work, old, source, digest, capture)
    else:
        _check_legacy(work, source, digest)
    new = {
        "format": FORMAT,
        "version": 1,
        "input": {"path": str(source.resolve()), "digest": digest},
        "capture": capture,
    }
    with atomic_file(rec, suffix="") as tmp:
        tmp.write_text(json.dumps(new, indent=1))


class WorkdirLock(PidLock):
    """An exclusive, advisory lock on ``<workdir>/.lock`` held while a fit uses the workdir (released
    by :meth:`release`, or by the OS when the process dies). Without ``fcntl`` it does nothing."""

    def __init__(self, work: str | os.PathLike) -> None:
        def busy(pid: str) -> WorkdirError:
            return WorkdirError(
                f"--workdir {work} is in use by another fit (pid {pid}): wait for it, or use another --workdir"
            )

        super().__init__(Path(work) / ".lock", busy)
