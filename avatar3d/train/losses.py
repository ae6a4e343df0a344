"""Photometric losses (D-SSIM) and the package's one PSNR and one SSIM.

Training's held-out figures and :mod:`avatar3d.eval.metrics` both score images here, so every
number the package reports follows one convention:

* **PSNR** (:func:`psnr_db`): ``10 log10(1 / MSE)`` on [0, 1] images. The prediction is clamped to
  [0, 1] (rendered colours may overshoot), the squared error is averaged over channels, then over
  pixels (weighted by a mask when one is given), and the MSE is floored at ``10^(-PSNR_CAP_DB / 10)``
  so identical images score :data:`PSNR_CAP_DB` instead of +inf.
* **SSIM** (:func:`ssim_map`): :func:`kornia.metrics.ssim` with a Gaussian window of
  :data:`SSIM_WINDOW` px (sigma 1.5), ``c1 = 0.01^2``, ``c2 = 0.03^2`` (data range 1); a score
  (:func:`ssim_score`) clamps the prediction to [0, 1] and averages the map over pixels and
  channels. Scores count only the pixels where the whole window lies inside the image
  (``border="valid"``). The D-SSIM training loss (:func:`dssim`) pads with zeros instead
  (``border="zero"``, as 3D Gaussian Splatting's loss does) so the border pixels get a gradient.
"""

from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F
from torch import Tensor

PSNR_CAP_DB = 100.0  # dB, the PSNR of identical images (the MSE floor below)
_MSE_FLOOR = 10 ** (-PSNR_CAP_DB / 10)
SSIM_WINDOW = 11  # px, side of the Gaussian SSIM window (kornia fixes sigma at 1.5 px)
SSIM_BORDERS = ("valid", "zero")
_MASK_SUM_FLOOR = 1e-12  # an all-zero mask scores the cap, not NaN


def ssim_map(pred: Tensor, target: Tensor, border: str = "valid", window: int = SSIM_WINDOW) -> Tensor:
    """Per-pixel SSIM of (B, C, H, W) images in [0, 1] (see the module docstring).

    border: "valid" -> (B, C, H - 2r, W - 2r) with ``r = window // 2`` (the window inside the image);
    "zero" -> (B, C, H, W), the images zero-padded by ``r``. Differentiable.
    """
    if border == "zero":
        r = window // 2
        pred, target = F.pad(pred, (r, r, r, r)), F.pad(target, (r, r, r, r))
    elif border != "valid":
        raise ValueError(f"border must be one of {SSIM_BORDERS}, got {border!r}")
    return kornia.metrics.ssim(pred, target, window, max_val=1.0, padding="valid")


def psnr_db(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-image PSNR in dB of (B, C, H, W) images in [0, 1] -> (B,) (see the module docstring).

    mask: optional (H, W) or (B, H, W) pixel weights; the MSE is then their weighted mean.
    """
    se = (pred.clamp(0, 1) - target).pow(2).mean(1)  # (B, H, W)
    if mask is None:
        mse = se.flatten(1).mean(1)
    else:
        m = mask.to(se.dtype).expand_as(se)
        mse = (se * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp(min=_MASK_SUM_FLOOR)
    return 10.0 * torch.log10(1.0 / mse.clamp(min=_MSE_FLOOR))


def ssim_score(pred: Tensor, target: Tensor, window: int = SSIM_WINDOW) -> Tensor:
    """Per-image SSIM of (B, C, H, W) images in [0, 1] -> (B,): the prediction clamped to [0, 1], the
    valid-border :func:`ssim_map` averaged over pixels and channels."""
    return ssim_map(pred.clamp(0, 1), target, "valid", window).flatten(1).mean(1)


def _nchw(img: Tensor) -> Tensor:
    """(H, W, C) -> (1, C, H, W)."""
    return img.permute(2, 0, 1)[None]


def dssim(pred: Tensor, target: Tensor, window: int = SSIM_WINDOW) -> Tensor:
    """Training loss ``(1 - SSIM) / 2`` of (H, W, 3) images in [0, 1], zero-padded border; differentiable."""
    return (1.0 - ssim_map(_nchw(pred), _nchw(target), "zero", window).mean()) / 2.0


def psnr(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> float:
    """PSNR in dB of one (H, W, 3) image pair in [0, 1] (optionally weighted by a (H, W) mask)."""
    return float(psnr_db(_nchw(pred), _nchw(target), None if mask is None else mask[None])[0])


def ssim(pred: Tensor, target: Tensor) -> float:
    """SSIM of one (H, W, 3) image pair in [0, 1] (:func:`ssim_score`)."""
    return float(ssim_score(_nchw(pred), _nchw(target))[0])


__all__ = ["PSNR_CAP_DB", "SSIM_WINDOW", "dssim", "psnr", "psnr_db", "ssim", "ssim_map", "ssim_score"]
