"""A render written in segments that survive a kill: the sidecar directory ``.<output>.parts/``.

A long render to a file proceeds segment by segment (:class:`RenderParts`). Each finished segment is
an H.264 file of its own (``part-000003.mp4``, video only), written atomically and fsynced, and only
then recorded in ``manifest.json`` (written atomically too): the manifest never names a part that is
not complete. The manifest carries the render's *key*, digests of everything that determines the
frames (given by the caller) plus the encoder settings. A rerun with the same key keeps every recorded
part that still checks -- its size, its content digest and the number of frames its container holds
-- and renders only the others. A different key means the parts belong to another render: they are
removed (one line says so) and the render starts over.

:meth:`RenderParts.join` joins the parts into the output without re-encoding the video (their
packets are copied with rebased timestamps) and encodes the audio alongside them, in sync, into a
temp sibling renamed onto the output (:func:`avatar3d.io.atomic.atomic_file`); then the sidecar
directory is removed. While a render uses the directory it holds an exclusive lock on its
``.lock``: a second render of the same output is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from avatar3d.errors import MediaError
from avatar3d.io._encode import _AAC_FRAME, _AAC_RATES, _OUT_FORMATS, _as_fps, _pick_video_codec
from avatar3d.io._shared import _reason, audio_channels_first, check_sample_rate, resample_audio
from avatar3d.io.atomic import atomic_file
from avatar3d.io.locks import PidLock
from avatar3d.io.media import write_video
from avatar3d.io.outputs import OutputError

__all__ = ["MANIFEST", "Part", "RenderParts", "parts_dir"]

MANIFEST = "manifest.json"
FORMAT = "avatar3d-render-parts"
PART_CRF, PART_PRESET = 18, "medium"  # the encoder settings of every part (those of write_video)
_PART = re.compile(r"part-[0-9]{6}\.mp4")
_PART_TEMP = re.compile(r"\.part-[0-9]{6}\.mp4\.tmp-.+")


def parts_dir(output: str | os.PathLike[str]) -> Path:
    """The sidecar directory of a segmented render of ``output``: ``.<name>.parts`` beside it."""
    out = Path(output)
    return out.with_name(f".{out.name}.parts")


@dataclass(frozen=True)
class Part:
    """One finished segment: frames ``start`` .. ``start + frames - 1`` of the render in ``file``."""

    index: int
    start: int
    frames: int
    file: str
    bytes: int
    digest: str


def _file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def count_frames(path: str | os.PathLike[str]) -> int:
    """Coded video frames (packets) in a media file, or -1 when it does not open or demux cleanly."""
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                return -1
            st = c.streams.video[0]
            return sum(1 for pk in c.demux(st) if pk.size)
    except (av.FFmpegError, OSError, ValueError):
        return -1


def _part_problem(path: Path, part: Part) -> str | None:
    """Why a recorded part cannot be reused (None: it can)."""
    try:
        size = path.stat().st_size
    except OSError:
        return "missing"
    if size != part.bytes:
        return f"{size} bytes, {part.bytes} recorded"
    if _file_digest(path) != part.digest:
        return "its content changed"
    n = count_frames(path)
    if n != part.frames:
        return "it does not open" if n < 0 else f"{n} frames, {part.frames} recorded"
    return None


class RenderParts:
    """The finished segments of a render of ``output`` (``n_frames`` frames in segments of
    ``segment_frames``) whose frames are determined by ``key`` (name -> digest or value).

    Use as a context manager: entering locks the sidecar directory and loads what an earlier run of
    the same render left (:attr:`parts`); leaving releases the lock and keeps the parts (a killed or
    failed render resumes from them). ``log`` receives one-line notes (parts discarded, damaged).
    """

    def __init__(
        self,
        output: str | os.PathLike[str],
        key: dict[str, str],
        n_frames: int,
        segment_frames: int,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if n_frames < 1 or segment_frames < 1:
            raise ValueError(f"n_frames and segment_frames must be >= 1, got {n_frames}, {segment_frames}")
        self.output, self.dir = Path(output), parts_dir(output)
        if self.output.suffix.lower() not in _OUT_FORMATS:  # checked now, not after the render
            raise MediaError(
                f"{self.output}: unsupported output container {self.output.suffix!r} (use .mp4, .mov or .mkv)"
            )
        if self.output.is_dir():
            raise OutputError(f"output {self.output} is a directory; give a file name")
        self.n_frames, self.segment_frames = int(n_frames), int(segment_frames)
        encoder = f"{_pick_video_codec()} crf {PART_CRF} {PART_PRESET}"
        self.key = {**{k: str(v) for k, v in key.items()}, "encoder": encoder,
                    "frames": str(self.n_frames), "segment_frames": str(self.segment_frames)}  # fmt: skip
        self.parts: dict[int, Part] = {}
        self._log = log or (lambda s: None)
        self._lock: PidLock | None = None

    # ------------------------------------------------------------------ segments
    @property
    def n_segments(self) -> int:
        return -(-self.n_frames // self.segment_frames)

    def span(self, index: int) -> tuple[int, int]:
        """Frames ``start, stop`` (stop exclusive) of segment ``index``."""
        start = index * self.segment_frames
        return start, min(self.n_frames, start + self.segment_frames)

    @property
    def reused_frames(self) -> int:
        """Frames in the parts kept from an earlier run (or written so far)."""
        return sum(p.frames for p in self.parts.values())

    def missing_runs(self) -> list[tuple[int, int]]:
        """Frame ranges ``(start, stop)`` of consecutive segments still to render, in order."""
        runs: list[tuple[int, int]] = []
        for i in range(self.n_segments):
            if i in self.parts:
                continue
            a, b = self.span(i)
            if runs and runs[-1][1] == a:
                runs[-1] = (runs[-1][0], b)
            else:
                runs.append((a, b))
        return runs

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> RenderParts:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._acquire()
        try:
            self.parts = self._load()
            self._save()
            self._remove_strays()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._release()

    def _acquire(self) -> None:
        def busy(pid: str) -> OutputError:
            return OutputError(
                f"{self.output} is being rendered by another process (pid {pid}): wait for it, "
                "or choose another output path"
            )

        self._lock = PidLock(self.dir / ".lock", busy)

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def clear(self) -> None:
        """Forget and delete every part (render from scratch)."""
        self.parts = {}
        self._save()
        self._remove_strays()

    def remove(self) -> None:
        """Delete the sidecar directory (after a successful join)."""
        self.parts = {}
        self._remove_strays()
        for name in (MANIFEST, ".lock"):
            with contextlib.suppress(OSError):
                (self.dir / name).unlink()
        self._release()
        with contextlib.suppress(OSError):  # left in place if it holds anything not ours
            self.dir.rmdir()

    # ------------------------------------------------------------------ manifest
    def _load(self) -> dict[int, Part]:
        """The recorded parts that can be reused (notes on those that cannot)."""
        path = self.dir / MANIFEST
        if not path.is_file():
            return {}
        try:
            rec = json.loads(path.read_text())
            old_key, parts = rec["key"], [Part(**p) for p in rec["parts"]]
            if rec.get("format") != FORMAT or not isinstance(old_key, dict):
                raise ValueError("not a parts manifest")
        except (OSError, ValueError, KeyError, TypeError) as e:
            self._log(f"removing the unreadable render parts in {self.dir} ({e}); rendering from the start")
            return {}
        if old_key != self.key:
            diff = sorted(k for k in set(old_key) | set(self.key) if old_key.get(k) != self.key.get(k))
            self._log(
                f"removing the render parts in {self.dir}: they were made with other {', '.join(diff)}; "
                "rendering from the start"
            )
            return {}
        return self._verified(parts)

    def _verified(self, parts: list[Part]) -> dict[int, Part]:
        kept: dict[int, Part] = {}
        for p in parts:
            if not _PART.fullmatch(p.file) or (p.start, p.start + p.frames) != self.span(p.index):
                problem = "it does not fit this render's segments"
            else:
                problem = _part_problem(self.dir / p.file, p)
            if problem is None:
                kept[p.index] = p
            else:
                self._log(f"render part {self.dir / p.file} cannot be reused ({problem}): rendering it again")
        return kept

    def _save(self) -> None:
        rec = {"format": FORMAT, "version": 1, "key": self.key,
               "parts": [asdict(self.parts[i]) for i in sorted(self.parts)]}  # fmt: skip
        with atomic_file(self.dir / MANIFEST, suffix="") as tmp:
            tmp.write_text(json.dumps(rec, indent=1))

    def _remove_strays(self) -> None:
        """Delete part files the manifest does not name and temp files of killed part writes (the
        lock guarantees no other live process writes here)."""
        keep = {p.file for p in self.parts.values()}
        for entry in os.scandir(self.dir):
            if (_PART.fullmatch(entry.name) and entry.name not in keep) or _PART_TEMP.fullmatch(entry.name):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)

    # ------------------------------------------------------------------ writing
    def write(self, index: int, frames: Iterable[np.ndarray], fps: float) -> Part:
        """Encode segment ``index`` from its (H, W, 3) uint8 frames, then record it in the manifest."""
        start, stop = self.span(index)
        name = f"part-{index:06d}.mp4"
        counted = _Counter(frames)
        path = write_video(self.dir / name, counted, fps, crf=PART_CRF, preset=PART_PRESET)
        if counted.n != stop - start:
            path.unlink()
            raise ValueError(f"segment {index} got {counted.n} frames, expected {stop - start}")
        part = Part(index, start, counted.n, name, path.stat().st_size, _file_digest(path))
        self.parts[index] = part
        self._save()
        return part

    def join(self, fps: float, audio: np.ndarray | None, audio_sr: int | None) -> Path:
        """Join every part into the output (video packets copied, ``audio`` encoded AAC in sync, cut or
        padded to the video's length), atomically; then remove the sidecar directory."""
        missing = [i for i in range(self.n_segments) if i not in self.parts]
        if missing:
            raise ValueError(f"segments {missing[:5]} of {self.output} are not rendered yet")
        fmt = _OUT_FORMATS[self.output.suffix.lower()]
        files = [self.dir / self.parts[i].file for i in range(self.n_segments)]
        starts = [self.parts[i].start for i in range(self.n_segments)]
        track = _AacSource(audio, audio_sr, self.output) if audio is not None else None
        with atomic_file(self.output) as tmp:
            options = {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {}
            try:
                with av.open(str(tmp), mode="w", format=fmt, options=options) as out:
                    _remux(out, files, starts, _as_fps(fps), track)
            except (av.FFmpegError, OSError) as e:
                raise MediaError(f"{self.output}: joining the rendered parts failed ({_reason(e)})") from None
        self.remove()
        return self.output


class _Counter:
    """An iterable that counts what passes through it."""

    def __init__(self, items: Iterable) -> None:
        self._it, self.n = iter(items), 0

    def __iter__(self) -> Iterator:
        for x in self._it:
            self.n += 1
            yield x


class _AacSource:
    """A wave prepared for AAC (channels first, a rate AAC takes, clipped), encoded on demand."""

    def __init__(self, audio: np.ndarray, sr: int | None, target: Path) -> None:
        if sr is None:
            raise ValueError("audio_sr is required with audio")
        self.sr = check_sample_rate(sr, f"{target}: audio rate")
        wave = audio_channels_first(audio, f"{target}: audio")
        if wave.shape[0] > 2:
            wave = wave.mean(axis=0, keepdims=True)
        if self.sr not in _AAC_RATES:
            new_sr = min((r for r in _AAC_RATES if r >= self.sr), default=48000)
            wave, self.sr = resample_audio(wave, self.sr, new_sr), new_sr
        self.wave = np.clip(wave, -1.0, 1.0).astype(np.float32)
        self.pos = 0
        self.stream = None

    def add_to(self, container: av.container.OutputContainer) -> None:
        self.stream = container.add_stream("aac", rate=self.sr)
        self.stream.layout = "stereo" if self.wave.shape[0] == 2 else "mono"
        self.stream.bit_rate = 96000 * self.wave.shape[0]

    def upto(self, container: av.container.OutputContainer, n_end: int, final: bool) -> None:
        """Encode samples [pos, n_end) in whole AAC frames (and, when ``final``, the rest padded with
        zeros past the input's end), then flush the encoder when ``final``."""
        st = self.stream
        while self.pos < n_end and (final or self.pos + _AAC_FRAME <= n_end):
            n = min(_AAC_FRAME, n_end - self.pos)
            chunk = np.zeros((self.wave.shape[0], n), np.float32)
            src = self.wave[:, self.pos : self.pos + n]
            chunk[:, : src.shape[1]] = src
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=st.layout.name)
            af.sample_rate, af.pts, af.time_base = self.sr, self.pos, Fraction(1, self.sr)
            for pk in st.encode(af):
                container.mux(pk)
            self.pos += n
        if final:
            for pk in st.encode(None):
                container.mux(pk)


def _timing(path: Path) -> tuple[int, int, Fraction]:
    """(first presentation time, decoding delay, time base) of a part's video: its earliest pts and how
    far its first dts lies before it (B-frame reordering; shorter parts may have less of it)."""
    with av.open(str(path)) as src:
        st = src.streams.video[0]
        first_dts, min_pts = None, None
        for pk in src.demux(st):
            if not pk.size:
                continue
            first_dts = pk.dts if first_dts is None else first_dts
            min_pts = pk.pts if min_pts is None else min(min_pts, pk.pts)
        if first_dts is None:
            raise MediaError(f"{path}: the render part holds no video")
        return min_pts, min_pts - first_dts, st.time_base


def _remux(
    out: av.container.OutputContainer,
    files: list[Path],
    starts: list[int],
    rate: Fraction,
    track: _AacSource | None,
) -> None:
    """Copy the video packets of ``files`` (segment i starting at frame ``starts[i]``) into ``out``:
    presentation times moved to each segment's start, decoding times to one common delay (the largest
    of the parts, so decoding order stays increasing and never after presentation), the audio
    interleaved."""
    timings = [_timing(p) for p in files]
    delay = max(Fraction(d) * tb for _, d, tb in timings)  # seconds
    with av.open(str(files[0])) as first:
        vs = out.add_stream_from_template(first.streams.video[0])
        extradata = first.streams.video[0].codec_context.extradata
    if track is not None:
        track.add_to(out)
    k = 0
    for path, start, (pts0, d, tb) in zip(files, starts, timings):
        with av.open(str(path)) as src:
            st = src.streams.video[0]
            if st.codec_context.extradata != extradata:
                raise MediaError(
                    f"{path}: encoded with other settings than the first part; remove it and rerun"
                )
            shift = round(Fraction(start) / rate / tb) - pts0
            dts_shift = shift - round(delay / tb - d)
            for pk in src.demux(st):
                if not pk.size:
                    continue
                pk.pts, pk.dts = pk.pts + shift, pk.dts + dts_shift
                pk.stream = vs
                out.mux(pk)
                k += 1
                if track is not None:
                    track.upto(out, round(k * track.sr / rate), final=False)
    if track is not None:
        track.upto(out, round(k * track.sr / rate), final=True)
