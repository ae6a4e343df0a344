"""Comparison regions of the evaluation protocol: head crop boxes from landmarks, the crop's
intrinsics (so the avatar renders straight into the crop), the real frame's crop and the avatar's
background plate seen through it."""

from __future__ import annotations

import cv2
import numpy as np

CROPS = ("head", "full")
HEAD_CROP_SCALE = 1.7  # head crop side / landmark extent
MIN_CROP_PX = 16  # smallest crop side and output side, pixels


def crop_boxes(lm_src: np.ndarray, width: int, height: int, mode: str = "head") -> np.ndarray:
    """(n, 478, 2) landmarks in source pixels -> (n, 4) int boxes (x0, y0, w, h) inside the frame.

    head: a square of side :data:`HEAD_CROP_SCALE` × the median landmark extent (fixed per clip),
    centred on each frame's landmark box; full: the whole frame.
    """
    n = len(lm_src)
    if mode == "full":
        return np.tile([0, 0, width, height], (n, 1))
    if mode != "head":
        raise ValueError(f"crop must be one of {CROPS}, got {mode!r}")
    lo, hi = lm_src.min(1), lm_src.max(1)  # (n, 2)
    side = round(HEAD_CROP_SCALE * float(np.median((hi - lo).max(1))))
    side = max(MIN_CROP_PX, min(side, width, height))
    c = (lo + hi) / 2
    x0 = np.clip(np.round(c[:, 0] - side / 2), 0, width - side).astype(int)
    y0 = np.clip(np.round(c[:, 1] - side / 2), 0, height - side).astype(int)
    return np.stack([x0, y0, np.full(n, side), np.full(n, side)], 1)


def out_size(box: np.ndarray, size: int) -> tuple[int, int]:
    """(out_w, out_h) for a crop box: longest side = size."""
    bw, bh = int(box[2]), int(box[3])
    s = size / max(bw, bh)
    return max(MIN_CROP_PX, round(bw * s)), max(MIN_CROP_PX, round(bh * s))


def crop_intrinsics(K: np.ndarray, box: np.ndarray, ow: int, oh: int) -> np.ndarray:
    """Intrinsics (3, 3) of the crop ``box`` of an image with intrinsics ``K``, resampled to (ow, oh)."""
    x0, y0, bw, bh = (float(v) for v in box)
    sx, sy = ow / bw, oh / bh
    return np.array(
        [[K[0, 0] * sx, 0, (K[0, 2] - x0) * sx], [0, K[1, 1] * sy, (K[1, 2] - y0) * sy], [0, 0, 1.0]]
    )


def crop_image(img: np.ndarray, box: np.ndarray, ow: int, oh: int) -> np.ndarray:
    """Crop (x0, y0, w, h) and resize to (ow, oh) (area filter when shrinking)."""
    x0, y0, bw, bh = (int(v) for v in box)
    c = img[y0 : y0 + bh, x0 : x0 + bw]
    interp = cv2.INTER_AREA if ow < bw else cv2.INTER_LINEAR
    return cv2.resize(c, (ow, oh), interpolation=interp) if (c.shape[1], c.shape[0]) != (ow, oh) else c.copy()


def warp_plate(plate: np.ndarray, box: np.ndarray, W: int, H: int, ow: int, oh: int) -> np.ndarray:
    """The avatar's background plate (covering a W x H source frame) seen through a crop -> (oh, ow, 3)."""
    sx, sy = plate.shape[1] / W, plate.shape[0] / H
    x0, y0, bw, bh = (float(v) for v in box)
    ax, ay = ow / (bw * sx), oh / (bh * sy)  # plate px -> crop px
    Mx = np.array([[ax, 0, ax * (0.5 - x0 * sx) - 0.5], [0, ay, ay * (0.5 - y0 * sy) - 0.5]])
    return cv2.warpAffine(plate, Mx, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


__all__ = [
    "CROPS",
    "HEAD_CROP_SCALE",
    "crop_boxes",
    "crop_image",
    "crop_intrinsics",
    "out_size",
    "warp_plate",
]
