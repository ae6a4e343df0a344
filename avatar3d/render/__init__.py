"""Rendering 3D Gaussians: one entry point, :func:`rasterize`, over interchangeable backends.

- :func:`rasterize` -> :class:`RenderOutput` (colour, alpha, expected depth) for C cameras at once,
  differentiable; :func:`check_cameras`.
- Backends (:mod:`.backends`): the pure-PyTorch reference (:mod:`._torch_impl`, the ground truth the
  kernels are tested against), our compiled CPU and CUDA kernels (:mod:`._cuda_ext`) and gsplat;
  :func:`available_backends` lists those usable on a device.
- :class:`Camera` and :class:`StereoPair` live in :mod:`avatar3d.core.camera` and are re-exported here.
"""

from ..core.camera import Camera, StereoPair
from ._types import RenderOutput
from .backends import available_backends
from .rasterize import check_cameras, rasterize

__all__ = ["Camera", "RenderOutput", "StereoPair", "available_backends", "check_cameras", "rasterize"]
