"""Driving a loaded avatar for evaluation: explicit per-frame audio codes, head poses, blinks and
cameras, with colour, alpha and depth out (``Avatar.render`` covers the user-facing modes only).

World space is the avatar's: its head space at the capture's rest frame (docs/INTERNALS.md). A head
pose is the (4, 4) head -> world transform; ``camera`` is any :class:`Camera` in that world.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..audio import load_audio
from ..core.camera import Camera
from ..core.constants import SAMPLE_RATE
from ..core.groups import HEAD, MOUTH
from ..errors import Avatar3DError
from ..models.deform import gather_windows
from ..render.rasterize import rasterize

HEAD_GROUPS = (HEAD, MOUTH)  # what "head-only" composites render: face, scalp and mouth interior
CODE_BATCH = 64  # frames per audio-network call
EMPTY_ALPHA = 1e-4  # below this accumulated alpha a pixel has no depth (0)


@dataclass
class Layer:
    """One rendered view before compositing: rgb (H, W, 3) premultiplied by alpha, alpha (H, W),
    depth (H, W) expected camera-space depth (0 where empty); float32 numpy arrays."""

    rgb: np.ndarray
    alpha: np.ndarray
    depth: np.ndarray

    def over(self, background: np.ndarray) -> np.ndarray:
        """Composite over a (H, W, 3) or (3,) background (uint8, or float in [0, 1]) -> (H, W, 3) uint8."""
        bg = np.asarray(background)
        bg = bg.astype(np.float32) / 255.0 if bg.dtype == np.uint8 else bg.astype(np.float32)
        img = self.rgb + (1.0 - self.alpha[..., None]) * bg
        return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


@torch.no_grad()
def audio_codes(avatar, features: np.ndarray | torch.Tensor, index: np.ndarray | None = None) -> torch.Tensor:
    """Smoothed audio codes (len(index), A) for frames ``index`` of ``features`` (T, W, M)."""
    f = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    win = int(avatar.meta.audio_window)
    if f.ndim != 3 or f.shape[1] != win or f.shape[2] != int(avatar.meta.n_mels):
        raise Avatar3DError(
            f"audio features {tuple(f.shape)} do not fit this avatar (window {win}, "
            f"{avatar.meta.n_mels} mels)"
        )
    idx = torch.arange(f.shape[0]) if index is None else torch.as_tensor(np.asarray(index), dtype=torch.long)
    m = avatar.model
    return torch.cat(
        [
            m.audio(gather_windows(f, idx[s : s + CODE_BATCH], m.cfg.smooth_window))
            for s in range(0, len(idx), CODE_BATCH)
        ]
    )


def features_for(avatar, wave16k: np.ndarray, fps: float, n_frames: int) -> np.ndarray:
    """The avatar's audio features (n_frames, W, M) of a wave at :data:`SAMPLE_RATE`: :meth:`Avatar.audio_features`
    (log-mel, or the speech model the avatar was trained with)."""
    return avatar.audio_features(wave16k, fps, n_frames)


def capture_features(avatar, cs) -> np.ndarray:
    """The avatar's audio features (T, W, M) for every frame of a CaptureSet: the capture's own
    log-mel ``features`` for a log-mel avatar, else recomputed from its ``audio.wav`` (speech model,
    speech front end)."""
    vis = int(avatar.meta.n_visemes)
    if not avatar.meta.speech_model and not vis:
        return cs.features
    wave, sr = cs.audio()
    if sr != SAMPLE_RATE:
        wave = load_audio((wave, sr), sr=SAMPLE_RATE)
    return avatar.audio_features(wave, cs.fps, cs.n_frames)


@torch.no_grad()
def render_layers(
    avatar,
    code: torch.Tensor,
    blink: float,
    head_pose: np.ndarray | None,
    camera: Camera,
    groups: tuple[tuple[int, ...] | None, ...] = (None,),
) -> list[Layer]:
    """Render one frame of the avatar without a background, once per entry of ``groups`` (a tuple of
    Gaussian groups to keep, None = all), posing the Gaussians only once.

    code: (A,) audio code; blink in [0, 1]; head_pose: (4, 4) head -> world or None (rest pose).
    """
    m = avatar.model
    hp = None if head_pose is None else torch.as_tensor(np.asarray(head_pose), dtype=torch.float32)
    gs = m.posed(code, torch.tensor([float(blink)]), hp)
    vm, K = camera.to_torch()
    scales = m.render_scales(gs, vm[None], K[None])
    out_layers = []
    for g in groups:
        sel = slice(None) if g is None else torch.isin(m.group, torch.tensor(g))
        out = rasterize(
            gs["means"][sel],
            gs["quats"][sel],
            scales[sel],
            gs["opacities"][sel],
            gs["colors"][sel],
            vm[None],
            K[None],
            camera.width,
            camera.height,
            None,
            backend=avatar.config.render.backend,
        )
        a = out.alphas[0, ..., 0]
        out_layers.append(
            Layer(
                out.colors[0].numpy().astype(np.float32),
                a.numpy().astype(np.float32),
                torch.where(a > EMPTY_ALPHA, out.depths[0, ..., 0], torch.zeros_like(a))
                .numpy()
                .astype(np.float32),
            )
        )
    return out_layers


def render_layer(
    avatar,
    code: torch.Tensor,
    blink: float,
    head_pose: np.ndarray | None,
    camera: Camera,
    groups: tuple[int, ...] | None = None,
) -> Layer:
    """:func:`render_layers` for one group selection (None = all Gaussians)."""
    return render_layers(avatar, code, blink, head_pose, camera, (groups,))[0]


def rest_camera_matrix(avatar) -> np.ndarray:
    """(4, 4) world -> camera of the avatar's capture camera (the rest frame's head pose)."""
    return np.asarray(avatar.meta.rest_viewmat, np.float64)


__all__ = [
    "HEAD_GROUPS",
    "Layer",
    "audio_codes",
    "capture_features",
    "features_for",
    "render_layer",
    "render_layers",
    "rest_camera_matrix",
]
