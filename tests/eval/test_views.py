"""Depth-based reprojection: a static textured plane seen from two cameras warps onto itself."""

import numpy as np
import pytest
import torch

from avatar3d import Camera
from avatar3d.core.geometry import similarity_fit
from avatar3d.eval.views import backproject, reproject, warp_error

SIZE = 128


def _texture(x, y, shift=0.0):
    x = x + shift
    return np.stack(
        [
            0.5 + 0.3 * np.sin(40 * x) * np.cos(30 * y) + 0.1 * np.sin(150 * x + 90 * y),
            0.5 + 0.3 * np.cos(55 * y),
            0.5 + 0.2 * np.sin(70 * (x + y)),
        ],
        -1,
    )


def _render_planes(cam: Camera, planes, shift=0.0):
    """Ray-cast axis-aligned quads (z, half_w, half_h, colour offset) facing the camera: colour
    (H, W, 3), depth (H, W) camera-space z, alpha (H, W)."""
    H = W = SIZE
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    K = cam.K
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    c2w = cam.camera_to_world
    d = d_cam @ c2w[:3, :3].T
    o = c2w[:3, 3]
    best = np.full((H, W), np.inf)
    col = np.zeros((H, W, 3))
    for z0, hw, hh, off in planes:
        t = (z0 - o[2]) / d[..., 2]
        X = o + t[..., None] * d
        hit = (t > 0) & (np.abs(X[..., 0]) < hw) & (np.abs(X[..., 1]) < hh) & (t < best)
        best = np.where(hit, t, best)
        col = np.where(hit[..., None], np.clip(_texture(X[..., 0], X[..., 1], shift) + off, 0, 1), col)
    alpha = np.isfinite(best).astype(float)
    depth = np.where(alpha > 0, best, 0.0)  # d_cam has z = 1, so ray parameter = camera z
    return col, depth, alpha


CAM_A = Camera.orbit(-4.0, 1.0, distance=0.8, width=SIZE, height=SIZE)
CAM_B = Camera.orbit(4.0, -1.0, distance=0.8, width=SIZE, height=SIZE)
PLANE = [(0.0, 0.09, 0.09, 0.0)]


def test_backproject_inverts_projection():
    _, depth, alpha = _render_planes(CAM_A, PLANE)
    X = backproject(depth, CAM_A)[alpha > 0]
    assert np.abs(X[:, 2]).max() < 1e-9  # every lifted pixel lies on the plane z = 0


def test_static_plane_from_two_cameras_is_consistent():
    a, b = _render_planes(CAM_A, PLANE), _render_planes(CAM_B, PLANE)
    err, cover = warp_error(*a, CAM_A, *b, CAM_B)
    assert err < 4e-3, err  # bilinear interpolation error only
    assert cover > 0.9


def test_inconsistent_texture_is_detected():
    a = _render_planes(CAM_A, PLANE)
    b = _render_planes(CAM_B, PLANE, shift=0.01)  # the texture slid 1 cm between the views
    err, _ = warp_error(*a, CAM_A, *b, CAM_B)
    assert err > 0.03, err


def test_occluded_pixels_are_not_compared():
    scene = PLANE + [(-0.15, 0.02, 0.02, 0.4)]  # a bright small quad 15 cm in front
    a, b = _render_planes(CAM_A, scene), _render_planes(CAM_B, scene)
    warped, valid = reproject(a[0], a[1], a[2], CAM_A, b[1], b[2], CAM_B)
    assert np.abs(warped[valid] - b[0][valid]).mean() < 4e-3
    # without the occlusion test the pixels hidden behind the quad in A would be compared
    loose, valid_loose = reproject(a[0], a[1], a[2], CAM_A, b[1], b[2], CAM_B, depth_tol=1e9)
    assert valid_loose.sum() > valid.sum() + 50
    assert np.abs(loose[valid_loose] - b[0][valid_loose]).max() > 0.2


def test_rasterised_gaussian_plane_is_consistent():
    """The real renderer's expected depth and pixel convention: a flat sheet of Gaussians (smooth
    colours; coplanar discs blend in a view-dependent order, hence a looser bound than ray casting)."""
    from avatar3d.render.rasterize import rasterize

    n = 70
    g = np.linspace(-0.09, 0.09, n)
    xy = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    means = torch.tensor(np.c_[xy, np.zeros(len(xy))], dtype=torch.float32)
    spacing = g[1] - g[0]
    scales = torch.tensor([[spacing * 0.7, spacing * 0.7, 1e-4]], dtype=torch.float32).expand(len(xy), 3)
    quats = torch.tensor([[1.0, 0, 0, 0]]).expand(len(xy), 4)

    def smooth(x, y):
        return np.stack(
            [
                0.5 + 0.3 * np.sin(20 * x) * np.cos(15 * y),
                0.5 + 0.3 * np.cos(25 * y),
                0.5 + 0.2 * np.sin(30 * (x + y)),
            ],
            -1,
        )

    def render(cam, shift=0.0):
        vm, K = cam.to_torch()
        cols = torch.tensor(smooth(xy[:, 0] + shift, xy[:, 1]), dtype=torch.float32)
        o = rasterize(means, quats, scales, torch.full((len(xy),), 0.6), cols, vm[None], K[None], SIZE, SIZE)
        al = o.alphas[0, ..., 0].numpy().astype(float)
        return (
            o.colors[0].numpy() / np.maximum(al, 1e-6)[..., None],
            o.depths[0, ..., 0].numpy().astype(float),
            al,
        )

    a, b = render(CAM_A), render(CAM_B)
    err, cover = warp_error(*a, CAM_A, *b, CAM_B)
    assert cover > 0.9
    assert err < 0.015, err
    moved, _ = warp_error(*a, CAM_A, *render(CAM_B, shift=0.01), CAM_B)
    assert moved > 2 * err, (moved, err)


def test_head_space_alignment_recovers_a_similarity():
    """The similarity fit truth_setup aligns head spaces with (core.geometry, on roma)."""
    rng = np.random.default_rng(0)
    src = rng.normal(size=(50, 3))
    from scipy.spatial.transform import Rotation

    R = Rotation.from_rotvec([0.1, -0.3, 0.2]).as_matrix()
    dst = 1.3 * src @ R.T + np.array([0.1, 0.2, -0.3])
    s, R2, t = similarity_fit(src, dst)
    assert s == pytest.approx(1.3) and np.allclose(R2, R) and np.allclose(t, [0.1, 0.2, -0.3])
