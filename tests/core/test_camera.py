import math

import numpy as np
import pytest

from avatar3d import Camera, CameraError


def test_frontal_is_identity_rotation():
    c = Camera.frontal(distance=0.5)
    np.testing.assert_allclose(c.world_to_camera[:3, :3], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(c.center, [0, 0, -0.5], atol=1e-12)


def test_orbit_keeps_target_centred_and_distance():
    for yaw in (-45, -30, 0, 30, 45):
        c = Camera.orbit(yaw, 10, distance=0.7, width=300, height=200)
        p = c.world_to_camera @ np.array([0, 0, 0, 1.0])
        assert abs(p[0]) < 1e-9 and abs(p[1]) < 1e-9 and abs(p[2] - 0.7) < 1e-9
    c = Camera.orbit(30)
    assert c.center[0] > 0  # positive yaw moves the camera to +x


def test_stereo_baseline():
    left, right = Camera.frontal().stereo(0.064)
    assert math.isclose(np.linalg.norm(left.center - right.center), 0.064, rel_tol=1e-9)
    assert left.center[0] < right.center[0]


def test_json_round_trip(tmp_path):
    c = Camera.orbit(12, -5, width=320, height=240)
    c.to_json(tmp_path / "c.json")
    d = Camera.from_json(tmp_path / "c.json")
    np.testing.assert_allclose(d.world_to_camera, c.world_to_camera)
    np.testing.assert_allclose(d.K, c.K)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(width=0),
        dict(width=100000),
        dict(fov_degrees=0),
        dict(fov_degrees=200),
        dict(distance=-1),
        dict(focal=-3),
    ],
)
def test_absurd_cameras_raise(kwargs):
    with pytest.raises(CameraError):
        Camera.orbit(0, **kwargs)


def test_non_rotation_raises():
    with pytest.raises(CameraError, match="rotation"):
        Camera(np.eye(3) * 100 + np.diag([0, 0, -99]), np.diag([2.0, 1, 1, 1]), 64, 64)


def test_bad_json(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(CameraError, match="not valid JSON"):
        Camera.from_json(p)
    p.write_text('{"width": 10}')
    with pytest.raises(CameraError, match="invalid camera"):
        Camera.from_json(p)
