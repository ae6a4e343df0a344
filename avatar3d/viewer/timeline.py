"""What drives the viewer in time: per-frame audio codes, head poses and blinks (:class:`Drive`), and
the playback :class:`Clock`.

An idle loop is a few hundred frames, held in memory. Audio of any length is not: its 16 kHz
samples live in a temporary file (mapped, and its pages handed back after every use) next to the
16-bit WAV the browsers play (:mod:`.sound`), and the per-frame inputs are computed chunk by chunk
(:data:`~avatar3d.drive.audio.CODE_CHUNK` frames, exactly as :meth:`AudioDriver.codes` chunks them,
so the numbers equal :meth:`Avatar.render`'s) into a small LRU cache, the next chunk ahead of
playback in a background thread. Memory does not grow with the audio's length.
"""

from __future__ import annotations

import math
import mmap
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio import load_audio
from ..core.constants import SAMPLE_RATE
from ..drive.audio import CODE_CHUNK
from ..drive.motion import blinks, head_poses
from ..errors import Avatar3DError
from ..io.media import write_audio
from ..models.deform import gather_windows

POSE_MODES = ("static", "track", "generated")
BLINK_MODES = ("auto", "track", "none")
CACHE_CHUNKS = 3  # chunks of per-frame inputs kept (the one playing, the one before, the one ahead)
PREFETCH_FROM = 0.5  # past this fraction of a chunk, the next one is computed in the background
IDLE_SECONDS = 20.0  # default length of the idle loop


@dataclass
class FrameInputs:
    """The inputs of ``n`` consecutive frames: codes (n, A), blinks mode -> (n,), poses mode -> (n, 4, 4)."""

    codes: torch.Tensor
    blinks: dict[str, np.ndarray]
    poses: dict[str, np.ndarray]


class FrameSeq:
    """A read-only per-frame sequence (``shape`` (n, ...)) read from a :class:`Drive`'s chunks:
    ``seq[k]`` (negative k allowed) and ``seq[a:b]`` (stacked) work as on an array."""

    def __init__(self, drive: Drive, kind: str, mode: str | None, row_shape: tuple[int, ...]):
        self._drive, self._kind, self._mode = drive, kind, mode
        self.shape = (drive.n_frames, *row_shape)

    def __len__(self) -> int:
        return self.shape[0]

    def _row(self, k: int):
        inputs, i = self._drive.frame_inputs(k)
        x = getattr(inputs, self._kind)
        return (x if self._mode is None else x[self._mode])[i]

    def __getitem__(self, k):
        if isinstance(k, slice):
            rows = [self._row(i) for i in range(*k.indices(len(self)))]
            return torch.stack(rows) if self._kind == "codes" else np.stack(rows)
        k = int(k)
        if not -len(self) <= k < len(self):
            raise IndexError(f"frame {k} out of range for {len(self)} frames")
        return self._row(k % len(self))


class _WaveFile:
    """A 16 kHz float32 wave in a file, mapped (privately; nothing writes to it); :meth:`release` drops
    its pages from this process's memory (they are read back from the file on the next use)."""

    def __init__(self, path: Path, wave: np.ndarray):
        np.asarray(wave, np.float32).tofile(path)
        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)  # private: numpy sees it writable
        self.wave = np.frombuffer(self._map, np.float32)

    def release(self) -> None:
        if hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        self.wave = None
        self._map.close()


class Drive:
    """Everything that changes with time, per frame.

    ``codes`` (n, A), ``blinks[mode]`` (n,) and ``poses[mode]`` (n, 4, 4) index like arrays;
    ``sound``: the 16-bit WAV of the driving audio (None when the avatar idles); call :meth:`close`
    to remove its temporary files.
    """

    def __init__(
        self,
        fps: float,
        n_frames: int,
        compute,
        chunk: int,
        sound: Path | None = None,
        tmp: tempfile.TemporaryDirectory | None = None,
        wave: _WaveFile | None = None,
    ):
        self.fps, self.n_frames, self.chunk, self.sound = float(fps), int(n_frames), int(chunk), sound
        self._compute, self._tmp, self._wave = compute, tmp, wave
        self._cache: OrderedDict[int, FrameInputs] = OrderedDict()
        self._lock, self._work = threading.Lock(), threading.Lock()
        self._ahead: Future | None = None
        self._worker: ThreadPoolExecutor | None = None  # one thread computes chunks ahead of playback
        first = self.frame_inputs(0)[0]
        if self.chunk >= self.n_frames:  # one chunk (an idle loop): the arrays themselves
            self.codes, self.blinks, self.poses = first.codes, first.blinks, first.poses
        else:
            self.codes = FrameSeq(self, "codes", None, tuple(first.codes.shape[1:]))
            self.blinks = {m: FrameSeq(self, "blinks", m, ()) for m in BLINK_MODES}
            self.poses = {m: FrameSeq(self, "poses", m, (4, 4)) for m in POSE_MODES}

    @property
    def seconds(self) -> float:
        return self.n_frames / self.fps

    def index(self, t: float) -> int:
        """Frame shown at time ``t`` seconds (looping)."""
        return math.floor(float(t) * self.fps + 1e-6) % self.n_frames

    def frame_inputs(self, k: int) -> tuple[FrameInputs, int]:
        """The chunk holding frame ``k`` and ``k``'s row in it (computing it if needed)."""
        c, i = divmod(int(k), self.chunk)
        inputs = self._chunk(c)
        if i >= PREFETCH_FROM * self.chunk and (c + 1) * self.chunk < self.n_frames:
            self._prefetch(c + 1)
        return inputs, i

    def cached_chunks(self) -> list[int]:
        with self._lock:
            return list(self._cache)

    def _chunk(self, c: int) -> FrameInputs:
        with self._lock:
            if c in self._cache:
                self._cache.move_to_end(c)
                return self._cache[c]
        with self._work:  # one computation at a time; another thread may have just made this one
            with self._lock:
                hit = self._cache.get(c)
            if hit is None:
                hit = self._compute(c * self.chunk, min(self.n_frames, (c + 1) * self.chunk))
        with self._lock:
            self._cache[c] = hit
            self._cache.move_to_end(c)
            while len(self._cache) > CACHE_CHUNKS:
                self._cache.popitem(last=False)
        return hit

    def _prefetch(self, c: int) -> None:
        with self._lock:
            if c in self._cache or (self._ahead is not None and not self._ahead.done()) or self._tmp is None:
                return
            if self._worker is None:
                self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="avatar3d-view-ahead")
            self._ahead = self._worker.submit(self._chunk, c)

    def close(self) -> None:
        """Remove the temporary audio files (the drive cannot compute new chunks afterwards)."""
        if self._worker is not None:
            self._worker.shutdown(wait=True, cancel_futures=True)
        if self._wave is not None:
            with self._work:
                self._wave.close()
            self._wave = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _mirrored(x: np.ndarray) -> np.ndarray:
    """x followed by itself reversed: a loop with no jump at the seam."""
    return np.concatenate([x, x[::-1]])


