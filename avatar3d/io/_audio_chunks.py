"""The sample bookkeeping of chunked audio reading (:func:`avatar3d.io.media.iter_audio`), without
PyAV: decoded mono samples placed on the file's timeline go in, fixed-size chunks at the output rate
come out, resampled by one streaming soxr resampler (the same HQ filter as :func:`read_audio`, so a
chunked read equals a whole-file read sample for sample).

A read of a time range starts the resampler on a sample where the native and output grids meet
(every ``rate / gcd`` native samples) a little before the range, and drops that margin's output:
the filter has then seen the same samples it sees in a whole-file read.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

MARGIN_S = 0.1  # seconds of resampler warm-up before a range (the HQ filter needs a few ms)


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`probe_audio` finds: ``duration`` in seconds from the container's time 0 (as
    :func:`read_audio` returns it: a late start counts), the first track's native rate and channels."""

    duration: float
    sample_rate: int
    channels: int
    codec: str

    def n_samples(self, sr: int | None = None) -> int:
        """Samples :func:`read_audio` gives at ``sr`` (default the native rate), from the declared length."""
        n = round(self.duration * self.sample_rate)
        return n if sr is None else round(n * int(sr) / self.sample_rate)


@dataclass(frozen=True)
class ReadPlan:
    """Which native samples a read needs and which output samples it yields.

    ``first``: the native sample the resampler starts on; ``skip``: output samples of it to drop;
    ``out0`` / ``out1``: the output samples yielded, ``[out0, out1)``; ``stop``: the native sample
    past the last one needed (None: to the end of the track).
    """

    first: int
    skip: int
    out0: int
    out1: int | None
    stop: int | None


def plan_read(rate: int, sr: int, out0: int, out1: int | None) -> ReadPlan:
    """The :class:`ReadPlan` of output samples ``[out0, out1)`` at ``sr`` from a ``rate`` track."""
    g = math.gcd(rate, sr)
    step_in, step_out = rate // g, sr // g
    margin = 0 if rate == sr else math.ceil(MARGIN_S * sr)
    k = max(0, out0 - margin) // step_out
    first = k * step_in
    stop = None
    if out1 is not None:
        stop = math.ceil(out1 / step_out) * step_in + (0 if rate == sr else math.ceil(MARGIN_S * rate))
    return ReadPlan(first, out0 - k * step_out, out0, out1, stop)


class Rechunker:
    """Native samples in (``put(position, samples)``), (n,) float32 chunks at ``sr`` out.

    Positions are native sample indices on the file's timeline: a gap before a block is zero-filled,
    an overlap dropped; samples before ``plan.first`` or from ``end`` (the track's declared end) on
    are dropped. ``chunk``: output samples per yielded chunk (the last one may be shorter).
    """

    def __init__(self, rate: int, sr: int, plan: ReadPlan, end: int | None, chunk: int):
        self.rate, self.sr, self.plan, self.chunk = int(rate), int(sr), plan, max(1, int(chunk))
        end = end if end is not None and end > 0 else None  # a declared end of 0: unknown
        self.end = end if plan.stop is None else (plan.stop if end is None else min(end, plan.stop))
        self.next = plan.first  # next native sample expected
        self._skip = plan.skip
        self._left = None if plan.out1 is None else max(0, plan.out1 - plan.out0)
        self._out: list[np.ndarray] = []
        self._n_out = 0
        self._stream = None
        if self.rate != self.sr:
            import soxr

            self._stream = soxr.ResampleStream(self.rate, self.sr, 1, dtype="float32", quality="HQ")

    @property
    def done(self) -> bool:
        """True once nothing more is wanted (the range is complete or the declared end reached)."""
        return self._left == 0 or (self.end is not None and self.next >= self.end)

    def put(self, pos: int, x: np.ndarray) -> Iterator[np.ndarray]:
        """Add samples ``x`` (n,) starting at native sample ``pos``; yields the chunks completed."""
        if pos > self.next:  # a gap (a late start): silence
            x = np.concatenate([np.zeros(pos - self.next, np.float32), x])
            pos = self.next
        x = x[self.next - pos :]
        if self.end is not None:
            x = x[: max(0, self.end - self.next)]
        if x.size == 0:
            return
        self.next += x.size
        yield from self._emit(x if self._stream is None else self._stream.resample_chunk(x))

    def finish(self) -> Iterator[np.ndarray]:
        """End of the track: flush the resampler and yield the rest."""
        if self._stream is not None:
            yield from self._emit(self._stream.resample_chunk(np.zeros(0, np.float32), last=True))
        if self._n_out:
            yield self._take(self._n_out)

    def _emit(self, y: np.ndarray) -> Iterator[np.ndarray]:
        if self._skip:
            cut = min(self._skip, y.size)
            y, self._skip = y[cut:], self._skip - cut
        if self._left is not None:
            y = y[: self._left]
            self._left -= y.size
        if y.size:
            self._out.append(np.clip(y, -1.0, 1.0).astype(np.float32, copy=False))
            self._n_out += y.size
        while self._n_out >= self.chunk:
            yield self._take(self.chunk)

    def _take(self, n: int) -> np.ndarray:
        buf = np.concatenate(self._out) if len(self._out) > 1 else self._out[0]
        head, rest = buf[:n], buf[n:]
        self._out, self._n_out = ([rest] if rest.size else []), rest.size
        return head


__all__ = ["MARGIN_S", "AudioInfo", "ReadPlan", "Rechunker", "plan_read"]
