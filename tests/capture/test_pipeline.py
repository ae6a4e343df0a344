"""run_capture end to end on small synthetic videos: poses, round trip, errors, hard cases."""

import numpy as np
import pytest
import roma
import torch

from avatar3d.capture import CaptureConfig, run_capture
from avatar3d.capture.geometry import project
from avatar3d.core.camera import Camera
from avatar3d.errors import MediaError, NoFaceError
from avatar3d.io.captureset import CaptureSet
from avatar3d.io.outputs import OutputError, write_marker

from ._synth import FPS, SR, astronaut_face, grace_hopper_face, rotate_about_centre, write_clip

FAST = {"focal": 700.0}  # skip the focal search where the focal is not under test


def test_in_plane_roll_is_recovered(rolling_capture, rolling_clip):
    cs = rolling_capture
    _, roll = rolling_clip
    assert cs.n_frames == len(roll) and cs.valid.all()
    R = cs.rotation.astype(np.float64)
    rv = np.degrees(roma.rotmat_to_rotvec(torch.as_tensor(R @ R[0].T)).numpy())  # (T, 3) about cam axes
    # an image rotated counter-clockwise by a about the principal point = camera rotation of -a about z
    np.testing.assert_allclose(rv[:, 2], -np.array(roll), atol=2.5)
    assert np.abs(rv[:, :2]).max() < 3.0
    assert np.nanmedian(cs.reprojection_error) * 512 / 256 < 2.5
    assert 1.0 < cs.focal / cs.width < 8.0


def test_capture_set_contents_and_round_trip(rolling_capture):
    cs = CaptureSet.load(rolling_capture.root)
    T = cs.n_frames
    assert (cs.width, cs.height, cs.fps) == (256, 256, FPS)
    shapes = {
        "rotation": (T, 3, 3),
        "translation": (T, 3),
        "landmarks2d": (T, 478, 2),
        "landmarks3d": (T, 478, 3),
        "canonical_landmarks": (478, 3),
        "valid": (T,),
        "mouth_open": (T,),
        "jaw_open": (T,),
        "blink": (T,),
        "expression": (T, 16),
        "features": (T, 16, 80),
    }
    for k, s in shapes.items():
        assert getattr(cs, k).shape == s, k
    assert cs.image(3).shape == (256, 256, 3) and cs.image(3).dtype == np.uint8
    m = cs.mask(3)
    assert m.shape == (256, 256) and set(np.unique(m)) <= {0, 255} and (m > 0).mean() > 0.1
    for kind in ("face", "head", "torso", "mouth"):
        assert cs.mask(3, kind).shape == (256, 256)
    assert cs.background().shape == (256, 256, 3)
    wave, sr = cs.audio()
    assert sr == SR and abs(len(wave) / SR - T / FPS) < 0.05
    # camera(i) projects the pose-free 3D landmarks onto the 2D landmarks
    for i in (0, 5, T - 1):
        cam = cs.camera(i)
        assert isinstance(cam, Camera)
        Xc = cs.landmarks3d[i] @ cam.world_to_camera[:3, :3].T + cam.world_to_camera[:3, 3]
        assert np.abs(project(Xc, cam.K) - cs.landmarks2d[i]).max() < 0.05
        # transforms.json (nerfstudio c2w, OpenGL) decodes to the same camera
        d = dict(cs.transforms, **cs.frames[i])
        np.testing.assert_allclose(Camera.from_dict(d).world_to_camera, cam.world_to_camera, atol=1e-5)
    sp = cs.transforms["avatar3d"]["train_split"]
    assert sp["train"][0] == 0 and sp["test"][1] == T and sp["train"][1] == sp["test"][0]
    assert (
        cs.frames[0]["file_path"] == "images/000000.jpg" and cs.frames[0]["mask_path"] == "masks/000000.png"
    )


def test_noise_video_raises_no_face_and_keeps_existing_output(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, size=(128, 128, 3), dtype=np.uint8) for _ in range(6)]
    video = write_clip(tmp_path / "noise.mp4", frames)

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(OutputError, match="did not write"):  # a directory we did not write: refused at once
        run_capture(video, out, progress=False)
    write_marker(out, "capture")  # an earlier capture of ours: replaced only on success
    with pytest.raises(NoFaceError, match="no face found in .*noise.mp4"):
        run_capture(video, out, progress=False)
    assert (out / "keep.txt").read_text() == "old"  # the old output is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noise.mp4", "out"]  # no temp leftovers


