"""The synthetic subject: determinism, controls act where they should, MediaPipe sees a face."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar3d.core.camera import Camera
from avatar3d.synthetic import LABEL_HEAD, LABEL_TORSO, PART_NAMES, SyntheticSubject, get_subject
from avatar3d.synthetic._face import L_EYE_LOWER, L_EYE_UPPER, LIP_LOWER_OUTER, R_EYE_LOWER, R_EYE_UPPER
from avatar3d.synthetic._geometry import euler_matrix

BACKEND = "torch"  # the reference: no JIT build in the tests, identical to the compiled kernels


@pytest.fixture(scope="module")
def subject() -> SyntheticSubject:
    return get_subject()


def project(cam: Camera, pts: np.ndarray) -> np.ndarray:
    p = cam.K @ (cam.world_to_camera[:3, :3] @ pts.T + cam.world_to_camera[:3, 3:4])
    return (p[:2] / p[2]).T


def box_mask(shape: tuple[int, int], pts: np.ndarray, margin: float) -> np.ndarray:
    x0, y0 = np.floor(pts.min(0) - margin).astype(int)
    x1, y1 = np.ceil(pts.max(0) + margin).astype(int)
    m = np.zeros(shape, bool)
    m[max(y0, 0) : y1, max(x0, 0) : x1] = True
    return m


def changed(a: torch.Tensor, b: torch.Tensor, thr: float = 0.08) -> np.ndarray:
    return ((a - b).abs().amax(-1) > thr).numpy()


def test_gaussians_are_well_formed(subject):
    g = subject.gaussians()
    n = subject.n
    assert set(g) == {"means", "quats", "scales", "opacities", "colors"}
    assert g["means"].shape == (n, 3) and g["quats"].shape == (n, 4) and g["scales"].shape == (n, 3)
    assert g["opacities"].shape == (n,) and g["colors"].shape == (n, 3)
    for v in g.values():
        assert v.dtype == torch.float32 and torch.isfinite(v).all()
    assert torch.allclose(g["quats"].norm(dim=-1), torch.ones(n), atol=1e-5)
    assert (g["colors"] >= 0).all() and (g["colors"] <= 1).all()
    assert 0.9 < float(g["opacities"].mean()) < 1.0
    # discs: thin along the normal, and not huge (at most ~1 cm std)
    assert (g["scales"][:, 2] < 0.3 * g["scales"][:, 0]).all()
    assert float(g["scales"].max()) < 0.012
    assert 5000 < n < 15000
    assert set(subject.labels.unique().tolist()) == {LABEL_HEAD, LABEL_TORSO}
    assert subject.part.max() < len(PART_NAMES)
    # head space: landmark centroid at the origin, iris distance 0.063 m, face towards -z
    lm = subject.canonical_landmarks
    assert np.allclose(lm.mean(0), 0, atol=1e-9)
    assert np.linalg.norm(lm[468] - lm[473]) == pytest.approx(0.063, rel=1e-6)
    assert lm[4, 2] < lm[234, 2]  # nose tip nearer the frontal camera than the cheek rim
    assert lm[152, 1] > lm[10, 1]  # chin below the forehead (y down)


def test_same_seed_same_frames(subject):
    other = SyntheticSubject(seed=0, n_gaussians=subject.n_gaussians)
    R = euler_matrix(0.2, -0.05, 0.03)
    ga = subject.gaussians(0.4, 0.3, R, np.array([0.004, 0.0, 0.002]))
    gb = other.gaussians(0.4, 0.3, R, np.array([0.004, 0.0, 0.002]))
    for k in ga:
        assert torch.equal(ga[k], gb[k]), k
    cam = subject.portrait_camera(96)
    a = subject.render(cam, 0.4, 0.3, R, backend=BACKEND)
    b = other.render(cam, 0.4, 0.3, R, backend=BACKEND)
    assert torch.equal(a, b)
    different = SyntheticSubject(seed=1, n_gaussians=subject.n_gaussians)
    assert not torch.equal(different.gaussians()["means"][:100], ga["means"][:100])


def test_head_pose_moves_head_not_torso(subject):
    R = euler_matrix(0.25, 0.1, -0.05)
    t = np.array([0.01, -0.005, 0.003])
    g0, g1 = subject.gaussians(), subject.gaussians(head_R=R, head_t=t)
    torso = subject.head_weight == 0
    head = subject.head_weight == 1
    assert torch.equal(g0["means"][torso], g1["means"][torso])
    p = torch.as_tensor(subject.neck_pivot, dtype=torch.float32)
    want = (
        (g0["means"][head] - p) @ torch.as_tensor(R, dtype=torch.float32).T + p + torch.as_tensor(t).float()
    )
    assert torch.allclose(g1["means"][head], want, atol=1e-6)
    # landmarks follow the same rule, and head_pose_in_camera matches the camera projection
    cam = subject.portrait_camera(256)
    lm = subject.landmarks(0.3, 0.0, R, t)
    Rc, tc = subject.head_pose_in_camera(cam, R, t)
    lm_cam = subject.landmarks(0.3) @ Rc.T + tc
    assert np.allclose(lm_cam, lm @ cam.world_to_camera[:3, :3].T + cam.world_to_camera[:3, 3], atol=1e-9)


def test_jaw_changes_the_mouth_region(subject):
    cam = subject.portrait_camera(160)
    rest = subject.render(cam, backend=BACKEND)[0]
    open_ = subject.render(cam, jaw_open=0.8, backend=BACKEND)[0]
    diff = changed(rest, open_)
    assert diff.sum() > 150, "opening the jaw changes almost nothing"
    lips_chin = [13, 14, 0, 17, 61, 291, 152, 148, 377, 176, 400] + LIP_LOWER_OUTER
    pts = np.concatenate([project(cam, subject.landmarks(j)[lips_chin]) for j in (0.0, 0.8)])
    region = box_mask(diff.shape, pts, margin=5)
    assert diff[region].sum() / diff.sum() > 0.9
    # the opening is dark (mouth interior) between the lips
    gap = project(cam, subject.landmarks(0.8)[[13, 14]]).mean(0).round().astype(int)
    assert float(open_[gap[1], gap[0]].mean()) < 0.45
    # the upper face stays put
    eyes = box_mask(
        diff.shape, project(cam, subject.canonical_landmarks[R_EYE_UPPER + L_EYE_UPPER]), margin=6
    )
    assert diff[eyes].sum() == 0


def test_blink_changes_the_eye_region(subject):
    cam = subject.portrait_camera(160)
    rest = subject.render(cam, backend=BACKEND)[0]
    shut = subject.render(cam, blink=1.0, backend=BACKEND)[0]
    diff = changed(rest, shut, 0.06)
    assert diff.sum() > 30, "blinking changes almost nothing"
    region = np.zeros_like(diff)
    for eye in (R_EYE_UPPER + R_EYE_LOWER, L_EYE_UPPER + L_EYE_LOWER):
        region |= box_mask(diff.shape, project(cam, subject.canonical_landmarks[eye]), margin=5)
    assert diff[region].sum() / diff.sum() > 0.9
    half = subject.render(cam, blink=0.5, backend=BACKEND)[0]
    assert 0 < changed(rest, half, 0.06).sum() < diff.sum() + 20


def test_mediapipe_finds_the_face_frontal_and_turned(subject):
    mp = pytest.importorskip("mediapipe")
    size = 256
    portrait = subject.portrait_camera(size)
    target = (0.0, float(portrait.center[1]), 0.0)
    dist = float(np.linalg.norm(portrait.center - np.asarray(target)))
    cams = [
        Camera.orbit(yaw, 0.0, distance=dist, target=target, width=size, height=size, focal=portrait.K[0, 0])
        for yaw in (0.0, -30.0, 30.0)
    ]
    images = subject.render(cams, jaw_open=0.3, backend=BACKEND)
    truth = subject.landmarks(0.3)
    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, refine_landmarks=True, max_num_faces=1
    ) as fm:
        for cam, img in zip(cams, images):
            res = fm.process((img.numpy() * 255).astype(np.uint8))
            assert res.multi_face_landmarks, f"no face found at {cam.center.round(3)}"
            lm = res.multi_face_landmarks[0].landmark
            assert len(lm) == 478
            found = np.array([[p.x * size, p.y * size] for p in lm])
            want = project(cam, truth)
            iod = np.linalg.norm(want[468] - want[473])
            assert np.median(np.linalg.norm(found - want, axis=1)) < 0.12 * iod


def _axis_angle(axis, angle: float) -> np.ndarray:
    """Rodrigues' formula written out: the oracle for the roma-based rotations."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * (K @ K)


