"""Resuming a killed capture after its streaming pass.

The capture writes into a hidden temp sibling of its output (:func:`avatar3d.io.atomic.atomic_dir`).
Once the streaming pass (frames, masks, landmarks, feature tracks, background plate) is done, its
results are saved there (``_pass1.safetensors``, then ``_pass1.json`` naming the video's content
digest and the capture config). When that run is killed, the next capture of the same video with the
same config into the same output adopts the dead run's temp directory (:func:`find_partial`) and goes
on from the head tracking; any other stale temp is removed as usual. Both files are deleted before the
capture directory is committed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from ..io.atomic import stale_temps
from ..workdir import file_digest
from .feature_tracks import FeatureTracks

STATE, STAMP = "_pass1.safetensors", "_pass1.json"


def pass1_key(video: Path, cfg) -> dict:
    """What the streaming pass depends on: the video's contents and the capture config."""
    return {
        "version": 1,
        "video": file_digest(video),
        "config": json.loads(json.dumps(cfg.to_dict(), default=str)),
    }


def save_pass1(
    tmp: Path,
    key: dict,
    points: np.ndarray,
    valid: np.ndarray,
    n_faces: np.ndarray,
    plate: np.ndarray,
    tracks,
    timings: dict,
) -> None:
    """Save the streaming pass's results into the capture's temp directory ``tmp``.

    points (T, 478, 3), valid (T,) bool, n_faces (T,) int, plate (H, W, 3) uint8, tracks a
    FeatureTracks or None; the stamp is written last, so a half-saved state is never adopted.
    """
    arrays = {
        "points": points,
        "valid": valid.astype(np.uint8),
        "n_faces": n_faces.astype(np.int64),
        "plate": plate,
    }
    if tracks is not None:
        arrays.update({"tracks_frame": tracks.frame, "tracks_track": tracks.track, "tracks_uv": tracks.uv})
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp / STATE))
    stamp = tmp / f"{STAMP}.part"
    stamp.write_text(json.dumps({"key": key, "timings": timings, "tracks": tracks is not None}))
    os.replace(stamp, tmp / STAMP)


def _stamp(d: Path) -> dict | None:
    try:
        s = json.loads((d / STAMP).read_text())
    except (OSError, ValueError):
        return None
    return s if isinstance(s, dict) else None


def find_partial(out_dir: str | os.PathLike, key: dict) -> Path | None:
    """The newest temp directory of a dead capture of ``out_dir`` whose streaming pass is saved for
    the same ``key`` (:func:`pass1_key`); None when there is none."""
    found = [d for d in stale_temps(out_dir) if d.is_dir() and (_stamp(d) or {}).get("key") == key]
    return max(found, key=lambda d: (d / STAMP).stat().st_mtime, default=None)


def load_pass1(tmp: Path, key: dict):
    """(points, valid, n_faces, plate, tracks, timings) saved in ``tmp`` for ``key``, or None."""
    s = _stamp(tmp)
    if s is None or s.get("key") != key:
        return None
    try:
        a = load_file(str(tmp / STATE))
        tracks = (
            FeatureTracks(a["tracks_frame"], a["tracks_track"], a["tracks_uv"]) if s.get("tracks") else None
        )
        return (
            a["points"],
            a["valid"].astype(bool),
            a["n_faces"],
            a["plate"],
            tracks,
            dict(s.get("timings", {})),
        )
    except (OSError, SafetensorError, KeyError):
        return None


def drop_pass1(tmp: Path) -> None:
    """Remove the saved state (before the capture directory is committed)."""
    for name in (STATE, STAMP):
        (tmp / name).unlink(missing_ok=True)
