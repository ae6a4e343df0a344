"""A synthetic FLAME-structured head model of the synthetic subject, for the capture's FLAME path.

FLAME itself needs registration, so this builds a file with FLAME's exact keys and layout
(``v_template``, ``f``, ``shapedirs``, ``posedirs``, ``J_regressor``, ``weights``,
``kintree_table``, eyelid blendshapes, FLAME's frame: y up, z towards the viewer) over a generic
head of the right structure, plus a MediaPipe landmark embedding (:func:`make_synthetic_flame`):

- vertices: MediaPipe's 478-point face topology (the mean head), plus an eyeball (octahedron) behind
  each iris and a neck block, whose centroids the joint regressor returns;
- the mean head is the subject's rest landmarks moved by a random identity (``shapedirs @ beta0``,
  beta0 ~ N(0, 1)): a fit has to find the identity, it is not handed the subject;
- identity components: smooth polynomial displacement fields (3 mm RMS); expression components:
  localised brow / smile / pucker / cheek / lip patterns plus small smooth fields (1-2 mm);
- joints global, neck, jaw, eyes; the jaw hinge sits between the face-oval points at mouth height,
  and its skinning weights ramp from 0 above the mouth corners to 1 a centimetre and a half below
  (lower lip 1, upper lip 0) -- a generic rule, not the subject's rig; pose correctives on the jaw;
- the embedding covers lips, eyes, brows, face oval, nose ridge and irises (~150 points).

Used by ``benchmarks/bench_capture_flame.py`` and ``tests/capture/test_flame_capture.py``.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..core.topology import face_oval_loop
from ..morphable.open_model import mediapipe_faces

N_SHAPE, N_SMOOTH, N_EXPR = 60, 20, 14
MOUTH_CORNERS = (61, 291)
UPPER_LIP = (185, 40, 39, 37, 0, 267, 269, 270, 409, 191, 80, 81, 82, 13, 312, 311, 310, 415)
LOWER_LIP = (146, 91, 181, 84, 17, 314, 405, 321, 375, 95, 88, 178, 87, 14, 317, 402, 318, 324)
EYELIDS = {  # (upper, lower) lid contours; FLAME's left eye = the subject's left = MediaPipe 473
    "l_eyelid": ((466, 388, 387, 386, 385, 384, 398), (249, 390, 373, 374, 380, 381, 382)),
    "r_eyelid": ((246, 161, 160, 159, 158, 157, 173), (7, 163, 144, 145, 153, 154, 155)),
}
IRIS = {"left": 473, "right": 468}
TO_FLAME = np.array([1.0, -1.0, -1.0])  # head space (y down, z away) <-> FLAME (y up, z to viewer)


def _smooth_fields(pts: np.ndarray, n: int, rng: np.random.Generator, amp: float) -> np.ndarray:
    """(V, 3, n) smooth displacement fields (quadratic and cubic polynomials of position) with their
    best-fit similarity motion (translation, rotation, scale) removed, as in a Procrustes-aligned
    shape space -- otherwise a shape coefficient could turn or scale the head; ``amp`` metres RMS."""
    c = pts - pts.mean(0)
    x, y, z = (c / 0.08).T
    feats = np.stack([x * x, y * y, z * z, x * y, y * z, x * z, x**3, y**3, x * y * z, y * y * z], 1)
    out = _remove_similarity(pts, np.einsum("vf,fcn->vcn", feats, rng.normal(size=(feats.shape[1], 3, n))))
    return amp * out / np.sqrt((out**2).mean(axis=(0, 1), keepdims=True))


def _remove_similarity(pts: np.ndarray, fields: np.ndarray) -> np.ndarray:
    """fields (V, 3, n) minus their best-fit linearised similarity motion ``t + s·c + w × c``.

    A linear least-squares projection of displacement fields onto the seven infinitesimal similarity
    motions, not a registration of two point sets, so :func:`avatar3d.core.geometry.similarity_fit`
    (Umeyama) does not apply: it would remove a finite rotation and change the basis."""
    c = pts - pts.mean(0)
    cross = np.stack([np.cross(np.eye(3)[k], c) for k in range(3)], -1)  # (V, 3, 3): e_k × c
    A = np.concatenate([np.tile(np.eye(3), (len(c), 1, 1)), c[:, :, None], cross], -1).reshape(-1, 7)
    flat = fields.reshape(-1, fields.shape[-1])
    return (flat - A @ np.linalg.lstsq(A, flat, rcond=None)[0]).reshape(fields.shape)


def _local_bumps(pts: np.ndarray, n: int, rng: np.random.Generator, amp: float, sigma: float = 0.01):
    """(V, 3, n) localised identity detail: Gaussian bumps (``sigma`` metres) around random face
    points in random directions, similarity removed, ``amp`` metres at the peak."""
    centres = rng.choice(len(pts), size=n, replace=False)
    d2 = ((pts[:, None, :] - pts[None, centres, :]) ** 2).sum(-1)  # (V, n)
    dirs = rng.normal(size=(n, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    out = np.exp(-d2 / (2 * sigma**2))[:, None, :] * dirs.T[None]  # (V, 3, n)
    return amp * _remove_similarity(pts, out)


def _local_modes(base: np.ndarray) -> np.ndarray:
    """(8, V, 3) localised expression patterns (2 mm peak) over MediaPipe points (head space)."""
    specs = [  # (centre landmark, direction) pairs per mode; y down, z away from the camera
        [(105, (0, -1, 0)), (334, (0, -1, 0))],  # brow raise
        [(55, (1, 0.5, 0)), (285, (-1, 0.5, 0))],  # frown
        [(61, (-1, -0.7, 0.3)), (291, (1, -0.7, 0.3))],  # smile
        [(0, (0, 0.3, -1)), (17, (0, -0.3, -1))],  # pucker
        [(50, (-1, 0, -0.3)), (280, (1, 0, -0.3))],  # cheek puff
        [(0, (0, -1, 0)), (37, (0, -1, 0)), (267, (0, -1, 0))],  # upper lip raise
        [(17, (0, 1, 0)), (84, (0, 1, 0)), (314, (0, 1, 0))],  # lower lip down
        [(61, (-1, 0, 0)), (291, (1, 0, 0))],  # lip stretch
    ]
    modes = np.zeros((len(specs), len(base), 3))
    for m, spec in enumerate(specs):
        for centre, direction in spec:
            d = np.asarray(direction, np.float64)
            fall = np.exp(-np.sum((base - base[centre]) ** 2, axis=1) / (2 * 0.012**2))
            modes[m] += 0.002 * fall[:, None] * d / np.linalg.norm(d)
    return modes


def _octahedron(centre: np.ndarray, radius: float, offset: int) -> tuple[np.ndarray, np.ndarray]:
    v = centre + radius * np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1.0]])
    f = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    return v, f + offset


JOINTS = ("global", "neck", "jaw", "left_eye", "right_eye")  # FLAME's joint order
EYEBALL_BEHIND_IRIS_M = 0.012  # eyeball centre behind the iris landmark
EYEBALL_RADIUS_M = 0.011
NECK_BEHIND_CHEEKS_M = 0.03  # neck block centre behind the face oval's median depth, at chin height
NECK_RADIUS_M = 0.02
IDENTITY_SMOOTH_RMS_M = 0.003  # RMS of each smooth identity field
IDENTITY_BUMP_PEAK_M = 0.0015  # peak of each localised identity bump
EXPRESSION_SMOOTH_RMS_M = 0.001  # RMS of each smooth expression field
N_LOCAL_EXPR = 8  # localised expression patterns (:func:`_local_modes`), before the smooth ones
JAW_RAMP_START_M = -0.004  # the jaw weight starts this far below the mouth corners (y down: above)
JAW_RAMP_LENGTH_M = 0.016  # ... and reaches 1 this much further down
INNER_MOUTH_CORNERS = (78, 308)
JAW_HINGE_BAND_M = 0.012  # face-oval points within this height of the mouth corners carry the hinge
POSE_CORRECTIVE_RMS_M = 0.001  # RMS of each jaw pose-corrective field
LID_CLOSED_AT = 0.15  # a closed lid meets on the line this fraction of the way from lower to upper lid
LOWER_LID_SHARE = 0.1  # the lower lid's share of the way to that line
NOSE_RIDGE = (1, 2, 4, 5, 6, 168, 197, 195, 98, 327)  # embedded besides the feature contours


class _MeanHead(NamedTuple):
    """The generic head's vertices (V, 3) in head space and triangles (F, 3): the 478 face points, then
    six eyeball vertices per eye (``eyes``: side -> their indices) and six neck-block vertices (``neck``)."""

    verts: np.ndarray
    faces: np.ndarray
    eyes: dict[str, np.ndarray]
    neck: np.ndarray


def _mean_head(base: np.ndarray, oval: list[int]) -> _MeanHead:
    """The face points plus an octahedral eyeball behind each iris and a neck block behind the chin."""
    faces, extra, eyes = [mediapipe_faces(with_iris=True)], [], {}
    off = len(base)
    for side, iris in IRIS.items():
        v, f = _octahedron(base[iris] + np.array([0.0, 0.0, EYEBALL_BEHIND_IRIS_M]), EYEBALL_RADIUS_M, off)
        eyes[side] = np.arange(off, off + 6)
        extra.append(v)
        faces.append(f)
        off += 6
    chin = max(oval, key=lambda i: base[i, 1])
    cheek_z = float(np.median(base[oval, 2]))
    v, f = _octahedron(np.array([0.0, base[chin, 1], cheek_z + NECK_BEHIND_CHEEKS_M]), NECK_RADIUS_M, off)
    extra.append(v)
    faces.append(f)
    return _MeanHead(np.concatenate([base, *extra]), np.concatenate(faces), eyes, np.arange(off, off + 6))


def _identity_basis(head: _MeanHead, n_face: int, rng: np.random.Generator) -> np.ndarray:
    """(V, 3, N_SHAPE) identity components: smooth fields, then localised bumps on the face points."""
    on_face = (np.arange(len(head.verts)) < n_face)[:, None, None]
    return np.concatenate(
        [
            _smooth_fields(head.verts, N_SMOOTH, rng, IDENTITY_SMOOTH_RMS_M),
            _local_bumps(head.verts, N_SHAPE - N_SMOOTH, rng, IDENTITY_BUMP_PEAK_M) * on_face,
        ],
        axis=2,
    )


def _expression_basis(base: np.ndarray, head: _MeanHead, rng: np.random.Generator) -> np.ndarray:
    """(V, 3, N_EXPR) expression components: localised patterns, then small smooth fields (face only)."""
    n_face, V = len(base), len(head.verts)
    local = np.zeros((N_LOCAL_EXPR, V, 3))
    local[:, :n_face] = _local_modes(base)
    smooth = _smooth_fields(head.verts, N_EXPR - N_LOCAL_EXPR, rng, EXPRESSION_SMOOTH_RMS_M)
    smooth[n_face:] = 0
    return np.concatenate([local.transpose(1, 2, 0), smooth], axis=2)


def _skinning_weights(base: np.ndarray, head: _MeanHead) -> np.ndarray:
    """(V, 5) skinning weights over :data:`JOINTS`: a jaw ramp below the mouth corners (lower lip 1,
    upper lip 0), the rest of the face on the neck, eyes rigid on their eyeballs, the neck block global."""
    n_face = len(base)
    y_mc = float(base[list(MOUTH_CORNERS), 1].mean())
    w_jaw = np.clip((base[:, 1] - y_mc - JAW_RAMP_START_M) / JAW_RAMP_LENGTH_M, 0.0, 1.0)
    w_jaw[list(LOWER_LIP)] = 1.0
    w_jaw[list(UPPER_LIP)] = 0.0
    w_jaw[list(MOUTH_CORNERS) + list(INNER_MOUTH_CORNERS)] = 0.5
    w_jaw[468:] = 0.0
    weights = np.zeros((len(head.verts), len(JOINTS)))
    weights[:n_face, 2] = w_jaw
    weights[:n_face, 1] = 1.0 - w_jaw
    for j, side in ((3, "left"), (4, "right")):
        ring = list(range(IRIS[side], IRIS[side] + 5))
        weights[ring] = 0.0
        weights[ring, j] = 1.0
        weights[head.eyes[side]] = 0.0
        weights[head.eyes[side], j] = 1.0
    weights[head.neck] = 0.0
    weights[head.neck, 0] = 1.0
    return weights


def _joint_regressor(base: np.ndarray, head: _MeanHead, oval: list[int]) -> np.ndarray:
    """(5, V) joint regressor: the neck block's centroid (global, neck), the two outermost face-oval
    points on each side at mouth height (jaw hinge), the eyeballs' centroids."""
    J = np.zeros((len(JOINTS), len(head.verts)))
    J[0, head.neck] = 1.0 / 6
    J[1, head.neck] = 1.0 / 6
    y_mc = float(base[list(MOUTH_CORNERS), 1].mean())
    near = [i for i in oval if abs(base[i, 1] - y_mc) < JAW_HINGE_BAND_M]
    hinge = sorted(near, key=lambda i: base[i, 0])
    hinge = hinge[:2] + hinge[-2:]
    J[2, hinge] = 1.0 / len(hinge)
    J[3, head.eyes["left"]] = 1.0 / 6
    J[4, head.eyes["right"]] = 1.0 / 6
    return J


