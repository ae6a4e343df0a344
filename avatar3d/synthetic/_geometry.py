"""Geometry helpers for the synthetic subject: meshes, surface sampling, rotations, weights.

Everything here is NumPy (float64) and deterministic given a :class:`numpy.random.Generator`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import roma
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from ..core.geometry import quats_from_normals


# ---------------------------------------------------------------------------------------- meshes
def cycle_from_edges(edges: set[tuple[int, int]] | frozenset, start: int) -> list[int]:
    """Vertex order of a closed loop given as an (unordered) edge set, starting at ``start``."""
    adj: dict[int, list[int]] = {}
    for a, b in edges:
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    order, prev, cur = [start], None, start
    while True:
        nxt = next(v for v in adj[cur] if v != prev)
        if nxt == start:
            return order
        order.append(nxt)
        prev, cur = cur, nxt


def orient_outward(verts: np.ndarray, tris: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Reorder each triangle so its normal points away from the point ``inside``."""
    n = face_normals(verts, tris, normalise=False)
    c = verts[tris].mean(1)
    flip = np.einsum("ij,ij->i", n, c - inside) < 0
    out = tris.copy()
    out[flip] = out[flip][:, [0, 2, 1]]
    return out


def face_normals(verts: np.ndarray, tris: np.ndarray, normalise: bool = True) -> np.ndarray:
    v0, v1, v2 = verts[tris[:, 0]], verts[tris[:, 1]], verts[tris[:, 2]]
    n = np.cross(v1 - v0, v2 - v0)
    if normalise:
        n = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    return n


