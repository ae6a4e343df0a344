"""Media I/O through PyAV -- with its private encoder half `_encode`, the only code that opens media files.

Timeline conventions (so that audio and video from the same file line up exactly):

* Time 0 is the container's start time (the earliest stream start; 0 for nearly every mp4).
* Video is returned at a **constant frame rate**: output frame ``k`` is the picture on screen at
  ``t = k / fps``. Variable-frame-rate files (phones, screen recorders, files with dropped frames
  such as ``talk_a.mp4``) are resampled like ``ffmpeg -vsync cfr``: a source frame with timestamp
  ``t`` lands in slot ``round(t * fps)``; gaps repeat the previous frame, collisions keep the later
  one, and slots before the first frame show the first frame. ``probe_video(...).n_frames`` is the
  exact number of frames ``iter_frames`` yields.
* Audio sample ``i`` is at ``t = i / sr`` on the same timeline (leading gaps are zero-filled, the
  encoder's trailing padding is trimmed to the stream's declared duration).

Every error a user can cause raises :class:`avatar3d.errors.MediaError` with one line naming the file.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from avatar3d.errors import MediaError
from avatar3d.io._audio_chunks import AudioInfo, Rechunker, plan_read
from avatar3d.io._encode import encode_audio, encode_image, encode_video
from avatar3d.io._shared import _reason, _snap_rate, audio_channels_first, check_sample_rate, resample_audio

__all__ = [
    "AudioInfo",
    "VideoInfo",
    "audio_channels_first",
    "check_sample_rate",
    "iter_audio",
    "iter_frames",
    "probe_audio",
    "probe_video",
    "read_audio",
    "read_audio_range",
    "read_image",
    "resample_audio",
    "write_audio",
    "write_image",
    "write_video",
]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` finds. Sizes are the *displayed* size (after rotation)."""

    width: int
    height: int
    fps: float  # constant output rate of iter_frames
    n_frames: int  # exact number of frames iter_frames yields (constant-rate slots)
    duration: float  # seconds, end of the video track on the container timeline
    has_audio: bool
    audio_rate: int | None  # Hz, native rate of the first audio track
    audio_channels: int | None
    rotation: int  # display rotation applied, degrees counter-clockwise, one of 0/90/180/270
    codec: str = ""  # video decoder name, e.g. "h264"
    audio_codec: str | None = None  # e.g. "aac"
    source_frames: int = 0  # coded frames (packets) in the video track, before rate conversion


# ---------------------------------------------------------------------------------------------
# shared helpers