def _eyelid_blendshapes(base: np.ndarray, n_verts: int) -> dict[str, np.ndarray]:
    """FLAME's ``l_eyelid`` / ``r_eyelid`` (V, 3) offsets (head space): the lids meet on a line near
    the lower lid."""
    lids = {}
    for key, (upper, lower) in EYELIDS.items():
        d = np.zeros((n_verts, 3))
        for u, low in zip(upper, lower):
            line = base[low] + LID_CLOSED_AT * (base[u] - base[low])
            d[u] = line - base[u]
            d[low] = LOWER_LID_SHARE * (line - base[low])
        lids[key] = d
    return lids


def _landmark_embedding(faces: np.ndarray) -> dict[str, np.ndarray]:
    """Lips, eyes, brows, face oval, nose ridge and irises, each landmark on one of its triangles."""
    # mediapipe is a hard dependency, but importing it costs most of a second: only when needed
    from mediapipe.python.solutions import face_mesh_connections as fmc

    groups = (
        fmc.FACEMESH_LIPS,
        fmc.FACEMESH_LEFT_EYE,
        fmc.FACEMESH_RIGHT_EYE,
        fmc.FACEMESH_LEFT_EYEBROW,
        fmc.FACEMESH_RIGHT_EYEBROW,
        fmc.FACEMESH_FACE_OVAL,
    )
    idx = set(itertools.chain.from_iterable(itertools.chain(*g) for g in groups))
    idx |= set(NOSE_RIDGE) | set(range(468, 478))
    landmark_indices = np.array(sorted(idx), np.int64)
    face_idx = np.zeros(len(landmark_indices), np.int64)
    bary = np.zeros((len(landmark_indices), 3))
    for k, vtx in enumerate(landmark_indices):
        fi, ci = np.argwhere(faces == vtx)[0]
        face_idx[k], bary[k, ci] = fi, 1.0
    return {"lmk_face_idx": face_idx, "lmk_b_coords": bary, "landmark_indices": landmark_indices}


