"""Rigid head tracking: a canonical landmark shape in head space, per-frame pose and a shared focal.

Head space (see docs/INTERNALS.md): OpenCV axes of a frontal camera (x right, y down, z away), metres
(mean inter-pupillary distance of the canonical shape := 0.063 m, iris centres 468/473), origin at the
centroid of the 478 canonical landmarks. Poses map head to camera: ``x_cam = R_t @ x_head + t_t``.
"""

from __future__ import annotations

import logging
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import roma
import torch

from ..core.topology import (
    FEATURE_RIGID_INDICES,
    LEFT_IRIS_CENTER,
    MIDLINE_LOWER,
    MIDLINE_UPPER,
    RIGHT_IRIS_CENTER,
    RIGID_INDICES,
    SYMMETRIC_PAIRS,
)
from .feature_tracks import FeatureTracks
from .geometry import interpolate_invalid, interpolate_rotations, project, robust_umeyama, transform

_log = logging.getLogger(__name__)

INTER_PUPIL_M = 0.063
REF_SIZE = 512.0  # pixel errors and robust scales are expressed at this longest-side size
SHAPE_WEIGHT = 0.01  # prior on rigid-shape offsets during bundle adjustment (per mm², per point)
DEPTH_WEIGHT = 1.0  # the same along the head's depth axis: the relief stays MediaPipe's
ACC_KNEE_DEG = 1.0  # pose accelerations above these knees (per frame²) are smoothed less: real
ACC_KNEE_MM = 2.0  # head motion can change abruptly; jitter sits far below (BENCHMARKS.md)
FOCAL_INDICES = FEATURE_RIGID_INDICES  # landmarks the focal search fits (see topology.py)
FOCAL_FRAMES_TRACKS = 120  # frames of the focal search with tracks (evenly spaced; 200: the same)
RESECTION_ROUNDS = 3  # triangulate / PnP rounds that start a fit with feature tracks
TRACK_DEPTH_WEIGHT = 0.2  # per mm², on face tracks' depth off the canonical relief (see bundle_adjust)
TRACK_DEPTH_KNEE_MM = 5.0  # ... growing linearly beyond this offset
LM_ITERATIONS = 15  # Levenberg-Marquardt iterations of each fit in the focal search (~10 converge)
LM_MAX_FRAMES = 400  # its reduced system is dense, (6 frames)²: longer fits use L-BFGS


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


@dataclass
class RigidFit:
    """rotation (T, 3, 3), translation (T, 3) head->camera; focal in pixels; errors (T,) median rigid
    landmark reprojection error in pixels of the stored images (NaN for invalid frames)."""

    rotation: np.ndarray
    translation: np.ndarray
    focal: float
    errors: np.ndarray


def _head_frame(shape: np.ndarray) -> np.ndarray:
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
    # Start from the frame most typical of the clip (closest to the median shape after centring).
    centred = P - P.mean(1, keepdims=True)
    centred /= np.linalg.norm(centred[:, rig], axis=(1, 2), keepdims=True) + 1e-12
    med = np.median(centred, axis=0)
    ref = P[int(np.argmin(np.linalg.norm((centred - med)[:, rig], axis=(1, 2))))]
    for _ in range(max(1, iterations)):
        s, R, t, _ = robust_umeyama(P[:, rig], ref[rig])  # frame -> reference
        aligned = s[:, None, None] * np.einsum("vij,vnj->vni", R, P) + t[:, None, :]
        ref = np.median(aligned, axis=0)
    # Orient to the head frame, centre at the centroid, scale to metres.
    A = _head_frame(ref)
    canon = (ref - ref.mean(0)) @ A.T
    ipd = np.linalg.norm(canon[LEFT_IRIS_CENTER] - canon[RIGHT_IRIS_CENTER])
    canon *= INTER_PUPIL_M / max(ipd, 1e-9)
    canon -= canon.mean(0)
    # Per-frame similarity canonical -> frame points (frame pixel axes = camera axes).
    s, R, t, _ = robust_umeyama(canon[rig], P[:, rig])
    aligned_all = np.full((T, 478, 3), np.nan)
    # Inverse similarity maps each frame's points into head space.
    inv = np.einsum("vji,vnj->vni", R, P - t[:, None, :]) / s[:, None, None]
    aligned_all[vidx] = inv
    scale = np.full(T, np.nan)
    rot = np.tile(np.eye(3), (T, 1, 1))
    off = np.full((T, 3), np.nan)
    scale[vidx], rot[vidx], off[vidx] = s, R, t
    return CanonicalFit(
        canon.astype(np.float64), aligned_all, scale, rot, off, np.asarray(points, np.float64)
    )


