"""Long audio in the viewer, read from its file around the playhead: nothing the length of the audio
is decoded or analysed before the first frame, and memory does not grow with the audio's length.

* Samples come from the file by time range (:func:`avatar3d.io.media.read_audio_range`, which seeks).
* The log-mel half of the features is normalised by statistics sampled across the file
  (:data:`STATS_SEGMENTS` spans of :data:`STATS_SPAN_S`, read by seeking), where an offline render
  takes them over every sample.
* The speech front end (visemes, voice, loudness) runs as
  :class:`~avatar3d.audio.visemes.StreamingVisemes`, the one ``avatar3d serve`` uses, fed from the
  file in order as playback needs it (the drive computes the chunk ahead of the playhead in the
  background). A frame far from where the front end stands (a seek) re-primes it there, with
  :data:`PRIME_S` of audio before it so its decoder, voice detector and loudness reference have
  settled.

Design: ``docs/design/view-streaming.md``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ..audio.features import HOP, ClipStats, clip_statistics, frame_features
from ..audio.vad import BLOCK
from ..audio.visemes import FEATURE_DIM, VISEMES, StreamingVisemes
from ..core.constants import SAMPLE_RATE
from ..drive.audio import AudioDriver
from ..drive.motion import blinks, head_poses
from ..io.media import iter_audio, read_audio_range
from ..models.deform import gather_windows

SR = SAMPLE_RATE
STREAM_CHUNK = 64  # frames computed at a time (the first frame after a seek waits for one chunk)
CONTEXT_S = 0.5  # audio read either side of a chunk's frames: the mel windows reach 0.18 s
PRIME_S = 2.0  # audio the front end hears before a frame it is re-primed at
RUN_ON_S = 4.0  # a frame at most this far ahead of the front end is reached by running on, not re-priming
FRONT_LOOKAHEAD_S = 0.5  # the front end's lookahead (rows are final; a longer one changed nothing)
FRONT_KEEP_S = 30.0  # front-end rows kept behind the newest request (a step back need not re-prime)
FEED_S = 1.0  # audio fed to the front end at a time
STATS_SEGMENTS, STATS_SPAN_S = 48, 2.5  # log-mel normalisation: this many spans spread over the file
MAX_PERIOD = 250  # frames: the longest alignment period (frame_period) used


def frame_period(fps: float) -> int:
    """The fewest frames whose span is a whole number of front-end blocks and mel hops (4 at 25 fps),
    so a stream started there meets the grids a whole-file analysis uses; else (no such span up to
    :data:`MAX_PERIOD` frames) a whole number of samples (15 at 29.97 fps), else 1."""
    spf = Fraction(SR) / Fraction(float(fps)).limit_denominator(1001)
    grid = math.lcm(BLOCK, HOP)
    whole = spf.denominator
    for p in range(whole, MAX_PERIOD + 1, whole):
        if (p * spf) % grid == 0:
            return p
    return whole if whole <= MAX_PERIOD else 1


def _silent_row() -> np.ndarray:
    """(1, V) the front end's row of silence: all weight on ``sil``, no voice, no loudness."""
    row = np.zeros((1, FEATURE_DIM), np.float32)
    row[0, VISEMES.index("sil")] = 1.0
    return row


class FileAudio:
    """The 16 kHz samples of an audio file, read by range. ``n_samples``: the length
    :func:`avatar3d.audio.load_audio` would give (from the file's declared duration)."""

    def __init__(self, path: str | Path, n_samples: int):
        self.path, self.n_samples = Path(path), int(n_samples)

    def read(self, a: int, b: int) -> np.ndarray:
        """(b - a,) float32 samples a..b-1; zeros outside the file."""
        lo, hi = max(0, a), min(self.n_samples, b)
        x = read_audio_range(self.path, lo / SR, hi / SR, SR) if hi > lo else np.zeros(0, np.float32)
        return np.pad(x, (lo - a, (b - a) - (lo - a) - len(x)))

    def chunks(self, a: int, b: int | None = None, chunk_s: float = FEED_S) -> Iterator[np.ndarray]:
        """Samples a..b-1 (default to the end) ``chunk_s`` seconds at a time, decoded in order."""
        b = self.n_samples if b is None else min(int(b), self.n_samples)
        n = 0
        for x in iter_audio(self.path, SR, start=a / SR, end=b / SR, chunk=chunk_s):
            n += len(x)
            yield x
        if a + n < b:  # the file holds less than it declared: silence
            yield np.zeros(b - a - n, np.float32)

    def sampled_statistics(self) -> ClipStats:
        """The log-mel normalisation of :data:`STATS_SEGMENTS` spans spread evenly over the file."""
        span = round(STATS_SPAN_S * SR)
        starts = (np.arange(STATS_SEGMENTS) + 0.5) * self.n_samples / STATS_SEGMENTS - span / 2
        starts = np.clip(np.round(starts), 0, max(0, self.n_samples - span)).astype(int)
        parts = [self.read(int(s), int(min(self.n_samples, s + span))) for s in np.unique(starts)]
        return clip_statistics(np.concatenate(parts), SR)


