"""Initial Gaussians: the head shell follows the person's silhouette, the torso has depth relief."""

import numpy as np
import pytest

from avatar3d.core.groups import HEAD, TORSO
from avatar3d.core.topology import eye_loops, face_oval_loop
from avatar3d.models.init import (
    InitInputs,
    eye_points,
    fit_shell_to_silhouette,
    initial_gaussians,
    torso_relief,
)
from avatar3d.synthetic.subject import SyntheticSubject

F, C, SIZE = 500.0, 128.0, 256
K = np.array([[F, 0, C], [0, F, C], [0, 0, 1.0]])
VIEW = np.eye(4)
VIEW[2, 3] = 1.0  # head space -> camera: 1 m in front of the camera
CTR = np.array([0.0, -0.01, 0.06])
AX, AY = 0.08, 0.11


def _silhouette(left: float, right: float, top: float = 1.0) -> np.ndarray:
    """The mask of the default ellipsoid widened by ``left`` / ``right`` (x) and ``top`` (y above the
    centre), as seen at the centre's depth."""
    depth = VIEW[2, 3] + CTR[2]
    v, u = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    x = (u - C) / F * depth - CTR[0]
    y = (v - C) / F * depth - CTR[1]
    rx = np.where(x < 0, left, right) * AX
    ry = np.where(y < 0, top, 1.0) * AY
    return ((x / rx) ** 2 + (y / ry) ** 2 <= 1.0).astype(np.float32)


