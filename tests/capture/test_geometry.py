"""Geometry helpers of the capture stage: similarity alignment, interpolation, jitter, sizes, breaks."""

import numpy as np
import pytest
import roma
import torch

from avatar3d.capture.geometry import (
    interpolate_invalid,
    interpolate_rotations,
    pose_jitter,
    project,
    robust_umeyama,
)
from avatar3d.capture.pipeline import motion_breaks, stored_size


def _random_rotation(rng, n=None):
    rv = torch.as_tensor(rng.normal(size=(n or 1, 3)) * 0.5)
    R = roma.rotvec_to_rotmat(rv).numpy()
    return R if n else R[0]


def test_robust_umeyama_recovers_similarity_batched():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(5, 40, 3))
    R = _random_rotation(rng, 5)
    s = rng.uniform(0.5, 3.0, 5)
    t = rng.normal(size=(5, 3))
    dst = s[:, None, None] * np.einsum("bij,bnj->bni", R, src) + t[:, None]
    s2, R2, t2, _ = robust_umeyama(src, dst, iterations=1)  # one round: the plain fit
    np.testing.assert_allclose(s2, s, rtol=1e-9)
    np.testing.assert_allclose(R2, R, atol=1e-9)
    np.testing.assert_allclose(t2, t, atol=1e-9)
    assert np.allclose(np.linalg.det(R2), 1.0)


def test_robust_umeyama_ignores_outliers():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(100, 3))
    R = _random_rotation(rng)
    dst = 2.0 * src @ R.T + np.array([1.0, -2.0, 0.5])
    dst[:10] += rng.normal(size=(10, 3)) * 5.0  # 10 % gross outliers
    s_plain = robust_umeyama(src, dst, iterations=1)[0]
    s, R2, _, res = robust_umeyama(src, dst, iterations=5)
    assert abs(s - 2.0) < 0.02 < abs(s_plain - 2.0)
    assert np.degrees(np.arccos(np.clip((np.trace(R2.T @ R) - 1) / 2, -1, 1))) < 0.5
    assert res[10:].max() < 0.1 < res[:10].min()


def test_interpolate_invalid_linear_and_held_at_ends():
    v = np.array([0.0, 0.0, 2.0, 0.0, 4.0, 0.0])[:, None]
    valid = np.array([False, False, True, False, True, False])
    out = interpolate_invalid(v, valid)[:, 0]
    np.testing.assert_allclose(out, [2.0, 2.0, 2.0, 3.0, 4.0, 4.0])


def test_interpolate_rotations_slerp_midpoint():
    R = np.tile(np.eye(3), (3, 1, 1))
    R[2] = roma.rotvec_to_rotmat(torch.tensor([0.0, 0.0, 0.4], dtype=torch.float64)).numpy()
    out = interpolate_rotations(R, np.array([True, False, True]))
    rv = roma.rotmat_to_rotvec(torch.as_tensor(out[1])).numpy()
    np.testing.assert_allclose(rv, [0, 0, 0.2], atol=1e-9)


def test_pose_jitter_of_constant_velocity_is_zero_and_detects_noise():
    ang = np.linspace(0, 0.3, 20)
    R = roma.rotvec_to_rotmat(torch.as_tensor(np.stack([0 * ang, ang, 0 * ang], 1))).numpy()
    t = np.stack([ang, 0 * ang, 1 + 0 * ang], 1)
    r, tr = pose_jitter(R, t)
    assert r < 1e-6 and tr < 1e-6
    t_noisy = t.copy()
    t_noisy[::2, 0] += 0.001  # +1 mm on every other frame: |acceleration| = 2 mm
    assert pose_jitter(R, t_noisy)[1] == pytest.approx(2.0, rel=1e-6)


def test_project_pinhole_centre():
    K = np.array([[500.0, 0, 256], [0, 500, 128], [0, 0, 1]])
    np.testing.assert_allclose(project(np.array([[0.0, 0, 2], [0.2, -0.1, 1]]), K), [[256, 128], [356, 78]])


@pytest.mark.parametrize(
    "w,h,m,expect",
    [
        (700, 700, 512, (512, 512)),
        (1080, 1920, 512, (288, 512)),
        (320, 240, 512, (320, 240)),
        (101, 51, 512, (102, 52)),
    ],
)
def test_stored_size(w, h, m, expect):
    assert stored_size(w, h, m) == expect


def test_motion_breaks_flags_a_jump_only():
    rng = np.random.default_rng(0)
    base = rng.uniform(100, 300, size=(478, 2))
    obs = np.stack([base + 0.3 * k + rng.normal(size=base.shape) * 0.2 for k in range(30)])
    obs[15:] += 40.0  # a cut
    brk = motion_breaks(obs, np.ones(30, bool))
    assert brk.tolist() == [k == 15 for k in range(30)]
