"""Render a model trained at one resolution at another without gaps: a 3D footprint filter.

Every 2D Gaussian is dilated by ``EPS2D`` square pixels, so a Gaussian the optimiser made sub-pixel at
the training size still covers its pixel. Rendered at a larger size, or from closer, the same
Gaussian covers a smaller share of a pixel: a fitted surface breaks into dark cracks and a speckled
mouth interior. Mip-Splatting's remedy (Yu et al. 2024) bounds each Gaussian from below by the world
footprint of a training pixel. Here that bound is applied only where the render samples more finely than
training did, with the amount that makes the render at the capture view exactly the training render
at a higher sampling rate: the isotropic 3D variance

    sigma^2 = EPS2D * max(0, (z_t / f_t)^2 - (z_r / f_r)^2)

(z: depth, f: focal in pixels; t: the training camera, r: the render camera) projects to
``EPS2D * ((z_t f_r / (f_t z_r))^2 - 1)`` square render pixels, which added to the render's own
dilation gives the training dilation in training pixels. A share of that variance (the render
config's ``footprint``) trades the last cracks against detail. Coarser renders are left unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._constants import EPS2D, NEAR_PLANE


def _pixel_footprint2(means: Tensor, viewmats: Tensor, Ks: Tensor) -> Tensor:
    """(C, N) squared world size of one pixel at each mean's depth, per camera."""
    z = means @ viewmats[:, 2, :3].transpose(0, 1) + viewmats[:, 2, 3][None]  # (N, C)
    f2 = (Ks[:, 0, 0] * Ks[:, 1, 1]).abs()  # (C,) squared geometric-mean focal
    return (z.transpose(0, 1).clamp_min(NEAR_PLANE) ** 2) / f2[:, None]


def footprint_scales(
    means: Tensor,  # (N, 3) world
    scales: Tensor,  # (N, 3) linear
    viewmats: Tensor,  # (C, 4, 4) render cameras, world -> camera
    Ks: Tensor,  # (C, 3, 3)
    train_viewmat: Tensor,  # (4, 4) the camera the Gaussians were fitted through
    train_K: Tensor,  # (3, 3) its intrinsics at the training size
    share: float = 1.0,
    eps2d: float = EPS2D,
) -> Tensor:
    """``scales`` widened so no render camera samples a Gaussian more finely than training did.

    share: the part of the missing variance that is added (1: the training render exactly, resampled;
    less keeps more of the fine detail that a finer camera can show, at the risk of cracks). The bound
    is taken for the finest of the C cameras (a stereo pair shares one set of Gaussians).
    Returns the scales unchanged (the same tensor) when no camera is finer than the training camera.
    """
    vm, K = viewmats.to(means), Ks.to(means)
    fine = _pixel_footprint2(means, vm, K).amin(0)  # (N,)
    train = _pixel_footprint2(means, train_viewmat.to(means)[None], train_K.to(means)[None])[0]
    var = share * eps2d * (train - fine).clamp_min(0.0)
    if share <= 0 or not bool((var > 0).any()):
        return scales
    return torch.sqrt(scales * scales + var[:, None])


__all__ = ["footprint_scales"]
