"""Close a face mesh into a full head surface, to seed primitives beyond the face.

:func:`extend_to_head` keeps the face mesh as it is and adds

- a fan over each inner hole (eyes, mouth) to a vertex at the hole's centroid, and
- a back-of-head cap: rings of vertices that run from the face's outer boundary along great circles
  of an ellipsoid (head-like proportions scaled from the face: breadth from the face width, length
  1.25 x breadth, the crown 0.35 face heights above the forehead) to a pole behind the face.

The result is a closed, consistently wound surface (the largest connected part of the input plus the
new triangles; small separate parts such as iris fans are passed through). It is a geometric prior
only: hair, ears and neck are not modelled, and the back of the head is where an ellipsoid says.
It is meant for face patches (the open model's mesh, whose outer boundary is the face outline); a
mesh that is already a head (FLAME, open only at the neck) needs no extension.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

HEAD_LENGTH_RATIO = 1.25  # head length / head breadth (adult average is about 1.2-1.3)
CROWN_ABOVE_FOREHEAD = 0.35  # crown height above the face's top, in face heights
BREADTH_OVER_FACE_WIDTH = 1.05


def boundary_loops(faces: np.ndarray) -> list[list[int]]:
    """Boundary loops of a consistently wound triangle mesh, each in the faces' winding direction."""
    directed = set()
    for t in np.asarray(faces):
        for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
            directed.add((int(a), int(b)))
    nxt = {a: b for (a, b) in directed if (b, a) not in directed}
    loops, seen = [], set()
    for start in sorted(nxt):
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen and v in nxt:
            seen.add(v)
            loop.append(v)
            v = nxt[v]
        loops.append(loop)
    return loops


def connected_components(faces: np.ndarray, n_vertices: int) -> np.ndarray:
    """(F,) component label of each face (faces sharing a vertex are connected)."""
    parent = np.arange(n_vertices)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b, c in np.asarray(faces):
        ra, rb, rc = find(a), find(b), find(c)
        parent[rb] = ra
        parent[find(rc)] = ra
    return np.array([find(int(t[0])) for t in faces])


def _slerp(u: np.ndarray, pole: np.ndarray, s: float) -> np.ndarray:
    """Great-circle interpolation from unit vectors u (N, 3) towards the unit vector pole (3,)."""
    cos = np.clip(u @ pole, -1.0, 1.0)
    theta = np.minimum(np.arccos(cos), np.pi - 1e-3)[:, None]
    sin = np.sin(theta)
    out = (np.sin((1 - s) * theta) * u + np.sin(s * theta) * pole) / sin
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _ellipsoid(face_pts: np.ndarray, loop_pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (3,) and radii (3,) of a head-like ellipsoid through the face's outer boundary."""
    x_lo, x_hi = loop_pts[:, 0].min(), loop_pts[:, 0].max()
    rx = 0.5 * (x_hi - x_lo) * BREADTH_OVER_FACE_WIDTH
    y_top, y_bottom = face_pts[:, 1].min(), face_pts[:, 1].max()  # y down: top is min
    crown = y_top - CROWN_ABOVE_FOREHEAD * (y_bottom - y_top)
    ry, cy = 0.5 * (y_bottom - crown), 0.5 * (y_bottom + crown)
    rz = HEAD_LENGTH_RATIO * rx
    cx = 0.5 * (x_lo + x_hi)
    radii = np.array([rx, ry, rz])

    def mean_rho(cz: float) -> float:
        q = (loop_pts - np.array([cx, cy, cz])) / radii
        return float(np.linalg.norm(q, axis=1).mean())

    # the boundary should lie on the ellipsoid on average: bisect cz (mean_rho grows with cz here)
    lo, hi = face_pts[:, 2].min(), face_pts[:, 2].max() + 2 * rz
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mean_rho(mid) < 1.0 else (lo, mid)
    return np.array([cx, cy, 0.5 * (lo + hi)]), radii


def extend_to_head(vertices: Tensor, faces: Tensor, n_rings: int = 10) -> tuple[Tensor, Tensor]:
    """A closed head surface around a face mesh.

    Args:
        vertices: (V, 3) head-space face vertices (OpenCV axes: y down, z away from the camera).
        faces: (F, 3) long, consistently wound, with an outer boundary (the face outline).
        n_rings: rings of the back-of-head cap between the face outline and the pole.
    Returns:
        vertices (V + N, 3) and faces (F + M, 3): the first V vertices and F faces are the inputs.
    """
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(
            f"expected vertices (V, 3) and faces (F, 3), got {tuple(vertices.shape)}, {tuple(faces.shape)}"
        )
    V = np.asarray(vertices.detach().cpu().double())
    F = np.asarray(faces.detach().cpu()).astype(np.int64)
    _, comp = np.unique(connected_components(F, len(V)), return_inverse=True)
    main = F[comp == np.bincount(comp).argmax()]  # the largest connected part
    loops = boundary_loops(main)
    if not loops:
        raise ValueError("the mesh has no boundary: it is closed already")

    def perimeter(loop: list[int]) -> float:
        p = V[loop]
        return float(np.linalg.norm(p - np.roll(p, -1, axis=0), axis=1).sum())

    loops.sort(key=perimeter, reverse=True)
    outer, holes = loops[0], loops[1:]
    new_v: list[np.ndarray] = []
    new_f: list[tuple[int, int, int]] = []
    n = len(V)

    for loop in holes:  # fan each hole to its centroid
        c = n + len(new_v)
        new_v.append(V[loop].mean(axis=0))
        new_f += [(loop[(i + 1) % len(loop)], loop[i], c) for i in range(len(loop))]

    face_pts = V[np.unique(main)]
    loop_pts = V[outer]
    centre, radii = _ellipsoid(face_pts, loop_pts)
    q = (loop_pts - centre) / radii
    rho = np.linalg.norm(q, axis=1)
    u = q / rho[:, None]
    mean_dir = u.mean(axis=0)
    pole = (
        -mean_dir / np.linalg.norm(mean_dir) if np.linalg.norm(mean_dir) > 0.1 else np.array([0.0, 0.0, 1.0])
    )

    prev = list(outer)
    m = len(outer)
    for k in range(1, n_rings):
        s = k / n_rings
        blend = min(1.0, s / 0.5) ** 2 * (3 - 2 * min(1.0, s / 0.5))  # smoothstep over the first half
        r_k = rho + (1.0 - rho) * blend
        pts = centre + radii * (_slerp(u, pole, s) * r_k[:, None])
        ring = list(range(n + len(new_v), n + len(new_v) + m))
        new_v += list(pts)
        for i in range(m):
            j = (i + 1) % m
            new_f += [(prev[j], prev[i], ring[i]), (prev[j], ring[i], ring[j])]
        prev = ring
    pole_id = n + len(new_v)
    new_v.append(centre + radii * pole)
    new_f += [(prev[(i + 1) % m], prev[i], pole_id) for i in range(m)]

    out_v = torch.cat(
        [vertices.detach(), torch.as_tensor(np.array(new_v), dtype=vertices.dtype, device=vertices.device)]
    )
    out_f = torch.cat([faces, torch.as_tensor(np.array(new_f), dtype=faces.dtype, device=faces.device)])
    return out_v, out_f
