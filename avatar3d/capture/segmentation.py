"""Person masks (MediaPipe selfie segmentation), the clean background plate and region masks.

Region masks come from the landmarks: the face (face-oval polygon), the head (the oval widened and
extended upwards, limited to the person), the torso (the person below the chin line, minus the head)
and the mouth interior (inner-lip polygon).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..core.topology import (
    CHIN,
    FOREHEAD,
    LEFT_EYE_CORNERS,
    RIGHT_EYE_CORNERS,
    face_oval_loop,
    inner_lip_loop,
)

SPECK_FRACTION = 0.02  # person blobs smaller than this fraction of the largest are dropped
INPAINT_RADIUS = 0.01  # of the longest side (at least 3 px): the plate's inpainting radius
UNSEEN_GREY = 127  # the plate where no frame ever showed background
HAIR_WIDTH = (1.35, 0.15)  # the head mask: the oval widened x (a + b x height above the eye line)
SUBPIXEL_BITS = 4  # cv2.fillPoly's fractional bits


class PersonSegmenter:
    """MediaPipe selfie segmentation (general 256×256 model). ``mask(frame) -> (H, W) uint8 0/255``."""

    def __init__(self, threshold: float = 0.5) -> None:
        import mediapipe as mp  # slow to import (seconds): only when a segmenter is made

        self.threshold = float(threshold)
        self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)

    def probability(self, frame: np.ndarray) -> np.ndarray:
        """frame: (H, W, 3) uint8 RGB -> (H, W) float32 person probability in [0, 1]."""
        res = self._seg.process(np.ascontiguousarray(frame))
        return np.asarray(res.segmentation_mask, dtype=np.float32)

    def mask(self, frame: np.ndarray) -> np.ndarray:
        """(H, W) uint8 0/255; the largest connected person blobs are kept, small specks dropped."""
        m = (self.probability(frame) > self.threshold).astype(np.uint8)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        if n > 2:
            areas = stats[1:, cv2.CC_STAT_AREA]
            keep = 1 + np.flatnonzero(areas >= SPECK_FRACTION * areas.max())
            m = np.isin(lab, keep).astype(np.uint8)
        return m * 255

    def close(self) -> None:
        self._seg.close()

    def __enter__(self) -> PersonSegmenter:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BackgroundPlate:
    """ER-NeRF-style clean plate, accumulated online over a subset of frames.

    Each pixel keeps the colour of the frame where it lies farthest from the person (distance
    transform of the dilated background); pixels never seen as background are inpainted at the end.
    Memory: two (H, W) buffers and one (H, W, 3), whatever the clip length.
    """

    def __init__(self, width: int, height: int, margin: float = 0.02) -> None:
        self.best_dist = np.zeros((height, width), np.float32)
        self.colour = np.zeros((height, width, 3), np.uint8)
        self.margin = max(1, round(margin * max(width, height)))
        self.n_frames = 0

    def update(self, frame: np.ndarray, person: np.ndarray) -> None:
        """frame: (H, W, 3) uint8, person: (H, W) uint8 0/255 (or bool)."""
        fg = (person > 0).astype(np.uint8)
        fg = cv2.dilate(fg, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * self.margin + 1,) * 2))
        bg = (1 - fg).astype(np.uint8)
        if fg.any():
            dist = cv2.distanceTransform(bg, cv2.DIST_L2, 5).astype(np.float32)
        else:
            dist = np.full(bg.shape, float(max(bg.shape)), np.float32)
        better = dist > self.best_dist
        self.best_dist[better] = dist[better]
        self.colour[better] = frame[better]
        self.n_frames += 1

    def result(self) -> np.ndarray:
        """(H, W, 3) uint8 plate; unseen pixels filled by OpenCV inpainting (Telea)."""
        unseen = (self.best_dist <= 0).astype(np.uint8)
        if not unseen.any():
            return self.colour.copy()
        if unseen.all():
            return np.full_like(self.colour, UNSEEN_GREY)
        radius = max(3, int(INPAINT_RADIUS * max(unseen.shape)))
        bgr = cv2.cvtColor(self.colour, cv2.COLOR_RGB2BGR)
        filled = cv2.inpaint(bgr, unseen * 255, radius, cv2.INPAINT_TELEA)
        return cv2.cvtColor(filled, cv2.COLOR_BGR2RGB)


def _poly_mask(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """points: (N, 2) pixel coordinates (centres at +0.5) -> (H, W) uint8 0/255 filled polygon."""
    m = np.zeros((height, width), np.uint8)
    pts = np.round((points - 0.5) * (1 << SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(m, [pts], 255, lineType=cv2.LINE_AA, shift=SUBPIXEL_BITS)
    return np.where(m >= 128, 255, 0).astype(np.uint8)


def eye_centres(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(subject's right eye, left eye) centres (2,) each: the means of their corners. lm: (478, 2)."""
    return lm[list(RIGHT_EYE_CORNERS)].mean(0), lm[list(LEFT_EYE_CORNERS)].mean(0)


