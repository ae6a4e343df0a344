"""Per-frame image and landmark metrics of the evaluation protocol.

All image metrics take RGB images as ``(H, W, 3)`` or ``(T, H, W, 3)`` arrays/tensors, either uint8
(0..255) or float in [0, 1], and return one value per frame.

* :func:`psnr` — ``10 log10(1 / MSE)`` on [0, 1] images, capped at :data:`PSNR_CAP_DB` (identical
  images would give +inf, which no average survives); :func:`ssim` — kornia's SSIM (Gaussian window
  11, sigma 1.5, only where the window lies inside the image), averaged over pixels and channels.
  Both are the package's one convention, shared with training's held-out figures
  (:mod:`avatar3d.train.losses` states it in full).
* :func:`lpips` — LPIPS (AlexNet or VGG) from a weights file the user supplies
  (:mod:`avatar3d.core.lpips`); :class:`NotComputed` otherwise. Nothing is ever downloaded.
* :func:`lmd` — mouth landmark distance: the 20 MediaPipe points of :data:`MOUTH68_TO_MEDIAPIPE`
  (the 68-point scheme's mouth, indices 48-67), each set minus its own mean, mean L2 distance in
  pixels of the (512-px) frames they were detected on.
* :func:`identity_consistency` — *landmark-shape and face-colour consistency* of a sequence with a
  reference sequence's mean. It is not a face-recognition identity embedding (none ships offline):
  it measures whether the face keeps the subject's proportions and skin colour.
* :func:`detect_landmarks` — our landmarker for LMD, sync and identity: MediaPipe FaceMesh (478
  points, ``refine_landmarks=True``) via :class:`avatar3d.capture.landmarks.FaceLandmarker`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..capture.landmarks import FaceLandmarker
from ..core.geometry import similarity_align
from ..core.lpips import load_lpips
from ..core.topology import LEFT_EYE_CORNERS, N_LANDMARKS, RIGHT_EYE_CORNERS, RIGID_INDICES, face_oval_loop
from ..train.losses import PSNR_CAP_DB, SSIM_WINDOW, psnr_db, ssim_score

SSIM_BATCH = 8  # frames per SSIM call: bounded memory for long clips
LPIPS_BATCH = 4  # frames per LPIPS call

# The 68-point scheme's mouth (indices 48-67) as MediaPipe FaceMesh indices, in the 68-point order:
# outer lip 48-59 from the image-left corner along the upper lip to the image-right corner and back
# along the lower lip, then the inner lip 60-67 likewise. Symmetric pairs stay symmetric
# (40/270, 37/267, 91/321, 84/314, 81/311, 178/402).
MOUTH68_TO_MEDIAPIPE: tuple[int, ...] = (
    61,
    40,
    37,
    0,
    267,
    270,
    291,  # 48-54: outer upper lip, corner to corner
    321,
    314,
    17,
    84,
    91,  # 55-59: outer lower lip, right to left
    78,
    81,
    13,
    311,  # 60-63: inner upper lip
    308,
    402,
    14,
    178,  # 64-67: inner corner, inner lower lip right to left
)
LANDMARKER_NAME = "MediaPipe FaceMesh 478 points (refine_landmarks=True), video mode"


LPIPS_NOT_GIVEN = "not computed: no LPIPS weights file given (--lpips-weights)"


class NotComputed(str):
    """A metric that could not be computed; the string says why (it goes into reports as is)."""


# ----------------------------------------------------------------------------------- images
def as_float_images(x) -> torch.Tensor:
    """(H, W, 3) or (T, H, W, 3) uint8 / float image(s) -> (T, 3, H, W) float64 in [0, 1]."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"images must be (H, W, 3) or (T, H, W, 3), got {tuple(t.shape)}")
    t = t.to(torch.float64) / 255.0 if t.dtype == torch.uint8 else t.to(torch.float64)
    return t.permute(0, 3, 1, 2).contiguous()


def _pair(pred, gt) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = as_float_images(pred), as_float_images(gt)
    if a.shape != b.shape:
        raise ValueError(f"prediction {tuple(a.shape)} and ground truth {tuple(b.shape)} differ in shape")
    return a, b


def psnr(pred, gt, mask=None) -> np.ndarray:
    """Per-frame PSNR in dB on [0, 1] images -> (T,); capped at :data:`PSNR_CAP_DB`.

    mask: optional (H, W) or (T, H, W) weights; the MSE is then taken over the masked pixels.
    """
    a, b = _pair(pred, gt)  # (T, 3, H, W) float64
    m = None if mask is None else torch.as_tensor(np.asarray(mask), dtype=torch.float64)
    return psnr_db(a, b, m).numpy()


