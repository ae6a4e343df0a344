"""Frames of a render: :class:`RenderResult` (in memory) and :class:`FrameStream` (lazy, flat memory).

:func:`prepare_audio` checks and loads a render's audio; :func:`frame_stream` turns an avatar, audio,
cameras, poses, blinks and a background into a stream of frames.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._version import __version__
from ..audio import load_audio
from ..config import RenderConfig
from ..core.camera import Camera
from ..core.constants import SAMPLE_RATE
from ..errors import Avatar3DError, CameraError, ConfigError
from ..io.media import write_video
from ..io.meta import AvatarMeta
from ..io.segments import RenderParts
from ..io.watermark import Payload, embed, embed_frames
from ..models.gaussian_avatar import GaussianAvatar
from ..progress import track
from ..workdir import file_digest
from .audio import AudioDriver
from .background import background_image
from .cameras import check_size, resolve_cameras
from .motion import blinks, head_poses


def save_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float,
    audio: np.ndarray,
    sr: int,
    avatar_id: int,
    watermark: bool,
    stereo: str | None = None,
) -> Path:
    """Encode an H.264 mp4 with the audio muxed in sync (atomically), watermarked unless told not to;
    ``stereo`` ('sbs' / 'ou'): the frames are a packed stereo pair, marked so in the stream."""
    path = Path(path)
    if watermark:
        frames = embed_frames(frames, Payload(avatar_id, __version__))
    write_video(path, frames, fps, audio=audio, audio_sr=sr, stereo=stereo)
    return path


@dataclass
class RenderResult:
    """Rendered frames and the audio that drives them.

    frames: (T, H, W, 3) uint8; fps: frames per second; audio: (S,) float32 mono at ``sample_rate``.
    """

    frames: np.ndarray
    fps: float
    audio: np.ndarray
    sample_rate: int
    alphas: np.ndarray | None = None  # (T, H, W) float32 avatar coverage
    avatar_id: int = 0  # 32-bit id of the avatar that made the frames (0 = unknown), for the watermark
    watermark: bool = True  # save() marks the video as made by avatar3d (docs/provenance.md)

    def __len__(self) -> int:
        return len(self.frames)

    def save(self, path: str | Path, *, watermark: bool | None = None) -> Path:
        """Write an H.264 mp4 with the driving audio muxed in sync. Unless ``watermark`` (default
        ``self.watermark``) is False, every frame carries the invisible provenance mark (avatar id,
        library version) that ``avatar3d verify`` reads."""
        mark = self.watermark if watermark is None else watermark
        return save_video(path, self.frames, self.fps, self.audio, self.sample_rate, self.avatar_id, mark)


# frames per segment of a render to a file: x264's default keyframe interval, so the parts' keyframes
# fall where a single encode puts them (10 s at 25 fps; docs/design/render-resume.md)
SEGMENT_FRAMES = 250
SEGMENT_ENV = "AVATAR3D_RENDER_SEGMENT_FRAMES"  # frames per segment instead (tests use short ones)


def segment_frames() -> int:
    """Frames per segment of a render to a file: :data:`SEGMENT_FRAMES`, or the number of frames in
    the environment variable :data:`SEGMENT_ENV`."""
    env = os.environ.get(SEGMENT_ENV, "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ConfigError(f"{SEGMENT_ENV} must be a positive whole number of frames, got {env!r}")
        return int(env)
    return SEGMENT_FRAMES


def _print_now(line: str) -> None:
    print(line, flush=True)  # at once: the process may be killed next


@dataclass
class FrameStream:
    """Frames of a render, produced one at a time as the stream is iterated (``Avatar.stream``).

    fps; audio: (S,) float32 mono at ``sample_rate``; n_frames; width, height of every frame.
    Iterating yields (H, W, 3) uint8 frames; :meth:`with_alphas` yields (frame, (H, W) float32 alpha).
    ``_frames(start, stop)`` yields (frame, alpha) of frames start..stop-1, each exactly as a run
    from frame 0 gives it; ``_key()`` names everything that determines the frames (see :meth:`save`).
    """

    fps: float
    audio: np.ndarray
    sample_rate: int
    n_frames: int
    width: int
    height: int
    _frames: Callable[[int, int], Iterator[tuple[np.ndarray, np.ndarray]]]
    avatar_id: int = 0  # 32-bit id of the avatar that made the frames (0 = unknown), for the watermark
    watermark: bool = True  # save() marks the video as made by avatar3d (docs/provenance.md)
    _key: Callable[[], dict[str, str]] | None = None

    def __len__(self) -> int:
        return self.n_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        return (f for f, _ in self._frames(0, self.n_frames))

    def with_alphas(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self._frames(0, self.n_frames)

    def collect(self) -> RenderResult:
        """Render every frame into memory."""
        frames = np.zeros((self.n_frames, self.height, self.width, 3), np.uint8)
        alphas = np.zeros((self.n_frames, self.height, self.width), np.float32)
        for k, (f, a) in enumerate(self.with_alphas()):
            frames[k], alphas[k] = f, a
        return RenderResult(
            frames, self.fps, self.audio, self.sample_rate, alphas, self.avatar_id, self.watermark
        )

    def save(
        self,
        path: str | Path,
        *,
        watermark: bool | None = None,
        resume: bool = True,
        log: Callable[[str], None] | None = _print_now,
    ) -> Path:
        """Render and encode to an H.264 mp4 with the driving audio (atomically); the frames carry the
        provenance watermark unless ``watermark`` (default ``self.watermark``) is False.

        The frames are rendered in segments (:func:`segment_frames`), each encoded to its own file in
        ``.<name>.parts/`` beside ``path`` as soon as it is complete (:class:`avatar3d.io.segments.RenderParts`).
        A render that was killed resumes: the same call again keeps the finished segments whose key
        (avatar, audio, cameras, motion, blinks, background, watermark, fps, segment length, library
        version) matches and renders only the rest (``resume=False``: start over). At the end the
        segments are joined without re-encoding. ``log`` gets one line when parts are reused or dropped.
        """
        mark = self.watermark if watermark is None else watermark
        seg = segment_frames()
        # a stream without a key gets a fresh one: its parts are never reused
        key = self._key() if self._key is not None else {"stream": secrets.token_hex(8)}
        key = {**key, "watermark": f"{mark} {self.avatar_id:08x}", "fps": repr(float(self.fps)),
               "size": f"{self.width}x{self.height}"}  # fmt: skip
        say = log or (lambda s: None)
        payload = Payload(self.avatar_id, __version__) if mark else None
        with RenderParts(path, key, self.n_frames, seg, log=say) as parts:
            if not resume:
                parts.clear()
            elif parts.parts:
                say(
                    f"resuming {path}: {parts.reused_frames} of {self.n_frames} frames were rendered by an "
                    f"interrupted run ({len(parts.parts)} part{'s' if len(parts.parts) > 1 else ''}); rendering the other "
                    f"{self.n_frames - parts.reused_frames}"
                )
            for a, b in parts.missing_runs():
                frames = (f for f, _ in self._frames(a, b))
                if payload is not None:  # the mark of global frame k, whatever segment it is in
                    frames = (embed(f, payload, k) for k, f in enumerate(frames, a))
                for s in range(a, b, seg):
                    parts.write(s // seg, itertools.islice(frames, min(seg, b - s)), self.fps)
                for _ in frames:  # run the generator to its end (it closes the progress bar)
                    pass
            return parts.join(self.fps, self.audio, self.sample_rate)


def prepare_audio(
    audio, sample_rate: int | None, max_seconds: float | None, fps: float
) -> tuple[np.ndarray, int]:
    """(16 kHz mono wave, number of frames at ``fps``) of a render's audio (a path, or an array with
    ``sample_rate``), cut to ``max_seconds``; one-line errors on bad input."""
    if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and max_seconds > 0):
        raise ConfigError(f"max_seconds must be a positive number of seconds, got {max_seconds!r}")
    wave = load_audio(audio if sample_rate is None else (audio, sample_rate), sr=SAMPLE_RATE)
    if max_seconds is not None:
        wave = wave[: int(max_seconds * SAMPLE_RATE)]
    if not np.isfinite(wave).all():
        raise Avatar3DError("the audio contains NaN or infinite samples")
    n = int(math.floor(len(wave) / SAMPLE_RATE * fps))
    if n < 1:
        raise Avatar3DError(
            f"the audio is too short ({len(wave) / SAMPLE_RATE:.3f} s) for one frame at {fps:g} fps"
        )
    return wave, n


@dataclass
class Drive:
    """Everything a render needs per frame: cameras, head poses (n, 4, 4), blinks (n,), background."""

    cameras: list[Camera]
    poses: np.ndarray
    blinks: np.ndarray
    background: str | tuple
    plate: np.ndarray  # (h, w, 3) uint8 capture background


def plan_render(
    meta: AvatarMeta,
    track: dict,
    plate: np.ndarray,
    render: RenderConfig,
    audio,
    camera=None,
    *,
    sample_rate: int | None = None,
    size=None,
    pose=None,
    blink=None,
    background=None,
    max_seconds: float | None = None,
) -> tuple[np.ndarray, Drive]:
    """(16 kHz wave, :class:`Drive`) of a render, every argument checked before any frame is rendered:
    the audio, the cameras (one size for all), the pose and blink modes and the background. Unset
    pose, blink and background come from ``render`` (the avatar's render config)."""
    wave, n = prepare_audio(audio, sample_rate, max_seconds, meta.fps)
    cams = resolve_cameras(meta, camera, n, check_size(size))
    if len({(c.width, c.height) for c in cams}) > 1:
        raise CameraError("all cameras of a render must have the same image size")
    bg = background if background is not None else render.background
    background_image(bg, cams[0], plate)  # a bad colour fails now, not at the first frame
    poses = head_poses(pose or render.pose, n, meta.fps, track["head_poses"])
    blink_seq = blinks(blink if blink is not None else render.blink, n, meta.fps, track["blink"])
    return wave, Drive(cams, poses, blink_seq, bg, plate)


def _digest(*parts) -> str:
    """blake2b (32 hex) of byte strings and numpy arrays (their dtype, shape and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(f"{p.dtype}{p.shape}".encode())
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"|")
    return h.hexdigest()


def _avatar_digest(model: GaussianAvatar, driver: AudioDriver) -> str:
    """Digest of what an avatar renders with: its weights, model config, metadata and speech model."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    h.update(repr(getattr(model, "cfg", None)).encode())
    h.update(json.dumps(driver.meta.to_dict(), sort_keys=True, default=str).encode())
    sm = driver.speech_model_path
    if sm is not None:
        h.update(f"{sm.resolve()}:{file_digest(sm) if sm.is_file() else '-'}".encode())
    return h.hexdigest()


def render_key(
    model: GaussianAvatar, driver: AudioDriver, wave: np.ndarray, drive: Drive, backend: str
) -> dict[str, str]:
    """What determines a render's frames besides fps, size and the watermark, as short digests."""
    cams, seen = [], {}
    for c in drive.cameras:  # a fixed camera is one object repeated: hash it once
        if id(c) not in seen:
            seen[id(c)] = _digest(c.K, c.world_to_camera, f"{c.width}x{c.height}")
        cams.append(seen[id(c)])
    return {
        "library": __version__,
        "avatar": _avatar_digest(model, driver),
        "audio": _digest(np.asarray(wave, np.float32)),
        "cameras": _digest(" ".join(cams)),
        "motion": _digest(np.asarray(drive.poses, np.float64)),
        "blinks": _digest(np.asarray(drive.blinks, np.float32)),
        "background": _digest(repr(drive.background), np.asarray(drive.plate)),
        "backend": str(backend),
    }


def frame_stream(
    model: GaussianAvatar,
    driver: AudioDriver,
    wave: np.ndarray,
    fps: float,
    drive: Drive,
    *,
    backend: str = "auto",
    progress: bool = True,
    avatar_id: int = 0,
    watermark: bool = True,
) -> FrameStream:
    """A lazy stream of the frames of ``model`` speaking ``wave`` under ``drive``."""
    n, cams = len(drive.cameras), drive.cameras

    def frames(start: int, stop: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        ticks = iter(track(range(start, stop), "rendering")) if progress else None
        bgs: dict[tuple[int, int], torch.Tensor] = {}
        codes = (c for chunk in driver.codes(wave, fps, n, start=start) for c in chunk)
        for k, code in zip(range(start, stop), codes):  # range first: no code past ``stop`` is made
            cam = cams[k]
            size = (cam.width, cam.height)
            if size not in bgs:
                bgs[size] = background_image(drive.background, cam, drive.plate)
            vm, K = cam.to_torch()
            with torch.no_grad():
                pose = torch.as_tensor(drive.poses[k], dtype=torch.float32)
                gs = model.posed(code, torch.tensor([drive.blinks[k]]), pose)
                out = model.render(gs, vm[None], K[None], cam.width, cam.height, bgs[size], backend=backend)
            yield (
                (out.colors[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy(),
                out.alphas[0, ..., 0].numpy(),
            )
            if ticks is not None:
                next(ticks, None)
        for _ in ticks or ():  # close the bar
            pass

    key = lambda: render_key(model, driver, wave, drive, backend)  # noqa: E731
    w, h = cams[0].width, cams[0].height
    return FrameStream(fps, wave, SAMPLE_RATE, n, w, h, frames, avatar_id, watermark, key)


__all__ = [
    "Drive",
    "FrameStream",
    "RenderResult",
    "frame_stream",
    "plan_render",
    "prepare_audio",
    "render_key",
    "save_video",
    "segment_frames",
]
