"""Starting poses for the rigid fit: weak perspective, PnP, and triangulated feature tracks.

- :func:`weak_perspective_init`: each frame's pose from its similarity (:class:`.canonical.CanonicalFit`)
  at a given focal;
- :func:`pnp`: those poses refined by OpenCV's Levenberg-Marquardt PnP on the landmarks;
- :func:`init_track_points`: head-space points of feature tracks (triangulated, or on the face);
- :func:`resect_intersect`: rounds of (triangulate the tracks, PnP each frame on them).

Cameras are pinholes with the principal point at the image centre and square pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from .canonical import CanonicalFit
from .feature_tracks import FeatureTracks
from .geometry import interpolate_invalid, interpolate_rotations

RESECTION_ROUNDS = 3  # triangulate / PnP rounds that start a fit with feature tracks
MIN_PNP_OBSERVATIONS = 12  # a frame with fewer track observations keeps its pose
DEPTH_NEIGHBOURS = 4  # posed canonical points whose depth a track's fallback point takes
MIN_DEPTH_M = 1e-4  # metres: depths are clamped here before dividing by them
RAY_SPREAD_MIN = 1e-4  # smallest / largest eigenvalue of a track's ray matrix below this: ill-conditioned


def intrinsics(focal: float, cx: float, cy: float) -> np.ndarray:
    """(3, 3) pinhole matrix of a camera with square pixels."""
    return np.array([[focal, 0, cx], [0, focal, cy], [0, 0, 1.0]])


def weak_perspective_init(
    fit: CanonicalFit, valid: np.ndarray, focal: float, cx: float, cy: float
) -> tuple[np.ndarray, np.ndarray]:
    """Initial (R (T,3,3), t (T,3)) from the per-frame similarity at a given focal (interpolated)."""
    Z = focal / fit.scale  # metres
    t = np.stack([(fit.offset[:, 0] - cx) * Z / focal, (fit.offset[:, 1] - cy) * Z / focal, Z], -1)
    t = interpolate_invalid(np.nan_to_num(t), valid)
    R = interpolate_rotations(fit.rotation, valid)
    return R, t


def pnp(
    canon: np.ndarray, obs: np.ndarray, R0: np.ndarray, t0: np.ndarray, focal: float, cx: float, cy: float
) -> tuple[np.ndarray, np.ndarray]:
    """Refine each frame's pose with OpenCV's Levenberg-Marquardt PnP at a given focal.

    canon: (L, 3), obs: (F, L, 2), R0: (F, 3, 3), t0: (F, 3) -> (R (F, 3, 3), t (F, 3)).
    """
    K = intrinsics(focal, cx, cy)
    Rs, ts = R0.copy(), t0.copy()
    for k in range(obs.shape[0]):
        Rs[k], ts[k] = solve_pnp(canon, obs[k], K, R0[k], t0[k])
    return Rs, ts


def solve_pnp(
    X: np.ndarray, uv: np.ndarray, K: np.ndarray, R0: np.ndarray, t0: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One pose refined from (R0, t0) by OpenCV's Levenberg-Marquardt PnP; (R0, t0) when it fails
    or puts the head behind the camera. X: (N, 3) head space, uv: (N, 2) pixels."""
    rvec, _ = cv2.Rodrigues(R0)
    ok, rvec, tvec = cv2.solvePnP(
        np.ascontiguousarray(X, np.float64),
        np.ascontiguousarray(uv, np.float64),
        K,
        None,
        rvec,
        np.asarray(t0, np.float64).reshape(3, 1).copy(),
        useExtrinsicGuess=True,
        flags=cv2.SOLVEPNP_ITERATIVE,
    )
    if ok and np.isfinite(tvec).all() and tvec[2, 0] > 0:
        return cv2.Rodrigues(rvec)[0], tvec.reshape(3)
    return R0, t0


def _middle_observations(tracks: FeatureTracks) -> np.ndarray:
    """(n_tracks,) index of each track's middle observation (in frame order)."""
    n = tracks.n_tracks
    order = np.lexsort((tracks.frame, tracks.track))
    starts = np.searchsorted(tracks.track[order], np.arange(n))
    counts = np.bincount(tracks.track, minlength=n)
    return order[starts + counts // 2]


def _triangulate(tracks: FeatureTracks, R: np.ndarray, t: np.ndarray, c: np.ndarray, focal: float):
    """Linear triangulation of every track from all its observations: (X (n, 3), inf where
    ill-conditioned; good (n,) bool).

    Each observation's ray d_o = R_kᵀ K⁻¹ [u, 1] from the camera centre o_k = -R_kᵀ t_k; minimise
    sum |(I - d dᵀ)(X - o)|² per track (3x3 normal equations)."""
    n = tracks.n_tracks
    fr = tracks.frame
    ray = np.concatenate([(tracks.uv - c) / focal, np.ones((len(fr), 1))], 1)
    dirs = np.einsum("oji,oj->oi", R[fr], ray)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    origin = -np.einsum("oji,oj->oi", R[fr], t[fr])
    Pm = np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]  # (N, 3, 3)
    A = np.zeros((n, 3, 3))
    b = np.zeros((n, 3))
    np.add.at(A, tracks.track, Pm)
    np.add.at(b, tracks.track, np.einsum("oij,oj->oi", Pm, origin))
    ev = np.linalg.eigvalsh(A)  # ascending; the smallest measures the rays' spread
    good = ev[:, 0] > RAY_SPREAD_MIN * ev[:, -1]
    Xt = np.full((n, 3), np.inf)
    Xt[good] = np.linalg.solve(A[good], b[good][..., None])[..., 0]
    return Xt, good


