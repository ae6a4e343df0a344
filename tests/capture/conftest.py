"""Fixtures for the capture tests: synthetic talking-face videos built from public-domain photos."""

from __future__ import annotations

from pathlib import Path

import pytest

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
    from avatar3d.capture import CaptureConfig, run_capture

    video, _ = rolling_clip
    out = tmp_path_factory.mktemp("cap") / "rolling_capture"
    return run_capture(video, out, CaptureConfig(), progress=False)
