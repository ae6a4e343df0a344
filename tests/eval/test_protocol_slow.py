"""End to end: the held-out protocol on the synthetic subject (slow: captures the clip again)."""

import json
import math

import numpy as np
import pytest


@pytest.mark.slow
def test_evaluate_synthetic_heldout(fitted_avatar, synthetic_video, tmp_path):
    from avatar3d.eval import evaluate_avatar, write_report

    video, truth = synthetic_video
    rep = evaluate_avatar(fitted_avatar, video, size=256, truth=truth, view_count=7, keep_samples=2)
    prot, m = rep["protocol"], rep["metrics"]
    # the training clip itself: only the frames after the avatar's training split are scored
    assert prot["heldout_only"] and prot["frames"][0] == fitted_avatar.meta.train_frames
    assert prot["n_frames"] == fitted_avatar.meta.test_frames and prot["region"] == "head crop"
    assert 12 < m["psnr"] < 60 and 0 < m["ssim"] <= 1 and m["lpips"].startswith("not computed")
    assert m["head_coverage"] > 0.8
    assert m["lmd"] is None or 0 <= m["lmd"] < 40
    s = rep["sync"]
    assert set(s) >= {"avatar", "ground_truth", "shuffled_audio", "syncnet"}
    assert isinstance(s["syncnet"], str) and s["syncnet"].startswith("not computed")
    v = rep["views"]
    assert len(v["psnr_per_angle"]) == 7 and all(math.isfinite(x) for x in v["psnr_per_angle"])
    assert v["flicker_mae"] is not None and v["flicker_mae"] < 0.2
    # unseen camera views against the ground truth: a floor, and the face holds together off-axis
    # (issue target: ±30° within 3 dB of the frontal view; this fit measures 1.5 dB, the 600-step demo
    # avatar 2.1 dB: BENCHMARKS.md)
    assert len(v["ssim_per_angle"]) == 7 and min(v["ssim_per_angle"]) > 0.5, v["ssim_per_angle"]
    assert min(v["psnr_per_angle"]) > 16.0, v["psnr_per_angle"]
    assert v["psnr_drop_30"] is not None and v["psnr_drop_30"] < 3.0, v["psnr_drop_30"]
    js, png = write_report(rep, tmp_path / "report.json")
    data = json.loads(js.read_text())
    assert len(data["per_frame"]["psnr"]) == prot["n_frames"] and png.stat().st_size > 10_000
    assert np.isfinite(np.array([x for x in data["per_frame"]["psnr"] if x is not None])).all()
