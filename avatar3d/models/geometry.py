"""Small rotation helpers (wxyz quaternions) shared by the avatar model."""

from __future__ import annotations

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
    import roma

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
    import roma

    return roma.rotvec_to_rotmat(v)
