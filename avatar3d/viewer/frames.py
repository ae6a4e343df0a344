"""The viewer's frames, without the viewer: browser camera -> :class:`Camera` and :func:`render_frame`
(camera + time -> image), with the per-frame inputs of :mod:`.timeline` (:class:`Drive`, :class:`Clock`). Nothing here imports viser, so all of it is tested without the extra.

Cameras. viser reports each browser's camera as ``wxyz`` and ``position``: the rotation R and the
translation t of ``P_world = R p_camera + t`` (camera -> world), with OpenCV camera axes (+z forward,
-y up, +x right), a vertical field of view ``fov`` in radians and the canvas ``aspect`` (width /
height). The viewer's world *is* the avatar's world (head space at rest: OpenCV axes, y down, so
the scene's up direction is -y), and our cameras are OpenCV too, so no axis flips are needed:
world -> camera is just the inverse of [R | t].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np
import roma
import torch

from ..core.camera import Camera
from ..drive.background import background_image
from ..errors import ConfigError
from .timeline import BLINK_MODES, POSE_MODES, Clock, Drive, make_drive

if TYPE_CHECKING:  # the viewer sits beside export in the layers: a bake is handed in, not imported
    from ..export.bake import BakedAvatar

MIN_SIZE, MAX_SIZE = 64, 2048  # render size bounds, pixels


# ------------------------------------------------------------------------------ rotations
def wxyz_to_matrix(wxyz) -> np.ndarray:
    """Unit quaternion (w, x, y, z) -> (3, 3) rotation matrix (normalised first)."""
    q = np.asarray(wxyz, np.float64)
    xyzw = torch.as_tensor(np.concatenate([q[1:], q[:1]]) / np.linalg.norm(q))
    return roma.unitquat_to_rotmat(xyzw).numpy()


def matrix_to_wxyz(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix -> unit quaternion (w, x, y, z) with w >= 0."""
    xyzw = roma.rotmat_to_unitquat(torch.as_tensor(np.asarray(R, np.float64))).numpy()
    q = np.concatenate([xyzw[3:], xyzw[:3]])
    q = q / np.linalg.norm(q)
    return -q if q[0] < 0 else q


# ------------------------------------------------------------------------------ cameras
def viewer_size(aspect: float, size: int) -> tuple[int, int]:
    """(width, height) of about ``size`` x ``size`` pixels shaped to a canvas of ``aspect`` (even numbers)."""
    a = float(np.clip(aspect if np.isfinite(aspect) and aspect > 0 else 1.0, 0.25, 4.0))
    w = max(16, 2 * round(size * math.sqrt(a) / 2))
    h = max(16, 2 * round(size / math.sqrt(a) / 2))
    return int(w), int(h)


def camera_from_viewer(
    wxyz, position, fov: float, aspect: float, size: int, principal_offset: tuple[float, float] = (0.0, 0.0)
) -> Camera:
    """The :class:`Camera` seen by a viser browser camera.

    Args:
        wxyz: (4,) camera -> world rotation; position: (3,) camera centre (viser's convention, above).
        fov: vertical field of view in radians; aspect: canvas width / height.
        size: render about size x size pixels (see :func:`viewer_size`).
        principal_offset: the principal point's offset from the image centre in focal lengths,
            ((cx - W/2) / fx, (cy - H/2) / fy) of the capture camera (0 for centred cameras), so the
            rest view reproduces the capture framing exactly.
    """
    if not (np.isfinite(fov) and 1e-3 < fov < math.pi - 1e-3):
        raise ConfigError(f"viewer field of view {fov!r} rad is absurd")
    R = wxyz_to_matrix(wxyz)
    t = np.asarray(position, np.float64).reshape(3)
    w2c = np.eye(4)
    w2c[:3, :3] = R.T
    w2c[:3, 3] = -R.T @ t
    w, h = viewer_size(aspect, size)
    f = 0.5 * h / math.tan(0.5 * fov)
    K = np.array(
        [[f, 0, w / 2 + principal_offset[0] * f], [0, f, h / 2 + principal_offset[1] * f], [0, 0, 1.0]]
    )
    return Camera(K, w2c, w, h)


@dataclass
class ViewerPose:
    """Where to put a viser camera so that it sees what ``camera`` sees.

    ``look_at`` is the point of the viewing axis closest to the head's origin (the orbit centre);
    ``up`` is the camera's -y axis in world; ``fov`` is vertical, in radians.
    """

    wxyz: np.ndarray
    position: np.ndarray
    look_at: np.ndarray
    up: np.ndarray
    fov: float


def viewer_pose(camera: Camera, target=(0.0, 0.0, 0.0)) -> ViewerPose:
    """The viser camera pose (and orbit centre) of ``camera``; inverse of :func:`camera_from_viewer`."""
    c2w = camera.camera_to_world
    pos, y, z = c2w[:3, 3], c2w[:3, 1], c2w[:3, 2]
    depth = float(np.dot(np.asarray(target, np.float64) - pos, z))
    if depth < 1e-3:  # the head is behind the camera: orbit around a point in front of it
        depth = max(1e-3, float(np.linalg.norm(pos)))
    fov = 2.0 * math.atan(0.5 * camera.height / camera.K[1, 1])
    return ViewerPose(matrix_to_wxyz(c2w[:3, :3]), pos.copy(), pos + depth * z, -y, fov)


