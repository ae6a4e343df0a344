"""Synthetic data for the morphable-model tests: a FLAME-structured file and a MediaPipe-like face.

The synthetic FLAME has exactly FLAME's keys, dtypes and layout (FLAME's frame: y up, z towards the
viewer, metres) but an icosphere head of 642 vertices. It is pickled with protocol 2 with chumpy-like
``chumpy.ch.Ch`` objects (a fake module inserted into ``sys.modules`` only while dumping) and a scipy
sparse ``J_regressor``, so loading exercises the restricted unpickler as the real file would.
"""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import trimesh

from avatar3d.morphable.head import boundary_loops
from avatar3d.morphable.open_model import IRIS_FANS, mediapipe_triangles

N_SHAPE, N_EXPR = 12, 8
EYE_CENTRES = np.array([[0.032, 0.025, 0.0], [-0.032, 0.025, 0.0]])  # left, right (FLAME: +x = left)


def _smooth_fields(
    pts: np.ndarray, n: int, rng: np.random.Generator, amp: float, detail: float = 0.2
) -> np.ndarray:
    """(V, 3, n) smooth random displacement fields: quadratic/cubic polynomials of position."""
    p = pts / 0.1
    x, y, z = p.T
    feats = np.stack([x * x, y * y, z * z, x * y, y * z, x * z, x**3, y**3, x * y * z, y * y * z], 1)
    coef = rng.normal(size=(feats.shape[1], 3, n))
    out = np.einsum("vf,fcn->vcn", feats, coef)
    out += detail * rng.normal(size=out.shape)  # some per-vertex detail
    return amp * out / np.sqrt((out**2).mean(axis=(0, 1), keepdims=True))


def make_flame_arrays(seed: int = 0) -> dict:
    """FLAME-structured arrays for a small icosphere head."""
    rng = np.random.default_rng(seed)
    ico = trimesh.creation.icosphere(subdivisions=3, radius=0.1)
    v = np.asarray(ico.vertices, dtype=np.float64)  # [642, 3]
    f = np.asarray(ico.faces, dtype=np.uint32)  # [1280, 3]
    V = len(v)
    for c in EYE_CENTRES:  # eye centres on the front surface
        c[2] = np.sqrt(0.1**2 - c[0] ** 2 - c[1] ** 2) - 0.012

    # joints via a sparse regressor: uniform weights over vertex groups (centroids lie inside)
    eye_sets = [np.flatnonzero(np.linalg.norm(v - c, axis=1) < 0.03) for c in EYE_CENTRES]
    groups = [
        np.flatnonzero(v[:, 1] < -0.085),  # global: bottom cap
        np.flatnonzero((v[:, 1] > -0.08) & (v[:, 1] < -0.06)),  # neck: ring
        np.flatnonzero((np.abs(v[:, 0]) > 0.085) & (v[:, 1] > -0.04) & (v[:, 1] < 0.0)),  # jaw hinge
        *eye_sets,
    ]
    rows, cols, vals = [], [], []
    for j, g in enumerate(groups):
        assert len(g) >= 3, (j, len(g))
        rows += [j] * len(g)
        cols += g.tolist()
        vals += [1.0 / len(g)] * len(g)
    J_regressor = sp.csc_matrix((vals, (rows, cols)), shape=(5, V))

    weights = np.zeros((V, 5))
    jaw = np.clip((-v[:, 1] - 0.01) / 0.03, 0, 1) * (v[:, 2] > -0.02)  # lower front: jaw
    weights[:, 2] = jaw
    weights[:, 1] = 1 - jaw
    bottom = v[:, 1] < -0.085
    weights[bottom] = 0
    weights[bottom, 0] = 1
    for j, g in zip((3, 4), eye_sets):
        weights[g] = 0
        weights[g, j] = 1

    shapedirs = np.concatenate(
        [_smooth_fields(v, N_SHAPE, rng, 0.004), _smooth_fields(v, N_EXPR, rng, 0.002)], axis=2
    )
    posedirs = np.zeros((V, 3, 36))
    for j in (1, 2):  # joint j's corrective block only where joint j has weight; eyeballs are rigid
        mask = weights[:, j] > 0
        posedirs[mask, :, 9 * (j - 1) : 9 * j] = 0.002 * rng.normal(size=(mask.sum(), 3, 9))
    kintree = np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.uint32)
    return {
        "v_template": v,
        "f": f,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": J_regressor,
        "weights": weights,
        "kintree_table": kintree,
        "J": np.asarray(J_regressor @ v),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
        "eye_sets": eye_sets,
    }


