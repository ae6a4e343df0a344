"""Helpers shared by media reading (:mod:`avatar3d.io.media`) and writing (:mod:`avatar3d.io._encode`):
error reasons, frame-rate snapping, sample-rate checks, resampling and channel layout."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from avatar3d.errors import MediaError

_NTSC = (Fraction(24000, 1001), Fraction(30000, 1001), Fraction(60000, 1001))
_STANDARD_FPS = (*_NTSC, *(Fraction(x) for x in (24, 25, 30, 48, 50, 60, 100, 120, 240)))
_MAX_CHANNELS = 64
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4000, 192000  # Hz accepted anywhere


def _reason(exc: BaseException) -> str:
    """A short, one-line reason from an FFmpeg/OS error (without the repeated file name)."""
    return " ".join(str(getattr(exc, "strerror", None) or exc or type(exc).__name__).split())


def _snap_rate(rate: Fraction) -> Fraction:
    if rate in _STANDARD_FPS:
        return rate
    for std in _STANDARD_FPS:  # e.g. an average of 29.97003 -> 30000/1001 (30 vs 29.97 is 1e-3 apart)
        if abs(float(rate) / float(std) - 1.0) < 1e-4:
            return std
    return rate.limit_denominator(1001)


def check_sample_rate(sr: object, what: str = "sample rate") -> int:
    """``sr`` as an int number of Hz within MIN_SAMPLE_RATE..MAX_SAMPLE_RATE, else MediaError."""
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer, float)) or int(sr) != sr:
        raise MediaError(f"{what} must be an integer number of Hz, got {sr!r}")
    if not MIN_SAMPLE_RATE <= int(sr) <= MAX_SAMPLE_RATE:
        raise MediaError(f"{what} {int(sr)} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    return int(sr)


def resample_audio(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample (T,) or (C, T) float audio along the last axis (soxr HQ, zero-delay, length-exact)."""
    if sr_in == sr_out or x.shape[-1] == 0:
        return np.asarray(x, dtype=np.float32)
    try:
        import soxr

        if x.ndim == 1:
            y = soxr.resample(np.asarray(x, np.float32), sr_in, sr_out, quality="HQ")
        else:
            y = np.stack([soxr.resample(np.asarray(c, np.float32), sr_in, sr_out, quality="HQ") for c in x])
    except ImportError:  # pragma: no cover - soxr ships with librosa
        import librosa

        y = librosa.resample(np.asarray(x, np.float32), orig_sr=sr_in, target_sr=sr_out, res_type="soxr_hq")
    return np.asarray(y, dtype=np.float32)


def audio_channels_first(audio: np.ndarray, what: str = "audio") -> np.ndarray:
    """(T,), (T, C) or (C, T) samples -> (C, T) float32 (integers scaled to [-1, 1]).

    The channel axis is the short one (at most 64 channels). Raises MediaError on empty input or
    non-finite samples.
    """
    a = np.asarray(audio)
    if a.dtype.kind not in "fiub":
        raise MediaError(f"{what}: unsupported sample type {a.dtype}")
    if a.ndim == 1:
        a = a[None, :]
    elif a.ndim == 2:
        if a.shape[0] > a.shape[1]:
            a = a.T  # (T, C) -> (C, T)
        if a.shape[0] > _MAX_CHANNELS:
            raise MediaError(
                f"{what}: shape {tuple(np.shape(audio))} has no channel axis (<= {_MAX_CHANNELS})"
            )
    else:
        raise MediaError(f"{what}: expected shape (T,), (T, C) or (C, T), got {a.shape}")
    if a.shape[1] == 0:
        raise MediaError(f"{what}: no samples")
    if a.dtype.kind == "b":
        a = a.astype(np.float32)
    elif a.dtype == np.uint8:
        a = (a.astype(np.float32) - 128.0) / 128.0
    elif a.dtype.kind in "iu":
        a = a.astype(np.float32) / float(2 ** (8 * a.dtype.itemsize - 1))
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise MediaError(f"{what}: contains NaN or infinite samples")
    return a


__all__ = [
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "audio_channels_first",
    "check_sample_rate",
    "resample_audio",
]
