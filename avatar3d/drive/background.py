"""The background behind the avatar: the capture's plate or a colour."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ..core.camera import Camera
from ..errors import ConfigError

NAMED_COLOURS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0)}


def background_colour(spec) -> tuple[float, float, float] | None:
    """(r, g, b) in [0, 1] of a colour spec ('white', 'black', 'green', '#rrggbb' or three numbers);
    None for 'plate'. Raises a one-line ConfigError for anything else."""
    if isinstance(spec, str):
        if spec == "plate":
            return None
        if spec in NAMED_COLOURS:
            return NAMED_COLOURS[spec]
        if spec.startswith("#") and len(spec) == 7:
            try:
                return tuple(int(spec[i : i + 2], 16) / 255.0 for i in (1, 3, 5))
            except ValueError:
                raise ConfigError(f"bad colour {spec!r}") from None
        raise ConfigError(f"unknown background {spec!r}: use plate, white, black, green or #rrggbb")
    rgb = tuple(float(x) for x in spec)
    if len(rgb) != 3:
        raise ConfigError("a background colour needs three values")
    return rgb


def background_image(spec, cam: Camera, plate: np.ndarray) -> torch.Tensor:
    """The background for ``cam``: (1, H, W, 3) float32 in [0, 1] for 'plate' (``plate`` (h, w, 3)
    uint8 resized to the camera), else (1, 3) for a colour (:func:`background_colour`)."""
    rgb = background_colour(spec)
    if rgb is None:
        img = cv2.resize(plate, (cam.width, cam.height), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(img).float()[None] / 255.0
    return torch.tensor([rgb], dtype=torch.float32)
