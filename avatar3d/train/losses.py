"""Photometric losses: L1, D-SSIM (kornia), PSNR."""

from __future__ import annotations

import torch
from torch import Tensor


def _gauss_blur(x: Tensor, window: int, sigma: float) -> Tensor:
    """Separable Gaussian blur of (B, C, H, W) with zero padding (as 3DGS's SSIM)."""
    r = window // 2
    g = torch.exp(-((torch.arange(window, dtype=x.dtype, device=x.device) - r) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    C = x.shape[1]
    x = torch.nn.functional.conv2d(x, g.view(1, 1, 1, -1).expand(C, 1, 1, window), padding=(0, r), groups=C)
    return torch.nn.functional.conv2d(x, g.view(1, 1, -1, 1).expand(C, 1, window, 1), padding=(r, 0), groups=C)


def ssim_map(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Per-pixel SSIM of (H, W, C) images in [0, 1] -> (H, W, C). Gaussian window, zero padding."""
    p = pred.permute(2, 0, 1)[None]
    t = target.permute(2, 0, 1)[None]
    C = p.shape[1]
    stats = _gauss_blur(torch.cat([p, t, p * p, t * t, p * t], 1), window, sigma)
    mu_p, mu_t, pp, tt, pt = stats.split(C, dim=1)
    s_p = pp - mu_p**2
    s_t = tt - mu_t**2
    s_pt = pt - mu_p * mu_t
    c1, c2 = 0.01**2, 0.03**2
    m = ((2 * mu_p * mu_t + c1) * (2 * s_pt + c2)) / ((mu_p**2 + mu_t**2 + c1) * (s_p + s_t + c2))
    return m[0].permute(1, 2, 0)


def dssim(pred: Tensor, target: Tensor, window: int = 11) -> Tensor:
    """(1 - SSIM) / 2 of (H, W, 3) images in [0, 1] (separable Gaussian window)."""
    return (1.0 - ssim_map(pred, target, window).mean()) / 2.0


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
