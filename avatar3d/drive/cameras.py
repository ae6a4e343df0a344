"""Cameras of a render: the capture view, orbits around the head, or the user's own."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.camera import Camera
from ..errors import CameraError
from ..io.meta import AvatarMeta

ORBIT_YAW_DEG = 30.0  # 'orbit': yaw sweeps ±this over the render
MIN_SIDE, MAX_SIDE = 16, 8192  # pixels: accepted output sizes


def rest_camera(meta: AvatarMeta) -> Camera:
    """The capture camera (body frame) at the training resolution."""
    return Camera(meta.intrinsics, meta.viewmat, meta.width, meta.height)


def orbit_camera(
    meta: AvatarMeta,
    yaw: float = 0.0,
    pitch: float = 0.0,
    size: tuple[int, int] | None = None,
    distance_scale: float = 1.0,
) -> Camera:
    """A camera orbiting the head (degrees) at the capture's distance and focal length."""
    w, h = size or (meta.width, meta.height)
    dist = float(np.linalg.norm(meta.viewmat[:3, 3])) * distance_scale
    focal = meta.intrinsics[0, 0] * w / meta.width
    return Camera.orbit(yaw, pitch, distance=dist, width=w, height=h, focal=focal)


def check_size(size: Sequence[int] | None) -> tuple[int, int] | None:
    """A valid (width, height) or None; a one-line CameraError otherwise."""
    if size is None:
        return None
    w, h = int(size[0]), int(size[1])
    if not (MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE):
        raise CameraError(f"output size {w}x{h} must be within {MIN_SIDE}..{MAX_SIDE} px")
    return w, h


def _sized(cam: Camera, size: tuple[int, int] | None) -> Camera:
    return cam.resized(*size) if size else cam


def resolve_cameras(
    meta: AvatarMeta,
    spec: str | Camera | Sequence[Camera] | None,
    n: int,
    size: tuple[int, int] | None = None,
) -> list[Camera]:
    """n cameras from a spec: None/'capture' (at the clip's own size unless ``size``), 'frontal',
    'orbit' (±30° yaw sweep), a Camera, a list of 1 or n Cameras, or a camera JSON file."""
    if spec is None or spec == "capture":
        return [_sized(rest_camera(meta), size or meta.source_size)] * n
    if isinstance(spec, Camera):
        return [_sized(spec, size)] * n
    if isinstance(spec, (list, tuple)):
        cams = list(spec)
        if not cams or not all(isinstance(c, Camera) for c in cams):
            raise CameraError("a camera list must hold Camera objects")
        if len(cams) not in (1, n):
            raise CameraError(f"got {len(cams)} cameras for {n} frames")
        return [_sized(c, size) for c in (cams * n if len(cams) == 1 else cams)]
    if spec == "frontal":
        return [orbit_camera(meta, 0, 0, size)] * n
    if spec == "orbit":
        return [
            orbit_camera(meta, ORBIT_YAW_DEG * math.sin(2 * math.pi * k / max(n, 1)), 0, size)
            for k in range(n)
        ]
    if isinstance(spec, (str, Path)) and str(spec).endswith(".json"):
        return [_sized(Camera.from_json(spec), size)] * n
    raise CameraError(f"unknown camera {spec!r}: use capture, frontal, orbit, a Camera or a JSON file")


__all__ = ["check_size", "orbit_camera", "resolve_cameras", "rest_camera"]
