"""Rotation and alignment helpers shared by the package, on roma (wxyz quaternions here, xyzw in roma)."""

from __future__ import annotations

import numpy as np
import roma
import torch
import torch.nn.functional as F
from torch import Tensor


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product of (..., 4) wxyz quaternions."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def rotmat_to_quat(R: Tensor) -> Tensor:
    """(..., 3, 3) rotation matrices -> (..., 4) unit wxyz quaternions."""
    xyzw = roma.rotmat_to_unitquat(R)
    return torch.cat([xyzw[..., 3:], xyzw[..., :3]], dim=-1)


def quats_from_normals(normals: Tensor) -> Tensor:
    """Quaternions (N, 4) rotating the local z axis onto unit ``normals`` (N, 3)."""
    n = F.normalize(normals, dim=-1)
    z = torch.tensor([0.0, 0.0, 1.0], dtype=n.dtype, device=n.device).expand_as(n)
    axis = torch.cross(z, n, dim=-1)
    w = 1.0 + (z * n).sum(-1, keepdim=True)
    q = torch.cat([w, axis], dim=-1)
    flip = w.squeeze(-1) < 1e-6  # normal == -z: rotate 180 degrees about x
    q[flip] = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=n.dtype, device=n.device)
    return F.normalize(q, dim=-1)


def axis_angle_to_rotmat(v: Tensor) -> Tensor:
    return roma.rotvec_to_rotmat(v)


def similarity_fit_batched(src, dst, weights=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least-squares similarity (Umeyama) ``dst ≈ s R src + t``, batched over leading axes.

    src, dst: (..., N, D) (broadcastable); weights: (..., N) or None. Returns float64 s (...,),
    R (..., D, D) proper rotations and t (..., D). Numpy's SVD keeps it bit-reproducible whatever the
    thread count (a capture resumed from disk must equal the uninterrupted one).
    """
    src, dst = np.broadcast_arrays(np.asarray(src, np.float64), np.asarray(dst, np.float64))
    w = (
        np.ones(src.shape[:-1])
        if weights is None
        else np.broadcast_to(np.asarray(weights, np.float64), src.shape[:-1])
    )
    w = w / np.maximum(w.sum(-1, keepdims=True), 1e-12)  # (..., N)
    mu_s, mu_d = (w[..., None] * src).sum(-2), (w[..., None] * dst).sum(-2)  # (..., D)
    xs, xd = src - mu_s[..., None, :], dst - mu_d[..., None, :]
    cov = np.einsum("...n,...ni,...nj->...ij", w, xd, xs)  # (..., D, D)
    U, S, Vt = np.linalg.svd(cov)
    D = np.ones(S.shape)
    D[..., -1] = np.sign(np.linalg.det(U) * np.linalg.det(Vt))  # no reflection
    R = U @ (D[..., :, None] * Vt)
    s = (S * D).sum(-1) / np.maximum((w * (xs**2).sum(-1)).sum(-1), 1e-12)
    t = mu_d - s[..., None] * np.einsum("...ij,...j->...i", R, mu_s)
    return s, R, t


def similarity_fit(src, dst, weights=None) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (Umeyama) mapping ``src`` onto ``dst``: (s, R, t) minimising
    ``sum w |dst - (s R src + t)|^2``. src, dst: (N, D) arrays (D = 2 or 3); weights: (N,) or None.
    Returns float64 numpy values: s, R (D, D) with det +1, t (D,)."""
    s, R, t = similarity_fit_batched(src, dst, weights)
    return float(s), R, t


def similarity_align(src, dst, weights=None) -> np.ndarray:
    """``src`` (N, D) moved by its least-squares similarity onto ``dst`` (:func:`similarity_fit`)."""
    s, R, t = similarity_fit(src, dst, weights)
    return s * np.asarray(src, np.float64) @ R.T + t


def pseudo_huber(x2, knee):
    """Pseudo-Huber of squared residuals ``x2`` (tensor or array): ``x2`` below ``knee**2``, growing like
    ``2 knee |x|`` above; ``knee`` None: ``x2`` itself."""
    if knee is None:
        return x2
    return 2 * knee**2 * ((1 + x2 / knee**2) ** 0.5 - 1)
