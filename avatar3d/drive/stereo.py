"""Stereo (per-eye) rendering for headset video players.

Each eye is rendered from a camera of a :class:`~avatar3d.core.camera.StereoPair`: the two cameras
sit ``ipd`` metres apart along the view camera's x axis with parallel optical axes (no toe-in, so no
vertical disparity; objects at infinity have zero disparity, as on a headset's parallel displays).
A point at depth ``Z`` then appears ``fx * ipd / Z`` pixels further left in the right eye than in
the left. The eyes are packed side by side (``sbs``: left eye in the left half) or over-under
(``ou``: left eye on top), each half at the per-eye size, the layouts headset players read from the
file-name tags ``_LR`` / ``_TB``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from ..core.camera import Camera, StereoPair
from ..core.constants import SAMPLE_RATE
from ..core.groups import HEAD, MOUTH
from ..errors import Avatar3DError, CameraError
from .frames import prepare_audio, save_video

if TYPE_CHECKING:
    from ..api import Avatar

LAYOUTS = ("sbs", "ou")
NAME_TAGS = {"sbs": "_LR", "ou": "_TB"}
DEFAULT_IPD = 0.063


def pack_eyes(left: np.ndarray, right: np.ndarray, layout: str = "sbs") -> np.ndarray:
    """Pack per-eye frames (T, H, W, C) into (T, H, 2W, C) (``sbs``) or (T, 2H, W, C) (``ou``)."""
    if layout not in LAYOUTS:
        raise Avatar3DError(f"unknown stereo layout {layout!r}: use sbs or ou")
    return np.concatenate([left, right], axis=2 if layout == "sbs" else 1)


def tagged_name(path: str | Path, layout: str) -> bool:
    """Whether the file name carries the layout tag headset players look for (``_LR``/``_TB``, ``_SBS``)."""
    stem = Path(path).stem.upper()
    tags = (NAME_TAGS[layout], "_SBS") if layout == "sbs" else (NAME_TAGS[layout], "_OU")
    return any(t in stem for t in tags)


@dataclass
class StereoRenderResult:
    """Both eyes of a stereo render.

    left, right: (T, H, W, 3) uint8 per-eye frames; frames: the packed layout, (T, H, 2W, 3) for
    ``sbs`` or (T, 2H, W, 3) for ``ou``; fps; audio (S,) float32 mono at ``sample_rate``; ipd in
    metres; alphas_left/right: (T, H, W) float32 coverage.
    """

    left: np.ndarray
    right: np.ndarray
    fps: float
    audio: np.ndarray
    sample_rate: int
    ipd: float
    layout: str = "sbs"
    alphas_left: np.ndarray | None = None
    alphas_right: np.ndarray | None = None
    avatar_id: int = 0  # for the provenance watermark (see avatar3d.io.watermark)
    watermark: bool = True

    @property
    def frames(self) -> np.ndarray:
        return pack_eyes(self.left, self.right, self.layout)

    def __len__(self) -> int:
        return len(self.left)

    def with_layout(self, layout: str) -> StereoRenderResult:
        """The same eyes packed another way (``sbs`` or ``ou``)."""
        if layout not in LAYOUTS:
            raise Avatar3DError(f"unknown stereo layout {layout!r}: use sbs or ou")
        return StereoRenderResult(
            self.left,
            self.right,
            self.fps,
            self.audio,
            self.sample_rate,
            self.ipd,
            layout,
            self.alphas_left,
            self.alphas_right,
            self.avatar_id,
            self.watermark,
        )

    def save(self, path: str | Path) -> Path:
        """Write the packed frames as an H.264 mp4 with the driving audio. The stream carries the H.264
        frame-packing message for the layout (an .mkv also Matroska's StereoMode); players that go by the
        file name want ``*_LR.mp4`` / ``*_TB.mp4``."""
        return save_video(
            path,
            self.frames,
            self.fps,
            self.audio,
            self.sample_rate,
            self.avatar_id,
            self.watermark,
            stereo=self.layout,
        )


def _eye_cameras(avatar: Avatar, camera, n: int, size, ipd: float) -> tuple[list[Camera], list[Camera]]:
    """Per-frame (left, right) camera lists for a StereoPair or any camera spec Avatar.cameras takes."""
    if isinstance(camera, StereoPair):
        pair = camera.resized(*size) if size else camera
        return [pair.left] * n, [pair.right] * n
    pairs = [c.stereo(ipd) for c in avatar.cameras(camera, n, size)]
    return [p.left for p in pairs], [p.right for p in pairs]


def render_stereo(
    avatar: Avatar,
    audio,
    camera: StereoPair | str | Camera | Sequence[Camera] | None = None,
    *,
    ipd: float | None = None,
    layout: str = "sbs",
    sample_rate: int | None = None,
    size: tuple[int, int] | None = None,
    max_seconds: float | None = None,
    **render_kw,
) -> StereoRenderResult:
    """Render ``audio`` for both eyes.

    ``camera``: a StereoPair (its ``ipd`` is used), or any camera spec of :meth:`Avatar.render`, each
    frame's camera then split into eyes ``ipd`` metres apart (default 0.063). ``size`` is per eye.
    Other keywords (pose, blink, background, progress) go to :meth:`Avatar.render`; both eyes share
    the head pose and blink sequence (they are deterministic per call).
    """
    if layout not in LAYOUTS:
        raise Avatar3DError(f"unknown stereo layout {layout!r}: use sbs or ou")
    if isinstance(camera, StereoPair):
        ipd = camera.ipd
    ipd = DEFAULT_IPD if ipd is None else float(ipd)
    if not (math.isfinite(ipd) and 0 < ipd < 1):
        raise CameraError(f"inter-pupillary distance {ipd} m must be within (0, 1)")
    wave, n = prepare_audio(audio, sample_rate, max_seconds, avatar.meta.fps)
    lefts, rights = _eye_cameras(avatar, camera, n, size, ipd)
    eyes = [avatar.render(wave, cams, sample_rate=SAMPLE_RATE, **render_kw) for cams in (lefts, rights)]
    return StereoRenderResult(
        eyes[0].frames,
        eyes[1].frames,
        eyes[0].fps,
        eyes[0].audio,
        eyes[0].sample_rate,
        ipd,
        layout,
        eyes[0].alphas,
        eyes[1].alphas,
        avatar.avatar_id,
        avatar.config.render.watermark,
    )


def head_disparity(
    left: np.ndarray, right: np.ndarray, mask_left: np.ndarray, mask_right: np.ndarray | None = None
) -> float:
    """Horizontal shift in pixels of the head from the left eye's image to the right's (positive: it
    sits further left in the right eye). The left eye's head (its bounding box where ``mask_left`` >
    0.5, masked) is matched along the same rows of the right image (normalised cross-correlation,
    sub-pixel by a parabola through the peak). left, right: (H, W, 3) uint8; masks: (H, W) in [0, 1]."""

    def grey(img: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        return g * mask.astype(np.float32) if mask is not None else g

    ys, xs = np.nonzero(mask_left > 0.5)
    if len(xs) == 0:
        raise Avatar3DError("the head is not visible in the left eye")
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    tmpl = grey(left, mask_left)[y0:y1, x0:x1]
    strip = grey(right, mask_right)[y0:y1]
    score = cv2.matchTemplate(strip, tmpl, cv2.TM_CCOEFF_NORMED)[0]  # (W - w + 1,)
    i = int(np.argmax(score))
    sub = 0.0
    if 0 < i < len(score) - 1:
        a, b, c = score[i - 1], score[i], score[i + 1]
        den = a - 2 * b + c
        sub = 0.5 * (a - c) / den if den < 0 else 0.0
    return float(x0 - (i + sub))


@torch.no_grad()
def head_render(avatar: Avatar, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Coverage (H, W) and depth (H, W) in metres along the optical axis of the neutral avatar's
    head and mouth Gaussians alone (no torso) seen by ``camera``."""
    model = avatar.model
    gs = model.posed(avatar.audio.silence_code(), torch.zeros(1), None)
    keep = (model.group == HEAD) | (model.group == MOUTH)
    gs = {k: gs[k][keep] for k in ("means", "quats", "scales", "opacities", "colors")}
    vm, K = camera.to_torch()
    out = model.render(gs, vm[None], K[None], camera.width, camera.height)
    return out.alphas[0, ..., 0].numpy(), out.depths[0, ..., 0].numpy()


@torch.no_grad()
def head_depth(avatar: Avatar, camera: Camera, surface: bool = False) -> float:
    """Depth in metres along ``camera``'s optical axis of the neutral head: of its centre (the
    opacity-weighted centroid of the head Gaussians), or with ``surface`` the median depth of its
    visible surface (coverage > 0.5), which is nearer by the face's relief."""
    if surface:
        a, d = head_render(avatar, camera)
        return float(np.median(d[a > 0.5]))
    model = avatar.model
    gs = model.posed(avatar.audio.silence_code(), torch.zeros(1), None)
    head = model.group == HEAD
    w = gs["opacities"][head]
    c = (gs["means"][head] * w[:, None]).sum(0) / w.sum()
    return float(camera.world_to_camera[2, :3] @ c.double().numpy() + camera.world_to_camera[2, 3])


def expected_disparity(focal_px: float, ipd: float, depth: float) -> float:
    """The disparity in pixels of a point at ``depth`` metres for parallel eyes ``ipd`` apart."""
    return float(focal_px) * float(ipd) / float(depth)
