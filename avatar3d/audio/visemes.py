"""Speaker-independent speech front end: per-frame viseme weights, voice activity and loudness.

Pipeline (all offline, models from inside the installed wheels):

1. phones: pocketsphinx allphone decoding of 16 kHz audio, cut into utterances at pauses found by
   silero-vad (:mod:`avatar3d.audio.phones`);
2. visemes: each phone maps to one of the 15 visemes of headset lip-sync SDKs (:data:`VISEMES`,
   ARPAbet map in :mod:`avatar3d.audio.coarticulation`: ``P B M`` -> PP, ``AA AH AO AW AY`` -> aa,
   ``UH UW W`` -> ou, HH/Y take the next vowel's viseme, ...), blended with coarticulation
   (anticipation before a sound, shorter release after it, bilabials close fully);
3. voice gate: where the VAD hears no speech the weights fade to ``sil`` (the gate for frame k is
   the largest VAD probability within ``[t_k - 60 ms, t_k + 100 ms]``, mapped linearly from
   0.2 -> closed to 0.6 -> open), so silence, noise and music keep the mouth closed;
4. loudness: RMS over 40 ms centred on each frame, in dB relative to the speech level heard so far
   (voice-weighted running mean of the frame levels up to and including this frame, starting from a
   prior of -26 dBFS worth 0.25 s), mapped ``ref - 30 dB -> 0``, ``ref + 12 dB -> 1``. It is
   gain-invariant once speech has been heard, and causal, so streaming gives the same values.
   It is multiplied by the voice gate: loudness of speech, 0 for noise, music and silence.

Timing: frame ``k`` is centred on ``t_k = k / fps`` (the project's rule, as
:func:`avatar3d.audio.frame_features`); ``n_frames`` defaults to ``floor(duration * fps)``.

:class:`StreamingVisemes` runs the same pipeline on chunks as they arrive: frame k is emitted once
the audio up to ``t_k + lookahead`` has been pushed (plus up to one 32 ms VAD block of buffering).
Its only difference from offline decoding is that phones near the newest audio come from the
decoder's partial best path, which may still change.

JSON written by :meth:`VisemeTrack.save` (``avatar3d visemes``)::

    {"format": "avatar3d-visemes", "version": 1,
     "frontend": {"name": "avatar3d-visemes", "version": 1, "phones": "pocketsphinx 5.1.1 allphone en-us",
                  "vad": "silero-vad 6.2.3"},
     "fps": 25.0, "n_frames": N, "frame_time": "k / fps (frame centre)",
     "visemes": ["sil", "PP", ..., "ou"],
     "weights": [[15 floats summing to 1] * N], "voice": [N floats in 0..1], "loudness": [N floats in 0..1]}

CSV: a header ``frame,time,sil,PP,...,ou,voice,loudness`` and one row per frame.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avatar3d.audio.coarticulation import VISEMES, segment_arrays, viseme_weights
from avatar3d.audio.features import SR, _to_16k
from avatar3d.audio.phones import PhoneStream, phones_version
from avatar3d.audio.vad import BLOCK, BLOCK_S, vad_version
from avatar3d.errors import MediaError
from avatar3d.io.atomic import atomic_file

__all__ = [
    "FEATURE_DIM",
    "FRONTEND_NAME",
    "FRONTEND_VERSION",
    "MIN_LIVE_LOOKAHEAD",
    "MIN_LOOKAHEAD",
    "VISEMES",
    "StreamingVisemes",
    "VisemeTrack",
    "frontend_info",
    "speech_features",
    "viseme_track",
]

FRONTEND_NAME = "avatar3d-visemes"
FRONTEND_VERSION = 1
FEATURE_DIM = len(VISEMES) + 2  # 15 viseme weights, voice, loudness
_GATE_BACK, _GATE_FWD = 0.06, 0.10  # s, voice-gate window around a frame
_GATE_LO, _GATE_HI = 0.2, 0.6
_LOUD_HALF = 0.02  # s, half the RMS window
_PRIOR_DB, _PRIOR_S = -26.0, 0.25
_LOUD_LO, _LOUD_HI = -30.0, 12.0  # dB relative to the speech level -> 0 .. 1
_SIL = VISEMES.index("sil")
MIN_LOOKAHEAD = _GATE_FWD + BLOCK_S / 2  # the gate looks 100 ms ahead, at VAD-block resolution
# live use may shorten the gate's look-ahead (the mouth then opens up to that much later at a voice
# onset than the offline front end opens it): never below this
MIN_GATE_FORWARD = 0.03  # s
MIN_LIVE_LOOKAHEAD = MIN_GATE_FORWARD + BLOCK_S / 2


def frontend_info() -> dict:
    """Name and versions of the front end (recorded with every viseme track and avatar)."""
    return {
        "name": FRONTEND_NAME,
        "version": FRONTEND_VERSION,
        "phones": phones_version(),
        "vad": vad_version(),
    }


def _check_fps(fps: float) -> float:
    fps = float(fps)
    if not np.isfinite(fps) or not 1.0 <= fps <= 1000.0:
        raise ValueError(f"fps must be in 1..1000, got {fps!r}")
    return fps


class _Core:
    """The shared offline/streaming engine: a :class:`PhoneStream` plus per-frame rendering state."""

    def __init__(self, fps: float, gate_forward: float = _GATE_FWD) -> None:
        self.fps = _check_fps(fps)
        self.gate_forward = float(gate_forward)
        self.stream = PhoneStream()
        self._wave: list[np.ndarray] = []
        self._wave0 = 0  # sample index of the first kept sample
        self._loud_sum = _PRIOR_DB * _PRIOR_S * self.fps  # running voice-weighted dB sum (with prior)
        self._loud_w = _PRIOR_S * self.fps
        self.next_frame = 0

    def push(self, x: np.ndarray) -> None:
        self.stream.push(x)
        self._wave.append(np.asarray(x, np.float32).reshape(-1))

    def _samples(self) -> np.ndarray:
        if len(self._wave) != 1:
            self._wave = [np.concatenate(self._wave) if self._wave else np.zeros(0, np.float32)]
        return self._wave[0]

    def _voice(self, t: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Voice probability at t (interpolated between block centres) and the gate (0..1)."""
        if probs.size == 0:
            return np.zeros_like(t), np.zeros_like(t)
        centres = (np.arange(probs.size) + 0.5) * BLOCK_S
        voice = np.interp(t, centres, probs)
        voice[t > self.stream.n_samples / SR] = 0.0  # frames past the end of the audio
        gmax = np.zeros_like(t)
        base = np.floor(t / BLOCK_S).astype(np.int64)
        for d in range(-3, 5):
            i = base + d
            ok = (i >= 0) & (i < probs.size)
            c = (i + 0.5) * BLOCK_S
            ok &= (c >= t - _GATE_BACK) & (c <= t + self.gate_forward)
            gmax = np.where(ok, np.maximum(gmax, probs[np.clip(i, 0, probs.size - 1)]), gmax)
        return voice, np.clip((gmax - _GATE_LO) / (_GATE_HI - _GATE_LO), 0.0, 1.0)

    def _loudness(self, t: np.ndarray, voice: np.ndarray) -> np.ndarray:
        x = self._samples().astype(np.float64)
        csum = np.concatenate([[0.0], np.cumsum(x * x)])
        lo = np.clip(np.rint((t - _LOUD_HALF) * SR).astype(np.int64) - self._wave0, 0, x.size)
        hi = np.clip(np.rint((t + _LOUD_HALF) * SR).astype(np.int64) - self._wave0, 0, x.size)
        n = np.rint(2 * _LOUD_HALF * SR)  # fixed divisor: samples past the end count as silence
        db = 10.0 * np.log10(np.maximum((csum[hi] - csum[lo]) / n, 1e-12))  # (N,)
        s = self._loud_sum + np.cumsum(voice * db)
        w = self._loud_w + np.cumsum(voice)
        self._loud_sum, self._loud_w = float(s[-1]), float(w[-1])
        ref = s / w
        return np.clip((db - ref - _LOUD_LO) / (_LOUD_HI - _LOUD_LO), 0.0, 1.0)

    def rows(self, k1: int) -> np.ndarray:
        """Rows (k1 - next_frame, 17) float32 for frames next_frame .. k1 - 1; advances next_frame."""
        k0 = self.next_frame
        if k1 <= k0:
            return np.zeros((0, FEATURE_DIM), np.float32)
        t = np.arange(k0, k1, dtype=np.float64) / self.fps
        voice, gate = self._voice(t, self.stream.vad)
        loud = self._loudness(t, voice) * gate
        w = viseme_weights(t, self.fps, *segment_arrays(self.stream.segments()))
        w *= gate[:, None]
        w[:, _SIL] += 1.0 - gate
        self.next_frame = k1
        self._trim()
        return np.concatenate([w, voice[:, None], loud[:, None]], axis=1).astype(np.float32)

    def _trim(self) -> None:
        """Forget audio and final phones the next frames can no longer need."""
        keep_from = self.next_frame / self.fps - 1.0  # seconds; generous margin
        cut = int(keep_from * SR) - self._wave0
        if cut > SR:  # trim in >= 1 s steps
            self._wave = [self._samples()[cut:]]
            self._wave0 += cut
            self.stream.drop_before(keep_from)


