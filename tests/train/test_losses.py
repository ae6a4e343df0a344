"""The package's one PSNR / SSIM convention: training's figures equal the eval's, the loss trains the border."""

import numpy as np
import pytest
import torch

from avatar3d.eval import metrics as M
from avatar3d.train import losses as L


def _pair(seed=0, h=48, w=64):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / 7.0
    gt = np.stack([np.sin(x), np.cos(y), np.sin(x + y)], -1) * 0.3 + 0.5
    pred = gt + rng.normal(0, 0.05, gt.shape)
    return torch.tensor(pred, dtype=torch.float32), torch.tensor(gt, dtype=torch.float32)


def test_training_scores_equal_the_eval_report():
    pred, gt = _pair()
    assert L.psnr(pred, gt) == pytest.approx(float(M.psnr(pred.numpy(), gt.numpy())[0]), abs=1e-4)
    assert L.ssim(pred, gt) == pytest.approx(float(M.ssim(pred.numpy(), gt.numpy())[0]), abs=1e-5)


def test_psnr_clamps_the_prediction_caps_identical_images_and_weights_by_mask():
    _, gt = _pair()
    assert L.psnr(gt, gt) == pytest.approx(L.PSNR_CAP_DB)
    assert L.psnr(gt + 2.0 * (gt > 0.99), gt) == L.psnr(gt.clamp(max=1.0), gt)  # overshoot clamped
    wrong = gt.clone()
    wrong[:, 32:] = 0.0
    left = torch.zeros(gt.shape[:2])
    left[:, :32] = 1
    assert L.psnr(wrong, gt, left) == pytest.approx(L.PSNR_CAP_DB)
    assert L.psnr(wrong, gt) < 30.0


def test_dssim_is_differentiable_and_reaches_the_border():
    pred, gt = _pair(1)
    p = pred.clone().requires_grad_(True)
    loss = L.dssim(p, gt)
    loss.backward()
    assert 0.0 < loss.item() < 0.5
    assert float(L.dssim(gt, gt)) == pytest.approx(0.0, abs=1e-6)
    g = p.grad.abs().sum(-1)
    assert (g[0] > 0).all() and (g[:, 0] > 0).all()  # zero padding: border pixels get a gradient
    with pytest.raises(ValueError, match="border"):
        L.ssim_map(pred.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None], border="reflect")
