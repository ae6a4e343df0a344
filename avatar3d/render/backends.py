"""Rasteriser backend registry and selection.

Order for ``"auto"``, per device: CUDA tensors -> our CUDA kernels, gsplat, the PyTorch reference;
CPU tensors -> our CPU kernels (C++/OpenMP), the PyTorch reference. Compiled kernels are built on
first use (see :mod:`._cuda_ext`); a failed build warns once and drops that backend from the list.
``AVATAR3D_RASTER_BACKEND`` forces a backend by name.

The compiled backends do not differentiate through cameras: when ``viewmats`` or ``Ks`` require
grad they hand the call to the reference (with a one-time warning).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import Tensor

from . import _cuda_ext
from ._gsplat import gsplat_available, rasterize_gsplat
from ._torch_impl import rasterize_torch
from ._types import RenderOutput


def _kernel_backend(kind: str) -> Callable[..., RenderOutput]:
    def run(
        means: Tensor,  # (N, 3)
        quats: Tensor,  # (N, 4)
        scales: Tensor,  # (N, 3)
        opacities: Tensor,  # (N,)
        colors: Tensor,  # (N, D) or (C, N, D)
        viewmats: Tensor,  # (C, 4, 4)
        Ks: Tensor,  # (C, 3, 3)
        width: int,
        height: int,
        backgrounds: Tensor | None = None,  # (C, D)
    ) -> RenderOutput:
        args = (means, quats, scales, opacities, colors, viewmats, Ks, width, height, backgrounds)
        if means.device.type != kind:
            raise ValueError(f"rasteriser backend {kind!r} needs {kind} tensors, got {means.device}")
        mod = _cuda_ext.cuda_module() if kind == "cuda" else _cuda_ext.cpu_module()
        if mod is None:  # build failed: already warned once
            return rasterize_torch(*args)
        if torch.is_grad_enabled() and (viewmats.requires_grad or Ks.requires_grad):
            _cuda_ext.warn_once(
                "camera-grad",
                "avatar3d: the compiled rasterisers do not differentiate through cameras; "
                "using the PyTorch reference for this call",
            )
            return rasterize_torch(*args)
        return _cuda_ext.rasterize_kernels(*args)

    run.__name__ = f"rasterize_{kind}"
    run.__doc__ = f"Our compiled {kind} kernels (falls back to the reference if they cannot be built)."
    return run


rasterize_cpu = _kernel_backend("cpu")
rasterize_cuda = _kernel_backend("cuda")

BACKENDS: dict[str, Callable[..., RenderOutput]] = {
    "cuda": rasterize_cuda,
    "gsplat": rasterize_gsplat,
    "cpu": rasterize_cpu,
    "torch": rasterize_torch,
}


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Names of the backends usable for tensors on ``device``, fastest first.

    May compile the kernels for that device (first call only).
    """
    dev = torch.device(device)
    names: list[str] = []
    if dev.type == "cuda":
        if _cuda_ext.cuda_module() is not None:
            names.append("cuda")
        if gsplat_available():
            names.append("gsplat")
    elif dev.type == "cpu" and _cuda_ext.cpu_module() is not None:
        names.append("cpu")
    names.append("torch")
    return names


def select_backend(name: str, device: torch.device | str) -> Callable[..., RenderOutput]:
    """The rasterise function for backend ``name`` ("auto" = fastest available for ``device``)."""
    name = os.environ.get("AVATAR3D_RASTER_BACKEND", name) or "auto"
    if name == "auto":
        name = available_backends(device)[0]
    if name not in BACKENDS:
        raise ValueError(f"unknown rasteriser backend {name!r}; available: {sorted(BACKENDS)}")
    return BACKENDS[name]