def _middle(fit) -> slice:
    n = len(fit.rows)
    return slice(n // 4, 3 * n // 4)


@pytest.mark.parametrize("left,right,top", [(1.0, 1.0, 1.0), (1.3, 1.3, 1.0), (1.2, 1.45, 1.2)])
def test_shell_follows_the_silhouette(left, right, top):
    fit = fit_shell_to_silhouette(CTR, AX, AY, _silhouette(left, right, top), VIEW, K)
    mid = _middle(fit)
    np.testing.assert_allclose(fit.left[mid], left, atol=0.04)
    np.testing.assert_allclose(fit.right[mid], right, atol=0.04)
    assert fit.top == pytest.approx(top, abs=0.04)
    np.testing.assert_array_equal(fit.depth, 1.0)  # a silhouette does not measure depth
    # the shell's own points land on the silhouette's outline at the centre's height
    d = np.array([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    p, n = fit.points(d)
    np.testing.assert_allclose(p[0, 0] - CTR[0], -left * AX, rtol=0.04)
    np.testing.assert_allclose(p[1, 0] - CTR[0], right * AX, rtol=0.04)
    np.testing.assert_allclose(CTR[1] - p[2, 1], top * AY, rtol=0.04)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0)
    assert (np.sign(n[:, 0]) == np.sign(d[:, 0])).all()


def test_shell_factors_are_bounded_and_ignore_what_is_not_connected():
    m = _silhouette(3.0, 3.0)  # absurdly wide hair: clamped
    fit = fit_shell_to_silhouette(CTR, AX, AY, m, VIEW, K)
    assert fit.left.max() <= 1.6 and fit.right.max() <= 1.6
    m = _silhouette(1.0, 1.0)
    m[:, 200:] = 1.0  # someone else standing to the right, not touching the head: not the head's width
    m[:, 190:200] = 0.0
    fit = fit_shell_to_silhouette(CTR, AX, AY, m, VIEW, K)
    np.testing.assert_allclose(fit.right[_middle(fit)], 1.0, atol=0.04)


def test_shell_without_a_usable_mask_is_the_plain_ellipsoid():
    for m in (np.zeros((SIZE, SIZE), np.float32), np.zeros((0, 0), np.float32)):
        fit = fit_shell_to_silhouette(CTR, AX, AY, m, VIEW, K)
        for f in (fit.left, fit.right, fit.depth):
            np.testing.assert_array_equal(f, 1.0)
        assert fit.top == 1.0


def test_torso_relief_is_an_elliptic_cross_section():
    m = np.zeros((100, 300), np.float32)
    m[10:20, 100:140] = 1  # a neck-wide run (face half-width 20 px): round
    m[50:60, 50:250] = 1  # a shoulder-wide run: flatter (ratio 0.55)
    mpp = 0.001
    pix = np.array([[120.0, 15.5], [100.0, 15.5], [139.9, 15.5], [150.0, 55.5], [50.0, 55.5], [100.0, 55.5]])
    dz, n = torso_relief(m, pix, face_half=20.0, metres_per_px=mpp)
    assert dz[0] == pytest.approx(0.0, abs=1e-9)  # the run's centre stays on the front plane
    assert dz[1] == pytest.approx(20 * mpp, rel=1e-6)  # the neck's edge: one half-width back
    assert dz[2] == pytest.approx(20 * mpp, rel=0.25)
    assert dz[3] == pytest.approx(0.0, abs=1e-9)
    assert dz[4] == pytest.approx(0.55 * 100 * mpp, rel=1e-6)  # the shoulders bend back less
    x = -0.5  # halfway to the left edge of the shoulder run
    assert dz[5] == pytest.approx(0.55 * 100 * mpp * (1 - np.sqrt(1 - x**2)), rel=1e-6)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0)
    assert (n[:, 2] <= 1e-9).all()  # facing the camera (or edge-on at the outline)
    assert n[0] == pytest.approx([0, 0, -1])
    assert n[1, 0] < -0.99 and n[4, 0] < -0.99  # the left outlines face left


def test_initial_gaussians_put_hair_and_body_where_the_frame_shows_them():
    """On the synthetic subject's rest frame: the shell's outline matches the person mask's width at
    the eyes, and the torso is not a flat card."""

    subj = SyntheticSubject(seed=0)
    can = np.asarray(subj.canonical_landmarks, float)
    cam = subj.portrait_camera(SIZE)
    black = subj.render(cam, background=(0.0, 0.0, 0.0))[0].numpy()
    white = subj.render(cam, background=(1.0, 1.0, 1.0))[0].numpy()
    alpha = 1.0 - (white - black).mean(-1)
    inp = InitInputs(can, black, (alpha > 0.5).astype(np.float32), cam.world_to_camera, cam.K)
    g = initial_gaussians(inp, 6000, 300, 1500, seed=0)
    means, group = g["means"].numpy(), g["group"].numpy()
    head = means[group == HEAD]
    eyes_y = can[[33, 263], 1].mean()
    row = head[np.abs(head[:, 1] - eyes_y) < 0.005]
    truth_row = subj.gaussians(0.0, 0.0, np.eye(3), np.zeros(3))["means"].numpy()
    truth_row = truth_row[np.abs(truth_row[:, 1] - eyes_y) < 0.005]
    width, truth_width = np.ptp(row[:, 0]), np.ptp(truth_row[:, 0])
    assert width == pytest.approx(truth_width, rel=0.15)
    oval_w = np.ptp(can[face_oval_loop(), 0])
    assert width > 1.15 * 1.12 * oval_w  # wider than the default ellipsoid: the hair was seen
    torso = means[group == TORSO]
    assert np.ptp(torso[:, 2]) > 0.03  # relief, not a card


def test_eye_openings_are_filled_at_the_eyes_not_behind_the_head():
    """The face mesh leaves the eye openings as holes; the eyeball points fill each one in place."""
    from matplotlib.path import Path as MplPath

    can = np.asarray(SyntheticSubject(seed=0).canonical_landmarks, float)
    rings = eye_loops()
    assert [len(r) for r in rings] == [16, 16] and all(len(set(r.tolist())) == 16 for r in rings)
    p, n = eye_points(can, 241, np.random.default_rng(0))
    assert p.shape == (241, 3) and n.shape == (241, 3)
    inside = [MplPath(can[r][:, :2]).contains_points(p[:, :2]) for r in rings]
    assert inside[0].sum() == 121 and inside[1].sum() == 120 and not (inside[0] & inside[1]).any()
    for r, ins in zip(rings, inside):
        rim_z = can[r, 2].mean()
        assert np.all(np.abs(p[ins, 2] - rim_z) < 0.004)  # at the lids' depth, within a few mm
    np.testing.assert_allclose(n, np.tile([0.0, 0.0, -1.0], (241, 1)))


def test_a_close_up_keeps_the_default_shell_width():
    """When the person mask reaches the image border at the head's rows, the width cannot be read."""
    m = np.ascontiguousarray(_silhouette(1.0, 1.0)[:, :180])  # the frame ends 14 px past the head
    m[:, 128:] = 1.0  # and the person fills it from the head's centre rightwards
    fit = fit_shell_to_silhouette(CTR, AX, AY, m, VIEW, K)
    np.testing.assert_allclose(fit.right, 1.0)
    np.testing.assert_allclose(fit.left[_middle(fit)], 1.0, atol=0.04)  # the other side still measured


def test_torso_relief_of_shoulders_cut_by_the_frame():
    m = np.zeros((40, 200), np.float32)
    m[10:20, 0:160] = 1  # shoulders cut by the left border; the body's axis at u = 100
    pix = np.array([[100.0, 15.5], [1.0, 15.5], [159.5, 15.5]])
    dz, _ = torso_relief(m, pix, face_half=20.0, metres_per_px=0.001, axis_u=100.0)
    assert dz[0] == pytest.approx(0.0, abs=1e-9)  # the axis is the front, not the run's middle (80)
    assert dz[1] > dz[2] > 0  # the far (cut) side bends back more than the near end
    dz_own, _ = torso_relief(m, pix, face_half=20.0, metres_per_px=0.001)
    assert dz_own[0] > 0  # without the axis the run's own middle is taken as the front


def test_eye_points_survive_a_collapsed_eye_contour():
    can = np.asarray(SyntheticSubject(seed=0).canonical_landmarks, float).copy()
    ring = eye_loops()[0]
    can[ring, 1] = can[ring, 1].mean()  # a fully closed eye seen as a line: no area
    p, _ = eye_points(can, 40, np.random.default_rng(0))
    assert p.shape == (40, 3) and np.isfinite(p).all()
