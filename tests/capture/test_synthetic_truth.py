"""run_capture on the synthetic subject against its exact ground truth (a 3 s, 25 fps, 256 px clip).

The metrics are :func:`avatar3d.synthetic.capture_truth.evaluate_capture` (see its module docstring
for how the capture's head frame is aligned with the truth's), as in
``benchmarks/bench_capture_synthetic.py``. The floors are looser than what the capture measures on
this clip (that benchmark; docs/design/focal-and-depth.md), with margin for seed to seed variation;
the issue's targets are rotation ≤ 1.5°, translation ≤ 2 % of the head width, focal
≤ 5 % and mouth correlation ≥ 0.9. The absolute depth, which needs the focal to about 0.25 %, is not
reached and stays a strict xfail.
"""

from __future__ import annotations

import pytest

from avatar3d.capture import CaptureConfig, run_capture
from avatar3d.synthetic.capture_truth import evaluate_capture

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def metrics(synthetic_talking_clip, tmp_path_factory) -> dict:
    import torch

    video, truth = synthetic_talking_clip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cap = run_capture(
            video, tmp_path_factory.mktemp("cap_syn") / "capture", CaptureConfig(), progress=False
        )
    finally:
        torch.set_num_threads(threads)
    return evaluate_capture(cap, truth)


def test_every_frame_tracked(metrics):
    assert metrics["n_valid"] == metrics["n_frames"] == 75


def test_head_rotation_tracks_truth(metrics):
    # With the optical-flow feature tracks: 0.60° with the offset fitted to the poses (the tracking
    # error; landmarks only: 1.69°), 1.71° relative to frame 0, 2.28° landmark-aligned (landmarks
    # only: 1.80°; this one also measures how MediaPipe's landmark shape is oriented on the face,
    # docs/design/feature-tracks.md). The 1.5° holds for the tracking error.
    assert metrics["rotation_deg_posefit"] <= 1.5
    assert metrics["rotation_deg_rel0"] <= 2.5
    assert metrics["rotation_deg"] <= 3.25


def test_lateral_translation_tracks_truth(metrics):
    # measured 0.54 % of the head width across the image plane, 1.5 % after removing the constant
    # offset (landmarks only: 0.64 % and 1.3 %)
    assert metrics["translation_lateral_rel"] <= 0.015
    assert metrics["translation_motion_rel"] <= 0.03


def test_mouth_opening_follows_jaw(metrics):
    # measured 0.953 (seed 1: 0.958)
    assert metrics["mouth_corr"] >= 0.88


def test_focal_from_the_feature_tracks(metrics):
    # The focal search fits the feature tracks: measured 23.8 % off on this 3-s clip, too short (the
    # prior alone: 37 %; landmarks only: 39 %). The estimator itself finds the focal within 1-3 % from
    # tracks with independent errors (test_feature_tracks.py); the KLT tracks' errors here follow the
    # head's turn. The 5 % is reached on 1 of 7 longer clips (docs/design/focal-and-depth.md).
    assert metrics["focal_rel"] <= 0.30


@pytest.mark.xfail(
    strict=True,
    reason="depth needs the focal to ~0.25 %: measured 2.0 head widths off (target 0.02; landmarks only: 3.2)",
)
def test_translation_with_depth_close_to_truth(metrics):
    assert metrics["translation_rel"] <= 0.05
