"""Overlay video of a capture: the fitted head model and landmarks drawn on the stored frames.

Drawn per frame: the canonical face mesh (MediaPipe tessellation) posed by ``[R_t | t_t]`` and
projected with the capture's K (thin green wireframe: it checks pose and focal), the per-frame landmarks
(``landmarks2d``; red when the face was detected, orange when interpolated), head-space axes at the
origin (x red, y green, z blue, 5 cm), and bars for mouth_open, jaw_open and blink.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..core.topology import contour_edges, tessellation_edges
from ..io.captureset import CaptureSet
from ..io.media import write_video
from .geometry import project


def draw_overlay(image: np.ndarray, cs, i: int, mesh: bool = True) -> np.ndarray:
    """(H, W, 3) uint8 frame ``i`` of CaptureSet ``cs`` with the fit drawn on it."""
    img = np.ascontiguousarray(image.copy())
    R, t = cs.rotation[i].astype(np.float64), cs.translation[i].astype(np.float64)
    K = cs.K
    canon = cs.canonical_landmarks.astype(np.float64)
    uv = project(canon @ R.T + t, K)  # (478, 2) posed canonical shape
    sh = 4  # sub-pixel bits for cv2 drawing
    to_px = lambda p: np.round((p - 0.5) * (1 << sh)).astype(np.int32)

    def lines(points: np.ndarray, edges: np.ndarray, colour, thickness=1) -> None:
        segs = [to_px(points[[a, b]]) for a, b in edges]
        cv2.polylines(img, segs, False, colour, thickness, cv2.LINE_AA, shift=sh)

    if mesh:
        lines(uv, tessellation_edges(), (60, 200, 80))
    lines(uv, contour_edges(), (150, 255, 150))
    valid = bool(cs.valid[i])
    dot = (255, 40, 40) if valid else (255, 160, 0)
    for p in to_px(cs.landmarks2d[i].astype(np.float64)):
        cv2.circle(img, tuple(int(v) for v in p), 1 << sh, dot, -1, cv2.LINE_AA, shift=sh)
    axes = np.array([[0, 0, 0], [0.05, 0, 0], [0, 0.05, 0], [0, 0, 0.05]])
    a2 = to_px(project(axes @ R.T + t, K))
    for k, c in zip(range(1, 4), [(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        cv2.line(img, tuple(a2[0]), tuple(a2[k]), c, 2, cv2.LINE_AA, shift=sh)
    h = img.shape[0]
    bars = [
        ("mouth", float(cs.mouth_open[i])),
        ("jaw", min(float(cs.jaw_open[i]) / 0.3, 1.0)),
        ("blink", float(cs.blink[i])),
    ]
    for k, (name, v) in enumerate(bars):
        y = h - 12 - 16 * k
        cv2.rectangle(img, (60, y - 9), (60 + 100, y), (40, 40, 40), -1)
        cv2.rectangle(img, (60, y - 9), (60 + int(100 * v), y), (240, 220, 60), -1)
        cv2.putText(img, name, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    label = f"{i}" + ("" if valid else " lost")
    cv2.putText(img, label, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def write_overlay(
    capture_dir: str | os.PathLike,
    out_mp4: str | os.PathLike,
    mesh: bool = True,
    max_frames: int | None = None,
    with_audio: bool = True,
) -> Path:
    """Write an H.264 overlay video of a capture directory (with its audio); returns the path."""
    cs = CaptureSet.load(capture_dir)
    n = cs.n_frames if max_frames is None else min(cs.n_frames, int(max_frames))
    frames = (draw_overlay(cs.image(i), cs, i, mesh) for i in range(n))
    audio, sr = (None, None)
    if with_audio:
        audio, sr = cs.audio()
        audio = audio[: int(np.ceil(n / cs.fps * sr))]
    return write_video(out_mp4, frames, cs.fps, audio=audio, audio_sr=sr)
