"""Landmark fitting: FLAME through its landmark embedding, and the open model; edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar3d.morphable import FitConfig, FlameModel, OpenFaceModel, fit_landmarks, project

from ._morphable_synth import (
    N_EXPR,
    N_SHAPE,
    head_poses,
    make_open_sequence,
    rotation_errors_deg,
    smooth_tracks,
)

K = np.array([[1200.0, 0.0, 256.0], [0.0, 1200.0, 256.0], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def flame(flame_files) -> FlameModel:
    return FlameModel.load(flame_files["pkl"], flame_files["landmarks"], shape_components=N_SHAPE)


def _flame_clip(model: FlameModel, T: int = 12, seed: int = 0, noise_px: float = 0.0) -> dict:
    """Known shape, per-frame pose / expression / jaw / eyes, projected to MediaPipe-ordered pixels."""
    rng = np.random.default_rng(seed)
    R, t = head_poses(rng, T)

    def f32(a):
        return torch.as_tensor(a, dtype=torch.float32)

    truth = {
        "R": R,
        "t": t,
        "shape": 0.8 * rng.normal(size=N_SHAPE),
        "expression": smooth_tracks(rng, T, N_EXPR, 1.0),
        "jaw": np.concatenate([0.15 + smooth_tracks(rng, T, 1, 0.15), np.zeros((T, 2))], axis=1),
        "eyes": smooth_tracks(rng, T, 6, 0.15),
    }
    X = model.landmark_positions(
        f32(np.tile(truth["shape"], (T, 1))),
        f32(truth["expression"]),
        {"jaw": f32(truth["jaw"]), "eyes": f32(truth["eyes"])},
    )
    uv = project(X @ f32(R).transpose(1, 2) + f32(t)[:, None], f32(K)).numpy()
    lm = np.full((T, 478, 2), np.nan)
    lm[:, model.landmark_indices.numpy()] = uv + noise_px * rng.normal(size=uv.shape)
    truth["landmarks"] = lm
    return truth


@pytest.mark.parametrize("noise_px", [0.0, 0.5])
def test_flame_fit_recovers_pose_expression_and_jaw(flame, noise_px):
    clip = _flame_clip(flame, noise_px=noise_px)
    res = fit_landmarks(flame, clip["landmarks"], K)
    assert rotation_errors_deg(res.rotation, clip["R"]).max() < 1.0
    assert np.abs(res.translation.numpy() - clip["t"]).max() < 0.01  # metres at 0.6 m
    assert np.abs(res.pose["jaw"].numpy() - clip["jaw"]).max() < 0.02  # radians
    assert np.abs(res.expression.numpy() - clip["expression"]).max() < 0.35  # std units
    assert np.abs(res.shape.numpy() - clip["shape"]).max() < 0.15
    assert res.mean_error < 0.5 + noise_px
    torch.testing.assert_close(res.semantic["jaw_open"], res.pose["jaw"][:, 0])
    assert set(res.as_numpy()) >= {"rotation", "translation", "pose.jaw", "pose.eyes", "semantic.jaw_open"}


def test_missing_frames_and_points(flame):
    clip = _flame_clip(flame, T=10, seed=1)
    lm = clip["landmarks"].copy()
    lm[4] = np.nan  # no detection in frame 4
    valid = np.ones((10, 478), bool)
    valid[:, flame.landmark_indices[:20].numpy()] = False  # some points never trusted
    res = fit_landmarks(flame, lm, K, valid=valid)
    err = res.reprojection_error.numpy()
    assert np.isnan(err[4]) and np.all(err[np.arange(10) != 4] < 1.0)
    rot_err = rotation_errors_deg(res.rotation, clip["R"])
    assert rot_err[4] < 3.0  # bridged by temporal smoothness
    assert np.delete(rot_err, 4).max() < 1.0


def test_focal_length_is_recovered_with_head_rotation(flame):
    clip = _flame_clip(flame, T=12, seed=2)
    K_wrong = K.copy()
    K_wrong[0, 0] = K_wrong[1, 1] = 0.8 * K[0, 0]
    res = fit_landmarks(flame, clip["landmarks"], K_wrong, config=FitConfig(optimize_focal=True, w_focal=0.0))
    assert abs(float(res.K[0, 0]) / K[0, 0] - 1.0) < 0.03
    assert res.K[0, 0] == res.K[1, 1] and float(res.K[0, 2]) == K[0, 2]


def test_open_model_fit_recovers_jaw_open(face_layout):
    seq = make_open_sequence(face_layout, T=120, seed=3)
    model = OpenFaceModel.from_landmarks(seq["X"], n_expression=8)
    sel = np.arange(0, 120, 3)  # 40 frames seen by a camera
    T = len(sel)
    R, t = head_poses(np.random.default_rng(4), T, yaw=20.0, depth=0.55)
    pts = np.einsum("tij,tlj->tli", R, seq["X"][sel]) + t[:, None]
    rng = np.random.default_rng(5)
    uv = project(torch.as_tensor(pts), torch.as_tensor(K)).numpy() + 0.3 * rng.normal(size=(T, 478, 2))
    res = fit_landmarks(model, uv, K)
    assert np.corrcoef(res.semantic["jaw_open"].numpy(), seq["theta"][sel])[0, 1] > 0.95
    assert np.corrcoef(res.semantic["blink"].numpy(), seq["blink"][sel])[0, 1] > 0.8
    true_R = R @ seq["misalign"][sel]  # each frame also carries its small residual misalignment
    assert rotation_errors_deg(res.rotation, true_R).max() < 1.5
    assert res.mean_error < 1.0
    assert res.shape.shape == (0,) and res.pose == {}


def test_bad_inputs(flame, flame_files):
    lm = np.zeros((3, 478, 2))
    with pytest.raises(ValueError, match=r"\(T, 478, 2\)"):
        fit_landmarks(flame, lm[:, :468], K)
    with pytest.raises(ValueError, match="positive focal"):
        fit_landmarks(flame, lm, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="no frame has any valid landmark"):
        fit_landmarks(flame, np.full((3, 478, 2), np.nan), K)
    bare = FlameModel.load(flame_files["pkl"], shape_components=N_SHAPE)
    with pytest.raises(ValueError, match="no landmark embedding"):
        fit_landmarks(bare, lm, K)


def test_project_matches_pinhole():
    pts = torch.tensor([[[0.1, -0.05, 0.5], [0.0, 0.0, 2.0]]], dtype=torch.float64)
    uv = project(pts, torch.as_tensor(K))
    expected = torch.tensor([[[1200 * 0.2 + 256, 1200 * -0.1 + 256], [256.0, 256.0]]], dtype=torch.float64)
    torch.testing.assert_close(uv, expected)