class FrontEnd:
    """The streaming speech front end over a :class:`FileAudio`: ``rows(a, b)`` gives frames a..b-1
    ((b - a, V) float32), feeding it from where it stands, or re-priming it near ``a``."""

    def __init__(self, audio: FileAudio, fps: float, n_frames: int):
        self.audio, self.fps, self.n_frames = audio, float(fps), int(n_frames)
        self.period = frame_period(fps)
        self.primes = 0  # how many times the stream was (re)started
        self._stream: StreamingVisemes | None = None
        self._feed: Iterator[np.ndarray] | None = None
        self._rows = np.zeros((0, 0), np.float32)
        self._first = 0  # absolute frame of self._rows[0]
        self._done = False

    def close(self) -> None:
        """Close the file the front end reads (it re-opens on the next request)."""
        if self._feed is not None:
            self._feed.close()
        self._stream, self._feed = None, None

    @property
    def end(self) -> int:
        """Frames with rows so far (absolute index past the newest)."""
        return self._first + len(self._rows)

    def _prime(self, a: int) -> None:
        f0 = max(0, a - math.ceil(PRIME_S * self.fps)) // self.period * self.period
        self.close()
        self._stream = StreamingVisemes(self.fps, FRONT_LOOKAHEAD_S)
        self._feed = self.audio.chunks(round(f0 * SR / self.fps))
        self._rows, self._first, self._done = np.zeros((0, 0), np.float32), f0, False
        self.primes += 1

    def _push(self) -> None:
        x = next(self._feed, None)
        rows = self._stream.flush() if x is None else self._stream.push(x)
        self._done = x is None
        if len(rows):
            self._rows = np.concatenate([self._rows, rows]) if len(self._rows) else rows

    def rows(self, a: int, b: int) -> np.ndarray:
        """(b - a, V) float32 rows of frames a..b-1 (0 <= a < b <= n_frames)."""
        if self._stream is None or a < self._first or a > self.end + RUN_ON_S * self.fps:
            self._prime(a)
        while self.end < b and not self._done:
            self._push()
        out = self._rows[max(0, a - self._first) : b - self._first]
        if len(out) < b - a:  # past the stream's last row (a rounded length): repeat it, or silence
            last = self._rows[-1:] if len(self._rows) else _silent_row()
            out = (
                np.concatenate([out, np.repeat(last, (b - a) - len(out), 0)])
                if len(out)
                else np.repeat(last, b - a, 0)
            )
        keep = max(0, a - math.ceil(FRONT_KEEP_S * self.fps) - self._first)
        if keep:
            self._rows, self._first = self._rows[keep:], self._first + keep
        return out


@dataclasses.dataclass
class StreamedInputs:
    """What :func:`streamed_chunk` needs: the avatar, the file, its statistics and front end."""

    avatar: object
    audio: FileAudio
    n_frames: int
    stats: ClipStats
    front: FrontEnd | None
    plain: AudioDriver  # the audio features without the front end's channels
    auto_blinks: np.ndarray  # (n_frames,) the natural blink schedule of Avatar.render


def open_streamed(avatar, path: str | Path, n_samples: int) -> StreamedInputs:
    """Sample the file's statistics and set up the front end (nothing else is read)."""
    meta, fps = avatar.meta, float(avatar.meta.fps)
    n = math.floor(n_samples / SR * fps + 1e-6)
    audio = FileAudio(path, n_samples)
    plain_meta = dataclasses.replace(meta, front_end=dataclasses.replace(meta.front_end, viseme_channels=0))
    front = FrontEnd(audio, fps, n) if meta.n_visemes else None
    stats = audio.sampled_statistics()
    plain = AudioDriver(avatar.model, plain_meta, avatar.audio.speech_model_path)
    return StreamedInputs(avatar, audio, n, stats, front, plain, blinks("auto", n, fps, None))


def _features(s: StreamedInputs, lo: int, hi: int) -> torch.Tensor:
    """(hi - lo, W, M) features of frames lo..hi-1, from the audio around them."""
    meta, fps = s.avatar.meta, float(s.avatar.meta.fps)
    period, ctx = frame_period(fps), math.ceil(CONTEXT_S * fps)
    f0 = max(0, lo - ctx) // period * period  # the segment starts on a frame's own sample
    f1 = min(s.n_frames, hi + ctx)
    s0, s1 = round(f0 * SR / fps), min(s.audio.n_samples, round(f1 * SR / fps) + round(CONTEXT_S * SR))
    seg = s.audio.read(s0, s1)
    if meta.speech_model:
        feats = s.plain.features(seg, fps, hi - f0, frames=(lo - f0, hi - f0))
    else:
        feats = frame_features(
            seg, SR, fps, hi - f0, meta.audio_window, frames=(lo - f0, hi - f0), stats=s.stats
        )
    if s.front is not None:
        vis = s.front.rows(lo, hi)
        feats = np.concatenate([feats, np.repeat(vis[:, None, :], feats.shape[1], 1)], -1)
    return torch.as_tensor(feats, dtype=torch.float32)


def _poses(track: np.ndarray, a: int, b: int, fps: float) -> dict[str, np.ndarray]:
    """Head poses of frames a..b-1 in each mode (only those frames are computed: at the end of an
    hour, the frames before ``a`` would be 90 000 poses per chunk)."""
    return {mode: head_poses(mode, b - a, fps, track, start=a) for mode in ("static", "track", "generated")}


@torch.no_grad()
def streamed_chunk(s: StreamedInputs, a: int, b: int):
    """(codes (b - a, A), blinks mode -> (b - a,), poses mode -> (b - a, 4, 4)) of frames a..b-1."""
    model, fps, track = s.avatar.model, float(s.avatar.meta.fps), s.avatar.track
    span = model.cfg.smooth_window
    lo, hi = max(0, a - span), min(s.n_frames, b + span)
    codes = model.audio(gather_windows(_features(s, lo, hi), torch.arange(a - lo, b - lo), span))
    tb = np.asarray(track["blink"])
    blink = {
        "auto": s.auto_blinks[a:b],
        "none": np.zeros(b - a, np.float32),
        "track": np.concatenate([tb, tb[::-1]])[np.arange(a, b) % (2 * len(tb))],
    }
    return codes, blink, _poses(np.asarray(track["head_poses"]), a, b, fps)


__all__ = ["FileAudio", "FrontEnd", "StreamedInputs", "frame_period", "open_streamed", "streamed_chunk"]
