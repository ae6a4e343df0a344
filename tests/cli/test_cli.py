"""CLI: bad input gives one line naming the problem, exit code 2, and no partial output."""

import numpy as np
import pytest

from avatar3d.cli import main


def _run(args, capsys):
    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def _face_frames(n=20, size=256):
    import cv2
    from skimage.data import astronaut

    img = cv2.resize(astronaut()[0:300, 100:400], (size, size))
    return [img] * n


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("capture", "fit", "render", "demo"):
        assert cmd in out


def test_fit_missing_input(tmp_path, capsys):
    code, err = _run(["fit", tmp_path / "nope.mp4", "-o", tmp_path / "av"], capsys)
    assert code == 2 and len(err) == 1 and "not found" in err[0]
    assert not (tmp_path / "av").exists()


def test_fit_not_a_video(tmp_path, capsys):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n" * 50)
    code, err = _run(["fit", bad, "-o", tmp_path / "av", "--steps", "1"], capsys)
    assert code == 2 and len(err) == 1 and "notes.mp4" in err[0]
    assert not (tmp_path / "av").exists()


def test_fit_no_face(tmp_path, capsys):
    from avatar3d.io.media import write_video

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for _ in range(10)]
    v = tmp_path / "noise.mp4"
    write_video(v, frames, 25, audio=rng.normal(0, 0.1, 16000).astype(np.float32), audio_sr=16000)
    code, err = _run(["fit", v, "-o", tmp_path / "av", "--steps", "1"], capsys)
    assert code == 2 and len(err) == 1 and "face" in err[0].lower()
    assert not (tmp_path / "av").exists()


def test_fit_no_audio(tmp_path, capsys):
    from avatar3d.io.media import write_video

    v = tmp_path / "mute.mp4"
    write_video(v, _face_frames(), 25)
    code, err = _run(["fit", v, "-o", tmp_path / "av", "--steps", "1"], capsys)
    assert code == 2 and len(err) == 1 and "audio" in err[0].lower()
    assert not (tmp_path / "av").exists()


def test_capture_no_face_leaves_nothing(tmp_path, capsys):
    from avatar3d.io.media import write_video

    rng = np.random.default_rng(1)
    v = tmp_path / "noise.mp4"
    write_video(
        v,
        [rng.integers(0, 255, (96, 96, 3), dtype=np.uint8) for _ in range(5)],
        25,
        audio=np.zeros(8000, np.float32),
        audio_sr=16000,
    )
    code, err = _run(["capture", v, "-o", tmp_path / "cap"], capsys)
    assert code == 2 and len(err) == 1
    assert not (tmp_path / "cap").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cap")]


def test_capture_with_and_without_feature_tracks(tmp_path, capsys):
    from avatar3d.io.captureset import CaptureSet
    from avatar3d.io.media import write_video

    v = tmp_path / "face.mp4"
    write_video(v, _face_frames(12), 25, audio=np.zeros(8000, np.float32), audio_sr=16000)
    assert _run(["capture", v, "-o", tmp_path / "on"], capsys)[0] == 0
    assert _run(["capture", v, "-o", tmp_path / "off", "--no-feature-tracks"], capsys)[0] == 0
    on = CaptureSet.load(tmp_path / "on").transforms["avatar3d"]
    off = CaptureSet.load(tmp_path / "off").transforms["avatar3d"]
    assert on["feature_tracks"]["tracks"] > 0 and on["config"]["feature_tracks"] is True
    assert off["feature_tracks"] is None and off["config"]["feature_tracks"] is False