def ssim(pred, gt, window: int = SSIM_WINDOW) -> np.ndarray:
    """Per-frame SSIM (:func:`avatar3d.train.losses.ssim_score`, in float32) -> (T,)."""
    a, b = _pair(pred, gt)
    if min(a.shape[-2:]) < window:
        raise ValueError(f"images of {a.shape[-1]}x{a.shape[-2]} are smaller than the SSIM window {window}")
    out = [
        ssim_score(a[i : i + SSIM_BATCH].float(), b[i : i + SSIM_BATCH].float(), window).double()
        for i in range(0, a.shape[0], SSIM_BATCH)
    ]
    return torch.cat(out).numpy()


def lpips(pred, gt, weights: str | Path | None) -> np.ndarray | NotComputed:
    """Per-frame LPIPS -> (T,), or :class:`NotComputed` when no usable weights file is given."""
    if not weights:
        return NotComputed(LPIPS_NOT_GIVEN)
    net = load_lpips(weights)
    if isinstance(net, str):
        return NotComputed(net)
    a, b = _pair(pred, gt)
    with torch.no_grad():
        vals = [
            net(a[i : i + LPIPS_BATCH].float(), b[i : i + LPIPS_BATCH].float())
            for i in range(0, a.shape[0], LPIPS_BATCH)
        ]
    return torch.cat(vals).double().numpy()


# ----------------------------------------------------------------------------------- landmarks
def detect_landmarks(frames: Iterable[np.ndarray]) -> np.ndarray:
    """Our landmarker on a sequence: (T, 478, 2) pixel landmarks, NaN where no face was found.

    frames: iterable of (H, W, 3) uint8 RGB. One tracker per call (MediaPipe video mode), the most
    central face when several are found.
    """
    out = []
    with FaceLandmarker(max_num_faces=1) as lm:
        for f in frames:
            faces = lm.detect(np.ascontiguousarray(f))
            out.append(faces[0][:, :2] if faces else np.full((N_LANDMARKS, 2), np.nan, np.float32))
    return np.stack(out).astype(np.float64) if out else np.zeros((0, N_LANDMARKS, 2))


def mouth_points(landmarks: np.ndarray) -> np.ndarray:
    """(..., 478, D) MediaPipe landmarks -> (..., 20, D) the 68-point mouth (48-67)."""
    return np.asarray(landmarks)[..., list(MOUTH68_TO_MEDIAPIPE), :]


def lmd(pred_landmarks: np.ndarray, gt_landmarks: np.ndarray) -> np.ndarray:
    """Per-frame mouth landmark distance -> (T,), NaN where either frame has no landmarks.

    pred_landmarks, gt_landmarks: (T, 478, 2) (or (T, 20, 2) mouth points already selected), in pixels
    of the frames they were detected on. Each frame's 20 mouth points minus their own mean, then the
    mean Euclidean distance between corresponding points.
    """
    p, g = np.asarray(pred_landmarks, np.float64), np.asarray(gt_landmarks, np.float64)
    if p.shape != g.shape or p.ndim != 3:
        raise ValueError(f"landmark arrays must both be (T, N, 2), got {p.shape} and {g.shape}")
    if p.shape[1] != 20:
        p, g = mouth_points(p), mouth_points(g)  # (T, 20, 2)
    p = p - p.mean(1, keepdims=True)
    g = g - g.mean(1, keepdims=True)
    return np.linalg.norm(p - g, axis=-1).mean(-1)


# ----------------------------------------------------------------------------------- identity
def _shape_descriptor(lm: np.ndarray, ref: np.ndarray | None) -> np.ndarray:
    """Rigid landmarks (478, 2) -> centred, unit-norm (2L,) vector, aligned onto ``ref`` if given."""
    x = lm[list(RIGID_INDICES)]
    if ref is not None:
        x = similarity_align(x, ref)
    x = x - x.mean(0)
    return (x / max(np.linalg.norm(x), 1e-12)).reshape(-1)


def _iod(lm: np.ndarray) -> float:
    return float(np.linalg.norm(lm[RIGHT_EYE_CORNERS[0]] - lm[LEFT_EYE_CORNERS[0]]))  # outer eye corners


def face_mask(landmarks: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) bool inside the face-oval polygon of one frame's (478, 2) landmarks."""
    m = np.zeros((height, width), np.uint8)
    poly = np.round(landmarks[face_oval_loop()] - 0.5).astype(np.int32)
    cv2.fillPoly(m, [poly], 1)
    return m.astype(bool)


