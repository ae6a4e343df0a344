"""A few real training steps with the LPIPS term on (fake local weights) and the hash-grid field."""

import pytest
import torch

from avatar3d.capture import run_capture
from avatar3d.config import AvatarConfig, CaptureConfig
from avatar3d.synthetic import make_talking_video
from avatar3d.train import trainer as T

from .test_lpips_term import fake_lpips_weights

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_capture(tmp_path_factory):
    d = tmp_path_factory.mktemp("lpips_fit")
    make_talking_video(d / "v.mp4", seconds=1.2, fps=25, size=160, seed=0)
    return run_capture(d / "v.mp4", d / "capture", CaptureConfig(max_size=160), progress=False)


def test_lpips_term_trains_from_the_joint_stage(small_capture, tmp_path, monkeypatch):
    calls = []
    real = T.lpips_loss

    def spy(net, pred, gt, box):
        out = real(net, pred, gt, box)
        calls.append((float(out.detach()), pred.requires_grad, box))
        return out

    monkeypatch.setattr(T, "lpips_loss", spy)
    w = fake_lpips_weights(tmp_path / "lpips.pth")
    cfg = AvatarConfig.from_dict(
        {
            "preset": "fast",
            "model": {"n_head": 1500, "n_mouth": 100, "n_torso": 300, "max_gaussians": 3000},
            "train": {
                "steps": 6,
                "resolution": 96,
                "static_fraction": 0.34,
                "audio_fraction": 0.34,
                "lpips_weights": str(w),
                "lpips_weight": 0.1,
                "checkpoint_every": 0,
                "audio_batch": 2,
            },
        }
    )
    res = T.train(small_capture, cfg, None, log=lambda s: None)
    assert len(calls) == 2  # steps 4 and 5: the joint stage only
    assert all(v > 0 and g for v, g, _ in calls)
    grid = res.model.deform.encoding.grid.params
    assert torch.isfinite(grid).all() and grid.abs().max() > 1e-3  # the tables were trained (lr_grid)