def make_embedding(arrays: dict, n_points: int = 70, seed: int = 1) -> dict:
    """A landmark embedding on the synthetic head: front/lower-face triangles plus iris points."""
    rng = np.random.default_rng(seed)
    v, f = arrays["v_template"], arrays["f"].astype(np.int64)
    cent = v[f].mean(1)
    eye_sets = arrays["eye_sets"]
    on_eye = [np.flatnonzero(np.isin(f, s).all(1)) for s in eye_sets]
    eye_faces = set(np.concatenate(on_eye).tolist())
    front = [i for i in np.flatnonzero((cent[:, 2] > 0.03) & (cent[:, 1] < 0.06)) if i not in eye_faces]
    face_idx = rng.choice(front, size=n_points, replace=False)
    iris = np.concatenate([rng.choice(fs, size=5, replace=False) for fs in on_eye])
    face_idx = np.concatenate([face_idx, iris])
    bary = rng.dirichlet([2, 2, 2], size=len(face_idx))
    mesh_idx = rng.choice(468, size=n_points, replace=False)
    landmark_indices = np.concatenate([mesh_idx, np.arange(473, 478), np.arange(468, 473)])
    return {
        "lmk_face_idx": face_idx.astype(np.int64),
        "lmk_b_coords": bary,
        "landmark_indices": landmark_indices.astype(np.int64),
    }


def _fake_chumpy():
    ch_mod = types.ModuleType("chumpy.ch")
    pkg = types.ModuleType("chumpy")

    class Ch:  # mirrors chumpy.ch.Ch's pickled state for a plain array
        pass

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    ch_mod.Ch = Ch
    pkg.ch = ch_mod
    return pkg, ch_mod, Ch


def dump_flame_pickle(path: Path, arrays: dict) -> None:
    """Pickle like FLAME 2020: protocol 2, chumpy arrays, a scipy sparse J_regressor."""
    pkg, ch_mod, Ch = _fake_chumpy()

    def ch(x):
        obj = Ch.__new__(Ch)
        obj.__dict__.update(
            x=np.asarray(x, dtype=np.float64),
            _dirty_vars=set(),
            _itr=None,
            _depends_on_deps={},
            _make_dense=False,
            _make_sparse=False,
        )
        return obj

    d = {k: val for k, val in arrays.items() if k != "eye_sets"}
    for k in ("v_template", "shapedirs", "posedirs", "weights", "J"):
        if k in d:
            d[k] = ch(d[k])
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    sys.modules["chumpy"], sys.modules["chumpy.ch"] = pkg, ch_mod
    try:
        with open(path, "wb") as fh:
            pickle.dump(d, fh, protocol=2)
    finally:
        for k, mod in saved.items():
            if mod is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = mod


# ------------------------------------------------------------------------------ synthetic face
def synthetic_face_layout() -> np.ndarray:
    """(478, 3) a face-like head-space point set over MediaPipe's topology (OpenCV axes, metres).

    A Tutte embedding of the face mesh (outline pinned to an ellipse with the forehead up and
    landmark 234 on the image left), lifted onto the front of an ellipsoid; irises sit at the
    centroids/rings of the eye openings.
    """
    faces = mediapipe_triangles()
    loops = sorted(boundary_loops(faces), key=len, reverse=True)
    outer = loops[0]
    n = 468
    pos = np.zeros((n, 2))
    start = outer.index(10)
    outer = outer[start:] + outer[:start]  # forehead first, then (winding) towards 234
    for k, vtx in enumerate(outer):
        a = 2 * np.pi * k / len(outer)
        pos[vtx] = [-0.07 * np.sin(a), -0.09 * np.cos(a)]  # 10 at top, then image-left
    adj = [set() for _ in range(n)]
    for t in faces:
        for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
            adj[a].add(b)
            adj[b].add(a)
    fixed = set(outer)
    free = [i for i in range(n) if i not in fixed]
    col = {v: i for i, v in enumerate(free)}
    A = np.zeros((len(free), len(free)))
    rhs = np.zeros((len(free), 2))
    for v in free:
        A[col[v], col[v]] = len(adj[v])
        for u in adj[v]:
            if u in fixed:
                rhs[col[v]] += pos[u]
            else:
                A[col[v], col[u]] -= 1
    pos[free] = np.linalg.solve(A, rhs)
    x, y = pos.T
    z = -0.06 * np.sqrt(np.clip(1 - (x / 0.085) ** 2 - (y / 0.105) ** 2, 0.02, None))
    pts = np.zeros((478, 3))
    pts[:n] = np.stack([x, y, z], 1)
    for c, ring in IRIS_FANS:  # 468.. is the subject's right eye (the loop through 159), 473.. the left
        loop = next(lp for lp in loops[1:] if (159 if c == 468 else 386) in lp)
        pts[c] = pts[loop].mean(0)
        for k, r in enumerate(ring):
            a = np.pi / 2 * k
            pts[r] = pts[c] + [0.005 * np.cos(a), 0.005 * np.sin(a), 0.0]
    return pts - pts.mean(0)