def make_synthetic_flame(base: np.ndarray, seed: int = 0) -> tuple[dict, dict]:
    """FLAME-layout arrays and a MediaPipe landmark embedding over a generic head built from
    ``base`` (478, 3) rest landmarks in head space (see the module docstring).

    Returns ``(arrays, embedding)``: ``arrays`` has FLAME's keys (``J_regressor`` dense) plus
    ``n_shape`` and ``l_eyelid``/``r_eyelid``, ready for ``np.savez``; ``embedding`` has
    ``lmk_face_idx``, ``lmk_b_coords`` and ``landmark_indices``.
    """
    rng = np.random.default_rng(seed)
    base = np.asarray(base, np.float64)
    oval = sorted(face_oval_loop().tolist())
    head = _mean_head(base, oval)
    # identity: the mean head is the subject moved by a random identity, which a fit has to find
    shape_dirs = _identity_basis(head, len(base), rng)  # (V, 3, S)
    v_template = head.verts - shape_dirs @ rng.normal(size=N_SHAPE)
    expr_dirs = _expression_basis(base, head, rng)  # (V, 3, E)
    weights = _skinning_weights(base, head)
    posedirs = np.zeros((len(head.verts), 3, 36))
    jaw_block = _smooth_fields(head.verts, 9, rng, POSE_CORRECTIVE_RMS_M) * weights[:, 2, None, None]
    posedirs[:, :, 9:18] = jaw_block  # joint 2 (jaw) is block 1 (the root has none)
    arrays = {
        "v_template": v_template * TO_FLAME,
        "f": head.faces.astype(np.uint32),
        "shapedirs": np.concatenate([shape_dirs, expr_dirs], axis=2) * TO_FLAME[None, :, None],
        "posedirs": posedirs * TO_FLAME[None, :, None],
        "J_regressor": _joint_regressor(base, head, oval),
        "weights": weights,
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.uint32),
        "n_shape": np.int64(N_SHAPE),
        **{k: v * TO_FLAME for k, v in _eyelid_blendshapes(base, len(head.verts)).items()},
    }
    return arrays, _landmark_embedding(head.faces)


def write_synthetic_flame(root: Path, base: np.ndarray, seed: int = 0) -> tuple[Path, Path]:
    """Write ``synthetic_flame.npz`` and ``synthetic_flame_landmarks.npz`` under ``root``."""
    arrays, emb = make_synthetic_flame(base, seed)
    root.mkdir(parents=True, exist_ok=True)
    model, lmk = root / "synthetic_flame.npz", root / "synthetic_flame_landmarks.npz"
    np.savez(model, **arrays)
    np.savez(lmk, **emb)
    return model, lmk
