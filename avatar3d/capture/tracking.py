"""Rigid head tracking: a canonical landmark shape in head space, per-frame pose and a shared focal.

Head space (see docs/INTERNALS.md): OpenCV axes of a frontal camera (x right, y down, z away), metres
(mean inter-pupillary distance of the canonical shape := 0.063 m, iris centres 468/473), origin at the
centroid of the 478 canonical landmarks. Poses map head to camera: ``x_cam = R_t @ x_head + t_t``.

The stages live in their own modules: :mod:`.canonical` (the shape), :mod:`.focal` (the focal
search), :mod:`.resection` (starting poses), :mod:`.pose_fit` and :mod:`.bundle` (the bundle
adjustment). This module chains them (:func:`fit_rigid`) and puts the per-frame landmarks into head
space (:func:`pose_free_landmarks`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import roma
import torch

from ..core.topology import RIGID_INDICES
from .canonical import (
    INTER_PUPIL_M,
    CanonicalFit,
    build_canonical,
    head_gauge,
    metric_canonical,
    propagate_offsets,
)
from .feature_tracks import FeatureTracks
from .focal import search_focal
from .geometry import interpolate_invalid, interpolate_rotations, project, transform
from .pose_fit import SHAPE_WEIGHT, BundleSettings, bundle_adjust
from .resection import MIN_DEPTH_M, intrinsics, pnp, resect_intersect, weak_perspective_init

__all__ = [
    "INTER_PUPIL_M",
    "CanonicalFit",
    "RigidFit",
    "build_canonical",
    "fit_rigid",
    "metric_canonical",
    "pose_free_landmarks",
    "search_focal",
]

MIN_TRACK_FRAMES = 5  # frames: shorter feature tracks (after cuts) are left out of the pose fit


@dataclass
class RigidFit:
    """rotation (T, 3, 3), translation (T, 3) head->camera; focal in pixels; errors (T,) median rigid
    landmark reprojection error in pixels of the stored images (NaN for invalid frames)."""

    rotation: np.ndarray
    translation: np.ndarray
    focal: float
    errors: np.ndarray


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
    Updates ``fit.canonical`` and ``fit.aligned`` in place with the refined rigid shape (re-centred
    and re-scaled so that the head-space conventions still hold). Invalid frames get poses
    interpolated from valid neighbours.
    """
    rig = np.array(RIGID_INDICES)
    tracks = _pose_tracks(tracks, valid, breaks, config)
    if config.focal is not None:
        focal = float(config.focal)
    else:
        focal = search_focal(fit, obs2d, valid, width, height, config, tracks=tracks)
    # the canonical shape as seen from the distance this focal implies, without its perspective
    fit.canonical, fit.aligned = metric_canonical(fit, valid, focal, width, height)
    R0, t0 = _landmark_poses(fit, obs2d, valid, focal, width, height)
    R_landmarks = R0.copy()
    if tracks is not None:
        R0, t0 = resect_intersect(tracks, fit.canonical[rig], R0, t0, focal, width, height)
    settings = BundleSettings(
        shape_weight=SHAPE_WEIGHT,
        smooth_rotation=config.smooth_rotation,
        smooth_translation=config.smooth_translation,
        robust_px=config.robust_scale_px,
        iterations=config.fit_iterations,
        track_weight=config.track_weight,
        track_robust_px=config.track_robust_scale_px,
    )
    ba = bundle_adjust(
        fit.canonical[rig],
        obs2d[:, rig],
        valid,
        R0,
        t0,
        focal,
        width,
        height,
        settings,
        breaks=breaks,
        tracks=tracks,
    )
    R, t = ba.rotation, ba.translation
    if tracks is not None:
        R = _landmark_orientation(R, R_landmarks, valid)
    t = _fold_offsets(fit, ba.offsets, R, t)
    # Frames without a face: interpolate from valid neighbours rather than trusting extrapolation.
    R, t = interpolate_rotations(R, valid), interpolate_invalid(t, valid)
    K = intrinsics(focal, width / 2, height / 2)
    proj = project(transform(R, t, fit.canonical[rig]), K)  # (T, L, 2)
    err = np.median(np.linalg.norm(proj - obs2d[:, rig], axis=-1), axis=-1)
    err[~valid] = np.nan
    return RigidFit(R, t, float(focal), err)