def face_colour(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Mean CIELAB colour (L in 0..100) inside the face oval of one frame -> (3,); NaN if no face.

    frame: (H, W, 3) uint8 RGB; landmarks: (478, 2) pixels (NaN rows: no face).
    """
    if not np.isfinite(landmarks).all():
        return np.full(3, np.nan)
    m = face_mask(landmarks, frame.shape[0], frame.shape[1])
    if not m.any():
        return np.full(3, np.nan)
    lab = cv2.cvtColor(frame.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)  # float input: L 0..100
    return lab[m].mean(0).astype(np.float64)


@dataclass
class IdentityStats:
    """Landmark-shape and face-colour consistency of a sequence with a reference mean.

    shape_cosine: mean over frames of the cosine similarity between the frame's centred, unit-norm
        rigid landmark shape (similarity-aligned onto the reference's mean shape) and that mean.
    shape_rms_iod: RMS distance of those aligned points to the reference mean, in units of the
        reference's inter-ocular (outer eye corner) distance.
    colour_delta_e: mean CIE76 distance between each frame's mean face-oval colour (Lab) and the
        reference's mean; colour_std_delta_e: its standard deviation over frames (colour flicker).
    frames: frames with a face found.
    """

    shape_cosine: float
    shape_rms_iod: float
    colour_delta_e: float
    colour_std_delta_e: float
    frames: int

    def to_dict(self) -> dict:
        r = lambda v: None if not np.isfinite(v) else round(float(v), 6)
        return {
            "shape_cosine": r(self.shape_cosine),
            "shape_rms_iod": r(self.shape_rms_iod),
            "colour_delta_e": r(self.colour_delta_e),
            "colour_std_delta_e": r(self.colour_std_delta_e),
            "frames": self.frames,
        }


def identity_reference(landmarks: np.ndarray, colours: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Reference of a (ground-truth) sequence: mean rigid shape (L, 2) (generalised Procrustes), mean
    face colour (3,) Lab and mean inter-ocular distance.

    landmarks: (T, 478, 2) with NaN rows for missed frames; colours: (T, 3) from :func:`face_colour`.
    """
    ok = np.isfinite(landmarks).all((1, 2))
    if not ok.any():
        raise ValueError("no face was found in any reference frame")
    lms = landmarks[ok]
    rig = list(RIGID_INDICES)
    ref = lms[0][rig]
    for _ in range(3):
        ref = np.mean([similarity_align(x[rig], ref) for x in lms], axis=0)
    return ref, np.nanmean(np.asarray(colours)[ok], 0), float(np.mean([_iod(x) for x in lms]))


def identity_consistency(landmarks: np.ndarray, colours: np.ndarray, reference: tuple) -> IdentityStats:
    """Compare a sequence's landmarks (T, 478, 2) and face colours (T, 3) with
    :func:`identity_reference` of the ground truth (NaN rows are skipped)."""
    ref_shape, ref_lab, ref_iod = reference
    ref_vec = ref_shape - ref_shape.mean(0)
    ref_vec = (ref_vec / np.linalg.norm(ref_vec)).reshape(-1)
    cos, rms, de = [], [], []
    for lm, lab in zip(landmarks, colours):
        if not np.isfinite(lm).all():
            continue
        aligned = similarity_align(lm[list(RIGID_INDICES)], ref_shape)
        cos.append(float(_shape_descriptor(lm, ref_shape) @ ref_vec))
        rms.append(float(np.sqrt(((aligned - ref_shape) ** 2).sum(-1).mean())) / max(ref_iod, 1e-9))
        de.append(float(np.linalg.norm(np.asarray(lab) - ref_lab)))
    if not cos:
        nan = float("nan")
        return IdentityStats(nan, nan, nan, nan, 0)
    de_a = np.array(de)
    return IdentityStats(
        float(np.mean(cos)), float(np.mean(rms)), float(np.nanmean(de_a)), float(np.nanstd(de_a)), len(cos)
    )


def summarise(values) -> float | None:
    """Mean of the finite values (None when there are none) for reports."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else None


__all__ = [
    "LANDMARKER_NAME",
    "MOUTH68_TO_MEDIAPIPE",
    "PSNR_CAP_DB",
    "IdentityStats",
    "NotComputed",
    "as_float_images",
    "detect_landmarks",
    "face_colour",
    "face_mask",
    "identity_consistency",
    "identity_reference",
    "lmd",
    "lpips",
    "mouth_points",
    "psnr",
    "ssim",
    "summarise",
]
