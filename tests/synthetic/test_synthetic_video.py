"""The synthetic talking video: H.264 + AAC file, ground truth that re-renders the frames."""

from __future__ import annotations

import numpy as np
import pytest

from avatar3d.core.camera import Camera
from avatar3d.core.constants import SAMPLE_RATE
from avatar3d.synthetic import (
    SyntheticTruth,
    blink_track,
    head_motion_track,
    make_talking_video,
    render_truth_view,
)

media = pytest.importorskip("avatar3d.io.media")


def test_motion_and_blink_tracks():
    R, t = head_motion_track(200, 25, seed=0)
    assert R.shape == (200, 3, 3) and t.shape == (200, 3)
    assert np.allclose(R @ R.transpose(0, 2, 1), np.eye(3), atol=1e-9)
    yaw = np.degrees(np.arctan2(R[:, 0, 2], R[:, 2, 2]))
    assert 10 < np.abs(yaw).max() <= 15.01
    assert np.abs(t).max() < 0.01
    b = blink_track(250, 25, seed=0)
    closed = np.nonzero(b > 0.9)[0]
    assert len(closed) >= 2 and b.min() == 0 and b.max() <= 1
    starts = closed[np.r_[True, np.diff(closed) > 1]]
    assert np.all(np.diff(starts) >= 2.0 * 25 - 1)  # blinks every 2-5 s


def test_video_file_and_truth(tmp_path):
    path = tmp_path / "talk.mp4"
    truth = make_talking_video(path, seconds=0.8, fps=10, size=96, seed=3, n_gaussians=3000, backend="torch")
    info = media.probe_video(path)
    assert (info.width, info.height, info.n_frames) == (96, 96, 8)
    assert info.fps == pytest.approx(10)
    assert info.has_audio and info.audio_rate == SAMPLE_RATE
    if hasattr(info, "codec"):
        assert info.codec == "h264" and info.audio_codec == "aac"
    assert truth.n_frames == 8 and truth.head_R.shape == (8, 3, 3) and truth.head_t.shape == (8, 3)
    assert truth.jaw_open.shape == (8,) and truth.blink.shape == (8,) and truth.sr == SAMPLE_RATE
    audio, sr = media.read_audio(path, sr=SAMPLE_RATE)
    assert abs(len(audio) - len(truth.wave)) < 0.05 * sr

    # save / load round trip
    truth.save(tmp_path / "truth.npz")
    back = SyntheticTruth.load(tmp_path / "truth.npz")
    assert np.array_equal(back.head_R, truth.head_R) and np.array_equal(back.wave, truth.wave)
    assert np.allclose(back.camera.K, truth.camera.K) and back.n_gaussians == truth.n_gaussians

    # the truth re-renders the video frames (up to H.264 loss)
    frames = list(media.iter_frames(path))
    for i in (0, 6):
        ref = render_truth_view(back, i, back.camera, backend="torch")
        psnr = -10 * np.log10(np.mean((frames[i] / 255.0 - ref) ** 2))
        assert psnr > 30, (i, psnr)
    # and any novel view
    side = Camera.orbit(35.0, 5.0, distance=0.9, target=(0, 0.04, 0), width=96, height=64)
    img = render_truth_view(back, 5, [side], backend="torch")
    assert img.shape == (1, 64, 96, 3) and np.ptp(img) > 0.3
    with pytest.raises(IndexError):
        render_truth_view(back, 8, side)


def test_make_talking_video_rejects_absurd_camera_and_motion(tmp_path):
    for kw in ({"fov_degrees": 2.0}, {"max_yaw_degrees": -1.0}, {"max_yaw_degrees": float("nan")}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            make_talking_video(tmp_path / "x.mp4", seconds=0.2, size=64, **kw)
    assert not (tmp_path / "x.mp4").exists()