def local_expression_modes(base: np.ndarray) -> np.ndarray:
    """(4, 478, 3) localised expression patterns (2 mm peak): brow raise, smile, pucker, cheek puff."""
    specs = [  # (MediaPipe centre, displacement direction) pairs per mode; head space, y down
        [(105, (0, -1, 0)), (334, (0, -1, 0))],
        [(61, (-1, -0.7, 0.3)), (291, (1, -0.7, 0.3))],
        [(0, (0, 0.3, -1)), (17, (0, -0.3, -1))],
        [(50, (-1, 0, -0.3)), (280, (1, 0, -0.3))],
    ]
    modes = np.zeros((len(specs), len(base), 3))
    for m, spec in enumerate(specs):
        for centre, direction in spec:
            d = np.asarray(direction, dtype=np.float64)
            fall = np.exp(-np.sum((base - base[centre]) ** 2, axis=1) / (2 * 0.012**2))
            modes[m] += 0.002 * fall[:, None] * d / np.linalg.norm(d)
    return modes


def make_open_sequence(
    base: np.ndarray, T: int = 120, seed: int = 0, misalign_deg: float = 0.7, noise: float = 0.0002
) -> dict:
    """Pose-free landmark frames (T, 478, 3) with a known jaw rotation, blinks and 4 local expressions.

    The jaw rotates the lower face about a hinge behind the mouth (angle ``theta`` (T,) radians);
    a blink moves the upper lids towards the eye's mid-line (``blink`` (T,) in [0, 1]). Each frame is
    then turned by a small random ``misalign`` (T, 3, 3) rotation (imperfect pose removal) and noised.
    """
    from scipy.spatial.transform import Rotation

    g = np.random.default_rng(seed)
    y_mouth = base[13, 1]
    w_jaw = np.clip((base[:, 1] - y_mouth) / 0.01, 0, 1)
    hinge = np.array([0.0, y_mouth - 0.01, 0.06])
    theta = np.clip(0.12 + 0.1 * np.sin(np.linspace(0, 9, T)) + 0.03 * g.normal(size=T), 0, 0.3)
    eye_loops = [lp for lp in boundary_loops(mediapipe_triangles()) if 159 in lp or 386 in lp]
    blink = np.zeros(T)
    for s0 in np.linspace(0.15 * T, 0.85 * T, 3).astype(int):
        blink[s0 : s0 + 5] = [0.3, 0.8, 1.0, 0.7, 0.2][: len(blink[s0 : s0 + 5])]
    modes = local_expression_modes(base)
    coef = g.normal(size=(T, 4))
    X = np.zeros((T, 478, 3))
    misalign = np.zeros((T, 3, 3))
    for t in range(T):
        p = base.copy()
        Rj = Rotation.from_rotvec([theta[t], 0, 0]).as_matrix()
        p = p + w_jaw[:, None] * (((p - hinge) @ Rj.T + hinge) - p)
        for lp in eye_loops:
            cy = base[lp, 1].mean()
            for i in lp:
                p[i, 1] += blink[t] * (1.0 if base[i, 1] < cy else 0.3) * (cy - base[i, 1])
        p += np.einsum("m,mvc->vc", coef[t], modes)
        Rn = misalign[t] = Rotation.from_rotvec(g.normal(size=3) * np.radians(misalign_deg)).as_matrix()
        X[t] = p @ Rn.T + 0.3 * misalign_deg / 0.7 * 0.001 * g.normal(size=3) + noise * g.normal(size=p.shape)
    return {"X": X, "theta": theta, "blink": blink, "expression": coef, "misalign": misalign}


def smooth_tracks(rng: np.random.Generator, T: int, n: int, amp) -> np.ndarray:
    """(T, n) slow sinusoids (0.2-0.5 cycles over the clip) of amplitude ``amp``."""
    s = np.linspace(0, 1, T)[:, None]
    phase, freq = rng.uniform(0, 2 * np.pi, n), rng.uniform(0.2, 0.5, n)
    return np.asarray(amp) * np.sin(2 * np.pi * freq * s + phase)


def head_poses(rng: np.random.Generator, T: int, yaw: float = 25.0, depth: float = 0.6):
    """Per-frame head -> camera rotations (T, 3, 3) and translations (T, 3), slowly varying."""
    from scipy.spatial.transform import Rotation

    euler = smooth_tracks(rng, T, 3, [10.0, yaw, 5.0])
    R = Rotation.from_euler("xyz", euler, degrees=True).as_matrix()
    t = np.concatenate([smooth_tracks(rng, T, 2, 0.03), depth + smooth_tracks(rng, T, 1, 0.06)], axis=1)
    return R, t


def rotation_errors_deg(R_fit, R_true) -> np.ndarray:
    """(T,) angle in degrees of R_fit @ R_true^T."""
    from scipy.spatial.transform import Rotation

    R_fit = np.asarray(R_fit, dtype=np.float64)
    return np.degrees(Rotation.from_matrix(R_fit @ np.swapaxes(R_true, 1, 2)).magnitude())
