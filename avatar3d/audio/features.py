"""Audio loading and frame-aligned log-mel features.

Conventions (docs/INTERNALS.md, "Audio"):

* Everything is computed at 16 kHz mono. Mel analysis: 50 ms Hann window (``n_fft = 800``),
  20 ms hop (320 samples), 80 mel bands 55-7600 Hz (librosa's Slaney filters), power spectrum,
  ``10 * log10`` with a floor 80 dB below the utterance's loudest mel bin (so a gain change shifts
  every value by the same constant, which the per-utterance normalisation then removes).
* Mel step ``j`` of :func:`log_mel` is centred at ``t = j * 0.02 s`` (librosa ``center=True``).
* Video frame ``k`` is at ``t_k = k / fps``. :func:`frame_features` gives it ``window`` mel steps
  spaced 20 ms apart and centred on ``t_k`` exactly: step ``i`` is an STFT whose window centre is
  at ``t_k + (i - (window - 1) / 2) * 0.02 s`` (rounded to the sample; 62.5 us at 16 kHz). For the
  default even window the two middle steps sit 10 ms either side of ``t_k``. Centres before the
  start or after the last regular step are clamped (edge padding).
* Per-utterance normalisation: every mel bin minus its mean over the utterance, divided by its std
  (floored at 1 dB), with the statistics taken over the regular 20 ms steps of the whole input.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avatar3d.core.constants import SAMPLE_RATE
from avatar3d.errors import MediaError
from avatar3d.io.media import audio_channels_first, check_sample_rate, read_audio, resample_audio

__all__ = [
    "HOP",
    "N_FFT",
    "N_MELS",
    "SR",
    "STEP_S",
    "as_mono",
    "audio_energy",
    "frame_centres",
    "frame_features",
    "load_audio",
    "log_mel",
    "mel_power_at",
]

SR = SAMPLE_RATE  # analysis rate, Hz (the package's one audio rate)
HOP = 320  # 20 ms
N_FFT = 800  # 50 ms window
N_MELS = 80
FMIN, FMAX = 55.0, 7600.0
STEP_S = HOP / SR  # 0.02 s between mel steps
_TOP_DB = 80.0  # log floor below the utterance's peak
_ABS_FLOOR = 1e-10  # absolute power floor (digital silence)
_STD_FLOOR_DB = 1.0
_CHUNK = 4096  # STFT windows per batch (bounds memory to ~30 MB)

AudioSource = str | os.PathLike[str] | tuple[np.ndarray, int]


def as_mono(wave: np.ndarray, sr: int, what: str = "audio") -> np.ndarray:
    """Validate samples of shape (T,), (T, C) or (C, T) at ``sr`` -> (T,) float32 mono.

    Raises MediaError on a rate outside 4-192 kHz, empty input, or NaN/inf samples.
    """
    check_sample_rate(sr, f"{what}: sample rate")
    return audio_channels_first(wave, what).mean(axis=0, dtype=np.float32)  # (C, T) -> (T,)


def load_audio(source: AudioSource, sr: int = SR) -> np.ndarray:
    """Audio from a file (any container, rate, layout) or ``(array, sample_rate)`` -> (T,) float32 mono at ``sr``."""
    sr = check_sample_rate(sr, "target sample rate")
    if isinstance(source, (str, os.PathLike)):
        wave, _ = read_audio(Path(source), sr=sr)
    elif isinstance(source, Sequence) and not isinstance(source, str) and len(source) == 2:
        array, rate = source
        rate = check_sample_rate(rate, "audio: sample rate")
        wave = resample_audio(as_mono(np.asarray(array), rate), rate, sr)
    else:
        raise TypeError("load_audio: source must be a path or an (array, sample_rate) pair")
    if wave.shape[0] == 0:
        raise MediaError(f"{source if isinstance(source, (str, os.PathLike)) else 'audio'}: no samples")
    return np.ascontiguousarray(wave, dtype=np.float32)


def _to_16k(wave: np.ndarray, sr: int) -> np.ndarray:
    return resample_audio(as_mono(wave, sr), int(sr), SR)  # (T16,)


@functools.lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX).astype(
        np.float32
    )  # (80, 401)


@functools.lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    n = np.arange(N_FFT)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)).astype(np.float32)  # periodic, as librosa


def mel_power_at(wave16: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Mel power spectra of 16 kHz ``wave16`` (T,) with STFT windows centred at sample ``centres`` (N,).

    Zero padding of ``N_FFT // 2`` at both ends, like librosa ``center=True, pad_mode="constant"``.
    Returns (N, 80) float32.
    """
    from numpy.lib.stride_tricks import sliding_window_view
    from scipy import fft as sfft

    wave16 = np.asarray(wave16, np.float32)
    half = N_FFT // 2
    centres = np.clip(np.asarray(centres, np.int64), 0, wave16.shape[0])
    if centres.size == 0:
        return np.zeros((0, N_MELS), np.float32)
    # pad only the span these windows cover (a chunk of a long clip does not copy the whole clip)
    c0, c1 = int(centres.min()), int(centres.max())
    lo, hi = max(0, c0 - half), min(wave16.shape[0], c1 + half)
    padded = np.pad(wave16[lo:hi], (lo - (c0 - half), (c1 + half) - hi))  # starts at sample c0 - half
    windows = sliding_window_view(padded, N_FFT)  # row r is centred at sample c0 + r
    centres = centres - c0
    basis, hann = _mel_basis(), _hann()
    out = np.empty((centres.shape[0], N_MELS), np.float32)
    for s in range(0, centres.shape[0], _CHUNK):
        spec = sfft.rfft(windows[centres[s : s + _CHUNK]] * hann, axis=1)  # (n, 401) complex64
        power = spec.real**2 + spec.imag**2
        out[s : s + _CHUNK] = power @ basis.T  # (n, 80)
    return out


