"""The subject's canonical landmark shape in head space, from MediaPipe's per-frame 3D points.

Head space (see docs/INTERNALS.md): OpenCV axes of a frontal camera (x right, y down, z away), metres
(mean inter-pupillary distance of the canonical shape := ``INTER_PUPIL_M``, iris centres 468/473),
origin at the centroid of the 478 canonical landmarks.

- :func:`build_canonical`: a robust mean shape from similarity-aligned frames (no camera yet);
- :func:`metric_canonical`: the same rebuilt through a camera of a given focal, without the clip's
  perspective (why: docs/design/focal-and-depth.md);
- :func:`head_gauge` / :func:`propagate_offsets`: keep the head-space conventions when the rigid fit
  moves the shape's points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.topology import (
    LEFT_IRIS_CENTER,
    MIDLINE_LOWER,
    MIDLINE_UPPER,
    N_LANDMARKS,
    RIGHT_IRIS_CENTER,
    RIGID_INDICES,
    SYMMETRIC_PAIRS,
)
from .geometry import robust_umeyama
from .signals import eye_opening, mouth_opening

INTER_PUPIL_M = 0.063  # metres between the iris centres of the canonical shape (the scale's gauge)
METRIC_ITERATIONS = 2  # align / median rounds of metric_canonical
NEUTRAL_MIN_FRAMES = 8  # fewer aligned frames: the neutral face is the median shape itself
NEUTRAL_MIN_SELECTED = 3  # fewer closed-mouth, open-eye frames: likewise
NEUTRAL_MOUTH_PERCENTILE = 25.0  # frames whose mouth opening is at most this percentile ...
NEUTRAL_EYES_PERCENTILE = 30.0  # ... and whose eye opening is at least this one
OFFSET_SPREAD_M = 0.02  # metres: Gaussian reach of a rigid point's offset onto its neighbours


@dataclass
class CanonicalFit:
    """canonical: (478, 3) head space, metres. aligned: (T, 478, 3) each valid frame's MediaPipe points
    mapped into head space by a similarity (NaN for invalid frames). scale: (T,) pixels per metre of
    that similarity; rotation: (T, 3, 3) head->image axes; offset: (T, 3) image position (px) of the
    head origin; points: (T, 478, 3) the MediaPipe points it was built from (or None)."""

    canonical: np.ndarray
    aligned: np.ndarray
    scale: np.ndarray
    rotation: np.ndarray
    offset: np.ndarray
    points: np.ndarray | None = None

    def frames(self, pick: np.ndarray) -> CanonicalFit:
        """The same fit restricted to the frames ``pick`` (indices), sharing the canonical shape."""
        pts = None if self.points is None else self.points[pick]
        return CanonicalFit(
            self.canonical, self.aligned[pick], self.scale[pick], self.rotation[pick], self.offset[pick], pts
        )


def head_frame(shape: np.ndarray) -> np.ndarray:
    """Rotation (3, 3) whose rows are head-space axes expressed in ``shape``'s coordinates.

    x: mean direction from the subject's right to left of symmetric pairs (image right for a frontal
    view); y: forehead -> chin along the midline, made orthogonal to x; z = x × y (away from camera).
    """
    pairs = np.array(SYMMETRIC_PAIRS)
    d = shape[pairs[:, 1]] - shape[pairs[:, 0]]
    d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-12
    x = d.mean(0)
    x /= np.linalg.norm(x)
    y = shape[list(MIDLINE_LOWER)].mean(0) - shape[list(MIDLINE_UPPER)].mean(0)
    y -= x * (x @ y)
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    return np.stack([x, y, z])


def head_gauge(shape: np.ndarray) -> tuple[np.ndarray, float]:
    """(centre (3,), scale): ``scale * (shape - centre)`` has its centroid at the origin and the
    inter-pupillary distance ``INTER_PUPIL_M``. shape: (478, 3)."""
    ipd = np.linalg.norm(shape[LEFT_IRIS_CENTER] - shape[RIGHT_IRIS_CENTER])
    return shape.mean(0), INTER_PUPIL_M / max(ipd, 1e-9)


def _typical_frame(P: np.ndarray, rig: np.ndarray) -> np.ndarray:
    """The frame of ``P`` (V, 478, 3) closest to the median shape after centring and normalising."""
    centred = P - P.mean(1, keepdims=True)
    centred /= np.linalg.norm(centred[:, rig], axis=(1, 2), keepdims=True) + 1e-12
    med = np.median(centred, axis=0)
    return P[int(np.argmin(np.linalg.norm((centred - med)[:, rig], axis=(1, 2))))]


def build_canonical(points: np.ndarray, valid: np.ndarray, iterations: int = 3) -> CanonicalFit:
    """Robust mean landmark shape of the subject from MediaPipe's per-frame 3D points.

    points: (T, 478, 3) pixels (x, y) and relative depth z (same scale); valid: (T,) bool.
    Alternates robust similarity alignment of every valid frame's rigid landmarks to the current
    estimate with an element-wise median of the aligned shapes, then orients, centres and scales it.
    """
    T = points.shape[0]
    vidx = np.flatnonzero(valid)
    P = points[vidx].astype(np.float64)  # (V, 478, 3)
    rig = np.array(RIGID_INDICES)
    ref = _typical_frame(P, rig)  # start from the frame most typical of the clip
    for _ in range(max(1, iterations)):
        s, R, t, _ = robust_umeyama(P[:, rig], ref[rig])  # frame -> reference
        aligned = s[:, None, None] * np.einsum("vij,vnj->vni", R, P) + t[:, None, :]
        ref = np.median(aligned, axis=0)
    # Orient to the head frame, centre at the centroid, scale to metres.
    A = head_frame(ref)
    canon = (ref - ref.mean(0)) @ A.T
    ipd = np.linalg.norm(canon[LEFT_IRIS_CENTER] - canon[RIGHT_IRIS_CENTER])
    canon *= INTER_PUPIL_M / max(ipd, 1e-9)
    canon -= canon.mean(0)
    # Per-frame similarity canonical -> frame points (frame pixel axes = camera axes).
    s, R, t, _ = robust_umeyama(canon[rig], P[:, rig])
    aligned_all = np.full((T, N_LANDMARKS, 3), np.nan)
    # Inverse similarity maps each frame's points into head space.
    aligned_all[vidx] = np.einsum("vji,vnj->vni", R, P - t[:, None, :]) / s[:, None, None]
    scale = np.full(T, np.nan)
    rot = np.tile(np.eye(3), (T, 1, 1))
    off = np.full((T, 3), np.nan)
    scale[vidx], rot[vidx], off[vidx] = s, R, t
    return CanonicalFit(
        canon.astype(np.float64), aligned_all, scale, rot, off, np.asarray(points, np.float64)
    )


def metric_canonical(
    fit: CanonicalFit, valid: np.ndarray, focal: float, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """The canonical shape rebuilt from MediaPipe's points back-projected through a camera of this focal.

    MediaPipe's x, y are image positions (perspective: nearer parts look larger, off-centre heads are
    seen obliquely) while its z is a relative depth on the x scale without perspective, so a shape
    averaged from similarity-aligned frames carries the perspective of the clip's distance. Each valid
    frame's points (``fit.points``) are put back on their camera rays at depth
    ``(f + z − t_z) / s_t`` (``s_t``, ``t_z``: scale and depth offset of the frame's similarity), aligned
    to ``fit.canonical`` by a robust similarity on the rigid points, and their median re-centred and
    re-scaled to the head-space conventions. Returns (canonical (478, 3), aligned (T, 478, 3), NaN
    where invalid); without ``fit.points``, ``fit``'s own.
    """
    if fit.points is None:
        return fit.canonical, fit.aligned
    T = fit.points.shape[0]
    vidx = np.flatnonzero(valid)
    rig = np.array(RIGID_INDICES)
    P = fit.points[vidx].astype(np.float64)
    s = fit.scale[vidx][:, None]
    depth = (focal + P[..., 2] - fit.offset[vidx][:, None, 2]) / s  # (V, 478) metres
    c = np.array([width / 2, height / 2])
    Xc = np.concatenate([(P[..., :2] - c) * (depth / focal)[..., None], depth[..., None]], -1)
    ref = fit.canonical
    for _ in range(METRIC_ITERATIONS):
        sc, R, t, _ = robust_umeyama(Xc[:, rig], ref[rig])  # frame -> head space
        aligned = sc[:, None, None] * np.einsum("vij,vnj->vni", R, Xc) + t[:, None, :]
        ref = np.median(aligned, axis=0)
    ref = _neutral(ref, aligned)
    centre, a = head_gauge(ref)
    out = np.full((T, N_LANDMARKS, 3), np.nan)
    out[vidx] = a * (aligned - centre)
    return a * (ref - centre), out


def _neutral(shape: np.ndarray, aligned: np.ndarray) -> np.ndarray:
    """``shape`` (478, 3) with its non-rigid points replaced by their median over the frames of
    ``aligned`` (V, 478, 3) whose mouth is among the most closed (``NEUTRAL_MOUTH_PERCENTILE``) and
    whose eyes are open (``NEUTRAL_EYES_PERCENTILE``): a neutral face rather than the clip's average
    expression."""
    if len(aligned) < NEUTRAL_MIN_FRAMES:
        return shape
    mouth, eyes = mouth_opening(aligned), eye_opening(aligned).mean(-1)
    sel = (mouth <= np.percentile(mouth, NEUTRAL_MOUTH_PERCENTILE)) & (
        eyes >= np.percentile(eyes, NEUTRAL_EYES_PERCENTILE)
    )
    if sel.sum() < NEUTRAL_MIN_SELECTED:
        return shape
    out = np.median(aligned[sel], axis=0)
    rigid = np.zeros(len(shape), bool)
    rigid[list(RIGID_INDICES)] = True
    out[rigid] = shape[rigid]
    return out


def propagate_offsets(canonical: np.ndarray, rig: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Spread rigid-point offsets (L, 3) to all 478 points with Gaussian weights (``OFFSET_SPREAD_M``)."""
    d2 = ((canonical[:, None, :] - canonical[None, rig, :]) ** 2).sum(-1)  # (478, L)
    w = np.exp(-d2 / (2 * OFFSET_SPREAD_M**2))
    w /= w.sum(1, keepdims=True) + 1e-12
    out = canonical + w @ offsets
    out[rig] = canonical[rig] + offsets
    return out