def test_missing_audio_track_is_a_media_error(tmp_path):
    video = write_clip(tmp_path / "mute.mp4", [astronaut_face(128)] * 3, audio=None)
    with pytest.raises(MediaError, match="has no audio track"):
        run_capture(video, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_silent_track_is_fine_and_one_frame_works(tmp_path):
    video = write_clip(tmp_path / "one.mp4", [astronaut_face(192)], audio=np.zeros(SR // 5, np.float32))
    cs = run_capture(video, tmp_path / "out", CaptureConfig(**FAST), progress=False)
    assert cs.n_frames == 1 and cs.valid.all()
    assert cs.features.shape == (1, 16, 80) and np.isfinite(cs.features).all()
    assert cs.expression.shape == (1, 16) and np.isfinite(cs.expression).all()


def test_two_faces_warn_and_one_subject_is_tracked(tmp_path):
    frames = []
    for k in range(8):
        canvas = np.full((256, 448, 3), 90, np.uint8)
        canvas[20:240, 150 + k : 370 + k] = astronaut_face(220)  # larger, central, drifting right
        canvas[60:200, 10:150] = grace_hopper_face(140)
        frames.append(canvas)
    video = write_clip(tmp_path / "two.mp4", frames)
    with pytest.warns(UserWarning, match="faces in frame"):
        cs = run_capture(video, tmp_path / "out", CaptureConfig(**FAST), progress=False)
    assert cs.transforms["avatar3d"]["faces_max"] >= 2
    assert cs.valid.all()
    centres = cs.landmarks2d.mean(1)  # (T, 2)
    assert (centres[:, 0] > 200).all()  # always the astronaut, never the face on the left
    assert np.abs(np.diff(centres[:, 0])).max() < 6


def test_face_lost_in_some_frames_is_interpolated(tmp_path):
    base = astronaut_face(256)
    lost = {3, 4, 9}
    frames = []
    for k in range(10):
        f = rotate_about_centre(base, 1.5 * k, shift=(2.0 * k, 0.0))
        if k in lost:
            f = np.full_like(f, 127)
        frames.append(f)
    video = write_clip(tmp_path / "partial.mp4", frames)
    cs = run_capture(video, tmp_path / "out", CaptureConfig(**FAST), progress=False)
    assert cs.valid.tolist() == [k not in lost for k in range(10)]
    for name in ("rotation", "translation", "landmarks2d", "landmarks3d", "expression", "mouth_open"):
        assert np.isfinite(getattr(cs, name)).all(), name
    # the lost frames' landmarks lie between their neighbours'
    c = cs.landmarks2d.mean(1)[:, 0]
    assert c[2] - 1 <= c[3] <= c[4] <= c[5] + 1
    assert cs.mask(3, "face").any()  # region masks from interpolated landmarks
    assert np.isnan(cs.reprojection_error[list(lost)]).all()


def test_portrait_video_stride_and_max_frames(tmp_path):
    base = astronaut_face(192)
    frames = []
    for k in range(10):
        f = np.full((320, 192, 3), 60, np.uint8)
        f[64:256] = rotate_about_centre(base, k)
        frames.append(f)
    video = write_clip(tmp_path / "portrait.mp4", frames)
    cfg = CaptureConfig(max_size=160, stride=2, max_frames=4, region_masks=False, **FAST)
    cs = run_capture(video, tmp_path / "out", cfg, progress=False)
    assert (cs.width, cs.height) == (96, 160)
    assert cs.n_frames == 4 and cs.fps == pytest.approx(FPS / 2)
    assert cs.frame_indices.tolist() == [0, 2, 4, 6]
    np.testing.assert_allclose(cs.times, np.array([0, 2, 4, 6]) / FPS)
    assert cs.focal == pytest.approx(700.0)
    wave, sr = cs.audio()
    assert abs(len(wave) / sr - 4 / (FPS / 2)) < 0.02
    assert cs.mask_kinds == ["person"] and not (cs.root / "masks_face").exists()
    lm = cs.landmarks2d[cs.valid]
    assert lm.size and (lm[..., 0] > 0).all() and (lm[..., 0] < 96).all() and (lm[..., 1] < 160).all()
