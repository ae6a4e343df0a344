"""Driving an avatar: motion, blinks, backgrounds and cameras, as Avatar.render uses them."""

import numpy as np
import pytest
import torch

from avatar3d.core.camera import Camera
from avatar3d.drive import (
    background_colour,
    background_image,
    blink_schedule,
    blinks,
    generated_motion,
    head_poses,
    orbit_camera,
    resolve_cameras,
    rest_camera,
)
from avatar3d.errors import CameraError, ConfigError
from avatar3d.io.meta import AvatarMeta

META = AvatarMeta(
    width=64,
    height=48,
    K=[[60.0, 0, 32], [0, 60.0, 24], [0, 0, 1]],
    rest_viewmat=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0.5], [0, 0, 0, 1]],
    fps=25.0,
    n_mels=80,
    source_size=(128, 96),
)


def test_blinks_are_natural_and_deterministic():
    b = blink_schedule(25 * 60, 25.0)
    assert b.min() == 0.0 and b.max() == pytest.approx(1.0, abs=0.05)
    closed = np.diff((b > 0.5).astype(int))
    n = (closed == 1).sum()
    assert 10 <= n <= 26  # one every 2.5-5 s over a minute
    assert np.array_equal(b, blink_schedule(25 * 60, 25.0))
    assert np.array_equal(blinks("none", 5, 25.0, torch.zeros(3)), np.zeros(5, np.float32))
    track = torch.tensor([0.0, 0.5, 1.0])
    assert blinks("track", 7, 25.0, track).tolist() == [0.0, 0.5, 1.0, 1.0, 0.5, 0.0, 0.0]  # mirrored loop
    with pytest.raises(ConfigError, match="values for 4 frames"):
        blinks([0.1, 0.2], 4, 25.0, track)


def test_head_motion_is_small_smooth_and_a_rotation():
    P = generated_motion(250, 25.0)
    R = P[:, :3, :3]
    assert np.allclose(R @ R.transpose(0, 2, 1), np.eye(3), atol=1e-9)
    yaw = np.degrees(np.arctan2(R[:, 0, 2], R[:, 2, 2]))
    assert np.abs(yaw).max() < 7.0 and np.abs(np.diff(yaw)).max() < 0.5
    assert np.array_equal(head_poses("static", 3, 25.0, None), np.tile(np.eye(4), (3, 1, 1)))
    with pytest.raises(ConfigError, match="pose mode"):
        head_poses("wobble", 3, 25.0, None)


def test_backgrounds():
    assert background_colour("#ff8000") == pytest.approx((1.0, 128 / 255, 0.0))
    assert background_colour("plate") is None
    cam = Camera(np.array(META.K), np.array(META.rest_viewmat), 32, 24)
    plate = np.full((48, 64, 3), 255, np.uint8)
    assert background_image("plate", cam, plate).shape == (1, 24, 32, 3)
    assert background_image("green", cam, plate).tolist() == [[0.0, 1.0, 0.0]]
    for bad in ("purple", "#12345g", (1, 2)):
        with pytest.raises(ConfigError):
            background_colour(bad)


def test_cameras_resolve_every_spec():
    rest = rest_camera(META)
    assert (rest.width, rest.height) == (64, 48)
    cams = resolve_cameras(META, None, 3)
    assert len(cams) == 3 and (cams[0].width, cams[0].height) == (128, 96)  # the clip's own size
    orbit = resolve_cameras(META, "orbit", 8, (32, 32))
    yaws = [c.camera_to_world[0, 3] for c in orbit]
    assert max(yaws) > 0 > min(yaws)
    front = orbit_camera(META, size=(64, 48))
    assert front.K[0, 0] == pytest.approx(60.0)
    assert len(resolve_cameras(META, [rest], 4)) == 4
    with pytest.raises(CameraError, match="2 cameras for 3 frames"):
        resolve_cameras(META, [rest, rest], 3)
    with pytest.raises(CameraError, match="unknown camera"):
        resolve_cameras(META, "sideways", 3)