@dataclass
class VisemeTrack:
    """Per-frame front-end output. ``weights`` (N, 15) float32 (rows sum to 1, columns in
    :data:`VISEMES` order), ``voice`` (N,) and ``loudness`` (N,) float32 in [0, 1]; frame k at k / fps."""

    weights: np.ndarray
    voice: np.ndarray
    loudness: np.ndarray
    fps: float
    frontend: dict = field(default_factory=frontend_info)

    def __len__(self) -> int:
        return int(self.weights.shape[0])

    @property
    def visemes(self) -> tuple[str, ...]:
        return VISEMES

    def features(self) -> np.ndarray:
        """(N, 17) float32: [15 viseme weights, voice, loudness]."""
        return np.concatenate([self.weights, self.voice[:, None], self.loudness[:, None]], axis=1)

    def dominant(self) -> list[str]:
        """The strongest viseme's name per frame."""
        return [VISEMES[i] for i in self.weights.argmax(axis=1)]

    def to_json(self) -> dict:
        """The JSON document described in the module docstring (values rounded to 4 decimals)."""
        r = lambda a: np.round(np.asarray(a, np.float64), 4).tolist()
        return {
            "format": "avatar3d-visemes",
            "version": 1,
            "frontend": dict(self.frontend),
            "fps": float(self.fps),
            "n_frames": len(self),
            "frame_time": "k / fps (frame centre)",
            "visemes": list(VISEMES),
            "weights": r(self.weights),
            "voice": r(self.voice),
            "loudness": r(self.loudness),
        }

    def to_csv(self) -> str:
        buf = io.StringIO()
        wr = csv.writer(buf, lineterminator="\n")
        wr.writerow(["frame", "time", *VISEMES, "voice", "loudness"])
        for k, row in enumerate(self.features()):
            wr.writerow([k, f"{k / self.fps:.4f}", *(f"{v:.4f}" for v in row)])
        return buf.getvalue()

    def save(self, path: str | os.PathLike[str], format: str | None = None) -> Path:
        """Write JSON (default) or CSV (``format="csv"`` or a ``.csv`` path) atomically."""
        path = Path(path)
        fmt = format or ("csv" if path.suffix.lower() == ".csv" else "json")
        if fmt not in ("json", "csv"):
            raise ValueError(f"format must be json or csv, got {fmt!r}")
        text = json.dumps(self.to_json(), separators=(",", ":")) if fmt == "json" else self.to_csv()
        with atomic_file(path) as tmp:
            Path(tmp).write_text(text)
        return path