def _inside_face(k: np.ndarray, uv: np.ndarray, proj: np.ndarray) -> np.ndarray:
    """(n,) bool: observation ``uv`` (n, 2) in frame ``k`` (n,) lies inside the hull of that frame's
    posed canonical points ``proj`` (n, L, 2) (the face's outline)."""
    on_face = np.ones(len(k), bool)
    for f in np.unique(k):
        idx = np.flatnonzero(k == f)
        hull = cv2.convexHull(proj[idx[0]].astype(np.float32))
        on_face[idx] = [cv2.pointPolygonTest(hull, (float(u), float(v)), False) >= 0 for u, v in uv[idx]]
    return on_face


def init_track_points(
    tracks: FeatureTracks,
    canon: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    focal: float,
    width: int,
    height: int,
    surface: bool = False,
):
    """Head-space start points (n_tracks, 3) of feature tracks.

    Each track is triangulated from all its observations with the given poses (linear least squares
    on the rays). Where that is ill-conditioned (too little head motion along the track) or lands
    away from the head (farther from every canonical point than the canonical shape's own width),
    the track's middle observation is put on its camera ray at the depth of the nearby posed
    canonical points instead (inverse-distance weights of the ``DEPTH_NEIGHBOURS`` nearest in the
    image).

    With ``surface=True`` also returns that on-the-face point of every track (n_tracks, 3) and
    whether the track lies within the face (n_tracks,) bool: its middle observation inside the
    hull of the posed canonical points.
    """
    c = np.array([width / 2, height / 2])
    mid = _middle_observations(tracks)  # (n,) one observation per track
    k = tracks.frame[mid]
    uv = tracks.uv[mid]
    Xc = np.einsum("nij,lj->nli", R[k], canon) + t[k][:, None, :]  # (n, L, 3)
    proj = Xc[..., :2] / np.maximum(Xc[..., 2:3], MIN_DEPTH_M) * focal + c
    d = np.linalg.norm(proj - uv[:, None, :], axis=-1)  # (n, L)
    near = np.argsort(d, axis=1)[:, :DEPTH_NEIGHBOURS]
    wgt = 1.0 / (np.take_along_axis(d, near, 1) + 1.0)
    z = (np.take_along_axis(Xc[..., 2], near, 1) * wgt).sum(1) / wgt.sum(1)
    cam = np.concatenate([(uv - c) / focal * z[:, None], z[:, None]], 1)
    X = np.einsum("nji,nj->ni", R[k], cam - t[k])
    Xt, good = _triangulate(tracks, R, t, c, focal)
    width_m = float(np.ptp(canon[:, 0]))
    near_head = np.min(np.linalg.norm(Xt[:, None, :] - canon[None], axis=-1), axis=1) < width_m
    use = good & near_head
    if surface:
        on_face, X_surf = _inside_face(k, uv, proj), X.copy()
    X[use] = Xt[use]
    return (X, X_surf, on_face) if surface else X


def pnp_tracks(
    tracks: FeatureTracks, X: np.ndarray, R0: np.ndarray, t0: np.ndarray, focal: float, cx: float, cy: float
) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's pose refined by PnP on its feature-track observations and the tracks' head-space
    points ``X`` (frames with fewer than ``MIN_PNP_OBSERVATIONS`` observations keep their pose)."""
    K = intrinsics(focal, cx, cy)
    Rs, ts = R0.copy(), t0.copy()
    order = np.argsort(tracks.frame, kind="stable")
    frames, starts, counts = np.unique(tracks.frame[order], return_index=True, return_counts=True)
    for k, a, n in zip(frames, starts, counts):
        if n < MIN_PNP_OBSERVATIONS:
            continue
        sel = order[a : a + n]
        Rs[k], ts[k] = solve_pnp(X[tracks.track[sel]], tracks.uv[sel], K, R0[k], t0[k])
    return Rs, ts


def resect_intersect(
    tracks: FeatureTracks,
    canon: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    focal: float,
    width: int,
    height: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``RESECTION_ROUNDS`` of (triangulate the tracks, then PnP each frame on them): a start for
    the joint fit in which the poses already follow the tracks (L-BFGS alone converges slowly)."""
    for _ in range(RESECTION_ROUNDS):
        X = init_track_points(tracks, canon, R, t, focal, width, height)
        R, t = pnp_tracks(tracks, X, R, t, focal, width / 2, height / 2)
    return R, t
