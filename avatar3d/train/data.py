"""Training data from a CaptureSet: frames at the training resolution, poses, audio, masks.

Frames are decoded from the capture's image files once and kept as uint8 at the training resolution
(256 px x 1,800 frames is about 350 MB), so the video itself is never held in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch import Tensor

from ..audio import load_audio
from ..audio.visemes import speech_features
from ..core.constants import SAMPLE_RATE
from ..core.topology import outer_lip_loop


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    if img.shape[1] == w and img.shape[0] == h:
        return img
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def capture_visemes(cs) -> np.ndarray:
    """(T, 17) float32 speech front-end vectors of a CaptureSet's audio.wav at its fps."""
    wave, sr = cs.audio()
    if sr != SAMPLE_RATE:
        wave = load_audio((wave, sr), sr=SAMPLE_RATE)
    return np.asarray(
        speech_features(np.asarray(wave, np.float32), float(cs.fps), int(cs.n_frames)), np.float32
    )


def rest_frame(rotations: np.ndarray, valid: np.ndarray | None = None) -> int:
    """Index of the frame whose head rotation is closest to the chordal mean rotation."""
    Rs = rotations if valid is None or not valid.any() else rotations[valid]
    M = Rs.mean(0)
    U, _, Vt = np.linalg.svd(M)
    Rm = U @ np.diag([1, 1, np.sign(np.linalg.det(U @ Vt))]) @ Vt
    d = np.linalg.norm(rotations - Rm, axis=(1, 2))
    if valid is not None and valid.any():
        d = np.where(valid, d, np.inf)
    return int(np.argmin(d))


MIN_SIZE_PX = 8  # the training frames' smallest side at least
MIN_FRAMES_FOR_HOLDOUT = 11  # shorter clips hold out no frames
MOUTH_BOX_PAD = 0.25  # the mouth box reaches this share of the mouth's width beyond the outer lips
MOUTH_RANGE_PERCENTILES = (2, 98)  # tracked mouth/jaw opening mapped to [0, 1] between these
FEATURE_STD_FLOOR = 1e-5  # speech-model feature dimensions with a smaller std are not amplified