def chin_axis(lm: np.ndarray, ex: np.ndarray) -> np.ndarray:
    """Unit (2,) perpendicular to the unit eye direction ``ex``, pointing from the forehead towards
    the chin whatever the roll (the face's image "down")."""
    ey = np.array([-ex[1], ex[0]])
    return -ey if ey @ (lm[CHIN] - lm[FOREHEAD]) < 0 else ey


def half_plane(c: np.ndarray, ex: np.ndarray, ey: np.ndarray, height: int, width: int) -> np.ndarray:
    """(4, 2) a quadrilateral covering the image's part of the half-plane beyond the line through
    ``c`` along ``ex``, on the ``ey`` side (large: cv2 clips it when filled)."""
    big = 4.0 * (height + width)
    return np.stack([c - big * ex, c + big * ex, c + big * ex + big * ey, c - big * ex + big * ey])


def region_masks(landmarks2d: np.ndarray, person: np.ndarray) -> dict[str, np.ndarray]:
    """Face / head / torso / mouth-interior masks of one frame.

    landmarks2d: (478, 2) pixels; person: (H, W) uint8 0/255. Returns a dict of (H, W) uint8 0/255:
    ``face`` (face-oval polygon), ``head`` (oval widened 35-50 % sideways and extended upwards by the
    forehead-to-eye height, for hair, within the person mask, plus the face), ``torso`` (person below the
    chin line, minus the head) and ``mouth`` (inner-lip polygon).
    """
    H, W = person.shape
    lm = landmarks2d.astype(np.float64)
    oval = lm[face_oval_loop()]
    face = _poly_mask(oval, H, W)
    # Face-aligned frame: x along the eye line, y towards the chin (handles roll and upside-down).
    eye_r, eye_l = eye_centres(lm)
    ex = eye_l - eye_r
    ex /= np.linalg.norm(ex) + 1e-9
    ey = chin_axis(lm, ex)
    eye_c = (eye_r + eye_l) / 2
    local = np.stack([(oval - eye_c) @ ex, (oval - eye_c) @ ey], -1)  # (36, 2)
    up = float(np.maximum(-local[:, 1], 0).max())  # forehead height above the eye line
    grown = local.copy()
    above = grown[:, 1] < 0
    rise = (-local[:, 1] / max(up, 1e-6)).clip(0, 1)  # 0 at the eye line, 1 at the forehead top
    grown[:, 0] *= HAIR_WIDTH[0] + HAIR_WIDTH[1] * rise  # hair beside the cheeks and above the forehead
    grown[above, 1] -= 1.0 * up * rise[above] ** 0.5
    head_poly = eye_c + grown[:, :1] * ex + grown[:, 1:] * ey
    person_b = person > 0
    head = ((_poly_mask(head_poly, H, W) > 0) & person_b) | (face > 0)
    # Chin line: through the chin, along the eye direction; "below" = the half-plane towards +ey
    below = _poly_mask(half_plane(lm[CHIN], ex, ey, H, W), H, W) > 0
    torso = person_b & below & ~head
    mouth = _poly_mask(lm[inner_lip_loop()], H, W)
    u8 = lambda b: b.astype(np.uint8) * 255
    return {"face": face, "head": u8(head), "torso": u8(torso), "mouth": mouth}