def test_head_rotation_keeps_its_sign_convention():
    """yaw about -y (the face turns to the image's right), pitch about x (nods down), roll about z,
    composed yaw @ pitch @ roll."""
    rng = np.random.default_rng(0)
    for yaw, pitch, roll in rng.uniform(-1.2, 1.2, (50, 3)):
        want = _axis_angle([0, -1, 0], yaw) @ _axis_angle([1, 0, 0], pitch) @ _axis_angle([0, 0, 1], roll)
        np.testing.assert_allclose(euler_matrix(yaw, pitch, roll), want, atol=1e-12)
    front = np.array([0.0, 0.0, -1.0])  # a point towards the frontal camera
    assert (euler_matrix(0.3, 0.0, 0.0) @ front)[0] > 0.2  # positive yaw: towards the image's right
    assert (euler_matrix(0.0, 0.3, 0.0) @ front)[1] > 0.2  # positive pitch: down (OpenCV y)


def test_the_neck_blends_the_head_rotation_by_its_weight(subject):
    """A Gaussian that follows the head by weight w turns by w times the head's rotation angle."""
    R = euler_matrix(0.4, -0.2, 0.1)
    g0, _ = subject.posed()
    g1, _ = subject.posed(head_R=R, head_t=np.zeros(3))
    w = subject.head_weight
    part = ((w > 0.05) & (w < 0.95)).nonzero().squeeze(1)
    assert len(part) > 10
    angle = np.arccos((np.trace(R) - 1) / 2)
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / (2 * np.sin(angle))
    pivot = subject.neck_pivot
    for k in part[:: max(1, len(part) // 20)].tolist():
        Rw = _axis_angle(axis, float(w[k]) * angle)
        want = Rw @ (g0["means"][k].numpy() - pivot) + pivot
        np.testing.assert_allclose(g1["means"][k].numpy(), want, atol=1e-6)