def _idle_drive(avatar, idle_seconds: float) -> Drive:
    """The silent face (mouth closed), natural blinks and seamless head motion, looping."""
    fps = float(avatar.meta.fps)
    period = 2 * len(avatar.track["head_poses"])  # the mirrored training track loops with no jump
    n = max(1, math.ceil(idle_seconds * fps / period)) * period
    track = avatar.track["head_poses"]
    inputs = FrameInputs(
        avatar.audio.silence_code()[None].expand(n, -1).contiguous(),
        {mode: blinks(mode, n, fps, avatar.track["blink"]) for mode in BLINK_MODES},
        {
            "static": head_poses("static", n, fps, track),
            "track": head_poses("track", n, fps, track),
            "generated": _mirrored(head_poses("generated", n // 2, fps, track)),
        },
    )
    return Drive(fps, n, lambda a, b: inputs, chunk=n)


def _audio_chunk(avatar, wave: _WaveFile, n: int):
    """A function (a, b) -> FrameInputs of frames a..b-1 of ``wave``, as Avatar.render computes them."""
    fps, model = float(avatar.meta.fps), avatar.model
    span = model.cfg.smooth_window

    @torch.no_grad()
    def compute(a: int, b: int) -> FrameInputs:
        lo, hi = max(0, a - span), min(n, b + span)
        try:
            feats = torch.as_tensor(
                avatar.audio.features(wave.wave, fps, n, frames=(lo, hi)), dtype=torch.float32
            )
        finally:
            wave.release()
        codes = model.audio(gather_windows(feats, torch.arange(a - lo, b - lo), span))
        track = avatar.track
        return FrameInputs(
            codes,
            {mode: blinks(mode, b, fps, track["blink"])[a:b] for mode in BLINK_MODES},
            {mode: head_poses(mode, b, fps, track["head_poses"])[a:b] for mode in POSE_MODES},
        )

    return compute


def make_drive(
    avatar, audio=None, *, sample_rate: int | None = None, idle_seconds: float = IDLE_SECONDS
) -> Drive:
    """The per-frame inputs of ``avatar`` driven by ``audio`` (a path, or an array with
    ``sample_rate``), exactly as :meth:`Avatar.render` computes them; with no audio, an idle loop of
    ``idle_seconds``: the silent face (mouth closed), natural blinks, seamless head motion."""
    if audio is None:
        return _idle_drive(avatar, idle_seconds)
    fps = float(avatar.meta.fps)
    wave = load_audio(audio if sample_rate is None else (audio, sample_rate), sr=SAMPLE_RATE)
    n = math.floor(len(wave) / SAMPLE_RATE * fps)
    if n < 1:
        raise Avatar3DError(
            f"the audio is too short ({len(wave) / SAMPLE_RATE:.3f} s) for one frame at {fps:g} fps"
        )
    tmp = tempfile.TemporaryDirectory(prefix="avatar3d-view-")
    sound = write_audio(Path(tmp.name) / "sound.wav", wave, SAMPLE_RATE)
    mapped = _WaveFile(Path(tmp.name) / "wave.f32", wave)
    del wave  # from here on the samples are read from the file
    return Drive(fps, n, _audio_chunk(avatar, mapped, n), CODE_CHUNK, sound=sound, tmp=tmp, wave=mapped)


class Clock:
    """Playback time in seconds, advancing in real time while playing and looping over ``duration``."""

    def __init__(self, duration: float, playing: bool = True, now=time.monotonic):
        self.duration = max(float(duration), 1e-6)
        self._now = now
        self._t0 = 0.0
        self._wall0 = now()
        self.playing = playing

    def time(self) -> float:
        t = self._t0 + (self._now() - self._wall0 if self.playing else 0.0)
        return t % self.duration

    def seek(self, t: float) -> None:
        self._t0 = float(t) % self.duration
        self._wall0 = self._now()

    def play(self) -> None:
        if not self.playing:
            self._wall0 = self._now()
            self.playing = True

    def pause(self) -> None:
        if self.playing:
            self._t0 = self.time()
            self.playing = False


__all__ = ["BLINK_MODES", "POSE_MODES", "Clock", "Drive", "FrameInputs", "FrameSeq", "make_drive"]
