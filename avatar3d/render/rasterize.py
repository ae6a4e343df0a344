"""One entry point for rendering 3D Gaussians: :func:`rasterize`.

Backends (``backend=``): ``"torch"`` (the pure-PyTorch reference in :mod:`._torch_impl`), and the
compiled ones registered by :mod:`avatar3d.render.backends` (``"cuda"``, ``"gsplat"``, ``"cpu"``).
``"auto"`` picks the fastest present for the inputs' device; the environment variable
``AVATAR3D_RASTER_BACKEND`` forces one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import CameraError
from ._torch_impl import rasterize_torch
from ._types import RenderOutput
from .backends import select_backend


def check_cameras(viewmats: Tensor, Ks: Tensor, width: int, height: int) -> None:
    """Raise :class:`CameraError` on absurd camera parameters."""
    if not (isinstance(width, int) and isinstance(height, int)) or width < 1 or height < 1:
        raise CameraError(f"image size must be positive integers, got {width}x{height}")
    if width > 16384 or height > 16384:
        raise CameraError(f"image size {width}x{height} is larger than 16384 px")
    if viewmats.ndim != 3 or viewmats.shape[1:] != (4, 4):
        raise CameraError(f"viewmats must be (C, 4, 4), got {tuple(viewmats.shape)}")
    if Ks.ndim != 3 or Ks.shape[1:] != (3, 3) or Ks.shape[0] != viewmats.shape[0]:
        raise CameraError(f"Ks must be (C, 3, 3) matching viewmats, got {tuple(Ks.shape)}")
    if not (torch.isfinite(viewmats).all() and torch.isfinite(Ks).all()):
        raise CameraError("camera matrices contain NaN or infinity")
    if (Ks[:, 0, 0] <= 0).any() or (Ks[:, 1, 1] <= 0).any():
        raise CameraError("focal lengths must be positive")


def rasterize(
    means: Tensor,  # (N, 3) world space
    quats: Tensor,  # (N, 4) wxyz
    scales: Tensor,  # (N, 3) linear
    opacities: Tensor,  # (N,) in [0, 1]
    colors: Tensor,  # (N, D) or (C, N, D)
    viewmats: Tensor,  # (C, 4, 4) world -> camera, OpenCV
    Ks: Tensor,  # (C, 3, 3)
    width: int,
    height: int,
    backgrounds: Tensor | None = None,  # (C, D)
    backend: str = "auto",
) -> RenderOutput:
    """Render N Gaussians into C cameras; differentiable in means, quats, scales, opacities, colors.

    Returns a :class:`RenderOutput` with colour, alpha and expected depth images.
    """
    check_cameras(viewmats, Ks, width, height)
    if means.shape[0] == 0:
        C, D = viewmats.shape[0], colors.shape[-1]
        z = means.new_zeros((C, height, width, 1))
        img = means.new_zeros((C, height, width, D))
        if backgrounds is not None:
            img = img + backgrounds[:, None, None, :]
        return RenderOutput(img, z, z.clone())
    fn = select_backend(backend, means.device)
    return fn(means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds)


__all__ = ["RenderOutput", "check_cameras", "rasterize", "rasterize_torch"]
