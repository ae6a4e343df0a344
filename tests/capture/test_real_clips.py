"""Capture on the first frames of real talking videos from ../shared/data (skipped when absent)."""

import numpy as np
import pytest

from avatar3d.capture import CaptureConfig, run_capture
from avatar3d.capture.geometry import pose_jitter
from avatar3d.capture.overlay import draw_overlay, write_overlay
from avatar3d.eval.protocol import HEAD_CROP_SCALE
from avatar3d.io.media import probe_video

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def talk_a(shared_data, tmp_path_factory):
    video = shared_data / "talk_a.mp4"
    if not video.is_file():
        pytest.skip("talk_a.mp4 is absent")
    out = tmp_path_factory.mktemp("real") / "talk_a"
    return run_capture(video, out, CaptureConfig(max_frames=30), progress=False)


def test_talk_a_landmarks_pose_and_focal(talk_a):
    cs = talk_a
    assert cs.n_frames == 30 and cs.valid.all()
    assert max(cs.width, cs.height) == 512
    # the issue's scale: pixels of the evaluation's 512-px face crop (1.7 × the landmarks' extent)

    extent = np.median((cs.landmarks2d.max(1) - cs.landmarks2d.min(1)).max(1))
    err_crop = np.nanmedian(cs.reprojection_error) * 512 / (HEAD_CROP_SCALE * extent)
    assert err_crop <= 2.5, err_crop
    # the optical-flow tracks on the face were found and used
    assert cs.transforms["avatar3d"]["feature_tracks"]["tracks"] >= 30
    f = cs.focal / max(cs.width, cs.height)
    assert 1.0 < f < 8.0, f
    z = cs.translation[:, 2]
    assert (0.3 < z).all() and (z < 4.0).all()  # metres: a person in front of the camera
    rot_j, trans_j = pose_jitter(cs.rotation.astype(np.float64), cs.translation.astype(np.float64))
    assert rot_j < 0.5 and trans_j < 2.0  # degrees / mm per frame²
    # the landmarks lie on the person and the face is near the person's top
    lm = cs.landmarks2d[0]
    m = cs.mask(0)
    inside = m[lm[:, 1].astype(int).clip(0, cs.height - 1), lm[:, 0].astype(int).clip(0, cs.width - 1)] > 0
    assert inside.mean() > 0.95
    assert 0 <= cs.mouth_open.min() and cs.mouth_open.max() <= 1 and cs.mouth_open.std() > 0.05


@pytest.mark.slow
def test_overlay_video(talk_a, tmp_path):
    out = write_overlay(talk_a.root, tmp_path / "overlay.mp4", max_frames=10)
    info = probe_video(out)
    assert (
        info.n_frames == 10 and info.has_audio and (info.width, info.height) == (talk_a.width, talk_a.height)
    )
    img = talk_a.image(0)
    drawn = draw_overlay(img, talk_a, 0)
    changed = np.abs(drawn.astype(int) - img).sum(-1) > 30
    assert 0.01 < changed.mean() < 0.4  # the wireframe is drawn, the frame is not painted over
