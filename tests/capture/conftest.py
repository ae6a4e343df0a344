"""Fixtures for the capture tests: synthetic talking-face videos built from public-domain photos."""

from __future__ import annotations

from pathlib import Path

import pytest

from avatar3d.capture import CaptureConfig, run_capture
from avatar3d.synthetic import make_talking_video

from ._synth import ROLL_DEGREES, astronaut_face, rotate_about_centre, write_clip


@pytest.fixture(scope="session")
def rolling_clip(tmp_path_factory) -> tuple[Path, list[float]]:
    """12 frames of the astronaut rotating in the image plane about the image centre (known roll)."""
    d = tmp_path_factory.mktemp("rolling")
    base = astronaut_face(256)
    frames = [rotate_about_centre(base, a) for a in ROLL_DEGREES]
    return write_clip(d / "rolling.mp4", frames), ROLL_DEGREES


@pytest.fixture(scope="session")
def rolling_capture(rolling_clip, tmp_path_factory):
    """The rolling clip captured (full pipeline, default config)."""
    video, _ = rolling_clip
    out = tmp_path_factory.mktemp("cap") / "rolling_capture"
    return run_capture(video, out, CaptureConfig(), progress=False)


@pytest.fixture(scope="session")
def synthetic_talking_clip(tmp_path_factory):
    """(video path, SyntheticTruth): the synthetic subject talking with head motion, 3 s, 25 fps,
    256 px, seed 0 (rendered once per session, single-threaded)."""
    import torch

    d = tmp_path_factory.mktemp("capture_synthetic")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the rendering is many small ops: extra threads only spin
    try:
        truth = make_talking_video(d / "synthetic.mp4", seconds=3.0, fps=25, size=256, seed=0)
    finally:
        torch.set_num_threads(threads)
    return d / "synthetic.mp4", truth
