"""Small geometric helpers: batched robust similarity alignment, projection, temporal interpolation."""

from __future__ import annotations

import numpy as np
import roma
import torch

from ..core.geometry import similarity_fit_batched

MAD_TO_SIGMA = 1.4826  # median absolute deviation -> standard deviation of a normal distribution
CAUCHY_SIGMAS = 2.0  # robust_umeyama's Cauchy scale, in (robust) standard deviations of the residuals


def robust_umeyama(
    src: np.ndarray, dst: np.ndarray, iterations: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Batched similarity ``dst ≈ s * R @ src + t`` (Umeyama,
    :func:`avatar3d.core.geometry.similarity_fit_batched`) with iteratively re-weighted Cauchy weights.

    src: (..., N, 3), dst: (..., N, 3) (broadcastable). Returns s (...,), R (..., 3, 3) proper
    rotations, t (..., 3) and the residuals (..., N).
    """
    src, dst = np.broadcast_arrays(np.asarray(src, np.float64), np.asarray(dst, np.float64))
    w = None
    for _ in range(max(1, iterations)):
        s, R, t = similarity_fit_batched(src, dst, w)
        pred = s[..., None, None] * np.einsum("...ij,...nj->...ni", R, src) + t[..., None, :]
        res = np.linalg.norm(pred - dst, axis=-1)  # (..., N)
        sigma = MAD_TO_SIGMA * np.median(res, axis=-1, keepdims=True) + 1e-9
        w = 1.0 / (1.0 + (res / (CAUCHY_SIGMAS * sigma)) ** 2)
    return s, R, t, res


def project(points_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """points_cam: (..., 3) camera coordinates -> (..., 2) pixels (pixel centres at +0.5)."""
    z = np.maximum(points_cam[..., 2:3], 1e-9)
    uv = points_cam[..., :2] / z
    return uv * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])


def transform(R: np.ndarray, t: np.ndarray, points: np.ndarray) -> np.ndarray:
    """R: (T, 3, 3), t: (T, 3), points: (T, N, 3) or (N, 3) -> (T, N, 3) = R @ p + t."""
    eq = "tij,nj->tni" if points.ndim == 2 else "tij,tnj->tni"
    return np.einsum(eq, R, points) + t[:, None, :]


def _neighbours(valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every frame, the previous and next valid frame index and the blend weight of the next."""
    idx = np.flatnonzero(valid)
    T = len(valid)
    pos = np.searchsorted(idx, np.arange(T))  # first valid index >= t
    nxt = idx[np.clip(pos, 0, len(idx) - 1)]
    prv = idx[np.clip(pos - 1, 0, len(idx) - 1)]
    prv = np.where(valid, np.arange(T), prv)
    nxt = np.where(valid, np.arange(T), nxt)
    before_first = np.arange(T) < idx[0]
    after_last = np.arange(T) > idx[-1]
    prv = np.where(before_first, idx[0], prv)
    nxt = np.where(after_last, idx[-1], nxt)
    span = np.maximum(nxt - prv, 1)
    alpha = np.where(nxt == prv, 0.0, (np.arange(T) - prv) / span)
    return prv, nxt, alpha


def interpolate_invalid(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear interpolation in time over invalid frames (held constant beyond the ends).

    values: (T, ...) -> (T, ...). Needs at least one valid frame.
    """
    values = np.asarray(values)
    if valid.all():
        return values.copy()
    prv, nxt, a = _neighbours(valid)
    a = a.reshape((-1,) + (1,) * (values.ndim - 1))
    return ((1 - a) * values[prv] + a * values[nxt]).astype(values.dtype)


def interpolate_rotations(R: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Slerp over invalid frames (along the geodesic between the valid neighbours, on roma).
    R: (T, 3, 3) -> (T, 3, 3)."""
    if valid.all():
        return R.copy()
    prv, nxt, a = _neighbours(valid)
    R0 = torch.as_tensor(R[prv], dtype=torch.float64)
    R1 = torch.as_tensor(R[nxt], dtype=torch.float64)
    rel = roma.rotmat_to_rotvec(R1 @ R0.transpose(1, 2))  # (T, 3)
    return (roma.rotvec_to_rotmat(rel * torch.as_tensor(a)[:, None]) @ R0).numpy()


def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """R: (..., 3, 3) -> rotation angles in degrees (...,)."""
    return np.degrees(roma.rotmat_to_rotvec(torch.as_tensor(np.asarray(R, np.float64))).norm(dim=-1).numpy())


def pose_jitter(R: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """Median frame-to-frame acceleration of a pose sequence: (rotation in degrees, translation in mm).

    Rotation acceleration is the angle of ``(R_{k+1} R_k^T)(R_k R_{k-1}^T)^T``. R: (T, 3, 3), t: (T, 3).
    """
    if len(R) < 3:
        return 0.0, 0.0
    d = R[1:] @ np.swapaxes(R[:-1], -1, -2)  # (T-1, 3, 3) frame-to-frame rotation
    acc_r = rotation_angle_deg(d[1:] @ np.swapaxes(d[:-1], -1, -2))
    acc_t = np.linalg.norm(t[2:] - 2 * t[1:-1] + t[:-2], axis=-1) * 1000.0  # mm
    return float(np.median(acc_r)), float(np.median(acc_t))
