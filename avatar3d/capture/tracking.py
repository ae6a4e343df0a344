"""Rigid head tracking: a canonical landmark shape in head space, per-frame pose and a shared focal.

Head space (see docs/INTERNALS.md): OpenCV axes of a frontal camera (x right, y down, z away), metres
(mean inter-pupillary distance of the canonical shape := 0.063 m, iris centres 468/473), origin at the
centroid of the 478 canonical landmarks. Poses map head to camera: ``x_cam = R_t @ x_head + t_t``.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import roma
import torch

from .geometry import interpolate_invalid, interpolate_rotations, project, robust_umeyama, transform
from .topology import (
    LEFT_IRIS_CENTER,
    MIDLINE_LOWER,
    MIDLINE_UPPER,
    RIGHT_IRIS_CENTER,
    RIGID_INDICES,
    SYMMETRIC_PAIRS,
)

INTER_PUPIL_M = 0.063
REF_SIZE = 512.0  # pixel errors and robust scales are expressed at this longest-side size
SHAPE_WEIGHT = 0.01  # prior on rigid-shape offsets during bundle adjustment (per mm², per point)


@dataclass
class CanonicalFit:
    """canonical: (478, 3) head space, metres. aligned: (T, 478, 3) each valid frame's MediaPipe points
    mapped into head space by a similarity (NaN for invalid frames). scale: (T,) pixels per metre of
    that similarity; rotation: (T, 3, 3) head->image axes; offset: (T, 3) image position (px) of the
    head origin."""

    canonical: np.ndarray
    aligned: np.ndarray
    scale: np.ndarray
    rotation: np.ndarray
    offset: np.ndarray


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
    return CanonicalFit(canon.astype(np.float64), aligned_all, scale, rot, off)


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
        rvec, _ = cv2.Rodrigues(R0[k])
        tvec = t0[k].reshape(3, 1).copy()
        ok, rvec, tvec = cv2.solvePnP(
            canon,
            obs[k].astype(np.float64),
            K,
            None,
            rvec,
            tvec,
            useExtrinsicGuess=True,
            flags=cv2.SOLVEPNP_ITERATIVE,
        )
        if ok and np.isfinite(tvec).all() and tvec[2, 0] > 0:
            Rs[k], ts[k] = cv2.Rodrigues(rvec)[0], tvec.reshape(3)
    return Rs, ts


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
    focal: float
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
    optimise_focal: bool = True,
    shape_weight: float | None = 0.01,
    smooth_rotation: float = 0.0,
    smooth_translation: float = 0.0,
    robust_px: float = 1.5,
    prior: float = 2.0,
    prior_weight: float = 0.02,
    iterations: int = 60,
    breaks: np.ndarray | None = None,
) -> _BAResult:
    """Joint L-BFGS over frames' poses, optionally the log focal and offsets of the rigid shape.

    Objective: mean pseudo-Huber rigid-landmark reprojection error (pixels at 512 px) over valid
    frames + ``smooth_rotation`` × mean squared rotation acceleration (degrees, rotation vectors about
    a reference) + ``smooth_translation`` × mean squared translation acceleration (mm) +
    ``shape_weight`` × mean squared shape offset (mm; ``None`` keeps the shape fixed) +
    ``prior_weight`` × (log f − log(prior × max(W, H)))².

    canon: (L, 3) rigid canonical points; obs2d: (T, L, 2); valid: (T,); R0: (T, 3, 3); t0: (T, 3);
    breaks: (T,) bool, True at t when no smoothness should link frame t-1 to t (cuts).
    """
    T = obs2d.shape[0]
    dt = torch.float64
    size = float(max(width, height))
    px = REF_SIZE / size  # pixels of the stored image -> pixels at 512
    vidx = np.flatnonzero(valid)
    R_ref = torch.as_tensor(R0[vidx[len(vidx) // 2]], dtype=dt)
    rv = roma.rotmat_to_rotvec(torch.as_tensor(R0, dtype=dt) @ R_ref.T).requires_grad_(True)
    tr = torch.as_tensor(t0, dtype=dt).clone().requires_grad_(True)
    logf = torch.tensor(math.log(focal), dtype=dt, requires_grad=optimise_focal)
    C = torch.as_tensor(canon, dtype=dt)
    dC = torch.zeros_like(C, requires_grad=shape_weight is not None)
    U = torch.as_tensor(np.nan_to_num(obs2d), dtype=dt)
    w = torch.as_tensor(valid, dtype=dt)
    n_valid = max(float(valid.sum()), 1.0)
    c = torch.tensor([width / 2, height / 2], dtype=dt)
    log_prior = math.log(prior * size)
    params = [rv, tr] + ([logf] if optimise_focal else []) + ([dC] if shape_weight is not None else [])
    # acceleration term k couples frames k, k+1, k+2: drop it when a break lies at k+1 or k+2
    brk = np.zeros(T, bool) if breaks is None else np.asarray(breaks, bool)
    acc_w = torch.as_tensor(~(brk[1:-1] | brk[2:]) if T >= 3 else np.zeros(0), dtype=dt)
    acc_n = max(float(acc_w.sum()), 1.0)

    def objective() -> torch.Tensor:
        R = roma.rotvec_to_rotmat(rv) @ R_ref  # (T, 3, 3)
        Xc = torch.einsum("tij,nj->tni", R, C + dC) + tr[:, None, :]  # (T, L, 3)
        uv = Xc[..., :2] / Xc[..., 2:3].clamp_min(1e-4) * torch.exp(logf) + c
        e2 = ((uv - U) * px).pow(2).sum(-1)  # (T, L) squared error at 512 px
        rho = robust_px**2 * (torch.sqrt(1 + e2 / robust_px**2) - 1)
        loss = (rho.mean(-1) * w).sum() / n_valid
        if T >= 3 and smooth_rotation > 0:
            acc_r = torch.rad2deg(rv[2:] - 2 * rv[1:-1] + rv[:-2])
            loss = loss + smooth_rotation * (acc_r.pow(2).sum(-1) * acc_w).sum() / acc_n
        if T >= 3 and smooth_translation > 0:
            acc_t = 1000.0 * (tr[2:] - 2 * tr[1:-1] + tr[:-2])
            loss = loss + smooth_translation * (acc_t.pow(2).sum(-1) * acc_w).sum() / acc_n
        if shape_weight is not None:
            loss = loss + shape_weight * (1000.0 * dC).pow(2).sum(-1).mean()
        if optimise_focal:
            loss = loss + prior_weight * (logf - log_prior) ** 2
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
            return _BAResult(R, tr.numpy().copy(), float(torch.exp(logf)), dC.numpy().copy(), cost)


def search_focal(
    fit: CanonicalFit, obs2d: np.ndarray, valid: np.ndarray, width: int, height: int, config
) -> float:
    """Focal (pixels): the best of a log-spaced grid over ``config.focal_search × max(W, H)``
    under the bundle-adjustment objective (poses and rigid shape free, focal fixed) on
    ``config.focal_frames`` evenly spaced valid frames, plus the log-focal prior, refined by the
    vertex of a parabola in log f through the best grid point and its neighbours."""
    size = float(max(width, height))
    cx, cy = width / 2, height / 2
    rig = np.array(RIGID_INDICES)
    vidx = np.flatnonzero(valid)
    n = min(int(config.focal_frames), len(vidx))
    pick = vidx[np.unique(np.linspace(0, len(vidx) - 1, n).round().astype(int))]
    canon = fit.canonical[rig]
    obs = obs2d[pick][:, rig]
    sub = CanonicalFit(
        fit.canonical, fit.aligned[pick], fit.scale[pick], fit.rotation[pick], fit.offset[pick]
    )
    ones = np.ones(len(pick), bool)
    log_prior = math.log(config.focal_prior * size)

    def cost(logf: float) -> float:
        f = math.exp(logf)
        R0, t0 = _weak_perspective_init(sub, ones, f, cx, cy)
        R0, t0 = _pnp(canon, obs, R0, t0, f, cx, cy)
        ba = bundle_adjust(
            canon,
            obs,
            ones,
            R0,
            t0,
            f,
            width,
            height,
            optimise_focal=False,
            shape_weight=SHAPE_WEIGHT,
            robust_px=config.robust_scale_px,
            iterations=40,
        )
        return ba.cost + config.focal_prior_weight * (logf - log_prior) ** 2

    lo_s, hi_s = config.focal_search
    grid = np.linspace(math.log(lo_s * size), math.log(hi_s * size), 7)
    costs = np.array([cost(g) for g in grid])
    k = int(np.argmin(costs))
    best = grid[k]
    if 0 < k < len(grid) - 1:  # vertex of the parabola through the best grid point and its neighbours
        c0, c1, c2 = costs[k - 1 : k + 2]
        curv = c0 - 2 * c1 + c2
        if curv > 1e-12:
            step = grid[1] - grid[0]
            best = grid[k] + 0.5 * step * (c0 - c2) / curv
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
) -> RigidFit:
    """Focal search (unless ``config.focal`` is set), then a smooth bundle adjustment of all frames.

    obs2d: (T, 478, 2) observed landmarks (pixels of the stored images); config: CaptureConfig.
    Updates ``fit.canonical`` and ``fit.aligned`` in place with the refined rigid shape (re-centred and re-scaled so the
    head-space conventions still hold). Invalid frames get poses interpolated from valid neighbours.
    """
    rig = np.array(RIGID_INDICES)
    cx, cy = width / 2, height / 2
    if config.focal is not None:
        focal = float(config.focal)
    else:
        focal = search_focal(fit, obs2d, valid, width, height, config)
    R0, t0 = _weak_perspective_init(fit, valid, focal, cx, cy)
    vidx = np.flatnonzero(valid)
    R0[vidx], t0[vidx] = _pnp(fit.canonical[rig], obs2d[vidx][:, rig], R0[vidx], t0[vidx], focal, cx, cy)
    R0, t0 = interpolate_rotations(R0, valid), interpolate_invalid(t0, valid)
    ba = bundle_adjust(
        fit.canonical[rig],
        obs2d[:, rig],
        valid,
        R0,
        t0,
        focal,
        width,
        height,
        optimise_focal=config.focal is None,
        shape_weight=SHAPE_WEIGHT,
        smooth_rotation=config.smooth_rotation,
        smooth_translation=config.smooth_translation,
        robust_px=config.robust_scale_px,
        prior=config.focal_prior,
        prior_weight=config.focal_prior_weight,
        iterations=config.fit_iterations,
        breaks=breaks,
    )
    R, t, focal = ba.rotation, ba.translation, ba.focal
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
