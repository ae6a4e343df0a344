"""Stereo rendering: both eyes, packing, and the head's parallax against IPD and depth."""

import numpy as np
import pytest

from avatar3d.cli import main
from avatar3d.core.camera import Camera, StereoPair
from avatar3d.drive.stereo import (
    StereoRenderResult,
    expected_disparity,
    head_depth,
    head_disparity,
    head_render,
    pack_eyes,
    tagged_name,
)
from avatar3d.errors import Avatar3DError, CameraError
from avatar3d.io.media import probe_video, write_audio
from avatar3d.synthetic.speech import synth_speech


def test_stereo_pair_unpacks_and_keeps_axes_parallel():
    pair = Camera.frontal(width=64, height=64).stereo(0.07)
    assert isinstance(pair, StereoPair) and pair.ipd == 0.07
    left, right = pair
    assert np.allclose(left.world_to_camera[:3, :3], right.world_to_camera[:3, :3])
    assert np.isclose(np.linalg.norm(left.center - right.center), 0.07)
    assert (right.center - left.center) @ left.world_to_camera[0, :3] > 0  # right eye to the right
    with pytest.raises(CameraError):
        Camera.frontal().stereo(float("nan"))


def test_pack_layouts_and_names():
    a = np.zeros((2, 4, 6, 3), np.uint8)
    b = np.ones((2, 4, 6, 3), np.uint8)
    sbs, ou = pack_eyes(a, b, "sbs"), pack_eyes(a, b, "ou")
    assert sbs.shape == (2, 4, 12, 3) and sbs[:, :, :6].max() == 0 and sbs[:, :, 6:].min() == 1
    assert ou.shape == (2, 8, 6, 3) and ou[:, :4].max() == 0 and ou[:, 4:].min() == 1
    with pytest.raises(Avatar3DError):
        pack_eyes(a, b, "cross")
    assert (
        tagged_name("talk_LR.mp4", "sbs")
        and tagged_name("talk_TB.mp4", "ou")
        and not tagged_name("talk.mp4", "sbs")
    )


def test_stereo_render_parallax_matches_ipd_and_depth(fitted_avatar, tmp_path):
    """The head's disparity between the eyes is focal * IPD / depth within 10 %, for two IPDs and depths."""
    av = fitted_avatar
    wave = synth_speech(0.5, seed=3)
    for ipd, dist in ((0.063, 1.0), (0.1, 1.6)):
        cam = av.camera(size=(256, 256), distance_scale=dist)
        depth = head_depth(av, cam)
        res = av.render(
            wave,
            camera=cam.stereo(ipd),
            sample_rate=16000,
            pose="static",
            blink="none",
            background="black",
            progress=False,
        )
        assert isinstance(res, StereoRenderResult) and res.frames.shape[1:] == (256, 512, 3)
        assert not np.array_equal(res.left[0], res.right[0])
        ml, mr = (head_render(av, c)[0] for c in cam.stereo(ipd))
        got = head_disparity(res.left[0], res.right[0], ml, mr)
        want = expected_disparity(cam.K[0, 0], ipd, depth)
        assert abs(got - want) / want < 0.10, (ipd, got, want)
    out = res.with_layout("ou").save(tmp_path / "talk_TB.mp4")

    info = probe_video(out)
    assert (info.width, info.height) == (256, 512)


def test_cli_render_stereo(fitted_avatar, tmp_path, capsys):
    avd = fitted_avatar.save(tmp_path / "av")
    wav = write_audio(tmp_path / "a.wav", synth_speech(0.4, seed=1), 16000)
    out = tmp_path / "talk_LR.mp4"
    assert (
        main(
            [
                "render",
                str(avd),
                "--audio",
                str(wav),
                "-o",
                str(out),
                "--stereo",
                "--size",
                "64x48",
                "--ipd",
                "0.06",
            ]
        )
        == 0
    )
    info = probe_video(out)
    assert (info.width, info.height) == (128, 48)
    assert (
        main(["render", str(avd), "--audio", str(wav), "-o", str(tmp_path / "x.mp4"), "--layout", "ou"]) == 2
    )
    assert "--stereo" in capsys.readouterr().err
    assert (
        main(["render", str(avd), "--audio", str(tmp_path / "missing.wav"), "-o", str(out), "--stereo"]) == 2
    )