def _pose_tracks(tracks: FeatureTracks | None, valid, breaks, config) -> FeatureTracks | None:
    """The feature tracks the pose fit uses: in valid frames, cut at breaks, long enough; None when
    there are none or ``config.track_weight`` is off."""
    if tracks is not None and config.track_weight > 0:
        tracks = tracks.in_frames(valid).split_at(breaks).min_length(MIN_TRACK_FRAMES)
    if tracks is not None and (config.track_weight <= 0 or not len(tracks)):
        tracks = None
    return tracks


def _landmark_poses(fit: CanonicalFit, obs2d, valid, focal: float, width: int, height: int):
    """Poses (R (T, 3, 3), t (T, 3)) from the landmarks alone: weak perspective, then PnP on the
    valid frames, interpolated over the others."""
    rig = np.array(RIGID_INDICES)
    cx, cy = width / 2, height / 2
    R0, t0 = weak_perspective_init(fit, valid, focal, cx, cy)
    vidx = np.flatnonzero(valid)
    R0[vidx], t0[vidx] = pnp(fit.canonical[rig], obs2d[vidx][:, rig], R0[vidx], t0[vidx], focal, cx, cy)
    return interpolate_rotations(R0, valid), interpolate_invalid(t0, valid)


def _landmark_orientation(R: np.ndarray, R_landmarks: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The tracks give the motion; the head frame's orientation stays the landmarks': ``R`` turned by
    the constant rotation G that brings the poses closest, on average, to the landmark-only poses."""
    vidx = np.flatnonzero(valid)
    M = np.einsum("kji,kjl->il", R[vidx], R_landmarks[vidx])
    return R @ roma.special_procrustes(torch.as_tensor(M)).numpy()


def _fold_offsets(fit: CanonicalFit, offsets: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Fold the fitted rigid offsets (L, 3) into ``fit.canonical`` (and ``fit.aligned``) in place,
    keeping the head-space gauge (centroid at the origin, ``INTER_PUPIL_M``): x' = a (x - c), so the
    translations (T, 3) become t' = a (R c + t), returned."""
    canon = propagate_offsets(fit.canonical, np.array(RIGID_INDICES), offsets)
    c, a = head_gauge(canon)
    t = a * (R @ c + t)
    fit.canonical = a * (canon - c)
    fit.aligned = a * (fit.aligned - c)  # NaN rows (invalid frames) stay NaN
    return t


def pose_free_landmarks(
    fit: CanonicalFit, rigid: RigidFit, obs2d: np.ndarray, valid: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame 3D landmarks in head space and the matching 2D landmarks.

    Each valid frame's similarity-aligned MediaPipe points are moved, at their own camera depth, onto
    the rays of the observed 2D landmarks, so they reproject exactly onto the detections; invalid
    frames are interpolated in head space and their 2D landmarks are the projections.
    Returns (landmarks3d (T, 478, 3) metres, landmarks2d (T, 478, 2) pixels).
    """
    K = intrinsics(rigid.focal, width / 2, height / 2)
    R, t = rigid.rotation, rigid.translation
    X = np.where(np.isnan(fit.aligned), fit.canonical[None], fit.aligned)
    Xc = transform(R, t, X)  # (T, 478, 3)
    z = np.maximum(Xc[..., 2:3], MIN_DEPTH_M)
    ray = np.concatenate([(obs2d - K[:2, 2]) / rigid.focal, np.ones_like(obs2d[..., :1])], -1)
    Xc_fixed = ray * z
    Xh = np.einsum("tji,tnj->tni", R, Xc_fixed - t[:, None, :])  # back to head space
    Xh = interpolate_invalid(np.where(valid[:, None, None], Xh, 0.0), valid)
    lm2d = np.where(valid[:, None, None], obs2d, project(transform(R, t, Xh), K))
    return Xh, lm2d
