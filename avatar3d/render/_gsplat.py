"""The ``gsplat`` backend: nerfstudio's CUDA rasteriser behind avatar3d's :func:`rasterize` contract.

Only usable with CUDA. gsplat is imported lazily and only after ``torch.cuda.is_available()``:
importing it on a CPU-only machine that has nvcc can start a (failing) JIT build of its kernels.

gsplat is configured to match the reference as closely as it allows (classic mode, eps2d 0.3,
same near/far planes, tile 16, unpacked, depth as expected depth "RGB+ED"). Its alpha clamp and
opacity-aware bounding boxes depend on the installed version, so it agrees with the reference
approximately, not to the last bit.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._constants import EPS2D, FAR_PLANE, NEAR_PLANE, TILE_SIZE
from ._types import RenderOutput

_available: bool | None = None


def gsplat_available() -> bool:
    """True when CUDA is available and ``gsplat`` imports (checked once)."""
    global _available
    if _available is None:
        _available = False
        if torch.cuda.is_available():
            try:
                import gsplat  # noqa: F401

                _available = True
            except Exception:  # noqa: BLE001 - ImportError or a failed kernel build
                _available = False
    return _available


def rasterize_gsplat(
    means: Tensor,  # (N, 3)
    quats: Tensor,  # (N, 4) wxyz
    scales: Tensor,  # (N, 3)
    opacities: Tensor,  # (N,)
    colors: Tensor,  # (N, D) or (C, N, D)
    viewmats: Tensor,  # (C, 4, 4)
    Ks: Tensor,  # (C, 3, 3)
    width: int,
    height: int,
    backgrounds: Tensor | None = None,  # (C, D)
) -> RenderOutput:
    """Render with ``gsplat.rasterization``; returns colours, alphas and expected depth."""
    if means.device.type != "cuda" or not gsplat_available():
        raise RuntimeError("the gsplat backend needs CUDA tensors and an importable gsplat")
    from gsplat import rasterization

    D = colors.shape[-1]
    render, alphas, _meta = rasterization(
        means,
        quats,
        scales,
        opacities,
        colors,
        viewmats,
        Ks,
        width,
        height,
        near_plane=NEAR_PLANE,
        far_plane=FAR_PLANE,
        eps2d=EPS2D,
        radius_clip=0.0,
        tile_size=TILE_SIZE,
        packed=False,
        render_mode="RGB+ED",
        rasterize_mode="classic",
        backgrounds=backgrounds,
    )
    return RenderOutput(render[..., :D], alphas, render[..., D:])