def _weak_perspective_init(fit: CanonicalFit, valid: np.ndarray, focal: float, cx: float, cy: float):
    """Initial (R (T,3,3), t (T,3)) from the per-frame similarity at a given focal (interpolated)."""
    Z = focal / fit.scale  # metres
    t = np.stack([(fit.offset[:, 0] - cx) * Z / focal, (fit.offset[:, 1] - cy) * Z / focal, Z], -1)
    t = interpolate_invalid(np.nan_to_num(t), valid)
    R = interpolate_rotations(fit.rotation, valid)
    return R, t


def _pnp(
    canon: np.ndarray, obs: np.ndarray, R0: np.ndarray, t0: np.ndarray, focal: float, cx: float, cy: float
) -> tuple[np.ndarray, np.ndarray]:
    """Refine each frame's pose with OpenCV's Levenberg-Marquardt PnP at a given focal.

    canon: (L, 3), obs: (F, L, 2), R0: (F, 3, 3), t0: (F, 3) -> (R (F, 3, 3), t (F, 3)).
    """
    K = np.array([[focal, 0, cx], [0, focal, cy], [0, 0, 1.0]])
    Rs, ts = R0.copy(), t0.copy()
    for k in range(obs.shape[0]):
        Rs[k], ts[k] = _solve_pnp(canon, obs[k], K, R0[k], t0[k])
    return Rs, ts


