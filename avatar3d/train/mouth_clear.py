"""The mouth-clear loss: inside the lips' opening, only the mouth interior may show.

When the mouth opens, what the camera sees between the inner lips is teeth, tongue and the dark
cavity: the ``MOUTH`` Gaussians (TalkingGaussian renders that region with a separate inside-mouth
branch for the same reason). Face Gaussians that drift into the opening while the mouth is closed in
most training frames (a dark slit, lip shadow) stay in front of the teeth when it opens and speckle
them. This loss renders the face and torso Gaussians that lie in front of the mouth interior alone, in
a small window around the tracked inner-lip contour, and penalises their alpha inside the (slightly
eroded) opening, so they move out or fade there and the teeth show.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

from ..core.groups import MOUTH
from ..render.rasterize import rasterize

MIN_OPENING_PX = 4  # an opening smaller than this (closed lips) adds no loss
WINDOW_PAD_PX = 2  # the rendered window's margin around the contour
FRONT_QUANTILE = 0.1  # the mouth interior's front: this quantile of its Gaussians' camera depths
_SUBPIXEL_BITS = 4  # cv2.fillPoly fixed-point bits: the contour at 1/16 px


def opening_mask(contour: np.ndarray, origin: tuple[int, int], size: tuple[int, int], erode_px: float):
    """(h, w) bool mask of the inner-lip opening in a window.

    contour: (K, 2) pixel coordinates (centres at +0.5) of the inner-lip loop; origin (x0, y0) and
    size (w, h) of the window; erode_px: pixels removed from the opening's rim (landmark noise)."""
    w, h = size
    m = np.zeros((h, w), np.uint8)
    pts = np.round((contour - np.asarray(origin) - 0.5) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(m, [pts], 255, lineType=cv2.LINE_AA, shift=_SUBPIXEL_BITS)
    m = (m >= 128).astype(np.uint8)
    r = int(round(erode_px))
    if r > 0:
        m = cv2.erode(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    return m.astype(bool)


def _in_front_of_mouth(model, means: Tensor, viewmat: Tensor) -> Tensor:
    """(N,) bool: the face and torso Gaussians nearer the camera than the front of the mouth interior
    (its :data:`FRONT_QUANTILE` depth): the lips and skin that could hide the teeth, not the head's
    back or the cavity walls, which the teeth themselves hide."""
    z = means.detach() @ viewmat[2, :3] + viewmat[2, 3]
    mouth = model.group == MOUTH
    if not bool(mouth.any()):
        return ~mouth
    front = torch.quantile(z[mouth], FRONT_QUANTILE)
    return ~mouth & (z < front)


def mouth_clear_loss(model, gs: dict[str, Tensor], data, i: int, erode_px: float) -> Tensor | None:
    """Mean alpha of the face and torso Gaussians in front of the mouth interior over frame ``i``'s inner-lip opening (None when the
    mouth is closed, untracked or outside the image).

    gs: the frame's posed Gaussians (:meth:`GaussianAvatar.posed`); data: the TrainData (its
    ``inner_lips``, ``K``, ``rest_viewmat`` and size)."""
    if data.inner_lips is None:
        return None
    c = data.inner_lips[i].numpy().astype(np.float64)
    if not np.isfinite(c).all():
        return None
    x0 = max(0, int(np.floor(c[:, 0].min())) - WINDOW_PAD_PX)
    y0 = max(0, int(np.floor(c[:, 1].min())) - WINDOW_PAD_PX)
    x1 = min(data.width, int(np.ceil(c[:, 0].max())) + WINDOW_PAD_PX)
    y1 = min(data.height, int(np.ceil(c[:, 1].max())) + WINDOW_PAD_PX)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    mask = opening_mask(c, (x0, y0), (x1 - x0, y1 - y0), erode_px)
    if int(mask.sum()) < MIN_OPENING_PX:
        return None
    sel = _in_front_of_mouth(model, gs["means"], data.rest_viewmat)
    K = data.K.clone()
    K[0, 2] -= x0
    K[1, 2] -= y0
    out = rasterize(
        gs["means"][sel],
        gs["quats"][sel],
        gs["scales"][sel],
        gs["opacities"][sel],
        gs["colors"][sel],
        data.rest_viewmat[None],
        K[None],
        x1 - x0,
        y1 - y0,
        None,
    )
    m = torch.from_numpy(mask).to(out.alphas.dtype)
    return (out.alphas[0, ..., 0] * m).sum() / m.sum()


__all__ = ["MIN_OPENING_PX", "mouth_clear_loss", "opening_mask"]
