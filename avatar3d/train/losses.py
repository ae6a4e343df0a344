"""Photometric losses: L1, D-SSIM (kornia), PSNR."""

from __future__ import annotations

import torch
from torch import Tensor


def dssim(pred: Tensor, target: Tensor, window: int = 11) -> Tensor:
    """(1 - SSIM) / 2 of (H, W, 3) images in [0, 1]."""
    import kornia

    p = pred.permute(2, 0, 1)[None]
    t = target.permute(2, 0, 1)[None]
    return kornia.losses.ssim_loss(p, t, window_size=window)


def psnr(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> float:
    """PSNR in dB of images in [0, 1] (optionally inside a (H, W) mask)."""
    d = (pred.clamp(0, 1) - target) ** 2
    if mask is not None:
        m = mask.bool()
        mse = d[m].mean() if m.any() else d.mean()
    else:
        mse = d.mean()
    return float(10 * torch.log10(1.0 / mse.clamp(min=1e-12)))


def ssim(pred: Tensor, target: Tensor) -> float:
    import kornia

    p = pred.clamp(0, 1).permute(2, 0, 1)[None]
    t = target.permute(2, 0, 1)[None]
    return float(kornia.metrics.ssim(p, t, 11).mean())