def _default_frames(n_samples: int, fps: float) -> int:
    return int(np.floor(n_samples / SR * fps + 1e-6))


def speech_features(wave16k: np.ndarray, fps: float = 25.0, n_frames: int | None = None) -> np.ndarray:
    """The per-frame vector the avatar consumes: (n_frames, 17) float32 = [15 visemes, voice, loudness].

    ``wave16k``: (T,) float mono at 16 kHz. Deterministic for the same input.
    """
    x = np.asarray(wave16k, np.float32).reshape(-1)
    if n_frames is not None and (int(n_frames) != n_frames or n_frames < 0):
        raise ValueError(f"n_frames must be a non-negative int, got {n_frames!r}")
    if not np.isfinite(x).all():
        raise MediaError("audio: samples contain NaN or inf")
    core = _Core(fps)
    n = _default_frames(x.size, core.fps) if n_frames is None else int(n_frames)
    core.push(x)
    core.stream.flush()
    return core.rows(n)


def viseme_track(
    wave: np.ndarray, sr: int = SR, fps: float = 25.0, n_frames: int | None = None
) -> VisemeTrack:
    """Viseme weights, voice activity and loudness per video frame of ``wave`` ((T,), (T, C) or (C, T) at ``sr``)."""
    f = speech_features(_to_16k(wave, sr), fps, n_frames)
    nv = len(VISEMES)
    return VisemeTrack(
        weights=f[:, :nv].copy(), voice=f[:, nv].copy(), loudness=f[:, nv + 1].copy(), fps=float(fps)
    )


