"""run_capture on the synthetic subject against its exact ground truth (a 3 s, 25 fps, 256 px clip).

The metrics are those of ``benchmarks/bench_capture_synthetic.py`` (see its docstring for how the
capture's head frame is aligned with the truth's). The floors are looser than what the capture
measures on this clip (BENCHMARKS.md, "Capture vs synthetic ground truth"), with margin for seed to
seed variation; the issue's targets are rotation ≤ 1.5°, translation ≤ 2 % of the head width, focal
≤ 5 % and mouth correlation ≥ 0.9. The two it cannot meet from MediaPipe landmarks (focal, and the
absolute depth that follows it) stay non-strict xfails.
"""

from __future__ import annotations

import pytest

from ._bench import load_bench

pytestmark = pytest.mark.slow


def _bench():
    return load_bench("bench_capture_synthetic")


@pytest.fixture(scope="module")
def metrics(synthetic_talking_clip, tmp_path_factory) -> dict:
    import torch

    from avatar3d.capture import CaptureConfig, run_capture

    video, truth = synthetic_talking_clip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cap = run_capture(
            video, tmp_path_factory.mktemp("cap_syn") / "capture", CaptureConfig(), progress=False
        )
    finally:
        torch.set_num_threads(threads)
    return _bench().evaluate(cap, truth)


def test_every_frame_tracked(metrics):
    assert metrics["n_valid"] == metrics["n_frames"] == 75


def test_head_rotation_tracks_truth(metrics):
    # With the optical-flow feature tracks: 0.88° with the offset fitted to the poses (the tracking
    # error; landmarks only: 1.64°), 2.05° relative to frame 0, 2.40° landmark-aligned (landmarks
    # only: 1.76°; this one also measures how MediaPipe's landmark shape is oriented on the face,
    # BENCHMARKS.md). The 1.5° holds for the tracking error.
    assert metrics["rotation_deg_posefit"] <= 1.5
    assert metrics["rotation_deg_rel0"] <= 2.5
    assert metrics["rotation_deg"] <= 3.25


def test_lateral_translation_tracks_truth(metrics):
    # measured 0.55 % of the head width across the image plane, 1.4 % after removing the constant
    # offset (landmarks only: 0.62 % and 1.4 %)
    assert metrics["translation_lateral_rel"] <= 0.015
    assert metrics["translation_motion_rel"] <= 0.03


def test_mouth_opening_follows_jaw(metrics):
    # measured 0.953 (seed 1: 0.958)
    assert metrics["mouth_corr"] >= 0.88


@pytest.mark.xfail(
    strict=False,
    reason="focal is set by the prior (2.0 x size): measured 37 % off (truth 3.16); a 5 % focal change "
    "moves the best fit by 0.01 px, MediaPipe's pose-dependent errors are ~2 px (BENCHMARKS.md)",
)
def test_focal_close_to_truth(metrics):
    assert metrics["focal_rel"] <= 0.15


@pytest.mark.xfail(strict=False, reason="depth follows the focal error: measured 3.1 head widths off")
def test_translation_with_depth_close_to_truth(metrics):
    assert metrics["translation_rel"] <= 0.05
