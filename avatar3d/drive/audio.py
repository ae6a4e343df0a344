"""Audio → the avatar's per-frame audio codes, as in training, chunk by chunk.

:class:`AudioDriver` computes an avatar's audio features (normalised log-mel or a local speech
model's features, plus the speech front end's viseme vector) and runs the model's audio branch on
them. Memory does not grow with the audio's length: features are computed in chunks of
:data:`CODE_CHUNK` frames.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..audio.features import clip_statistics, frame_features
from ..audio.speech_model import cached_extractor
from ..audio.visemes import speech_features
from ..core.constants import SAMPLE_RATE
from ..errors import FormatError
from ..io.meta import AvatarMeta
from ..models.deform import gather_windows
from ..models.gaussian_avatar import GaussianAvatar

CODE_CHUNK = 256  # frames of audio features computed at a time while rendering
WAVE_KEY_STRIDE = 997  # samples between those summed into a per-wave cache key


class AudioDriver:
    """The audio half of an avatar: features and codes of any 16 kHz mono wave.

    speech_model: the speech model file the USER named, for an avatar trained on one (never a path
    recorded in an avatar directory: loading such a file could run code).
    """

    def __init__(self, model: GaussianAvatar, meta: AvatarMeta, speech_model: str | Path | None = None):
        self.model = model
        self.meta = meta
        self.speech_model_path = Path(speech_model).expanduser() if speech_model else None
        self._cache: dict[str, tuple[tuple, object]] = {}  # per-wave results, one wave per kind

    def n_frames(self, wave16k: np.ndarray, fps: float | None = None) -> int:
        """Whole video frames in a wave at ``fps`` (default the avatar's)."""
        fps = self.meta.fps if fps is None else fps
        return math.floor(len(wave16k) / SAMPLE_RATE * fps + 1e-6)

    def features(
        self,
        wave16k: np.ndarray,
        fps: float | None = None,
        n_frames: int | None = None,
        frames: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """(n_frames, W, M) float32 features as in training; ``frames=(a, b)``: rows a..b-1 only
        (normalised over the whole wave), without computing the others."""
        fps = float(self.meta.fps if fps is None else fps)
        wave = np.asarray(wave16k, np.float32)
        n_frames = self.n_frames(wave, fps) if n_frames is None else n_frames
        sm = self.meta.speech_model
        if not sm:
            stats = self._cached("stats", wave, (), lambda: clip_statistics(wave, SAMPLE_RATE))
            feats = frame_features(
                wave, SAMPLE_RATE, fps, n_frames, self.meta.audio_window, frames=frames, stats=stats
            )
        else:
            feats = self._speech_model_features(wave, fps, n_frames, sm, frames)
        if not self.meta.n_visemes:
            return feats
        vis = self._visemes(wave, fps, n_frames)
        if frames is not None:
            vis = vis[frames[0] : frames[1]]
        return np.concatenate([feats, np.repeat(vis[:, None, :], feats.shape[1], 1)], -1)

    def _speech_model_features(
        self, wave: np.ndarray, fps: float, n_frames: int, sm: dict, frames: tuple[int, int] | None = None
    ) -> np.ndarray:
        """Normalised speech-model features of frames ``frames`` (all by default); the model runs once
        per wave (its output sequence is cached), each chunk is only windowed from it."""
        if self.speech_model_path is None:
            raise FormatError(
                f"this avatar was trained with the speech model {sm.get('path') or '(unrecorded)'}: "
                "name that model file with --speech-model PATH (Avatar.load(..., speech_model=PATH)); "
                "avatar3d never runs a model file named by an avatar directory"
            )
        path = self.speech_model_path
        if not path.exists():
            raise FormatError(f"{path}: speech model not found")
        ext = cached_extractor(path)
        seq = self._cached("speech_model", wave, (str(path),), lambda: ext.sequence(wave, SAMPLE_RATE))
        feats = ext.frame_windows(seq, fps, n_frames, self.meta.audio_window, frames=frames)
        mean, std = np.asarray(sm["mean"], np.float32), np.asarray(sm["std"], np.float32)
        if feats.shape[-1] != mean.shape[0]:
            raise FormatError(
                f"{path}: speech model gives {feats.shape[-1]} features, but this avatar was trained on "
                f"{mean.shape[0]} (the file changed since training)"
            )
        return ((feats - mean) / std).astype(np.float32)

    def _cached(self, what: str, wave: np.ndarray, extra: tuple, compute):
        """``compute()`` once per wave (and ``extra``): a render asks for its features chunk by chunk,
        while the normalisation and the phone recogniser need the whole utterance."""
        key = (what, id(wave), len(wave), extra, float(np.abs(wave[::WAVE_KEY_STRIDE]).sum()))
        hit = self._cache.get(what)
        if hit is None or hit[0] != key:
            hit = self._cache[what] = (key, compute())
        return hit[1]

    def _visemes(self, wave: np.ndarray, fps: float, n_frames: int) -> np.ndarray:
        """The front end's (n_frames, V) vectors of a wave (computed once per wave)."""
        compute = lambda: np.asarray(speech_features(wave, fps, n_frames), np.float32)  # noqa: E731
        return self._cached("visemes", wave, (float(fps), int(n_frames)), compute)

    def codes(
        self, wave16k: np.ndarray, fps: float, n_frames: int, chunk: int = CODE_CHUNK, start: int = 0
    ) -> Iterator[torch.Tensor]:
        """Smoothed audio codes of frames start..n_frames-1, yielded in order as (k, A) tensors of at
        most ``chunk`` frames (features computed per chunk with the smoother's context on both sides).
        Chunks keep their places whatever ``start`` is, so each code equals the one a run from frame 0
        gives (a resumed render's frames are those of an uninterrupted one)."""
        span = self.model.cfg.smooth_window
        for s in range(start - start % chunk, n_frames, chunk):
            e = min(n_frames, s + chunk)
            lo, hi = max(0, s - span), min(n_frames, e + span)
            feats = torch.as_tensor(
                self.features(wave16k, fps, n_frames, frames=(lo, hi)), dtype=torch.float32
            )
            with torch.no_grad():
                codes = self.model.audio(gather_windows(feats, torch.arange(s - lo, e - lo), span))
            yield codes[max(0, start - s) :]

    def silence_code(self) -> torch.Tensor:
        """(A,) the audio code of one second of silence: the neutral, closed-mouth face."""
        wave = np.zeros(SAMPLE_RATE, np.float32)
        feats = torch.as_tensor(self.features(wave)).float()
        with torch.no_grad():
            return self.model.audio(
                gather_windows(feats, torch.tensor([len(feats) // 2]), self.model.cfg.smooth_window)
            )[0]


__all__ = ["CODE_CHUNK", "AudioDriver"]