class StreamingVisemes:
    """The front end on audio chunks as they arrive (16 kHz mono float).

    ``push(chunk)`` returns the rows (k, 17) finalised so far; ``flush()`` ends the stream and
    returns the rest, up to ``floor(duration * fps)`` frames in total. Frame k is emitted once audio
    up to ``k / fps + lookahead`` has arrived; :attr:`latency` (seconds) adds the VAD's 32 ms block.

    From :data:`MIN_LOOKAHEAD` up the rows are the offline front end's (:func:`speech_features`).
    A shorter lookahead (down to :data:`MIN_LIVE_LOOKAHEAD`) shortens the voice gate's look-ahead to
    fit: the rows then differ from the offline ones only at voice onsets, which open the mouth up to
    ``MIN_LOOKAHEAD - lookahead`` later.
    """

    def __init__(self, fps: float = 25.0, lookahead: float = 0.2) -> None:
        if not MIN_LIVE_LOOKAHEAD <= float(lookahead) <= 5.0:
            raise ValueError(f"lookahead must be in {MIN_LIVE_LOOKAHEAD:.3f}..5 s, got {lookahead!r}")
        self.lookahead = float(lookahead)
        self._core = _Core(fps, gate_forward=min(_GATE_FWD, self.lookahead - BLOCK_S / 2))
        self.fps = self._core.fps

    @property
    def latency(self) -> float:
        """Worst-case algorithmic delay from a sound to its frame's row, seconds (processing excluded)."""
        return self.lookahead + BLOCK_S

    def push(self, chunk16k: np.ndarray) -> np.ndarray:
        x = np.asarray(chunk16k, np.float32).reshape(-1)
        if not np.isfinite(x).all():
            raise MediaError("audio chunk contains NaN or inf")
        self._core.push(x)
        avail = self._core.stream.n_blocks * BLOCK / SR  # audio the decoder and VAD have consumed
        k1 = int(np.floor((avail - self.lookahead) * self.fps + 1e-9)) + 1
        k1 = min(k1, _default_frames(self._core.stream.n_samples, self.fps))
        return self._core.rows(max(k1, self._core.next_frame))

    def flush(self) -> np.ndarray:
        self._core.stream.flush()
        return self._core.rows(_default_frames(self._core.stream.n_samples, self.fps))
