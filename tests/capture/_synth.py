"""Synthetic talking-face clips for the capture tests, built from public-domain photos."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from avatar3d.io.media import write_video

FPS = 25
SR = 16000


def astronaut_face(size: int = 256) -> np.ndarray:
    """(size, size, 3) uint8 crop of skimage's astronaut photo with the face near the centre."""
    import skimage.data

    a = skimage.data.astronaut()  # (512, 512, 3); face around x 179-271, y 71-177
    return cv2.resize(a[0:256, 97:353], (size, size), interpolation=cv2.INTER_AREA)


def grace_hopper_face(size: int = 160) -> np.ndarray:
    """(size, size, 3) uint8 crop of matplotlib's grace_hopper sample around the face."""
    import matplotlib.image as mpimg
    from matplotlib import cbook

    g = mpimg.imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))  # (600, 512, 3)
    return cv2.resize(np.ascontiguousarray(g[80:430, 90:440]), (size, size), interpolation=cv2.INTER_AREA)


def rotate_about_centre(img: np.ndarray, degrees: float, shift=(0.0, 0.0)) -> np.ndarray:
    """Rotate ``img`` counter-clockwise (as displayed) about its centre, then shift (dx, dy) px."""
    h, w = img.shape[:2]
    M = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), degrees, 1.0)
    M[:, 2] += shift
    return cv2.warpAffine(img, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def tone(seconds: float, sr: int = SR, freq: float = 220.0, amp: float = 0.2) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * math.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * math.pi * 3 * t))).astype(
        np.float32
    )


def write_clip(path: Path, frames, fps: float = FPS, audio: np.ndarray | None | str = "tone") -> Path:
    """Write frames (list of (H, W, 3) uint8) as an H.264 mp4 with a tone (or given / no audio)."""
    frames = list(frames)
    if isinstance(audio, str):
        audio = tone(len(frames) / fps)
    return write_video(path, frames, fps, audio=audio, audio_sr=None if audio is None else SR)


ROLL_DEGREES = [0.0, 2.0, 4.0, 6.0, 8.0, 6.0, 3.0, 0.0, -3.0, -6.0, -8.0, -4.0]
