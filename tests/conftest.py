"""Suite-wide fixtures and the one place where markers turn into skips.

Markers (declared in pyproject.toml): ``gpu`` tests are skipped without CUDA, ``shared_data`` tests
when ``../shared/data`` is absent, and ``slow`` marks the end-to-end and fitting tests that the fast
lane (``pytest -m "not slow"``) leaves out. :func:`pytest_collection_modifyitems` also adds the
markers a test's fixtures imply, so a test cannot need a GPU, the real clips or a fitted avatar
without carrying the marker that says so.

A full run (``python -m pytest -q``) runs the fast lane first, then the slow tests. With
``AVATAR3D_FAST_LANE_GATE=1`` (set by ``.ci/run``) the slow tests are skipped once a fast test has
failed, so a broken change fails CI in minutes rather than after the end-to-end fits.
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests import their helpers: from _tiny import ...

os.environ.setdefault("AVATAR3D_QUIET", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# fixtures that imply a marker: the real clips, or a fit / end-to-end run (minutes on 2 CPU cores)
FIXTURE_MARKERS = {
    "shared_data": "shared_data",
    "real_data": "shared_data",  # tests/audio, tests/io: their own fixture for ../shared/data
    "fitted_avatar": "slow",
    "synthetic_video": "slow",
}


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items) -> None:
    """Add the markers implied by fixtures, then skip ``gpu`` without CUDA and ``shared_data``
    without ``../shared/data``."""
    for item in items:
        for fixture, marker in FIXTURE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()) and item.get_closest_marker(marker) is None:
                item.add_marker(getattr(pytest.mark, marker))
    has_gpu = any(item.get_closest_marker("gpu") for item in items) and _cuda_available()
    skip_gpu = pytest.mark.skip(reason="needs CUDA (marked gpu)")
    skip_data = pytest.mark.skip(reason=f"needs the real clips in {SHARED_DATA} (marked shared_data)")
    for item in items:
        if item.get_closest_marker("gpu") and not has_gpu:
            item.add_marker(skip_gpu)
        if item.get_closest_marker("shared_data") and not SHARED_DATA.is_dir():
            item.add_marker(skip_data)
    items.sort(key=lambda item: item.get_closest_marker("slow") is not None)  # stable: fast lane first


_fast_lane_failed = False


def pytest_runtest_logreport(report) -> None:
    global _fast_lane_failed
    if report.failed and "slow" not in report.keywords:
        _fast_lane_failed = True


def pytest_runtest_setup(item) -> None:
    if (
        _fast_lane_failed
        and item.get_closest_marker("slow")
        and os.environ.get("AVATAR3D_FAST_LANE_GATE") == "1"
    ):
        pytest.skip("a fast-lane test failed (AVATAR3D_FAST_LANE_GATE=1): slow tests not run")


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