def triangle_areas(verts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    return 0.5 * np.linalg.norm(face_normals(verts, tris, normalise=False), axis=-1)


def grid_mesh(points: np.ndarray, wrap_u: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Triangulate a (Nv, Nu, 3) grid of points; ``wrap_u`` closes the u direction."""
    nv, nu = points.shape[:2]
    idx = np.arange(nv * nu).reshape(nv, nu)
    if wrap_u:
        idx = np.concatenate([idx, idx[:, :1]], axis=1)
    a, b = idx[:-1, :-1], idx[:-1, 1:]
    c, d = idx[1:, :-1], idx[1:, 1:]
    tris = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    return points.reshape(-1, 3), tris


# -------------------------------------------------------------------------------------- sampling
@dataclass
class SurfaceSamples:
    """Points on a triangle mesh: triangle index, barycentric coordinates, positions, normals."""

    tri: np.ndarray  # (N,)
    bary: np.ndarray  # (N, 3)
    points: np.ndarray  # (N, 3)
    normals: np.ndarray  # (N, 3)
    spacing: float  # mean distance between neighbouring samples (metres)


def sample_mesh(
    verts: np.ndarray,
    tris: np.ndarray,
    n: int,
    rng: np.random.Generator,
    oversample: int = 8,
) -> SurfaceSamples:
    """About ``n`` evenly spread points on a mesh (Poisson-disk sampling).

    Draws ``oversample * n`` uniform random candidates, then greedily keeps candidates (in random
    order) that have no kept neighbour within a radius tuned so that about ``n`` remain. Unlike
    plain uniform sampling this leaves no large holes, so small discs cover the surface.
    """
    areas = triangle_areas(verts, tris)
    total = float(areas.sum())
    n = max(int(n), 1)
    m = max(oversample * n, 8)
    tri = rng.choice(len(tris), size=m, p=areas / total)
    r1, r2 = rng.random(m), rng.random(m)
    s1 = np.sqrt(r1)
    bary = np.stack([1 - s1, s1 * (1 - r2), s1 * r2], -1)
    pts = np.einsum("nk,nkd->nd", bary, verts[tris[tri]])
    tree = cKDTree(pts)
    radius = 0.93 * math.sqrt(total / n)
    keep = np.arange(m)
    for _ in range(5):
        pairs = tree.query_pairs(radius, output_type="ndarray")
        adj = sp.coo_matrix(
            (
                np.ones(2 * len(pairs), bool),
                (np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]]),
            ),
            shape=(m, m),
        ).tocsr()
        keep = _greedy_independent_set(adj.indptr, adj.indices, m)
        ratio = len(keep) / n
        if abs(ratio - 1) < 0.05:
            break
        radius *= math.sqrt(ratio)
    tri, bary, pts = tri[keep], bary[keep], pts[keep]
    return SurfaceSamples(tri, bary, pts, face_normals(verts, tris)[tri], math.sqrt(total / len(keep)))


def _greedy_independent_set(indptr: np.ndarray, indices: np.ndarray, m: int) -> np.ndarray:
    """Indices kept by a greedy maximal independent set in index order (candidates are random)."""
    alive = np.ones(m, bool)
    keep = []
    for i in range(m):
        if alive[i]:
            keep.append(i)
            alive[indices[indptr[i] : indptr[i + 1]]] = False
    return np.asarray(keep, dtype=np.int64)


def bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Sample an (H, W, C) float image at pixel coordinates ``uv`` (N, 2) (pixel centres at +0.5)."""
    h, w = image.shape[:2]
    x = np.clip(uv[:, 0] - 0.5, 0, w - 1.001)
    y = np.clip(uv[:, 1] - 0.5, 0, h - 1.001)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    return (
        image[y0, x0] * (1 - fx) * (1 - fy)
        + image[y0, x0 + 1] * fx * (1 - fy)
        + image[y0 + 1, x0] * (1 - fx) * fy
        + image[y0 + 1, x0 + 1] * fx * fy
    )


def points_in_polygon(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule: which of ``pts`` (N, 2) lie inside the closed polygon ``poly`` (M, 2)."""
    x, y = pts[:, 0:1], pts[:, 1:2]
    x0, y0 = poly[None, :, 0], poly[None, :, 1]
    x1, y1 = np.roll(poly, -1, 0)[None, :, 0], np.roll(poly, -1, 0)[None, :, 1]
    cond = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return (np.sum(cond & (x < xi), axis=1) % 2) == 1


# ------------------------------------------------------------------------------------- weights
def harmonic_fill(n_verts: int, edges: np.ndarray, fixed: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Harmonic (graph-Laplacian) interpolation of per-vertex values.

    Args:
        edges: (E, 2) undirected vertex pairs.
        fixed: (K,) indices whose values are given.
        values: (K,) or (K, D) the given values.
    Returns:
        (n_verts,) or (n_verts, D): ``values`` on ``fixed``, smooth everywhere else.
    """
    vals = np.asarray(values, float)
    squeeze = vals.ndim == 1
    vals = vals.reshape(len(fixed), -1)
    i, j = edges[:, 0], edges[:, 1]
    A = sp.coo_matrix((np.ones(len(i) * 2), (np.r_[i, j], np.r_[j, i])), shape=(n_verts, n_verts)).tocsr()
    L = sp.diags(np.asarray(A.sum(1)).ravel()) - A
    free = np.setdiff1d(np.arange(n_verts), fixed)
    out = np.zeros((n_verts, vals.shape[1]))
    out[fixed] = vals
    if len(free):
        Lff = L[free][:, free].tocsc()
        rhs = -(L[free][:, fixed] @ vals)
        lu = spla.splu(Lff + sp.identity(len(free), format="csc") * 1e-9)
        out[free] = lu.solve(rhs)
    return out[:, 0] if squeeze else out


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


# ------------------------------------------------------------------------------------ rotations
def euler_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """(3, 3) float64 head rotation in head space (radians): yaw about -y (turn towards the frontal
    image's right for positive yaw), pitch about x (nod down for positive pitch), roll about z,
    composed as ``R_yaw @ R_pitch @ R_roll`` (intrinsic Y-X-Z Euler angles; yaw negated for -y)."""
    angles = torch.tensor([-yaw, pitch, roll], dtype=torch.float64)
    return roma.euler_to_rotmat("YXZ", angles).numpy()


def rotate_about_x_batch(
    points: Tensor, normals: Tensor, pivot: Tensor, angles: Tensor
) -> tuple[Tensor, Tensor]:
    """Rotate each point/normal about the x axis through ``pivot`` by its own angle (radians)."""
    c, s = torch.cos(angles), torch.sin(angles)
    d = points - pivot
    py = c * d[:, 1] - s * d[:, 2]
    pz = s * d[:, 1] + c * d[:, 2]
    ny = c * normals[:, 1] - s * normals[:, 2]
    nz = s * normals[:, 1] + c * normals[:, 2]
    p = torch.stack([d[:, 0], py, pz], -1) + pivot
    n = torch.stack([normals[:, 0], ny, nz], -1)
    return p, n


def normals_to_quats(normals: Tensor) -> Tensor:
    """wxyz quaternions rotating +z onto each normal (sign-free: a flat disc has no front)."""
    return quats_from_normals(torch.where(normals[:, 2:3] < 0, -normals, normals))
