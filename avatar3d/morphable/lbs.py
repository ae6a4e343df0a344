"""Linear blend skinning (SMPL/FLAME style), batched and differentiable, in plain torch.

The model's rest mesh is deformed in four steps:

1. blendshapes: ``v_shaped = v_template + shapedirs @ coeffs`` (identity and expression together);
2. joints regressed from the shaped mesh: ``J = J_regressor @ v_shaped``;
3. pose correctives: ``v_posed = v_shaped + posedirs @ vec(R_j - I)`` over the non-root joints;
4. forward kinematics along the kinematic tree, then skinning:
   ``v = sum_j w_vj * A_j @ [v_posed, 1]`` where ``A_j`` maps the rest pose to the posed joint frame.

All functions take batched tensors; none moves data between devices.
"""

from __future__ import annotations

import numpy as np
import roma
import torch
from torch import Tensor


def rotate(points: Tensor, R: Tensor) -> Tensor:
    """``points @ R^T`` for points (B, N, 3) and R (B, 3, 3), elementwise (tiny batched GEMMs are slow
    on CPU)."""
    return (points.unsqueeze(-2) * R.unsqueeze(-3)).sum(-1)


def parents_from_kintree(kintree_table: np.ndarray) -> np.ndarray:
    """Parent index of each joint from a (2, J) kintree table (row 0 parents, row 1 joint ids).

    The root's parent is whatever is not a valid joint id (FLAME stores 2**32 - 1). Raises
    ``ValueError`` if the table is not a tree with one root whose joints are numbered 0..J-1.
    """
    kt = np.asarray(kintree_table).astype(np.int64)
    if kt.ndim != 2 or kt.shape[0] != 2:
        raise ValueError(f"kintree_table must have shape (2, J), got {kt.shape}")
    J = kt.shape[1]
    ids = kt[1]
    if sorted(ids.tolist()) != list(range(J)):
        raise ValueError(f"kintree_table joint ids must be 0..{J - 1}, got {ids.tolist()}")
    parents = np.full(J, -1, dtype=np.int64)
    for p, j in zip(kt[0], ids):
        parents[j] = p if 0 <= p < J else -1
    roots = np.flatnonzero(parents < 0)
    if len(roots) != 1:
        raise ValueError(f"kintree_table must have exactly one root, found {len(roots)}")
    # acyclic: every joint reaches the root within J steps
    for j in range(J):
        k, steps = j, 0
        while parents[k] >= 0:
            k, steps = parents[k], steps + 1
            if steps > J:
                raise ValueError("kintree_table contains a cycle")
    return parents


def topological_order(parents: np.ndarray) -> list[int]:
    """Joints ordered so that every parent comes before its children."""
    depth = np.zeros(len(parents), dtype=np.int64)
    for j in range(len(parents)):
        k = j
        while parents[k] >= 0:
            depth[j] += 1
            k = parents[k]
    return [int(j) for j in np.argsort(depth, kind="stable")]


def blend_shapes(coeffs: Tensor, dirs: Tensor) -> Tensor:
    """Blendshape offsets.

    Args:
        coeffs: (B, K).
        dirs: (V, 3, K).
    Returns:
        (B, V, 3).
    """
    return torch.einsum("bk,vck->bvc", coeffs, dirs)


def pose_features(rotmats: Tensor) -> Tensor:
    """Pose-corrective features from the non-root joints' rotations.

    Args:
        rotmats: (B, J, 3, 3) with the root first.
    Returns:
        (B, 9 * (J - 1)): ``R_j - I`` flattened row-major, joints 1..J-1 in order.
    """
    B, J = rotmats.shape[:2]
    eye = torch.eye(3, dtype=rotmats.dtype, device=rotmats.device)
    return (rotmats[:, 1:] - eye).reshape(B, 9 * (J - 1))