def test_render_missing_avatar(tmp_path, capsys):
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"RIFF")
    code, err = _run(["render", tmp_path / "none", "--audio", wav, "-o", tmp_path / "o.mp4"], capsys)
    assert code == 2 and len(err) == 1 and "not found" in err[0]
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.slow
def test_render_unreadable_audio(fitted_avatar, tmp_path, capsys):
    fitted_avatar.save(tmp_path / "av")
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage" * 10)
    code, err = _run(["render", tmp_path / "av", "--audio", bad, "-o", tmp_path / "o.mp4"], capsys)
    assert code == 2 and len(err) == 1 and "broken.wav" in err[0]
    assert not (tmp_path / "o.mp4").exists()
    code, err = _run(
        ["render", tmp_path / "av", "--audio", tmp_path / "missing.wav", "-o", tmp_path / "o.mp4"], capsys
    )
    assert code == 2 and "missing.wav" in err[0]


@pytest.mark.slow
def test_render_absurd_camera(fitted_avatar, tmp_path, capsys):
    import json

    fitted_avatar.save(tmp_path / "av")
    cam = tmp_path / "cam.json"
    cam.write_text(
        json.dumps(
            {
                "width": 64,
                "height": 64,
                "K": [[-5, 0, 32], [0, 5, 32], [0, 0, 1]],
                "world_to_camera": np.eye(4).tolist(),
            }
        )
    )
    wav = tmp_path / "a.wav"
    import wave as wavmod

    from avatar3d.io.media import write_video  # noqa: F401  (audio written through soundfile-free path)

    with wavmod.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.zeros(16000)).astype("<i2").tobytes())
    code, err = _run(
        ["render", tmp_path / "av", "--audio", wav, "-o", tmp_path / "o.mp4", "--camera", cam], capsys
    )
    assert code == 2 and len(err) == 1 and "focal" in err[0]
    assert not (tmp_path / "o.mp4").exists()


def test_set_reaches_the_config_and_a_bad_key_is_one_line(tmp_path, capsys):
    from _tiny import tiny_avatar

    tiny_avatar().save(tmp_path / "av")
    wav = tmp_path / "a.wav"
    from avatar3d.io.media import write_audio

    write_audio(wav, np.zeros(8000, np.float32), 16000)
    code, err = _run(
        [
            "render",
            tmp_path / "av",
            "--audio",
            wav,
            "-o",
            tmp_path / "o.mp4",
            "--set",
            "render.backgroundd=white",
        ],
        capsys,
    )
    assert code == 2 and len(err) == 1 and "backgroundd" in err[0] and not (tmp_path / "o.mp4").exists()
    code, err = _run(
        ["render", tmp_path / "av", "--audio", wav, "-o", tmp_path / "o.mp4", "--set", "train.steps=3"],
        capsys,
    )
    assert code == 2 and "render.*" in err[0]
    code, err = _run(
        [
            "render",
            tmp_path / "av",
            "--audio",
            wav,
            "-o",
            tmp_path / "o.mp4",
            "--camera",
            "frontal",
            "--set",
            "render.background=#00ff00",
            "--no-watermark",
        ],
        capsys,
    )
    assert code == 0, err
    from avatar3d.io.media import iter_frames

    frame = next(iter(iter_frames(tmp_path / "o.mp4")))
    assert frame[0, 0, 1] > 200 and frame[0, 0, 0] < 60  # the corner shows the green background


def test_fit_takes_the_capture_flags_and_set(tmp_path, capsys, monkeypatch):
    """fit --focal and --set capture.*/train.* reach the config given to Avatar.fit."""
    import avatar3d.cli.commands as commands

    seen = {}

    def fake_fit(inp, cfg, workdir=None, steps=None):
        seen["cfg"] = cfg
        raise commands.Avatar3DError("stop here")

    monkeypatch.setattr(commands.Avatar, "fit", staticmethod(fake_fit))
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    code, err = _run(
        [
            "fit",
            video,
            "-o",
            tmp_path / "av",
            "--preset",
            "fast",
            "--focal",
            "700",
            "--set",
            "train.steps=12",
            "--set",
            "capture.stride=2",
        ],
        capsys,
    )
    assert code == 2 and "stop here" in err[0]
    cfg = seen["cfg"]
    assert (cfg.capture.focal, cfg.capture.stride, cfg.train.steps, cfg.preset) == (700.0, 2, 12, "fast")