def _load_frames(cs, w: int, h: int, progress=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every frame (T, h, w, 3) uint8 and person mask (T, h, w) uint8 at (w, h), and the background
    plate (h, w, 3) float32 in [0, 1]."""
    T = int(cs.n_frames)
    images = np.zeros((T, h, w, 3), np.uint8)
    masks = np.zeros((T, h, w), np.uint8)
    it = range(T) if progress is None else progress(range(T), "loading frames")
    for i in it:
        images[i] = _resize(np.asarray(cs.image(i)), w, h)
        masks[i] = _resize(np.asarray(cs.mask(i)), w, h)
    plate = _resize(np.asarray(cs.background()), w, h).astype(np.float32) / 255.0
    return images, masks, plate


class _Cameras(NamedTuple):
    """Intrinsics (3, 3) at the training size, head -> camera per frame (T, 4, 4), the rest frame and
    each frame's head pose in the rest frame's head space (T, 4, 4)."""

    K: np.ndarray
    viewmats: np.ndarray
    rest: int
    head_poses: np.ndarray


def _cameras(cs, sx: float, sy: float) -> _Cameras:
    """The capture's camera and head poses, with the intrinsics scaled by (sx, sy)."""
    T = int(cs.n_frames)
    K = np.asarray(cs.K, dtype=np.float64).copy()
    K[0] *= sx
    K[1] *= sy
    R = np.asarray(cs.rotation, dtype=np.float64)
    t = np.asarray(cs.translation, dtype=np.float64)
    V = np.tile(np.eye(4), (T, 1, 1))
    V[:, :3, :3] = R
    V[:, :3, 3] = t
    valid = np.asarray(getattr(cs, "valid", np.ones(T, bool)), bool)
    r = rest_frame(R, valid)
    return _Cameras(K, V, r, np.linalg.inv(V[r])[None] @ V)


def _mouth_boxes(cs, sx: float, sy: float) -> np.ndarray:
    """(T, 4) x0, y0, x1, y1 of the outer lips' box, padded, in training pixels."""
    lm = np.asarray(cs.landmarks2d, dtype=np.float64) * np.array([sx, sy])
    mo = lm[:, outer_lip_loop()]
    pad = MOUTH_BOX_PAD * (mo[:, :, 0].max(1) - mo[:, :, 0].min(1))
    return np.stack(
        [
            mo[:, :, 0].min(1) - pad,
            mo[:, :, 1].min(1) - pad,
            mo[:, :, 0].max(1) + pad,
            mo[:, :, 1].max(1) + pad,
        ],
        1,
    )


class _AudioFeatures(NamedTuple):
    """Per-frame audio windows (T, W, D), with the speech model's record and the normalisation (D,)
    when they are speech-model features (else None), and the front end's vectors (T, 17) or None."""

    features: np.ndarray
    speech_model: dict | None
    mean: np.ndarray | None
    std: np.ndarray | None
    visemes: np.ndarray | None


def _audio_features(cs, n_train: int, visemes: bool) -> _AudioFeatures:
    """The capture's audio features. Speech-model features are unnormalised: each dimension -> zero
    mean, unit std over the first ``n_train`` frames (every window step), the same statistics at render
    time. With ``visemes`` the speech front end's vectors are appended to every window step."""
    feats = getattr(cs, "features", None)
    if feats is None:
        feats = cs.audio_features
    speech, f_mean, f_std = None, None, None
    if getattr(cs, "speech_features", None) is not None:
        raw = np.asarray(cs.speech_features, np.float64)  # (T, W, D)
        fit = raw[: max(1, n_train)].reshape(-1, raw.shape[-1])
        f_mean = fit.mean(0).astype(np.float32)
        f_std = np.maximum(fit.std(0), FEATURE_STD_FLOOR).astype(np.float32)
        feats = ((raw - f_mean) / f_std).astype(np.float32)
        speech = dict(cs.speech_model)
    vis = capture_visemes(cs) if visemes else None
    if vis is not None:
        feats = np.concatenate(
            [np.asarray(feats, np.float32), np.repeat(vis[:, None, :], feats.shape[1], 1)], -1
        )
    return _AudioFeatures(feats, speech, f_mean, f_std, vis)


def _blink(cs, T: int) -> np.ndarray:
    """(T,) float32 eye closure (the mean of both eyes when tracked per eye)."""
    blink = np.asarray(getattr(cs, "blink", np.zeros(T)), np.float32)
    return blink.mean(1) if blink.ndim == 2 else blink


def _mouth_tracks(cs, T: int) -> np.ndarray:
    """(T, 2) tracked mouth opening and jaw opening, each mapped to [0, 1] by its percentile range."""
    mouth = []
    for key in ("mouth_open", "jaw_open"):
        v = np.asarray(getattr(cs, key, np.zeros(T)), np.float64).reshape(T)
        v = np.nan_to_num(v)
        lo, hi = np.percentile(v, MOUTH_RANGE_PERCENTILES[0]), np.percentile(v, MOUTH_RANGE_PERCENTILES[1])
        mouth.append(np.clip((v - lo) / max(hi - lo, 1e-6), 0, 1))
    return np.stack(mouth, 1)


@dataclass
class TrainData:
    """Everything the trainer samples, at the training resolution."""

    images: Tensor  # (T, h, w, 3) uint8
    masks: Tensor  # (T, h, w) uint8
    plate: Tensor  # (h, w, 3) float
    K: Tensor  # (3, 3) at (w, h)
    viewmats: Tensor  # (T, 4, 4) head -> camera per frame
    rest: int  # index of the rest frame
    rest_viewmat: Tensor  # (4, 4) the body-frame camera
    head_poses: Tensor  # (T, 4, 4) head -> world (= rest head space)
    features: Tensor  # (T, W, M) audio features
    blink: Tensor  # (T,)
    mouth: Tensor  # (T, 2) tracked mouth opening and jaw opening, each scaled to [0, 1]
    expression: Tensor  # (T, E) tracked expression coefficients (unit variance)
    mouth_boxes: Tensor  # (T, 4) x0, y0, x1, y1 in training pixels
    train_idx: np.ndarray
    test_idx: np.ndarray
    width: int
    height: int
    fps: float
    # speech-model features (instead of log-mel): the capture's record of the model (path, dim, hop...)
    # and the per-dimension normalisation (D,) applied to ``features``; None for log-mel
    speech_model: dict | None = None
    feature_mean: np.ndarray | None = None
    feature_std: np.ndarray | None = None
    # the speech front end's per-frame vectors (T, 17) [15 viseme weights, voice, loudness], also
    # appended to every window step of ``features`` (its last ``n_visemes`` channels); None without
    visemes: Tensor | None = None

    @property
    def n_visemes(self) -> int:
        """Channels of the speech front end at the end of ``features`` (0 without it)."""
        return 0 if self.visemes is None else int(self.visemes.shape[1])

    @property
    def feature_kind(self) -> str:
        """``"speech"`` when trained on speech-model features, else ``"mel"``."""
        return "mel" if self.speech_model is None else "speech"

    @classmethod
    def from_capture(
        cls, cs, resolution: int, holdout_fraction: float, progress=None, visemes: bool = False
    ) -> TrainData:
        """Load a CaptureSet at ``resolution`` px (longest side); ``visemes``: run the speech front end
        on the capture's audio.wav at the capture's fps and append its vectors to the features.

        The last ``holdout_fraction`` of the frames are held out (none for clips under
        :data:`MIN_FRAMES_FOR_HOLDOUT` frames)."""
        T = int(cs.n_frames)
        s = resolution / max(cs.width, cs.height)
        w, h = max(MIN_SIZE_PX, round(cs.width * s)), max(MIN_SIZE_PX, round(cs.height * s))
        sx, sy = w / cs.width, h / cs.height
        images, masks, plate = _load_frames(cs, w, h, progress)
        cams = _cameras(cs, sx, sy)
        n_hold = int(round(T * holdout_fraction)) if T >= MIN_FRAMES_FOR_HOLDOUT else 0
        audio = _audio_features(cs, T - n_hold, visemes)
        f32 = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32)  # noqa: E731
        return cls(
            images=torch.from_numpy(images),
            masks=torch.from_numpy(masks),
            plate=torch.from_numpy(plate),
            K=f32(cams.K),
            viewmats=f32(cams.viewmats),
            rest=cams.rest,
            rest_viewmat=f32(cams.viewmats[cams.rest]),
            head_poses=f32(cams.head_poses),
            features=f32(audio.features),
            blink=f32(_blink(cs, T)),
            mouth=f32(_mouth_tracks(cs, T)),
            expression=f32(np.nan_to_num(np.asarray(cs.expression, np.float64))),
            mouth_boxes=f32(_mouth_boxes(cs, sx, sy)),
            train_idx=np.arange(0, T - n_hold),
            test_idx=np.arange(T - n_hold, T),
            width=w,
            height=h,
            fps=float(cs.fps),
            speech_model=audio.speech_model,
            feature_mean=audio.mean,
            feature_std=audio.std,
            visemes=None if audio.visemes is None else f32(audio.visemes),
        )

    def image(self, i: int) -> Tensor:
        return self.images[i].float() / 255.0

    def lip_weight_map(self, i: int, weight: float) -> Tensor:
        """(h, w) map equal to 1 + weight inside frame i's mouth box."""
        x0, y0, x1, y1 = self.mouth_boxes[i].tolist()
        m = torch.ones(self.height, self.width)
        m[max(0, int(y0)) : max(0, int(y1) + 1), max(0, int(x0)) : max(0, int(x1) + 1)] += weight
        return m


__all__ = ["TrainData", "capture_visemes", "rest_frame"]