def rigid_transforms(
    rotmats: Tensor, joints: Tensor, parents: list[int] | np.ndarray
) -> tuple[Tensor, Tensor]:
    """Forward kinematics.

    Args:
        rotmats: (B, J, 3, 3) local joint rotations.
        joints: (B, J, 3) rest-pose joint positions.
        parents: (J,) parent index per joint, -1 for the root.
    Returns:
        posed_joints: (B, J, 3) joint positions after posing.
        A: (B, J, 4, 4) per-joint transforms taking rest-pose points to posed points.
    """
    B, J = joints.shape[:2]
    parents = [int(p) for p in parents]
    rel = joints.clone()
    for j in range(J):
        if parents[j] >= 0:
            rel[:, j] = joints[:, j] - joints[:, parents[j]]
    local = torch.zeros(B, J, 4, 4, dtype=joints.dtype, device=joints.device)
    local[:, :, :3, :3] = rotmats
    local[:, :, :3, 3] = rel
    local[:, :, 3, 3] = 1.0
    world: list[Tensor | None] = [None] * J
    for j in topological_order(np.asarray(parents)):
        world[j] = local[:, j] if parents[j] < 0 else world[parents[j]] @ local[:, j]
    G = torch.stack(world, dim=1)  # [B, J, 4, 4]
    posed_joints = G[:, :, :3, 3]
    # remove the rest-pose joint location: A = G @ [I, -J_rest]
    t = posed_joints - (G[:, :, :3, :3] * joints.unsqueeze(-2)).sum(-1)
    A = torch.cat([G[:, :, :3, :3], t.unsqueeze(-1)], dim=-1)  # [B, J, 3, 4]
    bottom = G.new_tensor([0.0, 0.0, 0.0, 1.0]).expand(B, J, 1, 4)
    return posed_joints, torch.cat([A, bottom], dim=-2)


def skin(points: Tensor, A: Tensor, weights: Tensor) -> Tensor:
    """Linear blend skinning.

    Args:
        points: (B, V, 3) rest-pose points (pose correctives already added).
        A: (B, J, 4, 4) per-joint transforms from :func:`rigid_transforms`.
        weights: (V, J) skinning weights.
    Returns:
        (B, V, 3).
    """
    T = torch.einsum("vj,bjrc->bvrc", weights.to(A.dtype), A[:, :, :3, :])  # [B, V, 3, 4]
    # elementwise rather than a batched 3x3 matmul: many tiny GEMMs are slow on CPU
    return (T[..., :3] * points.unsqueeze(-2)).sum(-1) + T[..., 3]


def lbs(
    coeffs: Tensor,  # [B, K]
    rotvecs: Tensor,  # [B, J, 3]
    v_template: Tensor,  # [V, 3]
    shapedirs: Tensor,  # [V, 3, K]
    posedirs: Tensor,  # [V, 3, 9 * (J - 1)]
    joint_template: Tensor,  # [J, 3]
    joint_shapedirs: Tensor,  # [J, 3, K]
    parents: list[int] | np.ndarray,  # [J]
    weights: Tensor,  # [V, J]
) -> tuple[Tensor, Tensor]:
    """Blendshapes + pose correctives + skinning of (a subset of) a model's vertices.

    Joints are regressed from the full mesh; because regression is linear, callers precompute
    ``joint_template = J_regressor @ v_template`` and ``joint_shapedirs = J_regressor @ shapedirs``,
    which lets this function deform only the vertices it is given (e.g. those under landmarks).

    Args:
        coeffs: (B, K) blendshape coefficients (identity then expression).
        rotvecs: (B, J, 3) axis-angle rotation of each joint relative to its parent.
        v_template, shapedirs, posedirs, weights: per-vertex model data for the V vertices wanted.
        joint_template: (J, 3); joint_shapedirs: (J, 3, K).
        parents: (J,) parent per joint, -1 for the root.
    Returns:
        vertices: (B, V, 3); joints: (B, J, 3) posed joint positions.
    """
    v_shaped = v_template + blend_shapes(coeffs, shapedirs)  # [B, V, 3]
    joints = joint_template + blend_shapes(coeffs, joint_shapedirs)  # [B, J, 3]
    rotmats = roma.rotvec_to_rotmat(rotvecs)  # [B, J, 3, 3]
    v_posed = v_shaped + torch.einsum("bp,vcp->bvc", pose_features(rotmats), posedirs)
    posed_joints, A = rigid_transforms(rotmats, joints, parents)
    return skin(v_posed, A, weights), posed_joints