def _rms(x: np.ndarray, block: int = 1 << 20) -> float:
    """Root mean square of a long wave, summed block by block in float64 (no full-size copy)."""
    if x.shape[0] == 0:
        return 0.0
    total = sum(
        float(np.dot(b.astype(np.float64), b.astype(np.float64)))
        for b in np.array_split(x, max(1, x.shape[0] // block))
    )
    return float(np.sqrt(total / x.shape[0]))


def _step_centres(n_samples: int) -> np.ndarray:
    return np.arange(1 + n_samples // HOP, dtype=np.int64) * HOP  # (n_steps,)


SILENCE_RMS = 1e-4  # whole-clip RMS (about -80 dBFS) below which a clip counts as silent
ENERGY_RANGE_DB = 60.0  # audio_energy maps (utterance peak - this) .. peak to 0 .. 1
_ENERGY_FLOOR = 1e-20  # mean-square floor (digital silence) of audio_energy
SILENT_VALUE = -0.8  # normalised value of silence: pauses in normalised speech land near -0.7 .. -0.85


def _to_db(power: np.ndarray, peak: float) -> np.ndarray:
    floor = max(_ABS_FLOOR, peak * 10.0 ** (-_TOP_DB / 10.0))
    return (10.0 * np.log10(np.maximum(power, floor))).astype(np.float32)


def log_mel(wave: np.ndarray, sr: int = SR) -> np.ndarray:
    """Log-mel spectrogram (n_steps, 80) float32 in dB; step j centred at j * 20 ms; n_steps = 1 + T16 // 320.

    Not normalised (see :func:`frame_features` for the normalised, frame-aligned version).
    """
    w16 = _to_16k(wave, sr)
    power = mel_power_at(w16, _step_centres(w16.shape[0]))  # (n_steps, 80)
    return _to_db(power, float(power.max()))


def frame_centres(n_frames: int, fps: float, window: int) -> np.ndarray:
    """Window centre times (n_frames, window) in seconds: t_k + (i - (window - 1) / 2) * 20 ms."""
    t = np.arange(n_frames, dtype=np.float64)[:, None] / float(fps)
    return t + (np.arange(window, dtype=np.float64)[None, :] - (window - 1) / 2.0) * STEP_S


def _default_n_frames(n_samples: int, sr: int, fps: float) -> int:
    return int(np.floor(n_samples / sr * fps + 1e-6))


def _check_frames(fps: float, n_frames: int | None, window: int = 1) -> None:
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    if n_frames is not None and (int(n_frames) != n_frames or n_frames < 0):
        raise ValueError(f"n_frames must be a non-negative int, got {n_frames!r}")
    if int(window) != window or window < 1:
        raise ValueError(f"window must be a positive int, got {window!r}")


@dataclass(frozen=True)
class ClipStats:
    """A clip's log-mel normalisation: the peak power, per-band mean and std in dB, and whether the clip
    is (almost) silent. Computed once per clip (:func:`clip_statistics`); chunked feature calls reuse it."""

    peak: float
    mean: np.ndarray  # (80,)
    std: np.ndarray  # (80,)
    silent: bool


def clip_statistics(wave: np.ndarray, sr: int) -> ClipStats:
    """The normalisation :func:`frame_features` applies to ``wave`` (over the whole clip)."""
    w16 = _to_16k(wave, sr)
    reg = mel_power_at(w16, _step_centres(w16.shape[0]))  # (n_steps, 80) regular grid
    peak = float(reg.max())
    reg_db = _to_db(reg, peak)
    std = np.maximum(reg_db.std(axis=0), _STD_FLOOR_DB)
    return ClipStats(peak, reg_db.mean(axis=0), std, bool(_rms(w16) < SILENCE_RMS))


def frame_features(
    wave: np.ndarray,
    sr: int,
    fps: float,
    n_frames: int | None = None,
    window: int = 16,
    frames: tuple[int, int] | None = None,
    stats: ClipStats | None = None,
) -> np.ndarray:
    """Per-video-frame normalised log-mel windows: (n_frames, window, 80) float32.

    ``wave``: (T,), (T, C) or (C, T) at ``sr``. Frame k gets ``window`` mel steps, 20 ms apart,
    centred on ``t_k = k / fps`` (see the module docstring). ``n_frames`` defaults to
    ``floor(duration * fps)``; frames past the audio's end repeat the last step (edge padding).
    ``frames=(a, b)``: only rows a..b-1 of that array (normalised over the whole clip), computed
    without the others, for chunked processing of long audio; ``stats``: the clip's
    :func:`clip_statistics`, so that chunks do not recompute them.
    """
    _check_frames(fps, n_frames, window)
    w16 = _to_16k(wave, sr)  # (T16,)
    if n_frames is None:
        n_frames = _default_n_frames(w16.shape[0], SR, fps)
    a, b = (0, int(n_frames)) if frames is None else (int(frames[0]), int(frames[1]))
    if not 0 <= a <= b <= n_frames:
        raise ValueError(f"frames {frames!r} must lie within 0..{n_frames}")
    st = clip_statistics(w16, SR) if stats is None else stats
    if n_frames and st.silent:
        # An (almost) silent clip has no utterance statistics: normalising it would make silence
        # look like average speech. Give it the value pauses take in normal speech instead.
        return np.full((b - a, int(window), N_MELS), SILENT_VALUE, np.float32)
    if b == a:
        return np.zeros((0, window, N_MELS), np.float32)
    last_step = int(_step_centres(w16.shape[0])[-1])
    centres = np.rint(frame_centres(int(n_frames), fps, int(window))[a:b] * SR).astype(
        np.int64
    )  # (n, window)
    centres = np.clip(centres, 0, last_step)  # edge padding
    db = _to_db(mel_power_at(w16, centres.reshape(-1)), st.peak)  # (n * window, 80)
    feats = (db - st.mean) / st.std
    return feats.reshape(b - a, int(window), N_MELS).astype(np.float32)


def audio_energy(wave: np.ndarray, sr: int, fps: float, n_frames: int | None = None) -> np.ndarray:
    """RMS envelope per video frame, (n_frames,) float32 in [0, 1].

    Frame k's RMS is over the 1/fps-long span centred on ``k / fps``, in dB, mapped linearly from
    (utterance peak - 60 dB) -> 0 to the peak -> 1 and clipped; pure silence gives 0.
    """
    _check_frames(fps, n_frames)
    x = as_mono(wave, sr).astype(np.float64)  # (T,)
    if n_frames is None:
        n_frames = _default_n_frames(x.shape[0], sr, fps)
    if n_frames == 0:
        return np.zeros(0, np.float32)
    csum = np.concatenate([[0.0], np.cumsum(x * x)])  # (T + 1,)
    t = np.arange(int(n_frames), dtype=np.float64) / float(fps)
    lo = np.clip(np.rint((t - 0.5 / fps) * sr), 0, x.shape[0]).astype(np.int64)
    hi = np.clip(np.rint((t + 0.5 / fps) * sr), 0, x.shape[0]).astype(np.int64)
    hi = np.maximum(hi, np.minimum(lo + 1, x.shape[0]))
    n = np.maximum(hi - lo, 1)
    ms = np.maximum((csum[hi] - csum[lo]) / n, 0.0)  # (n_frames,) mean square
    peak = float(ms.max())
    if peak <= _ENERGY_FLOOR:
        return np.zeros(int(n_frames), np.float32)
    db = 10.0 * np.log10(np.maximum(ms, _ENERGY_FLOOR) / peak)  # <= 0
    return np.clip((db + ENERGY_RANGE_DB) / ENERGY_RANGE_DB, 0.0, 1.0).astype(np.float32)
