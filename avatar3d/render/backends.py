"""Rasteriser backend registry and selection.

Order for ``"auto"``: our CUDA kernels (CUDA tensors) -> gsplat (CUDA tensors) -> our CPU kernels
(C++/OpenMP, JIT-compiled on first use) -> the PyTorch reference. ``AVATAR3D_RASTER_BACKEND``
forces a backend by name.
"""

from __future__ import annotations

import os
from typing import Callable

import torch

from .rasterize import rasterize_torch

BACKENDS: dict[str, Callable] = {"torch": rasterize_torch}


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Names of the backends usable for tensors on ``device``, fastest first."""
    return ["torch"]


def select_backend(name: str, device: torch.device | str) -> Callable:
    name = os.environ.get("AVATAR3D_RASTER_BACKEND", name) or "auto"
    if name == "auto":
        name = available_backends(device)[0]
    if name not in BACKENDS:
        raise ValueError(f"unknown rasteriser backend {name!r}; available: {sorted(BACKENDS)}")
    return BACKENDS[name]
