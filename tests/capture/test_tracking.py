"""Rigid tracking on synthetic perspective projections of a real face shape with known poses and focal."""

import numpy as np
import pytest
import roma
import torch

from avatar3d.capture.canonical import INTER_PUPIL_M, build_canonical, metric_canonical
from avatar3d.capture.geometry import project, rotation_angle_deg
from avatar3d.capture.landmarks import FaceLandmarker
from avatar3d.capture.tracking import fit_rigid, pose_free_landmarks
from avatar3d.config import CaptureConfig
from avatar3d.core.geometry import similarity_fit

from ._synth import astronaut_face

W = H = 512


@pytest.fixture(scope="module")
def face_shape():
    """(478, 3) metric face shape (head space) from MediaPipe on the astronaut photo."""
    with FaceLandmarker(static_image_mode=True) as lm:
        p = lm.detect(astronaut_face(256))[0].astype(np.float64)
    p -= p.mean(0)
    return p * INTER_PUPIL_M / np.linalg.norm(p[473] - p[468])


def _sequence(shape, T=40, focal=2.5 * W, noise=0.3, seed=0):
    """Ground-truth poses, observed 2D landmarks and MediaPipe-like per-frame 3D points."""
    rng = np.random.default_rng(seed)
    s = np.linspace(0, 2 * np.pi, T)
    rv = np.stack([0.14 * np.sin(1.3 * s), 0.26 * np.sin(s), 0.05 * np.sin(2 * s)], 1)  # ±8°, ±15°, ±3°
    R = roma.rotvec_to_rotmat(torch.as_tensor(rv)).numpy()
    t = np.stack([0.02 * np.sin(s), 0.01 * np.cos(s), 0.9 + 0.05 * np.sin(0.5 * s)], 1)
    K = np.array([[focal, 0, W / 2], [0, focal, H / 2], [0, 0, 1]])
    Xc = np.einsum("tij,nj->tni", R, shape) + t[:, None]
    uv = project(Xc, K) + rng.normal(size=(T, 478, 2)) * noise
    z = (Xc[..., 2] - Xc[..., 2].mean(1, keepdims=True)) * focal / t[:, None, 2]  # relative depth, px
    return R, t, K, np.concatenate([uv, z[..., None]], -1)


def test_recovers_poses_focal_and_reprojects(face_shape):
    R_true, t_true, K, pts = _sequence(face_shape)
    valid = np.ones(len(pts), bool)
    fit = build_canonical(pts, valid)
    rig = fit_rigid(fit, pts[..., :2], valid, W, H, CaptureConfig())
    # head-space conventions: centroid at origin, IPD 0.063 m, nose tip towards the camera (-z)
    assert np.allclose(fit.canonical.mean(0), 0, atol=1e-9)
    assert np.linalg.norm(fit.canonical[473] - fit.canonical[468]) == pytest.approx(INTER_PUPIL_M)
    assert fit.canonical[1, 2] < fit.canonical[:, 2].mean() - 0.02
    assert fit.canonical[152, 1] > fit.canonical[10, 1]  # chin below forehead (y down)
    assert np.median(rig.errors) < 0.6  # pixels (noise 0.3 px)
    # relative rotations match the truth (the head frame itself is a convention)
    rel_fit = rig.rotation @ rig.rotation[0].T
    rel_true = R_true @ R_true[0].T
    assert rotation_angle_deg(rel_fit @ np.swapaxes(rel_true, 1, 2)).max() < 1.0
    assert 0.6 < rig.focal / K[0, 0] < 1.6, rig.focal / K[0, 0]
    # distance follows the focal (same image size): z / f is preserved
    assert np.median(rig.translation[:, 2] / rig.focal) == pytest.approx(
        np.median(t_true[:, 2]) / K[0, 0], rel=0.1
    )


def test_lost_frames_are_interpolated(face_shape):
    R_true, _, K, pts = _sequence(face_shape, T=30, seed=1)
    valid = np.ones(30, bool)
    valid[[0, 10, 11, 12, 29]] = False
    pts[~valid] = 0.0
    fit = build_canonical(pts, valid)
    rig = fit_rigid(fit, pts[..., :2], valid, W, H, CaptureConfig(focal=K[0, 0]))
    assert np.isnan(rig.errors[~valid]).all() and np.isfinite(rig.errors[valid]).all()
    rel_fit = rig.rotation @ rig.rotation[1].T
    rel_true = R_true @ R_true[1].T
    err = rotation_angle_deg(rel_fit @ np.swapaxes(rel_true, 1, 2))
    assert err[10:13].max() < 3.0  # interpolated through a 3-frame gap
    lm3d, lm2d = pose_free_landmarks(fit, rig, pts[..., :2], valid, W, H)
    assert np.isfinite(lm3d).all() and np.isfinite(lm2d).all()
    np.testing.assert_allclose(lm2d[valid], pts[valid, :, :2])  # detections kept where valid
    # the pose-free 3D landmarks reproject exactly onto the detections of valid frames
    reproj = project(np.einsum("tij,tnj->tni", rig.rotation, lm3d) + rig.translation[:, None], K)
    assert np.abs(reproj[valid] - pts[valid, :, :2]).max() < 1e-6
    assert np.linalg.norm(lm3d - fit.canonical, axis=-1).mean() < 0.005  # rigid face: near canonical


def test_metric_canonical_is_exact_with_exact_landmarks(face_shape):
    """With noise-free perspective landmarks, MediaPipe-like relative depth and the true focal, the
    canonical rebuilt through the camera is the true shape, and the head frame it defines gives the
    true poses (no perspective left in the shape to tilt the head frame)."""

    R_true, _, K, pts = _sequence(face_shape, noise=0.0)
    valid = np.ones(len(pts), bool)
    canon, _ = metric_canonical(build_canonical(pts, valid), valid, K[0, 0], W, H)
    s, A, b = similarity_fit(canon, face_shape)
    resid = np.linalg.norm(s * canon @ A.T + b - face_shape, axis=-1)
    assert np.median(resid) < 2e-4  # metres
    fit = build_canonical(pts, valid)
    cfg = CaptureConfig(focal=K[0, 0], smooth_rotation=0.0, smooth_translation=0.0)  # geometry only
    rig = fit_rigid(fit, pts[..., :2], valid, W, H, cfg)
    _, A, _ = similarity_fit(fit.canonical, face_shape)  # the capture's head frame -> the truth's
    err = rotation_angle_deg(rig.rotation @ A.T @ np.swapaxes(R_true, 1, 2))
    assert err.max() < 0.2, err.max()
