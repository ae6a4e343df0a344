"""What drives the viewer in time: per-frame audio codes, head poses and blinks (:class:`Drive`), and
the playback :class:`Clock`.

An idle loop is a few hundred frames, held in memory. Audio is not: the per-frame inputs are
computed chunk by chunk into a small LRU cache, the next chunk ahead of playback in a background
thread. Two ways, by length:

* an array, or a file up to :data:`SHORT_AUDIO_S` long, is decoded whole and analysed as
  :meth:`Avatar.render` does (chunks of :data:`~avatar3d.drive.audio.CODE_CHUNK` frames exactly as
  :meth:`AudioDriver.codes` makes them, so the numbers equal a render's); its 16 kHz samples live in a
  temporary file (mapped, its pages handed back after every use) next to the 16-bit WAV the browsers
  play (:mod:`.sound`);
* a longer file is never decoded whole (:mod:`.stream`): each chunk's audio is read from the file
  around it, the speech front end streams ahead of the playhead and re-primes at a seek, and the
  browsers' WAV is made from the file as they read it. Start-up costs the same for a minute or an hour.
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
from ..io.media import probe_audio, write_audio
from ..models.deform import gather_windows
from .sound import WavSource
from .stream import STREAM_CHUNK, FileAudio, open_streamed, streamed_chunk

POSE_MODES = ("static", "track", "generated")
BLINK_MODES = ("auto", "track", "none")
CACHE_CHUNKS = 3  # chunks of per-frame inputs kept (the one playing, the one before, the one ahead)
PREFETCH_FROM = 0.5  # past this fraction of a chunk, the next one is computed in the background
IDLE_SECONDS = 20.0  # default length of the idle loop
SHORT_AUDIO_S = 60.0  # audio files up to this long are decoded whole (exact); longer ones stream (.stream)


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
    ``sound``: the 16-bit WAV of the driving audio, a file or a :class:`~.sound.WavSource` (None when
    the avatar idles); ``streamed``: the long-audio state of :mod:`.stream` (None otherwise). Call
    :meth:`close` to remove its temporary files.
    """

    def __init__(
        self,
        fps: float,
        n_frames: int,
        compute,
        chunk: int,
        sound: Path | WavSource | None = None,
        tmp: tempfile.TemporaryDirectory | None = None,
        wave: _WaveFile | None = None,
        streamed=None,
    ):
        self.fps, self.n_frames, self.chunk, self.sound = float(fps), int(n_frames), int(chunk), sound
        self._compute, self._tmp, self._wave, self.streamed = compute, tmp, wave, streamed
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
        ahead_from = 0.0 if self.streamed is not None else PREFETCH_FROM  # short chunks: at once
        if i >= ahead_from * self.chunk and (c + 1) * self.chunk < self.n_frames:
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
            busy = self._ahead is not None and not self._ahead.done()
            if c in self._cache or busy or (self._tmp is None and self.streamed is None):  # (an idle loop)
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
        if self.streamed is not None and self.streamed.front is not None:
            with self._work:
                self.streamed.front.close()


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


def _streamed_drive(avatar, path, n_samples: int) -> Drive:
    """The drive of a long audio file, read around the playhead (:mod:`.stream`)."""
    fps = float(avatar.meta.fps)
    n = math.floor(n_samples / SAMPLE_RATE * fps + 1e-6)
    if n < 1:
        raise Avatar3DError(
            f"the audio is too short ({n_samples / SAMPLE_RATE:.3f} s) for one frame at {fps:g} fps"
        )
    s = open_streamed(avatar, path, n_samples)

    def compute(a: int, b: int) -> FrameInputs:
        return FrameInputs(*streamed_chunk(s, a, b))

    sound = WavSource(FileAudio(path, n_samples).chunks, n_samples, SAMPLE_RATE)
    return Drive(fps, n, compute, STREAM_CHUNK, sound=sound, streamed=s)


def make_drive(
    avatar,
    audio=None,
    *,
    sample_rate: int | None = None,
    idle_seconds: float = IDLE_SECONDS,
    stream: bool | None = None,
) -> Drive:
    """The per-frame inputs of ``avatar`` driven by ``audio`` (a path, or an array with
    ``sample_rate``), as :meth:`Avatar.render` computes them; with no audio, an idle loop of
    ``idle_seconds``: the silent face (mouth closed), natural blinks, seamless head motion.

    ``stream``: read a file around the playhead (:mod:`.stream`) instead of decoding it whole;
    default: for files longer than :data:`SHORT_AUDIO_S`. Streamed features are normalised by
    statistics sampled across the file and the front end restarts at a seek, so they differ a little
    from a render's; the decoded path gives a render's numbers exactly."""
    if audio is None:
        return _idle_drive(avatar, idle_seconds)
    if sample_rate is None:
        n_samples = probe_audio(audio).n_samples(SAMPLE_RATE)
        if stream or (stream is None and n_samples > SHORT_AUDIO_S * SAMPLE_RATE):
            return _streamed_drive(avatar, audio, n_samples)
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


__all__ = [
    "BLINK_MODES",
    "POSE_MODES",
    "SHORT_AUDIO_S",
    "Clock",
    "Drive",
    "FrameInputs",
    "FrameSeq",
    "make_drive",
]
