"""Pinhole cameras in the avatar's world space.

World space is the avatar's head space at its rest pose: OpenCV axes (x to the image right of the
frontal view, y down, z away from the frontal camera), metres, origin near the centre of the face.
A :class:`Camera` holds intrinsics ``K`` (3, 3), a world-to-camera matrix (4, 4) and an image size.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import CameraError

DEFAULT_DISTANCE = 0.75  # metres from the look-at target
DEFAULT_FOV_DEGREES = 18.0


def _look_at_matrix(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    fwd = target - eye
    n = np.linalg.norm(fwd)
    if not np.isfinite(n) or n < 1e-9:
        raise CameraError("camera eye and target coincide")
    z = fwd / n
    x = np.cross(-up, z)  # OpenCV: camera y points down (world -up); x = y cross z
    if np.linalg.norm(x) < 1e-9:
        raise CameraError("camera up vector is parallel to the viewing direction")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z], axis=0)  # rows: camera axes in world coordinates
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ eye
    return w2c


@dataclass
class Camera:
    """A pinhole camera.

    Attributes:
        K: (3, 3) intrinsics in pixels.
        world_to_camera: (4, 4) OpenCV extrinsics (x right, y down, z forward).
        width, height: image size in pixels.
    """

    K: np.ndarray
    world_to_camera: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        self.world_to_camera = np.asarray(self.world_to_camera, dtype=np.float64).reshape(4, 4)
        self.width, self.height = int(self.width), int(self.height)
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise :class:`CameraError` if any parameter is absurd."""
        if not (0 < self.width <= 16384 and 0 < self.height <= 16384):
            raise CameraError(f"image size {self.width}x{self.height} must be within 1..16384 px")
        if not (np.isfinite(self.K).all() and np.isfinite(self.world_to_camera).all()):
            raise CameraError("camera parameters contain NaN or infinity")
        fx, fy = self.K[0, 0], self.K[1, 1]
        if fx <= 0 or fy <= 0:
            raise CameraError(f"focal lengths must be positive, got fx={fx:g}, fy={fy:g}")
        if fx > 1000 * max(self.width, self.height) or fx < 0.01 * max(self.width, self.height):
            raise CameraError(f"focal length {fx:g} px is absurd for a {self.width}x{self.height} image")
        R = self.world_to_camera[:3, :3]
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or abs(np.linalg.det(R) - 1) > 1e-4:
            raise CameraError("camera rotation is not a proper rotation matrix")
        if not np.allclose(self.world_to_camera[3], [0, 0, 0, 1]):
            raise CameraError("world_to_camera's last row must be [0, 0, 0, 1]")

    # ------------------------------------------------------------------ builders
    @staticmethod
    def intrinsics(width: int, height: int, fov_degrees: float | None = None, focal: float | None = None):
        if focal is None:
            fov = DEFAULT_FOV_DEGREES if fov_degrees is None else float(fov_degrees)
            if not 0.1 < fov < 179:
                raise CameraError(f"field of view {fov:g} degrees is outside (0.1, 179)")
            focal = 0.5 * width / math.tan(math.radians(fov) / 2)
        return np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])

    @classmethod
    def look_at(
        cls,
        eye,
        target=(0.0, 0.0, 0.0),
        up=(0.0, -1.0, 0.0),
        width: int = 512,
        height: int = 512,
        fov_degrees: float | None = None,
        focal: float | None = None,
    ) -> "Camera":
        """A camera at ``eye`` looking at ``target``; ``up`` is world up (-y in head space)."""
        w2c = _look_at_matrix(np.asarray(eye, float), np.asarray(target, float), np.asarray(up, float))
        return cls(cls.intrinsics(width, height, fov_degrees, focal), w2c, width, height)

    @classmethod
    def orbit(
        cls,
        yaw_degrees: float = 0.0,
        pitch_degrees: float = 0.0,
        distance: float = DEFAULT_DISTANCE,
        target=(0.0, 0.0, 0.0),
        width: int = 512,
        height: int = 512,
        fov_degrees: float | None = None,
        focal: float | None = None,
    ) -> "Camera":
        """A camera on a sphere around ``target``.

        Yaw 0, pitch 0 is the frontal view (camera on -z looking along +z). Positive yaw moves
        the camera towards +x (the frontal image's right); positive pitch moves it up (-y).
        """
        if not (np.isfinite(yaw_degrees) and np.isfinite(pitch_degrees)):
            raise CameraError("orbit angles must be finite")
        if not (np.isfinite(distance) and distance > 0):
            raise CameraError(f"orbit distance must be positive, got {distance}")
        yaw, pitch = math.radians(yaw_degrees), math.radians(pitch_degrees)
        offset = distance * np.array(
            [math.sin(yaw) * math.cos(pitch), -math.sin(pitch), -math.cos(yaw) * math.cos(pitch)]
        )
        tgt = np.asarray(target, float)
        return cls.look_at(tgt + offset, tgt, (0, -1, 0), width, height, fov_degrees, focal)

    @classmethod
    def frontal(cls, **kwargs) -> "Camera":
        """The frontal view (``orbit`` at yaw 0, pitch 0); same keyword arguments as :meth:`orbit`."""
        return cls.orbit(0.0, 0.0, **kwargs)

    @classmethod
    def orbit_path(
        cls, n_frames: int, yaw_range: float = 30.0, pitch_degrees: float = 0.0, cycles: float = 1.0, **kwargs
    ) -> list["Camera"]:
        """``n_frames`` cameras sweeping yaw sinusoidally over ``±yaw_range`` degrees."""
        ts = np.arange(n_frames) / max(n_frames, 1)
        return [
            cls.orbit(yaw_range * math.sin(2 * math.pi * cycles * t), pitch_degrees, **kwargs) for t in ts
        ]

    # ------------------------------------------------------------------ variants
    def resized(self, width: int, height: int) -> "Camera":
        """The same camera with its intrinsics scaled to a new image size."""
        K = self.K.copy()
        K[0] *= width / self.width
        K[1] *= height / self.height
        return Camera(K, self.world_to_camera.copy(), width, height)

    def stereo(self, ipd: float = 0.063) -> "StereoPair":
        """Left and right eye cameras, ``ipd`` metres apart along this camera's x axis, with parallel
        optical axes (no toe-in: no vertical disparity; zero disparity at infinity, as a headset shows)."""
        if not (np.isfinite(ipd) and 0 <= ipd < 1):
            raise CameraError(f"inter-pupillary distance {ipd} m is absurd")
        out = []
        for sign in (-1.0, 1.0):
            w2c = self.world_to_camera.copy()
            w2c[0, 3] -= sign * ipd / 2  # shifting the camera by +d along x shifts points by -d
            out.append(Camera(self.K.copy(), w2c, self.width, self.height))
        return StereoPair(out[0], out[1], float(ipd))

    @property
    def camera_to_world(self) -> np.ndarray:
        return np.linalg.inv(self.world_to_camera)

    @property
    def center(self) -> np.ndarray:
        return self.camera_to_world[:3, 3]

    # ------------------------------------------------------------------ tensors / files
    def to_torch(self, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(viewmat (4, 4), K (3, 3)) tensors."""
        return (
            torch.as_tensor(self.world_to_camera, dtype=dtype, device=device),
            torch.as_tensor(self.K, dtype=dtype, device=device),
        )

    def to_dict(self) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "K": self.K.tolist(),
            "world_to_camera": self.world_to_camera.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Camera":
        try:
            if "world_to_camera" in d:
                w2c = np.asarray(d["world_to_camera"], float)
            else:  # nerfstudio-style camera-to-world in OpenGL axes
                c2w = np.asarray(d["transform_matrix"], float) @ np.diag([1.0, -1.0, -1.0, 1.0])
                w2c = np.linalg.inv(c2w)
            if "K" in d:
                K = d["K"]
            else:
                K = [[d["fl_x"], 0, d["cx"]], [0, d["fl_y"], d["cy"]], [0, 0, 1]]
            w = d.get("width", d.get("w"))
            h = d.get("height", d.get("h"))
            return cls(K, w2c, int(w), int(h))
        except CameraError:
            raise
        except (KeyError, TypeError, ValueError, np.linalg.LinAlgError) as e:
            raise CameraError(f"invalid camera description: {e!s}") from None

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_json(cls, path: str | Path) -> "Camera":
        p = Path(path)
        if not p.is_file():
            raise CameraError(f"camera file not found: {p}")
        try:
            d = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CameraError(
                f"camera file {p} is not valid JSON: {e.msg if hasattr(e, 'msg') else e}"
            ) from None
        if not isinstance(d, dict):
            raise CameraError(f"camera file {p} must hold a JSON object")
        return cls.from_dict(d)


@dataclass(frozen=True)
class StereoPair:
    """A per-eye camera pair ``ipd`` metres apart; unpacks as ``left, right``.

    ``Avatar.render(audio, camera=pair)`` renders both eyes (see :mod:`avatar3d.drive.stereo`).
    """

    left: Camera
    right: Camera
    ipd: float = 0.063

    def __iter__(self):
        return iter((self.left, self.right))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> Camera:
        return (self.left, self.right)[i]

    def resized(self, width: int, height: int) -> "StereoPair":
        """Both eyes at a new per-eye image size."""
        return StereoPair(self.left.resized(width, height), self.right.resized(width, height), self.ipd)


def stack_cameras(cameras: list[Camera], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(viewmats (C, 4, 4), Ks (C, 3, 3)) for a list of cameras of one image size."""
    sizes = {(c.width, c.height) for c in cameras}
    if len(sizes) != 1:
        raise CameraError(f"batched cameras must share one image size, got {sorted(sizes)}")
    vm = torch.stack([c.to_torch(device)[0] for c in cameras])
    K = torch.stack([c.to_torch(device)[1] for c in cameras])
    return vm, K
