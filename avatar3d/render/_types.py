"""The rasteriser's output type, shared by every backend."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class RenderOutput:
    """Rasteriser output for C cameras.

    colors: (C, H, W, D); alphas: (C, H, W, 1); depths: (C, H, W, 1) expected depth (0 where empty).
    """

    colors: Tensor
    alphas: Tensor
    depths: Tensor