def _solve_pnp(
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


def _soft(x2: torch.Tensor, knee: float) -> torch.Tensor:
    """Pseudo-Huber of squared values: ``x2`` below ``knee**2``, growing like 2·knee·|x| above."""
    return 2 * knee**2 * (torch.sqrt(1 + x2 / knee**2) - 1)


@contextmanager
def _torch_threads(n: int = 1):
    """Small optimisations run far faster single-threaded (no intra-op scheduling overhead)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@dataclass
class _BAResult:
    rotation: np.ndarray  # (T, 3, 3)
    translation: np.ndarray  # (T, 3)
    offsets: np.ndarray  # (L, 3) metres added to the rigid canonical points
    cost: float  # final objective


def bundle_adjust(
    canon: np.ndarray,
    obs2d: np.ndarray,
    valid: np.ndarray,
    R0: np.ndarray,
    t0: np.ndarray,
    focal: float,
    width: int,
    height: int,
    *,
    shape_weight: float | None = 0.01,
    depth_weight: float | None = None,
    smooth_rotation: float = 0.0,
    smooth_translation: float = 0.0,
    robust_px: float = 1.5,
    iterations: int = 60,
    breaks: np.ndarray | None = None,
    tracks: FeatureTracks | None = None,
    track_weight: float = 1.0,
    track_robust_px: float = 1.0,
) -> _BAResult:
    """Joint fit of the frames' poses and offsets of the rigid shape, the focal fixed.

    Objective: mean pseudo-Huber rigid-landmark reprojection error (pixels at 512 px) over valid
    frames + ``smooth_rotation`` × mean squared rotation acceleration (degrees, rotation vectors about
    a reference) + ``smooth_translation`` × mean squared translation acceleration (mm) (both squares
    soft above ``ACC_KNEE_DEG`` / ``ACC_KNEE_MM``, so that a real abrupt turn is not flattened) + the mean
    squared shape offset (mm), weighted ``shape_weight`` across the face (x, y) and ``depth_weight``
    (default: ``shape_weight``) along the head's depth axis (``shape_weight=None`` keeps the shape
    fixed).

    With ``tracks`` (optical-flow points on the rigid head, :mod:`.feature_tracks`), one free
    head-space point per track joins the fit, and ``track_weight`` × the mean pseudo-Huber
    reprojection error of its observations (scale ``track_robust_px`` at 512 px) joins the objective.
    The landmarks still fix the head frame; the tracks, which follow the skull's own texture, carry
    most of the frame-to-frame motion.

    Without smoothness (the focal search) and on up to ``LM_MAX_FRAMES`` frames, Levenberg-Marquardt
    with the points eliminated (:func:`avatar3d.capture.bundle.lm_bundle_adjust`, at most
    ``LM_ITERATIONS``) minimises it to convergence, which comparing its cost across focals needs.
    With smoothness, over all frames of a clip, L-BFGS (``iterations``) refines a start that already
    fits: each frame's translation is parameterised by the image position of the head origin and
    log(t_z / f).

    canon: (L, 3) rigid canonical points; obs2d: (T, L, 2); valid: (T,); R0: (T, 3, 3); t0: (T, 3);
    breaks: (T,) bool, True at t when no smoothness should link frame t-1 to t (cuts).
    """
    T = obs2d.shape[0]
    dt = torch.float64
    size = float(max(width, height))
    px = REF_SIZE / size  # pixels of the stored image -> pixels at 512
    if smooth_rotation == 0 and smooth_translation == 0 and int(valid.sum()) <= LM_MAX_FRAMES:
        return _bundle_adjust_lm(
            canon,
            obs2d,
            valid,
            R0,
            t0,
            focal,
            width,
            height,
            shape_weight,
            depth_weight,
            robust_px,
            tracks if track_weight > 0 else None,
            track_weight,
            track_robust_px,
        )
    vidx = np.flatnonzero(valid)
    R_ref = torch.as_tensor(R0[vidx[len(vidx) // 2]], dtype=dt)
    rv = roma.rotmat_to_rotvec(torch.as_tensor(R0, dtype=dt) @ R_ref.T).requires_grad_(True)
    t0 = np.asarray(t0, np.float64)
    tz0 = np.maximum(t0[:, 2], 1e-3)
    # origin's image position (in units of the image size) and log(t_z / f)
    ab = torch.as_tensor(t0[:, :2] / tz0[:, None] * focal / size, dtype=dt).requires_grad_(True)
    q = torch.as_tensor(np.log(tz0 / focal), dtype=dt).requires_grad_(True)
    C = torch.as_tensor(canon, dtype=dt)
    dC = torch.zeros_like(C, requires_grad=shape_weight is not None)
    w_xy = float(shape_weight or 0.0)
    w_z = w_xy if depth_weight is None else float(depth_weight)
    w_shape = torch.tensor([w_xy, w_xy, w_z], dtype=dt)
    U = torch.as_tensor(np.nan_to_num(obs2d), dtype=dt)
    w = torch.as_tensor(valid, dtype=dt)
    n_valid = max(float(valid.sum()), 1.0)
    c = torch.tensor([width / 2, height / 2], dtype=dt)
    params = [rv, ab, q] + ([dC] if shape_weight is not None else [])
    use_tracks = tracks is not None and len(tracks) > 0 and track_weight > 0
    if use_tracks:
        X_init, X_surf, on_face = init_track_points(tracks, canon, R0, t0, focal, width, height, surface=True)
        Xt = torch.as_tensor(X_init, dtype=dt).requires_grad_(True)
        z_surf = torch.as_tensor(X_surf[:, 2], dtype=dt)
        w_face = torch.as_tensor(on_face, dtype=dt)
        n_face = max(float(on_face.sum()), 1.0)
        t_frame = torch.as_tensor(tracks.frame)
        t_id = torch.as_tensor(tracks.track)
        t_uv = torch.as_tensor(tracks.uv, dtype=dt)
        params.append(Xt)
    # acceleration term k couples frames k, k+1, k+2: drop it when a break lies at k+1 or k+2
    brk = np.zeros(T, bool) if breaks is None else np.asarray(breaks, bool)
    acc_w = torch.as_tensor(~(brk[1:-1] | brk[2:]) if T >= 3 else np.zeros(0), dtype=dt)
    acc_n = max(float(acc_w.sum()), 1.0)

    def translation() -> torch.Tensor:
        tz = focal * torch.exp(q)  # (T,)
        return torch.cat([ab * (size * torch.exp(q))[:, None], tz[:, None]], -1)

    def objective() -> torch.Tensor:
        R = roma.rotvec_to_rotmat(rv) @ R_ref  # (T, 3, 3)
        tr = translation()
        Xc = torch.einsum("tij,nj->tni", R, C + dC) + tr[:, None, :]  # (T, L, 3)
        uv = Xc[..., :2] / Xc[..., 2:3].clamp_min(1e-4) * focal + c
        e2 = ((uv - U) * px).pow(2).sum(-1)  # (T, L) squared error at 512 px
        rho = robust_px**2 * (torch.sqrt(1 + e2 / robust_px**2) - 1)
        loss = (rho.mean(-1) * w).sum() / n_valid
        if use_tracks:
            Xk = torch.einsum("oij,oj->oi", R[t_frame], Xt[t_id]) + tr[t_frame]
            uvk = Xk[:, :2] / Xk[:, 2:3].clamp_min(1e-4) * focal + c
            e2k = ((uvk - t_uv) * px).pow(2).sum(-1)
            loss = loss + track_weight * (_soft(e2k, track_robust_px) / 2).mean()
            # the face's tracks stay near the canonical relief: free track depths and the head's
            # rotation are otherwise traded off (the bas-relief ambiguity of a distant, turning head)
            dz2 = (1000.0 * (Xt[:, 2] - z_surf)).pow(2)
            loss = loss + TRACK_DEPTH_WEIGHT * (_soft(dz2, TRACK_DEPTH_KNEE_MM) * w_face).sum() / n_face
        if T >= 3 and smooth_rotation > 0:
            acc_r = torch.rad2deg(rv[2:] - 2 * rv[1:-1] + rv[:-2]).pow(2).sum(-1)
            loss = loss + smooth_rotation * (_soft(acc_r, ACC_KNEE_DEG) * acc_w).sum() / acc_n
        if T >= 3 and smooth_translation > 0:
            acc_t = (1000.0 * (tr[2:] - 2 * tr[1:-1] + tr[:-2])).pow(2).sum(-1)
            loss = loss + smooth_translation * (_soft(acc_t, ACC_KNEE_MM) * acc_w).sum() / acc_n
        if shape_weight is not None:
            loss = loss + ((1000.0 * dC).pow(2) * w_shape).sum(-1).mean()
        return loss

    with _torch_threads(1):
        if iterations > 0:
            opt = torch.optim.LBFGS(
                params,
                lr=1,
                max_iter=iterations,
                history_size=20,
                line_search_fn="strong_wolfe",
                tolerance_grad=1e-9,
                tolerance_change=1e-12,
            )

            def closure() -> torch.Tensor:
                opt.zero_grad()
                loss = objective()
                loss.backward()
                return loss

            opt.step(closure)
        with torch.no_grad():
            cost = float(objective())
            R = (roma.rotvec_to_rotmat(rv) @ R_ref).numpy()
            return _BAResult(R, translation().numpy().copy(), dC.numpy().copy(), cost)


def _bundle_adjust_lm(
    canon,
    obs2d,
    valid,
    R0,
    t0,
    focal,
    width,
    height,
    shape_weight,
    depth_weight,
    robust_px,
    tracks,
    track_weight,
    track_robust_px,
) -> _BAResult:
    """:func:`bundle_adjust`'s objective, the focal fixed and without smoothness, minimised by
    Levenberg-Marquardt (:func:`avatar3d.capture.bundle.lm_bundle_adjust`)."""
    from .bundle import Observations, PointPrior, lm_bundle_adjust

    L = len(canon)
    size = float(max(width, height))
    vidx = np.flatnonzero(valid)
    n_valid = max(len(vidx), 1)
    U = obs2d[vidx].reshape(-1, 2)
    fr = np.repeat(vidx, L)
    pt = np.tile(np.arange(L), len(vidx))
    ok = np.isfinite(U).all(-1)
    frame, point, uv = [fr[ok]], [pt[ok]], [U[ok]]
    weight = [np.full(ok.sum(), 1.0 / (n_valid * L))]
    knee = [np.full(ok.sum(), float(robust_px))]
    w_xy = 1e6 if shape_weight is None else float(shape_weight)
    w_z = w_xy if depth_weight is None or shape_weight is None else float(depth_weight)
    anchor = [np.asarray(canon, np.float64)]
    pw = [np.tile([w_xy / L, w_xy / L, w_z / L], (L, 1))]
    pk = [np.full(L, np.inf)]
    X0 = [np.asarray(canon, np.float64)]
    if tracks is not None and len(tracks):
        X_init, X_surf, on_face = init_track_points(tracks, canon, R0, t0, focal, width, height, surface=True)
        n_obs = len(tracks.frame)
        frame.append(tracks.frame)
        point.append(L + tracks.track)
        uv.append(tracks.uv)
        weight.append(np.full(n_obs, track_weight / n_obs))
        knee.append(np.full(n_obs, float(track_robust_px)))
        anchor.append(X_surf)
        n_face = max(float(on_face.sum()), 1.0)
        w = np.zeros((len(X_surf), 3))
        w[:, 2] = TRACK_DEPTH_WEIGHT * on_face / n_face
        pw.append(w)
        pk.append(np.full(len(X_surf), TRACK_DEPTH_KNEE_MM))
        X0.append(X_init)
    obs = Observations(
        np.concatenate(frame),
        np.concatenate(point),
        np.concatenate(uv).astype(np.float64),
        np.concatenate(weight),
        np.concatenate(knee),
    )
    prior = PointPrior(np.concatenate(anchor), np.concatenate(pw), np.concatenate(pk))
    res = lm_bundle_adjust(
        R0,
        t0,
        np.concatenate(X0),
        obs,
        prior,
        focal,
        width / 2,
        height / 2,
        REF_SIZE / size,
        iterations=LM_ITERATIONS,
    )
    return _BAResult(res.rotation, res.translation, res.points[:L] - canon, res.cost)


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
    canonical points instead (inverse-distance weights of the 4 nearest in the image).

    With ``surface=True`` also returns that on-the-face point of every track (n_tracks, 3) and
    whether the track lies within the face (n_tracks,) bool: its middle observation inside the
    hull of the posed canonical points.
    """
    c = np.array([width / 2, height / 2])
    n = tracks.n_tracks
    order = np.lexsort((tracks.frame, tracks.track))
    starts = np.searchsorted(tracks.track[order], np.arange(n))
    counts = np.bincount(tracks.track, minlength=n)
    mid = order[starts + counts // 2]  # (n,) one observation per track
    k = tracks.frame[mid]
    uv = tracks.uv[mid]
    Xc = np.einsum("nij,lj->nli", R[k], canon) + t[k][:, None, :]  # (n, L, 3)
    proj = Xc[..., :2] / np.maximum(Xc[..., 2:3], 1e-4) * focal + c
    d = np.linalg.norm(proj - uv[:, None, :], axis=-1)  # (n, L)
    near = np.argsort(d, axis=1)[:, :4]
    wgt = 1.0 / (np.take_along_axis(d, near, 1) + 1.0)
    z = (np.take_along_axis(Xc[..., 2], near, 1) * wgt).sum(1) / wgt.sum(1)
    cam = np.concatenate([(uv - c) / focal * z[:, None], z[:, None]], 1)
    X = np.einsum("nji,nj->ni", R[k], cam - t[k])
    # Linear triangulation: each observation's ray d_o = R_kᵀ K⁻¹ [u, 1] from the camera centre
    # o_k = -R_kᵀ t_k; minimise sum |(I - d dᵀ)(X - o)|² per track (3x3 normal equations).
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
    good = ev[:, 0] > 1e-4 * ev[:, -1]
    Xt = np.full((n, 3), np.inf)
    Xt[good] = np.linalg.solve(A[good], b[good][..., None])[..., 0]
    width_m = float(np.ptp(canon[:, 0]))
    near_head = np.min(np.linalg.norm(Xt[:, None, :] - canon[None], axis=-1), axis=1) < width_m
    use = good & near_head
    on_face = np.ones(n, bool)
    if surface:  # inside the hull of the posed canonical points (the face's outline), one per frame
        for f in np.unique(k):
            idx = np.flatnonzero(k == f)
            hull = cv2.convexHull(proj[idx[0]].astype(np.float32))
            on_face[idx] = [cv2.pointPolygonTest(hull, (float(u), float(v)), False) >= 0 for u, v in uv[idx]]
        X_surf = X.copy()
    X[use] = Xt[use]
    return (X, X_surf, on_face) if surface else X


def _pnp_tracks(
    tracks: FeatureTracks, X: np.ndarray, R0: np.ndarray, t0: np.ndarray, focal: float, cx: float, cy: float
) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's pose refined by PnP on its feature-track observations and the tracks' head-space
    points ``X`` (frames with fewer than 12 observations keep their pose)."""
    K = np.array([[focal, 0, cx], [0, focal, cy], [0, 0, 1.0]])
    Rs, ts = R0.copy(), t0.copy()
    order = np.argsort(tracks.frame, kind="stable")
    frames, starts, counts = np.unique(tracks.frame[order], return_index=True, return_counts=True)
    for k, a, n in zip(frames, starts, counts):
        if n < 12:
            continue
        sel = order[a : a + n]
        Rs[k], ts[k] = _solve_pnp(X[tracks.track[sel]], tracks.uv[sel], K, R0[k], t0[k])
    return Rs, ts


def _resect_intersect(
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
        R, t = _pnp_tracks(tracks, X, R, t, focal, width / 2, height / 2)
    return R, t


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
    for _ in range(2):
        sc, R, t, _ = robust_umeyama(Xc[:, rig], ref[rig])  # frame -> head space
        aligned = sc[:, None, None] * np.einsum("vij,vnj->vni", R, Xc) + t[:, None, :]
        ref = np.median(aligned, axis=0)
    ref = _neutral(ref, aligned)
    centre = ref.mean(0)
    a = INTER_PUPIL_M / max(np.linalg.norm(ref[LEFT_IRIS_CENTER] - ref[RIGHT_IRIS_CENTER]), 1e-9)
    out = np.full((T, 478, 3), np.nan)
    out[vidx] = a * (aligned - centre)
    return a * (ref - centre), out


def _neutral(shape: np.ndarray, aligned: np.ndarray, quantile: float = 25.0) -> np.ndarray:
    """``shape`` (478, 3) with its non-rigid points replaced by their median over the frames of
    ``aligned`` (V, 478, 3) whose mouth is among the most closed (``quantile``) and whose eyes are
    open (above the 30th percentile): a neutral face rather than the clip's average expression."""
    from .signals import eye_opening, mouth_opening

    if len(aligned) < 8:
        return shape
    mouth, eyes = mouth_opening(aligned), eye_opening(aligned).mean(-1)
    sel = (mouth <= np.percentile(mouth, quantile)) & (eyes >= np.percentile(eyes, 30.0))
    if sel.sum() < 3:
        return shape
    out = np.median(aligned[sel], axis=0)
    rigid = np.zeros(len(shape), bool)
    rigid[list(RIGID_INDICES)] = True
    out[rigid] = shape[rigid]
    return out


def _spread_frames(fit: CanonicalFit, valid: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` valid frame indices that span the clip's head rotations: farthest-point sampling
    on the rotation vectors of the per-frame similarity (relative to the median one), half of them,
    the other half evenly spaced in time (robust to a few frames with odd rotations)."""
    vidx = np.flatnonzero(valid)
    if len(vidx) <= n:
        return vidx
    R = torch.as_tensor(fit.rotation[vidx], dtype=torch.float64)
    rv = roma.rotmat_to_rotvec(R @ R[len(vidx) // 2].T).numpy()
    rv -= np.median(rv, axis=0)
    even = np.unique(np.linspace(0, len(vidx) - 1, n - n // 2).round().astype(int))
    chosen = list(even)
    d = np.min(np.linalg.norm(rv[:, None] - rv[even][None], axis=-1), axis=1)
    while len(chosen) < n:
        k = int(np.argmax(d))
        chosen.append(k)
        d = np.minimum(d, np.linalg.norm(rv - rv[k], axis=-1))
    return vidx[np.unique(chosen)]


def search_focal(
    fit: CanonicalFit,
    obs2d: np.ndarray,
    valid: np.ndarray,
    width: int,
    height: int,
    config,
    tracks: FeatureTracks | None = None,
) -> float:
    """Focal (pixels): minimum over log f of the bundle-adjustment objective (poses and rigid offsets
    free, focal fixed) on ``config.focal_frames`` valid frames, plus the log-focal prior.

    - Each candidate's fit is minimised to convergence (Levenberg-Marquardt, :func:`bundle_adjust`):
      the costs of neighbouring focals differ by far less than what an early-stopped fit leaves.
    - For each candidate the canonical shape is rebuilt through a camera of that focal
      (:func:`metric_canonical`), so that the shape's own perspective does not vote for a focal.
    - The depth relief stays MediaPipe's (``DEPTH_WEIGHT`` on depth offsets): with a free relief, a
      deeper face and a shorter focal (or a flatter one and a longer focal) explain a few degrees of
      head turn equally well.
    - Only landmarks on image features are fitted (``FOCAL_INDICES``: nose and eye corners); the face
      oval and smooth-skin points slide and under-rotate as the head turns and read as perspective.
    - Frames are chosen to span the clip's head rotations (:func:`_spread_frames`).
    - With ``tracks`` (optical-flow feature tracks, cut at breaks), their observations join each
      candidate's fit as in :func:`bundle_adjust`, on ``FOCAL_FRAMES_TRACKS`` evenly spaced frames
      (tracks need runs of frames), after a resection-intersection start, weighted
      ``config.focal_track_weight``. The tracks follow image texture, so unlike the landmarks they
      carry the camera's perspective; fitted alone, MediaPipe's points favour the shortest focal.
    - A 7-point log grid over ``config.focal_search × max(W, H)`` finds the basin, a 5-point grid a
      third as wide around the best point and the parabola through the best three refine it.

    With ±15° of head turn the perspective this measures is a few hundredths of a pixel per 5 % of
    focal. With tracks that follow the true camera (tests: exact projections plus noise, tracks
    weighted 1000) it finds the focal within 1-3 %; with the KLT tracks of the synthetic subject,
    whose errors are not independent of the head's turn, it is off by several to 30 % (BENCHMARKS.md,
    "Capture vs synthetic ground truth"). A minimum at either end of the range gives a warning: the
    clip does not determine the focal, and ``capture.focal`` should be given.
    """
    size = float(max(width, height))
    cx, cy = width / 2, height / 2
    rig = np.array(FOCAL_INDICES)
    use_tracks = tracks is not None and len(tracks) > 0
    if use_tracks:  # tracks need runs of frames: evenly spaced, many more
        vidx = np.flatnonzero(valid)
        n = min(max(int(config.focal_frames), FOCAL_FRAMES_TRACKS), len(vidx))
        pick = vidx[np.unique(np.linspace(0, len(vidx) - 1, n).round().astype(int))]
    else:
        n = min(int(config.focal_frames), int(valid.sum()))
        pick = _spread_frames(fit, valid, n)
    obs = obs2d[pick][:, rig]
    pts = None if fit.points is None else fit.points[pick]
    sub = CanonicalFit(
        fit.canonical, fit.aligned[pick], fit.scale[pick], fit.rotation[pick], fit.offset[pick], pts
    )
    ones = np.ones(len(pick), bool)
    log_prior = math.log(config.focal_prior * size)
    cache: dict[float, float] = {}
    tracks = tracks.subset(pick).min_length(3) if use_tracks else None
    if tracks is not None and not len(tracks):
        tracks = None

    def cost(logf: float) -> float:
        if logf in cache:
            return cache[logf]
        f = math.exp(logf)
        canon = metric_canonical(sub, ones, f, width, height)[0][rig]
        R0, t0 = _weak_perspective_init(sub, ones, f, cx, cy)
        R0, t0 = _pnp(canon, obs, R0, t0, f, cx, cy)
        if tracks is not None:
            R0, t0 = _resect_intersect(tracks, canon, R0, t0, f, width, height)
        ba = bundle_adjust(
            canon,
            obs,
            ones,
            R0,
            t0,
            f,
            width,
            height,
            shape_weight=SHAPE_WEIGHT,
            depth_weight=DEPTH_WEIGHT,
            robust_px=config.robust_scale_px,
            tracks=tracks,
            track_weight=config.focal_track_weight,
            track_robust_px=config.track_robust_scale_px,
        )
        cache[logf] = ba.cost + config.focal_prior_weight * (logf - log_prior) ** 2
        return cache[logf]

    lo_s, hi_s = config.focal_search
    grid = np.linspace(math.log(lo_s * size), math.log(hi_s * size), 7)
    k = int(np.argmin([cost(g) for g in grid]))
    step = (grid[1] - grid[0]) / 3
    grid = np.unique(np.clip(grid[k] + step * np.arange(-2, 3), grid[0], grid[-1]))
    costs = np.array([cost(g) for g in grid])
    k = int(np.argmin(costs))
    best = grid[k]
    if 0 < k < len(grid) - 1:  # vertex of the parabola through the best grid point and its neighbours
        c0, c1, c2 = costs[k - 1 : k + 2]
        curv = c0 - 2 * c1 + c2
        if curv > 1e-12:
            step = grid[1] - grid[0]
            best = grid[k] + float(np.clip(0.5 * step * (c0 - c2) / curv, -step, step))
    if min(best - math.log(lo_s * size), math.log(hi_s * size) - best) < 1e-9:
        warnings.warn(
            f"the focal search ended at the edge of its range ({math.exp(best) / size:.2f} × the "
            "longest side): this clip does not determine the focal length; if it is known, give it "
            "(avatar3d capture --focal PIXELS, or capture.focal)",
            stacklevel=2,
        )
    _log.debug(
        "focal search (f / size: cost): %s -> %.3f",
        ", ".join(f"{math.exp(g) / size:.3f}: {c:.4f}" for g, c in sorted(cache.items())),
        math.exp(best) / size,
    )
    return float(math.exp(best))


def _propagate_offsets(
    canonical: np.ndarray, rig: np.ndarray, offsets: np.ndarray, sigma: float = 0.02
) -> np.ndarray:
    """Spread rigid-point offsets (L, 3) to all 478 points with Gaussian weights (sigma metres)."""
    d2 = ((canonical[:, None, :] - canonical[None, rig, :]) ** 2).sum(-1)  # (478, L)
    w = np.exp(-d2 / (2 * sigma**2))
    w /= w.sum(1, keepdims=True) + 1e-12
    out = canonical + w @ offsets
    out[rig] = canonical[rig] + offsets
    return out


def fit_rigid(
    fit: CanonicalFit,
    obs2d: np.ndarray,
    valid: np.ndarray,
    width: int,
    height: int,
    config,
    breaks: np.ndarray | None = None,
    tracks: FeatureTracks | None = None,
) -> RigidFit:
    """Focal search (unless ``config.focal`` is set), the canonical shape rebuilt through a camera of
    that focal (:func:`metric_canonical`), then a smooth bundle adjustment of all frames.

    obs2d: (T, 478, 2) observed landmarks (pixels of the stored images); config: CaptureConfig;
    tracks: optical-flow feature tracks (``config.feature_tracks``), cut at ``breaks``.
    Updates ``fit.canonical`` and ``fit.aligned`` in place with the refined rigid shape (re-centred and re-scaled so the
    head-space conventions still hold). Invalid frames get poses interpolated from valid neighbours.
    """
    rig = np.array(RIGID_INDICES)
    cx, cy = width / 2, height / 2
    if tracks is not None and config.track_weight > 0:
        tracks = tracks.in_frames(valid).split_at(breaks).min_length(5)
    if tracks is not None and (config.track_weight <= 0 or not len(tracks)):
        tracks = None
    if config.focal is not None:
        focal = float(config.focal)
    else:
        focal = search_focal(fit, obs2d, valid, width, height, config, tracks=tracks)
    # the canonical shape as seen from the distance this focal implies, without its perspective
    fit.canonical, fit.aligned = metric_canonical(fit, valid, focal, width, height)
    R0, t0 = _weak_perspective_init(fit, valid, focal, cx, cy)
    vidx = np.flatnonzero(valid)
    R0[vidx], t0[vidx] = _pnp(fit.canonical[rig], obs2d[vidx][:, rig], R0[vidx], t0[vidx], focal, cx, cy)
    R0, t0 = interpolate_rotations(R0, valid), interpolate_invalid(t0, valid)
    R_landmarks = R0.copy()
    if tracks is not None:
        R0, t0 = _resect_intersect(tracks, fit.canonical[rig], R0, t0, focal, width, height)
    ba = bundle_adjust(
        fit.canonical[rig],
        obs2d[:, rig],
        valid,
        R0,
        t0,
        focal,
        width,
        height,
        shape_weight=SHAPE_WEIGHT,
        smooth_rotation=config.smooth_rotation,
        smooth_translation=config.smooth_translation,
        robust_px=config.robust_scale_px,
        iterations=config.fit_iterations,
        breaks=breaks,
        tracks=tracks,
        track_weight=config.track_weight,
        track_robust_px=config.track_robust_scale_px,
    )
    R, t = ba.rotation, ba.translation
    if tracks is not None:
        # The tracks give the motion; the head frame's orientation stays the landmarks': the constant
        # rotation G that brings the poses closest, on average, to the landmark-only poses.
        M = np.einsum("kji,kjl->il", R[vidx], R_landmarks[vidx])
        R = R @ roma.special_procrustes(torch.as_tensor(M)).numpy()
    # Fold the refined rigid shape into the canonical shape, keeping the head-space gauge
    # (centroid at the origin, inter-pupillary distance 0.063 m): x' = a (x - c) => t' = a (R c + t).
    canon = _propagate_offsets(fit.canonical, rig, ba.offsets)
    c = canon.mean(0)
    a = INTER_PUPIL_M / np.linalg.norm(canon[LEFT_IRIS_CENTER] - canon[RIGHT_IRIS_CENTER])
    t = a * (R @ c + t)
    fit.canonical = a * (canon - c)
    fit.aligned = a * (fit.aligned - c)  # NaN rows (invalid frames) stay NaN
    # Frames without a face: interpolate from valid neighbours rather than trusting extrapolation.
    R, t = interpolate_rotations(R, valid), interpolate_invalid(t, valid)
    K = np.array([[focal, 0, cx], [0, focal, cy], [0, 0, 1.0]])
    proj = project(transform(R, t, fit.canonical[rig]), K)  # (T, L, 2)
    err = np.median(np.linalg.norm(proj - obs2d[:, rig], axis=-1), axis=-1)
    err[~valid] = np.nan
    return RigidFit(R, t, float(focal), err)


def pose_free_landmarks(
    fit: CanonicalFit, rigid: RigidFit, obs2d: np.ndarray, valid: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame 3D landmarks in head space and the matching 2D landmarks.

    Each valid frame's similarity-aligned MediaPipe points are moved, at their own camera depth, onto
    the rays of the observed 2D landmarks, so they reproject exactly onto the detections; invalid
    frames are interpolated in head space and their 2D landmarks are the projections.
    Returns (landmarks3d (T, 478, 3) metres, landmarks2d (T, 478, 2) pixels).
    """
    K = np.array([[rigid.focal, 0, width / 2], [0, rigid.focal, height / 2], [0, 0, 1.0]])
    R, t = rigid.rotation, rigid.translation
    X = np.where(np.isnan(fit.aligned), fit.canonical[None], fit.aligned)
    Xc = transform(R, t, X)  # (T, 478, 3)
    z = np.maximum(Xc[..., 2:3], 1e-4)
    ray = np.concatenate([(obs2d - K[:2, 2]) / rigid.focal, np.ones_like(obs2d[..., :1])], -1)
    Xc_fixed = ray * z
    Xh = np.einsum("tji,tnj->tni", R, Xc_fixed - t[:, None, :])  # back to head space
    Xh = interpolate_invalid(np.where(valid[:, None, None], Xh, 0.0), valid)
    lm2d = np.where(valid[:, None, None], obs2d, project(transform(R, t, Xh), K))
    return Xh, lm2d
