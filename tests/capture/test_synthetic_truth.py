"""run_capture on the synthetic subject against its exact ground truth (a 3 s, 25 fps, 256 px clip).

The metrics are those of ``benchmarks/bench_capture_synthetic.py`` (see its docstring for how the
capture's head frame is aligned with the truth's). The floors are looser than the issue's targets
(rotation ≤ 1.5°, translation ≤ 2 % of the head width, focal ≤ 5 %, mouth correlation ≥ 0.9, which
the benchmark prints on an 8 s, 320 px clip) and were measured to pass with margin; the two targets
the capture currently misses (focal and absolute depth) are recorded as non-strict xfails.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

_BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_capture_synthetic.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_capture_synthetic", _BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def metrics(tmp_path_factory) -> dict:
    import torch

    from avatar3d.capture import CaptureConfig, run_capture
    from avatar3d.synthetic import make_talking_video

    d = tmp_path_factory.mktemp("capture_synthetic")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the rendering is many small ops: extra threads only spin
    try:
        truth = make_talking_video(d / "synthetic.mp4", seconds=3.0, fps=25, size=256, seed=0)
        cap = run_capture(d / "synthetic.mp4", d / "capture", CaptureConfig(), progress=False)
    finally:
        torch.set_num_threads(threads)
    return _bench().evaluate(cap, truth)


def test_every_frame_tracked(metrics):
    assert metrics["n_valid"] == metrics["n_frames"] == 75


def test_head_rotation_tracks_truth(metrics):
    # measured 1.19° (pose-fitted head-frame offset) and 4.0° (offset from the canonical landmarks);
    # seed 1: 1.48° and 3.2°
    assert metrics["rotation_deg_posefit"] <= 3.0
    assert metrics["rotation_deg"] <= 6.0


def test_lateral_translation_tracks_truth(metrics):
    # measured 0.94 % of the head width across the image plane, 1.1 % after removing the constant offset
    # (seed 1: 0.83 % and 4.4 %; the motion part moves with the yaw error)
    assert metrics["translation_lateral_rel"] <= 0.03
    assert metrics["translation_motion_rel"] <= 0.08


def test_mouth_opening_follows_jaw(metrics):
    # measured 0.96
    assert metrics["mouth_corr"] >= 0.8


@pytest.mark.xfail(
    strict=False, reason="focal is set by the prior (2.0 x size): measured 24 % off (truth 3.16)"
)
def test_focal_close_to_truth(metrics):
    assert metrics["focal_rel"] <= 0.15


@pytest.mark.xfail(strict=False, reason="depth follows the focal error: measured 2.1 head widths off")
def test_translation_with_depth_close_to_truth(metrics):
    assert metrics["translation_rel"] <= 0.05
