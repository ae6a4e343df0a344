"""Per-frame face signals from pose-free 3D landmarks (head space): mouth, jaw, blinks, expression."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.topology import (
    CHIN,
    FOREHEAD,
    INNER_LIP_PAIRS,
    LEFT_CHEEK_OVAL,
    LEFT_EYE_CORNERS,
    LEFT_EYELID_PAIRS,
    RIGHT_CHEEK_OVAL,
    RIGHT_EYE_CORNERS,
    RIGHT_EYELID_PAIRS,
)

OPEN_EYE_PERCENTILE = 70  # an eye's typical open state over the clip
CLOSED_EYE_FRACTION = 0.25  # an eye counts as closed at this fraction of its open state ...
CLOSED_EYE_PERCENTILE = 1  # ... or at the clip's lowest percentile, whichever is smaller
JAW_CLOSED_PERCENTILE = 98  # the clip's most-closed jaw angle
HINGE_BEHIND_CHEEKS_M = 0.04  # metres: the jaw hinge behind the cheekbones' midpoint


@dataclass
class FaceSignals:
    """mouth_open (T,) in [0, 1]; mouth_open_raw (T,) inner-lip gap / face height; jaw_open (T,)
    radians of chin rotation about the jaw hinge relative to the clip's most-closed frames;
    blink (T,) in [0, 1] (mean of both eyes; 1 = closed); blink_per_eye (T, 2) [subject's right
    (image left), subject's left]; eye_open_raw (T, 2) eyelid gap / eye width; expression (T, E) PCA
    coefficients (unit variance over the clip); expression_basis (E, 478, 3) and expression_mean
    (478, 3) in metres so that ``landmarks3d ≈ canonical + mean + coeffs @ basis``."""

    mouth_open: np.ndarray
    mouth_open_raw: np.ndarray
    jaw_open: np.ndarray
    blink: np.ndarray
    blink_per_eye: np.ndarray
    eye_open_raw: np.ndarray
    expression: np.ndarray
    expression_basis: np.ndarray
    expression_mean: np.ndarray


def _gap(lm: np.ndarray, pairs) -> np.ndarray:
    """Mean distance of (upper, lower) landmark pairs. lm: (T, 478, 3) -> (T,)."""
    p = np.array(pairs)
    return np.linalg.norm(lm[:, p[:, 0]] - lm[:, p[:, 1]], axis=-1).mean(-1)


def _normalise(x: np.ndarray, valid: np.ndarray, lo_q: float = 2.0, hi_q: float = 98.0) -> np.ndarray:
    """Map robust [lo, hi] percentiles over valid frames to [0, 1], clipped."""
    ref = x[valid] if valid.any() else x
    lo, hi = np.percentile(ref, lo_q), np.percentile(ref, hi_q)
    if hi - lo < 1e-9:
        return np.zeros_like(x)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def mouth_opening(lm3d: np.ndarray) -> np.ndarray:
    """Inner-lip gap / face height (forehead top to chin). lm3d: (T, 478, 3) -> (T,)."""
    height = np.linalg.norm(lm3d[:, FOREHEAD] - lm3d[:, CHIN], axis=-1)
    return _gap(lm3d, INNER_LIP_PAIRS) / np.maximum(height, 1e-9)


def eye_opening(lm3d: np.ndarray) -> np.ndarray:
    """Eyelid gap / eye width per eye. lm3d: (T, 478, 3) -> (T, 2) [subject's right, left]."""
    out = []
    for pairs, (a, b) in ((RIGHT_EYELID_PAIRS, RIGHT_EYE_CORNERS), (LEFT_EYELID_PAIRS, LEFT_EYE_CORNERS)):
        width = np.linalg.norm(lm3d[:, a] - lm3d[:, b], axis=-1)
        out.append(_gap(lm3d, pairs) / np.maximum(width, 1e-9))
    return np.stack(out, -1)


def blink_from_openness(open_raw: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(T, 2) eye openness -> (T, 2) blink in [0, 1].

    0 at or above the eye's typical open state (70th percentile over valid frames), 1 at a quarter
    of it (an eye that closed); so a clip without blinks gives values near 0 rather than being
    stretched to [0, 1].
    """
    ref = open_raw[valid] if valid.any() else open_raw
    open_ref = np.percentile(ref, OPEN_EYE_PERCENTILE, axis=0)  # (2,)
    closed_ref = np.minimum(CLOSED_EYE_FRACTION * open_ref, np.percentile(ref, CLOSED_EYE_PERCENTILE, axis=0))
    return np.clip((open_ref - open_raw) / np.maximum(open_ref - closed_ref, 1e-9), 0.0, 1.0)


def jaw_angle(lm3d: np.ndarray) -> np.ndarray:
    """Angle (radians) of the hinge->chin vector in the y-z plane, from straight down towards the
    camera (-z). lm3d: (T, 478, 3) -> (T,).

    The hinge is approximated by the midpoint of the lateral face-oval points at cheekbone level
    (234/454) pushed 4 cm back (+z), near where the mandible's condyles sit.
    """
    hinge = (lm3d[:, LEFT_CHEEK_OVAL] + lm3d[:, RIGHT_CHEEK_OVAL]) / 2 + np.array(
        [0.0, 0.0, HINGE_BEHIND_CHEEKS_M]
    )
    v = lm3d[:, CHIN] - hinge
    return np.arctan2(-v[:, 2], v[:, 1])  # 0 = chin straight below the hinge; shrinks as the jaw opens


def expression_pca(
    lm3d: np.ndarray, canonical: np.ndarray, valid: np.ndarray, dims: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA of the pose-free residuals ``lm3d - canonical`` over valid frames.

    Returns (coeffs (T, dims) unit variance, basis (dims, 478, 3) metres, mean (478, 3)). Components
    beyond the data's rank are zero.
    """
    T = lm3d.shape[0]
    res = (lm3d - canonical[None]).reshape(T, -1)  # (T, 1434)
    ref = res[valid] if valid.any() else res
    mean = ref.mean(0)
    X = ref - mean
    basis = np.zeros((dims, res.shape[1]))
    coeffs = np.zeros((T, dims))
    if X.shape[0] >= 2:
        _, S, Vt = np.linalg.svd(X, full_matrices=False)
        # a component's sign is arbitrary (it can differ between runs and BLAS builds): fix it so the
        # largest entry of each is positive, so the same clip always gives the same coefficients
        big = np.abs(Vt).argmax(axis=1)
        Vt = Vt * np.sign(Vt[np.arange(Vt.shape[0]), big])[:, None]
        k = min(dims, Vt.shape[0])
        std = S[:k] / np.sqrt(max(X.shape[0] - 1, 1))  # (k,) per-component std
        keep = std > 1e-9
        scale = np.where(keep, std, 1.0)
        basis[:k] = Vt[:k] * (scale * keep)[:, None]  # basis scaled so coefficients have unit variance
        coeffs[:, :k] = ((res - mean) @ Vt[:k].T) / scale * keep
    return coeffs.astype(np.float32), basis.reshape(dims, -1, 3).astype(np.float32), mean.reshape(-1, 3)


def compute_signals(
    lm3d: np.ndarray, canonical: np.ndarray, valid: np.ndarray, expression_dims: int = 16
) -> FaceSignals:
    """All per-frame signals. lm3d: (T, 478, 3) head space; canonical: (478, 3); valid: (T,) bool."""
    mouth_raw = mouth_opening(lm3d)
    eye_raw = eye_opening(lm3d)
    blink2 = blink_from_openness(eye_raw, valid)
    ang = jaw_angle(lm3d)
    ref = ang[valid] if valid.any() else ang
    jaw = np.maximum(
        np.percentile(ref, JAW_CLOSED_PERCENTILE) - ang, 0.0
    )  # opening swings the chin down and back
    coeffs, basis, mean = expression_pca(lm3d, canonical, valid, expression_dims)
    return FaceSignals(
        mouth_open=_normalise(mouth_raw, valid).astype(np.float32),
        mouth_open_raw=mouth_raw.astype(np.float32),
        jaw_open=jaw.astype(np.float32),
        blink=blink2.mean(-1).astype(np.float32),
        blink_per_eye=blink2.astype(np.float32),
        eye_open_raw=eye_raw.astype(np.float32),
        expression=coeffs,
        expression_basis=basis,
        expression_mean=mean.astype(np.float32),
    )