def look_at_wxyz(position, look_at, up) -> np.ndarray:
    """The orientation a viser client derives from position / look_at / up (OpenCV axes: z towards
    ``look_at``, y = -up made orthogonal to z, x = y cross z)."""
    z = np.asarray(look_at, np.float64) - np.asarray(position, np.float64)
    z /= np.linalg.norm(z)
    y = -np.asarray(up, np.float64)
    y = y - np.dot(y, z) * z
    y /= np.linalg.norm(y)
    return matrix_to_wxyz(np.stack([np.cross(y, z), y, z], axis=1))


def principal_offset(camera: Camera) -> tuple[float, float]:
    """((cx - W/2) / fx, (cy - H/2) / fy) of ``camera``."""
    K = camera.K
    return (float((K[0, 2] - camera.width / 2) / K[0, 0]), float((K[1, 2] - camera.height / 2) / K[1, 1]))


# ------------------------------------------------------------------------------ one frame
@dataclass
class FrameCache:
    """Reused work between frames: the posed Gaussians of the last (frame, pose, blink), and the
    warped capture plate of the last camera."""

    posed_key: tuple | None = None
    posed: dict | None = None
    plate_key: tuple | None = None
    plate: torch.Tensor | None = None
    hits: int = field(default=0)


def _plate_for(avatar, camera: Camera, cache: FrameCache | None) -> torch.Tensor:
    """(1, H, W, 3) capture plate as seen by ``camera``'s intrinsics: the plate is the capture
    camera's image, so it is scaled by the focal ratio about the principal points (an exact copy
    for the capture camera itself; a fixed backdrop for every other viewpoint, as in Avatar.render)."""
    rest = avatar.rest_camera
    key = (camera.width, camera.height, tuple(camera.K.ravel()))
    if cache is not None and cache.plate_key == key:
        return cache.plate
    s = camera.K[1, 1] / rest.K[1, 1]
    sx = camera.K[0, 0] / rest.K[0, 0]
    # pixel centres at i + 0.5 in K's continuous coordinates
    M = np.array(
        [
            [sx, 0.0, 0.5 * sx - sx * rest.K[0, 2] + camera.K[0, 2] - 0.5],
            [0.0, s, 0.5 * s - s * rest.K[1, 2] + camera.K[1, 2] - 0.5],
        ]
    )
    img = cv2.warpAffine(
        avatar.background,
        M,
        (camera.width, camera.height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    plate = torch.from_numpy(img).float()[None] / 255.0
    if cache is not None:
        cache.plate_key, cache.plate = key, plate
    return plate


@torch.no_grad()
def render_frame(
    avatar,
    drive: Drive,
    camera: Camera,
    t: float,
    *,
    pose: str = "static",
    blink: str | float = "auto",
    background="plate",
    cache: FrameCache | None = None,
    bake: BakedAvatar | None = None,
) -> np.ndarray:
    """The avatar at time ``t`` seconds of ``drive`` seen by ``camera`` -> (H, W, 3) uint8.

    pose: 'static', 'track' or 'generated'; blink: 'auto', 'track', 'none' or an amount in [0, 1];
    background: 'plate' (the capture's background plate), 'white', 'black', 'green', '#rrggbb' or an
    (r, g, b) in [0, 1]. At the capture camera this is frame ``drive.index(t)`` of
    ``Avatar.render(audio, camera='capture', pose=pose, blink=blink, background=background)``.
    bake: play through this linear bake of the avatar (its weights solved from the frame's audio code
    and blink, then one small matrix product) instead of the full deformation.
    """
    if pose not in drive.poses:
        raise ConfigError(f"unknown pose mode {pose!r}: use {', '.join(POSE_MODES)}")
    k = drive.index(t)
    if isinstance(blink, str):
        if blink not in drive.blinks:
            raise ConfigError(f"unknown blink mode {blink!r}: use {', '.join(BLINK_MODES)} or an amount")
        b = float(drive.blinks[blink][k])
    else:
        b = float(np.clip(blink, 0.0, 1.0))
    m = avatar.model
    key = (id(drive), k, pose, b, id(bake))
    if cache is not None and cache.posed_key == key:
        gs = cache.posed
        cache.hits += 1
    else:
        head = torch.as_tensor(drive.poses[pose][k], dtype=torch.float32)
        if bake is None:
            gs = m.posed(drive.codes[k], torch.tensor([b]), head)
        else:
            gs = bake.frame(bake.bake.solve_weights(drive.codes[k][None], torch.tensor([b]))[0], head)
        if cache is not None:
            cache.posed_key, cache.posed = key, gs
    if isinstance(background, str) and background == "plate":
        bg = _plate_for(avatar, camera, cache)
    else:
        bg = background_image(background, camera, avatar.background)
    vm, K = camera.to_torch()
    out = m.render(
        gs, vm[None], K[None], camera.width, camera.height, bg, backend=avatar.config.render.backend
    )
    return (out.colors[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def check_size(size: int) -> int:
    """A render size within MIN_SIZE..MAX_SIZE, or a ConfigError."""
    if not isinstance(size, (int, np.integer)) or not MIN_SIZE <= int(size) <= MAX_SIZE:
        raise ConfigError(f"viewer size {size!r} must be an integer within {MIN_SIZE}..{MAX_SIZE} px")
    return int(size)


__all__ = [
    "BLINK_MODES",
    "POSE_MODES",
    "Clock",
    "Drive",
    "FrameCache",
    "ViewerPose",
    "camera_from_viewer",
    "check_size",
    "look_at_wxyz",
    "make_drive",
    "matrix_to_wxyz",
    "principal_offset",
    "render_frame",
    "viewer_pose",
    "viewer_size",
    "wxyz_to_matrix",
]