def _check_input(path: PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise MediaError(f"{p}: file not found")
    if p.is_dir():
        raise MediaError(f"{p}: is a directory, not a media file")
    if p.stat().st_size == 0:
        raise MediaError(f"{p}: file is empty")
    return p


def _open(p: Path) -> av.container.InputContainer:
    try:
        return av.open(str(p), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
        raise MediaError(f"{p}: not a readable media file or corrupt ({_reason(e)})") from None


def _t_ref(container: av.container.InputContainer) -> float:
    """Container time origin in seconds (earliest stream start)."""
    st = container.start_time
    return 0.0 if st is None else st / av.time_base


def _frame_rate(stream: av.video.stream.VideoStream, p: Path) -> Fraction:
    """Constant output rate: the stream's nominal rate, or its average rate when that is absurd."""

    def sane(r: Fraction | None) -> bool:
        return r is not None and r > 0 and 0.5 <= float(r) <= 1000.0

    nominal, average = stream.guessed_rate, stream.average_rate
    if sane(nominal) and (
        not sane(average) or 0.95 * float(average) <= float(nominal) <= 2.0 * float(average)
    ):
        return _snap_rate(Fraction(nominal))
    if sane(average):
        return _snap_rate(Fraction(average))
    if sane(nominal):
        return _snap_rate(Fraction(nominal))
    raise MediaError(f"{p}: cannot determine the video frame rate")


def _metadata_rotation(stream: av.video.stream.VideoStream) -> int:
    """Legacy 'rotate' tag (clockwise degrees) as counter-clockwise degrees; 0 if absent."""
    try:
        return -int(float(stream.metadata.get("rotate", 0)))
    except (TypeError, ValueError):
        return 0


def _norm_rotation(ccw: float) -> int:
    return round(ccw / 90.0) * 90 % 360


class _Timeline:
    """Accumulates video packet timestamps; gives the constant-rate slot of a time and the slot count."""

    def __init__(self, fps: Fraction, t_ref: float) -> None:
        self.fps, self.t_ref = fps, t_ref
        self.n_packets = 0
        self.max_slot = -1
        self.end = -math.inf  # seconds, container timeline

    def slot(self, t: float) -> int:
        return round((t - self.t_ref) * float(self.fps))

    def add(self, pkt: av.Packet) -> None:
        ts = pkt.pts if pkt.pts is not None else pkt.dts
        if pkt.size == 0:
            return  # flush packet
        self.n_packets += 1
        if ts is None or pkt.time_base is None:
            self.max_slot += 1
            self.end = max(self.end, self.t_ref + (self.max_slot + 1) / float(self.fps))
            return
        t = float(ts * pkt.time_base)
        dur = float(pkt.duration * pkt.time_base) if pkt.duration else 1.0 / float(self.fps)
        self.max_slot = max(self.max_slot, self.slot(t))
        self.end = max(self.end, t + dur)

    def n_slots(self) -> int:
        if self.n_packets == 0:
            return 0
        return max(self.max_slot + 1, round((self.end - self.t_ref) * float(self.fps)), 1)


# ---------------------------------------------------------------------------------------------
# video reading


def _decode_packets(
    container: av.container.InputContainer,
    stream: av.stream.Stream,
    note: dict[str, object],
    want: Callable[[], bool] = lambda: True,
) -> Iterator[tuple[av.Packet | None, list]]:
    """Demux ``stream`` and decode packet by packet; yields (packet, frames) with frames=[] when
    not wanted or undecodable. FFmpeg errors never escape: a demux error ends the loop (truncated
    file) after draining the decoder, a decode error skips the packet; ``note["problem"]`` keeps
    the first reason and ``note["bad"]`` counts skipped packets."""
    demux, n_pkts = container.demux(stream), 0
    while True:
        try:
            pkt = next(demux)
        except StopIteration:
            if stream.frames and n_pkts < stream.frames:  # the index promised more than the data holds
                note["problem"] = (
                    note.get("problem") or f"only {n_pkts} of {stream.frames} indexed packets present"
                )
            return
        except av.FFmpegError as e:
            note["problem"] = note.get("problem") or _reason(e)
            break
        n_pkts += pkt.size > 0
        frames: list = []
        if want():
            try:
                frames = list(pkt.decode())
            except av.FFmpegError as e:
                note["problem"] = note.get("problem") or _reason(e)
                note["bad"] = int(note.get("bad", 0)) + 1  # type: ignore[call-overload]
        yield pkt, frames
    try:  # demuxing stopped early: drain what the decoder still holds
        yield None, list(stream.codec_context.decode(None)) if want() else []
    except av.FFmpegError:
        pass


def probe_video(path: PathLike) -> VideoInfo:
    """Inspect a video file: displayed size, constant frame rate, exact frame count, audio track.

    Reads the packet index (no full decode; one frame is decoded for size and rotation).
    """
    p = _check_input(path)
    container = _open(p)
    try:
        if not container.streams.video:
            raise MediaError(f"{p}: has no video stream")
        vs = container.streams.video[0]
        fps = _frame_rate(vs, p)
        timeline = _Timeline(fps, _t_ref(container))
        got: list[av.VideoFrame] = []  # the first decoded frame, for size and rotation
        for pkt, frames in _decode_packets(container, vs, {}, want=lambda: not got):
            if pkt is not None:
                timeline.add(pkt)
            got.extend(frames[: 1 - len(got)] if not got else [])
        first = got[0] if got else None
        if timeline.n_packets == 0 or first is None:
            raise MediaError(f"{p}: video stream has no decodable frames")
        rot = _norm_rotation(getattr(first, "rotation", 0) or _metadata_rotation(vs))
        w, h = (first.height, first.width) if rot in (90, 270) else (first.width, first.height)
        aud = container.streams.audio[0] if container.streams.audio else None
        n = timeline.n_slots()
        return VideoInfo(
            width=int(w),
            height=int(h),
            fps=float(fps),
            n_frames=n,
            duration=float(max(timeline.end - timeline.t_ref, n / float(fps) if n else 0.0)),
            has_audio=aud is not None,
            audio_rate=int(aud.rate) if aud is not None and aud.rate else None,
            audio_channels=int(aud.layout.nb_channels) if aud is not None else None,
            rotation=rot,
            codec=vs.codec_context.name,
            audio_codec=aud.codec_context.name if aud is not None else None,
            source_frames=timeline.n_packets,
        )
    finally:
        container.close()


def _check_size(size: tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if len(size) != 2 or any(int(s) != s or s <= 0 for s in size):
        raise ValueError(f"size must be (width, height) with positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def _to_rgb(frame: av.VideoFrame, meta_rot: int, size: tuple[int, int] | None) -> np.ndarray:
    """Decoded frame -> displayed (H, W, 3) uint8 RGB, rotated upright and optionally resized."""
    img = frame.to_ndarray(format="rgb24")  # (h, w, 3) uint8 as coded
    rot = _norm_rotation(getattr(frame, "rotation", 0) or meta_rot)
    if rot:
        img = np.rot90(img, k=rot // 90)  # counter-clockwise, as the display matrix says
    if size is not None and (img.shape[1], img.shape[0]) != size:
        shrink = size[0] * size[1] < img.shape[0] * img.shape[1]
        img = cv2.resize(
            np.ascontiguousarray(img), size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        )
    return np.ascontiguousarray(img)


def iter_frames(
    path: PathLike,
    size: tuple[int, int] | None = None,
    *,
    stride: int = 1,
    max_frames: int | None = None,
) -> Iterator[np.ndarray]:
    """Stream the frames of a video as (H, W, 3) uint8 RGB arrays, upright, at a constant rate.

    ``size=(W, H)`` resizes (INTER_AREA when shrinking). ``stride`` keeps every stride-th output
    frame (k = 0, stride, 2*stride, ...); ``max_frames`` caps how many are yielded. A truncated or
    partly corrupt file yields the frames that decode, warns once (RuntimeWarning) and stops; a
    file with no decodable frame raises MediaError.
    """
    size = _check_size(size)
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be a positive int, got {stride!r}")
    if max_frames is not None and (int(max_frames) != max_frames or max_frames < 0):
        raise ValueError(f"max_frames must be a non-negative int, got {max_frames!r}")
    p = _check_input(path)
    return _iter_frames(p, size, int(stride), max_frames) if max_frames != 0 else iter(())


def _iter_frames(
    p: Path, size: tuple[int, int] | None, stride: int, max_frames: int | None
) -> Iterator[np.ndarray]:
    container = _open(p)
    try:
        if not container.streams.video:
            raise MediaError(f"{p}: has no video stream")
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        timeline = _Timeline(_frame_rate(vs, p), _t_ref(container))
        meta_rot = _metadata_rotation(vs)
        note: dict[str, object] = {}

        def events() -> Iterator[tuple[av.VideoFrame | None, int]]:
            """(decoded frame, its output slot) in presentation order, then (None, slot count)."""
            n = 0
            for pkt, frames in _decode_packets(container, vs, note):
                if pkt is not None:
                    timeline.add(pkt)
                for f in frames:
                    yield f, (timeline.slot(float(f.time)) if f.time is not None else n)
                    n += 1
            yield None, timeline.n_slots()

        slot, n_out, n_src = 0, 0, 0
        prev: av.VideoFrame | None = None
        prev_rgb: np.ndarray | None = None
        for f, k in events():
            if prev is None:
                if f is None:
                    why = f" ({note['problem']})" if note.get("problem") else ""
                    raise MediaError(f"{p}: video stream has no decodable frames{why}")
                prev = f  # slots before the first frame show the first frame
            while slot < k:  # slots [slot, k) show prev
                if slot % stride == 0:
                    if prev_rgb is None:
                        prev_rgb = _to_rgb(prev, meta_rot, size)
                    yield prev_rgb.copy()  # callers may modify what they get
                    n_out += 1
                    if max_frames is not None and n_out >= max_frames:
                        return
                slot += 1
            if f is not None:
                n_src += 1
                if f is not prev:
                    prev, prev_rgb = f, None
        if note.get("problem"):
            warnings.warn(
                f"{p}: video is truncated or corrupt ({note['problem']}); {n_src} frames decoded, "
                f"{note.get('bad', 0)} packets skipped",
                RuntimeWarning,
                stacklevel=2,
            )
    finally:
        container.close()


# ---------------------------------------------------------------------------------------------
# audio


_SCALE = {"s16": 2.0**15, "s32": 2.0**31, "s64": 2.0**63}  # integer sample formats -> [-1, 1)


def _frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """Decoded audio frame -> (n,) float32 mono (mean of the channels)."""
    arr = frame.to_ndarray()
    fmt = frame.format
    n_ch = max(1, frame.layout.nb_channels)
    if not fmt.is_planar:
        arr = arr.reshape(-1, n_ch).T  # packed (1, n*C) -> (C, n)
    base = fmt.name.rstrip("p")
    if base == "u8":
        x = (arr.astype(np.float32) - 128.0) / 128.0
    else:
        x = arr.astype(np.float32) / np.float32(_SCALE.get(base, 1.0))
    return x.mean(axis=0, dtype=np.float32) if x.shape[0] > 1 else x[0]


def read_audio(path: PathLike, sr: int | None = None) -> tuple[np.ndarray, int]:
    """Decode the first audio track of any container -> ((T,) float32 mono in [-1, 1], rate).

    Resampled to ``sr`` when given. Sample 0 is at the container's time 0 (a late-starting track
    is zero-padded at the front) and encoder padding past the track's declared end is trimmed.
    """
    if sr is not None:
        sr = check_sample_rate(sr, "target sample rate")
    p = _check_input(path)
    container = _open(p)
    try:
        if not container.streams.audio:
            raise MediaError(f"{p}: has no audio track")
        st = container.streams.audio[0]
        t_ref = _t_ref(container)
        chunks: list[np.ndarray] = []
        rate: int | None = None
        first_time: float | None = None
        note: dict[str, object] = {}
        for _, frames in _decode_packets(container, st, note):
            for fr in frames:
                x = _frame_to_mono(fr)
                if rate is None:
                    rate = int(fr.sample_rate)
                    first_time = float(fr.time) if fr.time is not None else None
                elif fr.sample_rate != rate:
                    x = resample_audio(x, int(fr.sample_rate), rate)
                chunks.append(x)
        problem = note.get("problem")
        declared_end = None
        if st.duration is not None and st.time_base is not None:
            declared_end = float(((st.start_time or 0) + st.duration) * st.time_base) - t_ref
    finally:
        container.close()
    if rate is None or not chunks:
        raise MediaError(f"{p}: audio track has no decodable samples" + (f" ({problem})" if problem else ""))
    wave = np.concatenate(chunks)  # (T,) at the native rate
    if first_time is not None:
        offset = round((first_time - t_ref) * rate)
        if 0 < offset < 3600 * rate:
            wave = np.concatenate([np.zeros(offset, np.float32), wave])
        elif offset < 0:
            wave = wave[-offset:]
    if declared_end is not None and declared_end > 0:
        n_end = round(declared_end * rate)
        if 0 < n_end < wave.shape[0]:
            wave = wave[:n_end]
    if wave.shape[0] == 0:
        raise MediaError(f"{p}: audio track is empty")
    if problem:
        warnings.warn(f"{p}: audio is truncated or corrupt ({problem})", RuntimeWarning, stacklevel=2)
    if sr is not None and sr != rate:
        wave, rate = resample_audio(wave, rate, sr), sr
    return np.clip(wave, -1.0, 1.0).astype(np.float32, copy=False), int(rate)


def _audio_track(container: av.container.InputContainer, p: Path) -> tuple[av.audio.stream.AudioStream, int]:
    """The first audio track and its sample rate, or a MediaError."""
    if not container.streams.audio:
        raise MediaError(f"{p}: has no audio track")
    st = container.streams.audio[0]
    rate = int(st.rate or 0) or int(st.codec_context.sample_rate or 0)
    if not rate:
        raise MediaError(f"{p}: audio track declares no sample rate")
    return st, rate


def _declared_end(st: av.audio.stream.AudioStream, container: av.container.InputContainer) -> float | None:
    """End of the audio track in seconds on the container timeline, from the headers (None: unknown)."""
    if st.duration is not None and st.time_base is not None:
        return float(((st.start_time or 0) + st.duration) * st.time_base) - _t_ref(container)
    return None if container.duration is None else container.duration / av.time_base


def probe_audio(path: PathLike) -> AudioInfo:
    """Duration, rate and layout of the first audio track, from the headers (no decoding unless the
    file declares no duration; then the track is decoded once, in constant memory)."""
    p = _check_input(path)
    container = _open(p)
    try:
        st, rate = _audio_track(container, p)
        end, layout = _declared_end(st, container), (int(st.layout.nb_channels), st.codec_context.name)
    finally:
        container.close()
    if end is None or end <= 0:
        end = sum(x.size for x in iter_audio(p, rate, chunk=60.0)) / rate
    return AudioInfo(float(end), rate, *layout)


def iter_audio(
    path: PathLike, sr: int | None = None, *, start: float = 0.0, end: float | None = None, chunk: float = 1.0
) -> Iterator[np.ndarray]:
    """Stream the first audio track as (n,) float32 mono chunks in [-1, 1] at ``sr`` (default native).

    Yields samples ``round(start * sr)`` .. ``round(end * sr)`` (default: to the end) of :func:`read_audio`,
    equal sample for sample, ``chunk`` seconds at a time, in memory independent of the file's length. A
    ``start`` past 0 seeks (decoding from a little before it). Errors as :func:`read_audio`.
    """
    sr = None if sr is None else check_sample_rate(sr, "target sample rate")
    if not (math.isfinite(start) and start >= 0) or (end is not None and not end >= start):
        raise ValueError(f"need 0 <= start <= end, got start={start!r}, end={end!r}")
    if not (math.isfinite(chunk) and chunk > 0):
        raise ValueError(f"chunk must be a positive number of seconds, got {chunk!r}")
    return _iter_audio(_check_input(path), sr, float(start), end, float(chunk))


def _iter_audio(p: Path, sr: int | None, start: float, end: float | None, chunk_s: float):
    container = _open(p)
    try:
        st, rate = _audio_track(container, p)
        out_sr, t_ref = sr or rate, _t_ref(container)
        plan = plan_read(rate, out_sr, round(start * out_sr), None if end is None else round(end * out_sr))
        n_end = None if st.duration is None else round((_declared_end(st, container) or 0.0) * rate)
        chunks = Rechunker(rate, out_sr, plan, n_end, round(chunk_s * out_sr))
        if plan.first > 0 and st.time_base is not None:  # a little early: decoders settle after a seek
            container.seek(max(0, int((plan.first / rate + t_ref - 0.2) / st.time_base)), stream=st)
        note: dict[str, object] = {}
        pos = None
        for _, frames in _decode_packets(container, st, note):
            for fr in frames:
                x = _frame_to_mono(fr)
                x = x if fr.sample_rate == rate else resample_audio(x, int(fr.sample_rate), rate)
                if pos is None:  # the first frame sits at its timestamp, the others follow (as read_audio)
                    pos = round((float(fr.time) - t_ref) * rate) if fr.time is not None else 0
                    pos = pos if pos < 3600 * rate or plan.first else 0
                yield from chunks.put(pos, x)
                pos += x.size
            if chunks.done:
                break
        if pos is None and not plan.first:  # (a range past the end is just empty)
            why = f" ({note['problem']})" if note.get("problem") else ""
            raise MediaError(f"{p}: audio track has no decodable samples{why}")
        yield from chunks.finish()
        if note.get("problem") and not plan.first:  # (after a seek the packet count cannot be checked)
            warnings.warn(
                f"{p}: audio is truncated or corrupt ({note['problem']})", RuntimeWarning, stacklevel=2
            )
    finally:
        container.close()


def read_audio_range(path: PathLike, t0: float, t1: float, sr: int | None = None) -> np.ndarray:
    """Samples ``round(t0 * sr)`` .. ``round(t1 * sr)`` of :func:`read_audio` (fewer past its end), seeking."""
    return np.concatenate([np.zeros(0, np.float32), *iter_audio(path, sr, start=t0, end=t1, chunk=60.0)])


# ---------------------------------------------------------------------------------------------
# writing (implemented in avatar3d.io._encode)


def write_video(
    path: PathLike,
    frames: Iterable[np.ndarray],
    fps: float | Fraction,
    audio: np.ndarray | None = None,
    audio_sr: int | None = None,
    *,
    crf: int = 18,
    preset: str = "medium",
    stereo: str | None = None,
) -> Path:
    """Encode RGB frames (+ optional audio) to ``path`` atomically; returns the path.

    ``frames``: iterable of (H, W, 3) uint8 (or an (N, H, W, 3) array; (H, W) grey, bool and
    float-in-[0, 1] frames are converted), all the same size; odd sizes are edge-padded to even.
    Video: H.264 (libx264 with ``crf``/``preset``; else the build's h264 encoder, else mpeg4, with
    a RuntimeWarning), yuv420p, frame k at t = k / fps. ``audio``: (T,), (T, C) or (C, T) samples at
    ``audio_sr``, encoded AAC (mono, or stereo for 2 channels) from t = 0, zero-padded or trimmed to
    exactly the video's duration and interleaved with it. Containers: .mp4 (faststart), .mov, .mkv.
    The file is written to a hidden temp sibling and renamed into place; on any error (also
    KeyboardInterrupt) the temp file is removed and an existing ``path`` is left untouched.
    ``stereo`` ('sbs' left eye left, 'ou' left eye on top): the frames are a packed stereo pair; the
    H.264 stream carries the frame-packing SEI (and an .mkv the StereoMode element) that players read.
    """
    return encode_video(Path(path), frames, fps, audio, audio_sr, crf=crf, preset=preset, stereo=stereo)


def write_image(path: PathLike, array: np.ndarray, *, quality: int = 95) -> Path:
    """Write an image atomically; the format follows the extension (.png, .jpg, .bmp, .tif, .webp).

    ``array``: (H, W) or (H, W, 1|3|4) uint8 (RGB order), bool (-> 0/255) or float in [0, 1].
    JPEG drops alpha. Returns the path.
    """
    return encode_image(Path(path), array, quality=quality)


def write_audio(path: PathLike, wave: np.ndarray, sr: int) -> Path:
    """Write audio atomically as 16-bit PCM .wav or .flac (e.g. a capture's ``audio.wav``).

    ``wave``: (T,), (T, C) or (C, T) float in [-1, 1] (clipped) or integer samples; mono or stereo
    is kept, more channels are averaged to mono. Returns the path.
    """
    return encode_audio(Path(path), wave, sr)


# ---------------------------------------------------------------------------------------------
# still images


def read_image(path: PathLike, mode: str | None = "RGB") -> np.ndarray:
    """Read an image as uint8, honouring EXIF orientation.

    ``mode``: "RGB" -> (H, W, 3), "RGBA" -> (H, W, 4), "L" -> (H, W) grey, None -> as stored
    ((H, W) for grey/palette-free single channel, (H, W, 3) or (H, W, 4) otherwise). 16-bit
    images are scaled to 8 bits.
    """
    if mode not in (None, "RGB", "RGBA", "L"):
        raise ValueError(f"mode must be 'RGB', 'RGBA', 'L' or None, got {mode!r}")
    p = _check_input(path)
    try:
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im, dtype=np.float64)
                top = 65535.0 if a.max() > 255 else 255.0
                im = Image.fromarray(np.round(np.clip(a / top, 0, 1) * 255).astype(np.uint8), mode="L")
            if mode is None:
                if im.mode not in ("L", "RGB", "RGBA"):
                    im = im.convert("RGBA" if ("A" in im.mode or "transparency" in im.info) else "RGB")
            elif im.mode != mode:
                im = im.convert(mode)
            a = np.array(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise MediaError(f"{p}: not a readable image ({_reason(e)})") from None
    return a
