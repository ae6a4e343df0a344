"""A synthetic talking-head video with exact ground truth (head pose, jaw, blinks, audio).

:func:`make_talking_video` renders :class:`~avatar3d.synthetic.subject.SyntheticSubject` from a
fixed frontal portrait camera while it "says" :func:`~avatar3d.synthetic.speech.synth_speech`, and
writes an H.264 + AAC mp4. The returned :class:`SyntheticTruth` holds everything needed to render
the ground truth of any frame from any camera (:func:`render_truth_view`).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..core.camera import Camera
from ..core.constants import SAMPLE_RATE
from ..errors import FormatError
from ..io.atomic import atomic_file
from ..io.media import write_video
from ._geometry import euler_matrix
from .speech import mouth_from_audio, synth_speech
from .subject import DEFAULT_BACKGROUND, DEFAULT_N_GAUSSIANS, SyntheticSubject

__all__ = [
    "SyntheticTruth",
    "blink_track",
    "get_subject",
    "head_motion_track",
    "make_talking_video",
    "render_truth_view",
]

TRUTH_VERSION = 1


@dataclass
class SyntheticTruth:
    """Ground truth of a synthetic talking video.

    Head pose convention (see :mod:`avatar3d.synthetic.subject`): head-space point ``x`` is at
    ``head_R[i] @ (x - neck_pivot) + neck_pivot + head_t[i]`` in the world in frame ``i``; the camera
    is fixed in the world. :meth:`head_pose_in_camera` converts to the tracking convention.
    """

    camera: Camera
    head_R: np.ndarray  # (T, 3, 3)
    head_t: np.ndarray  # (T, 3) metres
    jaw_open: np.ndarray  # (T,) in [0, 1]
    blink: np.ndarray  # (T,) in [0, 1]
    wave: np.ndarray  # (S,) float32 mono
    sr: int
    fps: float
    subject_seed: int = 0
    n_gaussians: int = DEFAULT_N_GAUSSIANS
    background: tuple[float, float, float] = DEFAULT_BACKGROUND
    meta: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return len(self.jaw_open)

    @property
    def subject(self) -> SyntheticSubject:
        return get_subject(self.subject_seed, self.n_gaussians)

    def head_pose_in_camera(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(R, t)`` of frame ``i`` with ``x_cam = R @ x_head + t`` (the tracking convention)."""
        return self.subject.head_pose_in_camera(self.camera, self.head_R[i], self.head_t[i])

    def landmarks(self, i: int) -> np.ndarray:
        """(478, 3) world-space landmarks of frame ``i``."""
        return self.subject.landmarks(self.jaw_open[i], self.blink[i], self.head_R[i], self.head_t[i])

    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` (the camera as its K / world_to_camera / size), atomically: an
        interrupted save leaves no partial file. ``path`` without the ``.npz`` suffix gets it."""
        p = Path(path)
        p = p if p.suffix == ".npz" else p.with_name(p.name + ".npz")
        with atomic_file(p, suffix=".npz") as tmp:
            self._write(tmp)
        return p

    def _write(self, p: Path) -> None:
        np.savez_compressed(
            p,
            version=np.int64(TRUTH_VERSION),
            K=self.camera.K,
            world_to_camera=self.camera.world_to_camera,
            size=np.array([self.camera.width, self.camera.height], np.int64),
            head_R=self.head_R,
            head_t=self.head_t,
            jaw_open=self.jaw_open,
            blink=self.blink,
            wave=self.wave.astype(np.float32),
            sr=np.int64(self.sr),
            fps=np.float64(self.fps),
            subject_seed=np.int64(self.subject_seed),
            n_gaussians=np.int64(self.n_gaussians),
            background=np.asarray(self.background, np.float64),
            meta_keys=np.array(list(self.meta.keys()), dtype=str),
            meta_values=np.array([str(v) for v in self.meta.values()], dtype=str),
        )

    @classmethod
    def load(cls, path: str | Path) -> SyntheticTruth:
        p = Path(path)
        if not p.is_file():
            raise FormatError(f"synthetic truth file not found: {p}")
        try:
            with np.load(p, allow_pickle=False) as z:
                if int(z["version"]) != TRUTH_VERSION:
                    raise FormatError(f"{p}: unsupported synthetic truth version {int(z['version'])}")
                w, h = (int(v) for v in z["size"])
                return cls(
                    camera=Camera(z["K"], z["world_to_camera"], w, h),
                    head_R=z["head_R"],
                    head_t=z["head_t"],
                    jaw_open=z["jaw_open"],
                    blink=z["blink"],
                    wave=z["wave"],
                    sr=int(z["sr"]),
                    fps=float(z["fps"]),
                    subject_seed=int(z["subject_seed"]),
                    n_gaussians=int(z["n_gaussians"]),
                    background=tuple(float(v) for v in z["background"]),
                    meta=dict(zip(z["meta_keys"].tolist(), z["meta_values"].tolist())),
                )
        except FormatError:
            raise
        except (KeyError, ValueError, OSError) as e:
            raise FormatError(f"{p} is not a synthetic truth file: {e}") from None


@functools.lru_cache(maxsize=4)
def get_subject(seed: int = 0, n_gaussians: int = DEFAULT_N_GAUSSIANS) -> SyntheticSubject:
    """A cached :class:`SyntheticSubject` (building one takes a couple of seconds)."""
    return SyntheticSubject(seed=seed, n_gaussians=n_gaussians)


# ------------------------------------------------------------------------------------ motion
def _smooth_wander(t: np.ndarray, rng: np.random.Generator, base_hz: float) -> np.ndarray:
    """A smooth random signal in [-1, 1] (three incommensurate sinusoids), peak-normalised."""
    freqs = base_hz * np.array([1.0, 1.7, 2.9]) * rng.uniform(0.85, 1.15, 3)
    amps = np.array([1.0, 0.45, 0.2])
    phases = rng.uniform(0, 2 * np.pi, 3)
    x = (amps[:, None] * np.sin(2 * np.pi * freqs[:, None] * t[None] + phases[:, None])).sum(0)
    return x / max(float(np.abs(x).max()), 1e-9)


def head_motion_track(
    n_frames: int, fps: float, seed: int, jaw: np.ndarray | None = None, max_yaw_degrees: float = 15.0
) -> tuple[np.ndarray, np.ndarray]:
    """Gentle head turns: yaw up to ``±max_yaw_degrees``, pitch ±4° (plus small nods with speech),
    roll ±3°, and a slow sway of up to 8 mm. Returns ``(R (T, 3, 3), t (T, 3))``."""
    rng = np.random.default_rng([seed, 7])
    t = np.arange(n_frames) / float(fps)
    yaw = np.radians(max_yaw_degrees) * _smooth_wander(t, rng, 0.11)
    pitch = np.radians(4.0) * _smooth_wander(t, rng, 0.17)
    if jaw is not None and len(jaw) == n_frames:
        pitch = pitch + np.radians(2.0) * (np.asarray(jaw, float) - float(np.mean(jaw)))
    roll = np.radians(3.0) * _smooth_wander(t, rng, 0.09)
    trans = np.stack(
        [
            0.008 * _smooth_wander(t, rng, 0.07),
            0.003 * _smooth_wander(t, rng, 0.13),
            0.005 * _smooth_wander(t, rng, 0.05),
        ],
        -1,
    )
    R = np.stack([euler_matrix(a, b, c) for a, b, c in zip(yaw, pitch, roll)])
    return R, trans


def blink_track(n_frames: int, fps: float, seed: int) -> np.ndarray:
    """Blinks every 2-5 s: 80 ms closing, 50 ms closed, 170 ms opening. Returns (T,) in [0, 1]."""
    rng = np.random.default_rng([seed, 11])
    t = np.arange(n_frames) / float(fps)
    out = np.zeros(n_frames)
    if n_frames == 0:
        return out
    tb = rng.uniform(0.6, 1.6)
    close, hold, open_ = 0.08, 0.05, 0.17
    while tb < t[-1] + 1.0:
        u = t - tb
        up = np.clip(u / close, 0, 1)
        down = np.clip((u - close - hold) / open_, 0, 1)
        prof = np.where(
            u < 0,
            0.0,
            np.where(u < close + hold, np.sin(0.5 * np.pi * up) ** 2, np.cos(0.5 * np.pi * down) ** 2),
        )
        out = np.maximum(out, prof)
        tb += rng.uniform(2.0, 5.0)
    return out


# --------------------------------------------------------------------------------- rendering
def _to_uint8(img: torch.Tensor) -> np.ndarray:
    return (img.clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)


def render_truth_view(
    truth: SyntheticTruth, frame_index: int, camera: Camera | list[Camera], backend: str = "auto"
) -> np.ndarray:
    """Ground-truth image(s) of frame ``frame_index`` seen from ``camera``.

    Returns (H, W, 3) float32 in [0, 1] for one camera, (C, H, W, 3) for a list.
    """
    i = int(frame_index)
    if not 0 <= i < truth.n_frames:
        raise IndexError(f"frame {i} is outside 0..{truth.n_frames - 1}")
    img = truth.subject.render(
        camera,
        truth.jaw_open[i],
        truth.blink[i],
        truth.head_R[i],
        truth.head_t[i],
        background=truth.background,
        backend=backend,
    ).numpy()
    return img[0] if isinstance(camera, Camera) else img


def _check_video_args(
    seconds: float, fps: float, size: int, fov_degrees: float, max_yaw_degrees: float
) -> None:
    """Raise ValueError on a duration, rate, frame size, field of view or head turn out of range."""
    if not (np.isfinite(seconds) and seconds > 0) or not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"seconds and fps must be positive, got {seconds} and {fps}")
    if size < 32 or size > 4096:
        raise ValueError(f"frame size must be within 32..4096 px, got {size}")
    if not (np.isfinite(fov_degrees) and 5.0 <= fov_degrees <= 120.0):
        raise ValueError(f"fov_degrees must be within 5..120, got {fov_degrees}")
    if not (np.isfinite(max_yaw_degrees) and 0.0 <= max_yaw_degrees <= 60.0):
        raise ValueError(f"max_yaw_degrees must be within 0..60, got {max_yaw_degrees}")


class _Tracks(NamedTuple):
    """Per-frame controls of a clip: jaw (T,), head rotation (T, 3, 3), head translation (T, 3) metres
    and blink (T,)."""

    jaw: np.ndarray
    head_R: np.ndarray
    head_t: np.ndarray
    blink: np.ndarray


def _talking_tracks(
    wave: np.ndarray,
    sr: int,
    fps: float,
    n_frames: int,
    seed: int,
    head_motion: bool,
    blink: bool,
    max_yaw_degrees: float,
) -> _Tracks:
    """The jaw from the audio, head motion (still without ``head_motion``) and blinks (none without
    ``blink``) for ``n_frames`` frames."""
    jaw = mouth_from_audio(wave, sr, fps, n_frames).astype(np.float64)
    if head_motion:
        R, t = head_motion_track(n_frames, fps, seed, jaw, max_yaw_degrees)
    else:
        R, t = np.tile(np.eye(3), (n_frames, 1, 1)), np.zeros((n_frames, 3))
    blinks = blink_track(n_frames, fps, seed) if blink else np.zeros(n_frames)
    return _Tracks(jaw, R, t, blinks)


def _render_frames(
    truth: SyntheticTruth,
    subject: SyntheticSubject,
    backend: str,
    progress: Callable[[int, int], None] | None,
) -> Iterator[np.ndarray]:
    """The clip's frames as (H, W, 3) uint8, rendered as they are consumed; the render time is kept
    in ``truth.meta["render_seconds"]``."""
    t0 = time.perf_counter()
    n_frames = truth.n_frames
    for i in range(n_frames):
        img = subject.render(
            truth.camera,
            truth.jaw_open[i],
            truth.blink[i],
            truth.head_R[i],
            truth.head_t[i],
            background=DEFAULT_BACKGROUND,
            backend=backend,
        )
        yield _to_uint8(img[0])
        if progress is not None:
            progress(i + 1, n_frames)
    truth.meta["render_seconds"] = round(time.perf_counter() - t0, 3)


def make_talking_video(
    path: str | Path,
    seconds: float = 8.0,
    fps: float = 25,
    size: int = 256,
    seed: int = 0,
    head_motion: bool = True,
    blink: bool = True,
    *,
    subject_seed: int = 0,
    n_gaussians: int = DEFAULT_N_GAUSSIANS,
    voice: str = "default",
    sr: int = SAMPLE_RATE,
    backend: str = "auto",
    fov_degrees: float = 18.0,
    max_yaw_degrees: float = 15.0,
    progress: Callable[[int, int], None] | None = None,
) -> SyntheticTruth:
    """Render and write a synthetic talking video (H.264 + AAC mp4); return its ground truth.

    Args:
        path: output video file (.mp4).
        seconds, fps, size: duration, frame rate, square frame size in pixels.
        seed: the utterance (speech), head motion and blink timing.
        head_motion: gentle head turns (yaw up to ±15°) and sway; otherwise the head stays still.
        blink: blinks every few seconds; otherwise the eyes stay open.
        subject_seed, n_gaussians: which :class:`SyntheticSubject` (cached per process).
        voice: speaker of :func:`synth_speech`.
        fov_degrees: the camera's horizontal field of view; the face keeps the same share of the
            frame, so a wider view means a closer camera and stronger perspective (18°: a portrait
            lens at ~1.3 m; 50–70°: a phone held at arm's length).
        max_yaw_degrees: the widest head turn (with ``head_motion``), reached once in the clip.
        progress: called as ``progress(done, total)`` after each frame.
    """
    _check_video_args(seconds, fps, size, fov_degrees, max_yaw_degrees)
    subject = get_subject(subject_seed, n_gaussians)
    wave = synth_speech(seconds, sr=sr, seed=seed, voice=voice)
    n_frames = max(math.floor(seconds * fps + 1e-6), 1)
    tracks = _talking_tracks(wave, sr, fps, n_frames, seed, head_motion, blink, max_yaw_degrees)
    truth = SyntheticTruth(
        subject.portrait_camera(size, fov_degrees=fov_degrees),
        tracks.head_R,
        tracks.head_t,
        tracks.jaw,
        tracks.blink,
        wave,
        sr,
        float(fps),
        subject_seed,
        n_gaussians,
        DEFAULT_BACKGROUND,
        meta={
            "seed": seed,
            "voice": voice,
            "head_motion": head_motion,
            "blink": blink,
            "fov_degrees": fov_degrees,
            "max_yaw_degrees": max_yaw_degrees,
        },
    )
    write_video(path, _render_frames(truth, subject, backend, progress), fps, audio=wave, audio_sr=sr)
    return truth
