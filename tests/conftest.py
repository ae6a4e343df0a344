import os
from pathlib import Path

import pytest

os.environ.setdefault("AVATAR3D_QUIET", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or a clean skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic_video(tmp_path_factory):
    """A 6 s synthetic talking video (256 px) and its ground truth."""
    from avatar3d.synthetic import make_talking_video

    d = tmp_path_factory.mktemp("synthetic")
    truth = make_talking_video(d / "subject.mp4", seconds=6.0, fps=25, size=256, seed=0)
    return d / "subject.mp4", truth


@pytest.fixture(scope="session")
def fitted_avatar(synthetic_video, tmp_path_factory):
    """An avatar fitted on the synthetic subject with a short fast-preset run (shared by tests)."""
    from avatar3d import Avatar

    video, _ = synthetic_video
    work = tmp_path_factory.mktemp("fit")
    steps = int(os.environ.get("AVATAR3D_TEST_STEPS", "400"))
    return Avatar.fit(video, preset="fast", workdir=work, steps=steps, progress=False, log=None)
