"""Head motion and blinks of a render: from the training track, generated, or none."""

from __future__ import annotations

import math

import numpy as np
import roma
import torch

from ..errors import ConfigError

POSE_MODES = ("static", "track", "generated")
BLINK_MODES = ("auto", "none", "track")

BLINK_FIRST_S = (1.0, 3.0)  # seconds: the first generated blink falls in this range
BLINK_GAP_S = (2.5, 5.0)  # seconds between generated blinks
BLINK_DURATION_S = 0.25  # seconds from closing to open again
# generated head motion: amplitude in degrees of pitch (x), yaw (y) and roll (z), and sine frequencies
MOTION_AMPLITUDE_DEG = (3.0, 6.0, 2.0)
MOTION_FREQ_HZ = (0.05, 0.35)
MOTION_SINES = 3  # sines summed per axis


def blink_schedule(n: int, fps: float, seed: int = 0) -> np.ndarray:
    """(n,) float32 natural blinks in [0, 1]: one every 2.5-5 s, smooth close and open."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n, np.float32)
    t = rng.uniform(*BLINK_FIRST_S)
    half = BLINK_DURATION_S * fps / 2
    while t < n / fps:
        c = t * fps
        for k in range(max(0, int(c - 2 * half)), min(n, int(c + 2 * half) + 1)):
            out[k] = max(out[k], math.cos(min(1.0, abs(k - c) / half) * math.pi / 2) ** 2)
        t += rng.uniform(*BLINK_GAP_S)
    return out


def generated_motion(n: int, fps: float, seed: int = 0, start: int = 0) -> np.ndarray:
    """(n, 4, 4) smooth, small head motion (pitch ±3°, yaw ±6°, roll ±2°) from sums of slow sines,
    for frames ``start`` .. ``start + n - 1`` (any window of one endless motion)."""
    rng = np.random.default_rng(seed)
    t = np.arange(start, start + n) / fps
    ang = np.zeros((n, 3))
    for axis, amp in enumerate(MOTION_AMPLITUDE_DEG):
        for _ in range(MOTION_SINES):
            f, ph = rng.uniform(*MOTION_FREQ_HZ), rng.uniform(0, 2 * np.pi)
            ang[:, axis] += amp / MOTION_SINES * np.sin(2 * np.pi * f * t + ph)
    P = np.tile(np.eye(4), (n, 1, 1))
    P[:, :3, :3] = roma.rotvec_to_rotmat(torch.as_tensor(np.radians(ang))).numpy()
    return P


def _looped(track: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """``track`` played forwards then backwards, repeated (no jump at the seam): frames start .. start + n - 1."""
    cyc = np.concatenate([track, track[::-1]])
    return cyc[np.arange(start, start + n) % len(cyc)]


def head_poses(
    mode: str, n: int, fps: float, track_poses: np.ndarray | torch.Tensor, start: int = 0
) -> np.ndarray:
    """(n, 4, 4) head poses of frames ``start`` .. ``start + n - 1``: 'static' (identity), 'track' (the
    training clip's ``track_poses`` (T, 4, 4), looped back and forth) or 'generated'
    (:func:`generated_motion`)."""
    if mode == "static":
        return np.tile(np.eye(4), (n, 1, 1))
    if mode == "track":
        return _looped(np.asarray(track_poses), n, start)
    if mode == "generated":
        return generated_motion(n, fps, start=start)
    raise ConfigError(f"unknown pose mode {mode!r}: use static, track or generated")


def blinks(mode, n: int, fps: float, track_blink: np.ndarray | torch.Tensor) -> np.ndarray:
    """(n,) float32 blink amounts: 'auto' (:func:`blink_schedule`), 'none', 'track' (the training
    clip's ``track_blink`` (T,), looped), or an array of n values (clipped to [0, 1])."""
    if isinstance(mode, (np.ndarray, list, tuple)):
        b = np.asarray(mode, np.float32).reshape(-1)
        if len(b) != n:
            raise ConfigError(f"blink array has {len(b)} values for {n} frames")
        return np.clip(b, 0, 1)
    if mode == "auto":
        return blink_schedule(n, fps)
    if mode == "none":
        return np.zeros(n, np.float32)
    if mode == "track":
        return _looped(np.asarray(track_blink), n)
    raise ConfigError(f"unknown blink mode {mode!r}: use auto, none, track or an array")
