"""`fit` + `render` on a real talking-head clip from ../shared/data (skipped when it is absent)."""

import numpy as np
import pytest

from avatar3d.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


def test_fit_and_render_real_clip(shared_data, tmp_path, capsys):
    video = shared_data / "talk_b.mp4"
    cfg = tmp_path / "cfg.yaml"
    # a short CPU run: the point is that every stage works on real footage, not final quality
    cfg.write_text("preset: fast\ncapture:\n  max_size: 256\n  max_frames: 60\ntrain:\n  resolution: 192\n")
    assert main(["fit", str(video), "-o", str(tmp_path / "av"), "--config", str(cfg), "--steps", "60"]) == 0
    assert (tmp_path / "av" / "model.safetensors").is_file()
    out = tmp_path / "o.mp4"
    code = main(
        [
            "render",
            str(tmp_path / "av"),
            "--audio",
            str(shared_data / "speech_a_44k_stereo.wav"),
            "-o",
            str(out),
            "--camera",
            "orbit",
            "--size",
            "192x192",
        ]
    )
    assert code == 0, capsys.readouterr().err
    from avatar3d.io.media import iter_frames, probe_video

    info = probe_video(out)
    assert info.has_audio and info.width == 192 and abs(info.duration - 5.0) < 0.2
    frames = np.stack(list(iter_frames(out, max_frames=10)))
    assert frames.std() > 10  # not a blank video
