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


def similarity_fit(src, dst, weights=None) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (Umeyama) mapping ``src`` onto ``dst``: (s, R, t) minimising
    ``sum w |dst - (s R src + t)|^2``. src, dst: (N, D) arrays (D = 2 or 3); weights: (N,) or None.
    Returns float64 numpy values: s, R (D, D) with det +1, t (D,)."""
    x = torch.as_tensor(np.asarray(src), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(dst), dtype=torch.float64)
    w = None if weights is None else torch.as_tensor(np.asarray(weights), dtype=torch.float64)
    R, t, s = roma.rigid_points_registration(x, y, weights=w, compute_scaling=True)
    return float(s), R.numpy(), t.numpy()


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
