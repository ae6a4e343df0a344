"""Encoding side of :mod:`avatar3d.io.media` (video + AAC audio muxing, still images).

Private: call :func:`avatar3d.io.media.write_video` / :func:`~avatar3d.io.media.write_image`.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from avatar3d.errors import MediaError
from avatar3d.io._shared import _reason, _snap_rate, audio_channels_first, check_sample_rate, resample_audio
from avatar3d.io.atomic import atomic_file

_OUT_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_AAC_FRAME = 1024  # samples per AAC-LC frame


# packed stereo layouts: (H.264 frame_packing_arrangement_type, Matroska stereo_mode)
STEREO_PACKING = {"sbs": (3, "left_right"), "ou": (4, "top_bottom")}


@functools.cache
def _encoder_opens(name: str) -> bool:
    """Whether the encoder exists *and* opens here (e.g. h264_nvenc exists but needs a GPU)."""
    try:
        ctx = av.CodecContext.create(name, "w")
        ctx.width, ctx.height, ctx.pix_fmt = 64, 64, "yuv420p"
        ctx.time_base = Fraction(1, 25)
        ctx.framerate = Fraction(25)
        ctx.open()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not usable"
        return False


def _pick_video_codec() -> str:
    for name in ("libx264", "h264", "mpeg4"):
        if _encoder_opens(name):
            if name != "libx264":
                real = av.codec.Codec(name, "w").name
                warnings.warn(
                    f"libx264 is not available in this PyAV build; encoding with {real}",
                    RuntimeWarning,
                    stacklevel=4,
                )
            return name
    raise MediaError("no usable video encoder (libx264, h264, mpeg4) in this PyAV build")


def _as_fps(fps: float | Fraction) -> Fraction:
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not 0 < float(fps) < math.inf:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return fps if isinstance(fps, Fraction) else _snap_rate(Fraction(float(fps)))


def _as_u8(img: np.ndarray, what: str, rgb: bool) -> np.ndarray:
    """(H, W) or (H, W, 1|3|4) uint8 / bool (-> 0, 255) / float in [0, 1] -> uint8; ``rgb``: (H, W, 3)."""
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or 0 in a.shape[:2]:
        raise ValueError(f"{what}: expected an (H, W) or (H, W, 3) image, got shape {a.shape}")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ValueError(f"{what}: contains NaN or infinite values")
        a = np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise ValueError(f"{what}: expected uint8, bool or float in [0, 1], got {a.dtype}")
    if rgb:
        a = np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a[:, :, :3]
    return a


def encode_video(
    target: Path,
    frames: Iterable[np.ndarray],
    fps: float | Fraction,
    audio: np.ndarray | None,
    audio_sr: int | None,
    *,
    crf: int,
    preset: str,
    stereo: str | None = None,
) -> Path:
    """Implementation of :func:`avatar3d.io.media.write_video` (see there)."""
    if stereo not in (None, *STEREO_PACKING):
        raise ValueError(f"stereo must be None, 'sbs' or 'ou', got {stereo!r}")
    fmt = _OUT_FORMATS.get(target.suffix.lower())
    if fmt is None:
        raise MediaError(f"{target}: unsupported output container {target.suffix!r} (use .mp4, .mov or .mkv)")
    rate = _as_fps(fps)
    wave: np.ndarray | None = None  # (C, T) float32
    a_sr = 0
    if audio is not None:
        if audio_sr is None:
            raise ValueError("write_video: audio_sr is required with audio")
        a_sr = check_sample_rate(audio_sr, f"{target}: audio rate")
        wave = audio_channels_first(audio, f"{target}: audio")
        if wave.shape[0] > 2:
            wave = wave.mean(axis=0, keepdims=True)
        if a_sr not in _AAC_RATES:
            new_sr = min((r for r in _AAC_RATES if r >= a_sr), default=48000)
            wave, a_sr = resample_audio(wave, a_sr, new_sr), new_sr
        wave = np.clip(wave, -1.0, 1.0)
    if isinstance(frames, np.ndarray) and frames.ndim != 4:
        raise ValueError(f"{target}: a frames array must be (N, H, W, 3), got shape {frames.shape}")
    it = iter(frames)
    try:
        first = _as_u8(next(it), f"{target}: frame 0", rgb=True)
    except StopIteration:
        raise MediaError(f"{target}: no frames to write") from None
    h, w = first.shape[:2]
    codec = _pick_video_codec()

    with atomic_file(target) as tmp:
        options = {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {}
        try:
            container = av.open(str(tmp), mode="w", format=fmt, options=options)
        except (av.FFmpegError, OSError) as e:
            raise MediaError(f"{target}: cannot create output ({_reason(e)})") from None
        try:
            _encode(container, codec, first, it, h, w, rate, wave, a_sr, crf, preset, stereo)
            container.close()  # writes the trailer (and the faststart index): may fail, e.g. disk full
        except BaseException as e:
            try:
                container.close()
            except Exception:  # noqa: BLE001, S110 - already failing; the temp file is removed anyway
                pass
            if isinstance(e, (av.FFmpegError, OSError)):
                raise MediaError(f"{target}: encoding failed ({_reason(e)})") from None
            raise
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise MediaError(f"{target}: encoder produced no output")
    return target


def _encode(
    container: av.container.OutputContainer,
    codec: str,
    first: np.ndarray,
    rest: Iterator[np.ndarray],
    h: int,
    w: int,
    rate: Fraction,
    wave: np.ndarray | None,
    a_sr: int,
    crf: int,
    preset: str,
    stereo: str | None = None,
) -> None:
    """Encode frames and interleave the audio so that audio sample i sits at i / a_sr; ``stereo``
    ('sbs' / 'ou'): mark the frames as a packed stereo pair (see :data:`STEREO_PACKING`)."""
    vs = container.add_stream(codec, rate=rate)
    vs.width, vs.height = w + w % 2, h + h % 2
    vs.pix_fmt = "yuv420p"
    vs.codec_context.time_base = 1 / rate
    # PyAV converts RGB with BT.601 limited-range coefficients: say so, so players do not guess BT.709
    cc = vs.codec_context
    cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 6, 6, 6, 1  # smpte170m, tv range
    if av.codec.Codec(codec, "w").name == "libx264":
        vs.options = {"crf": str(int(crf)), "preset": preset}
        if stereo:  # the H.264 frame-packing SEI: decoders report it as Stereo3D side data
            vs.options["x264-params"] = f"frame-packing={STEREO_PACKING[stereo][0]}"
    if stereo:  # Matroska's StereoMode element (mp4's st3d box cannot be written through PyAV)
        vs.metadata["stereo_mode"] = STEREO_PACKING[stereo][1]
    else:  # other encoders: a generous bit rate (~0.25 bit per pixel)
        vs.bit_rate = max(500_000, int(vs.width * vs.height * float(rate) * 0.25))
    aus = None
    if wave is not None:
        aus = container.add_stream("aac", rate=a_sr)
        aus.layout = "stereo" if wave.shape[0] == 2 else "mono"
        aus.bit_rate = 96000 * wave.shape[0]
    a_pos = 0
    a_tb = Fraction(1, a_sr) if a_sr else None

    def audio_upto(n_end: int, final: bool) -> None:
        """Encode audio samples [a_pos, n_end) in 1024-sample frames (zeros past the input end)."""
        nonlocal a_pos
        assert aus is not None and wave is not None
        while a_pos < n_end and (final or a_pos + _AAC_FRAME <= n_end):
            n = min(_AAC_FRAME, n_end - a_pos)
            chunk = np.zeros((wave.shape[0], n), np.float32)
            src = wave[:, a_pos : a_pos + n]
            chunk[:, : src.shape[1]] = src
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=aus.layout.name)
            af.sample_rate, af.pts, af.time_base = a_sr, a_pos, a_tb
            for pk in aus.encode(af):
                container.mux(pk)
            a_pos += n

    k = 0
    img = first
    while True:
        if img.shape[:2] != (h, w):
            raise ValueError(
                f"frame {k}: size {img.shape[1]}x{img.shape[0]} differs from the first frame's {w}x{h}"
            )
        if h % 2 or w % 2:
            img = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        vf.pts, vf.time_base = k, 1 / rate
        for pk in vs.encode(vf):
            container.mux(pk)
        k += 1
        if aus is not None:
            audio_upto(round(k * a_sr / rate), final=False)
        try:
            img = _as_u8(next(rest), f"frame {k}", rgb=True)
        except StopIteration:
            break
    for pk in vs.encode(None):
        container.mux(pk)
    if aus is not None:
        audio_upto(round(k * a_sr / rate), final=True)
        for pk in aus.encode(None):
            container.mux(pk)


_IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "bmp": "BMP", "tif": "TIFF", "tiff": "TIFF",
                  "webp": "WEBP"}  # fmt: skip


def encode_image(target: Path, array: np.ndarray, *, quality: int) -> Path:
    """Implementation of :func:`avatar3d.io.media.write_image` (see there)."""
    fmt = _IMAGE_FORMATS.get(target.suffix.lower().lstrip("."))
    if fmt is None:
        raise MediaError(f"{target}: unsupported image extension {target.suffix!r}")
    a = _as_u8(array, str(target), rgb=False)
    if fmt == "JPEG" and a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    img = Image.fromarray(np.ascontiguousarray(a))
    kwargs = {"quality": int(quality)} if fmt in ("JPEG", "WEBP") else {}
    with atomic_file(target) as tmp:
        try:
            img.save(tmp, format=fmt, **kwargs)
        except OSError as e:
            raise MediaError(f"{target}: cannot write image ({_reason(e)})") from None
    return target


_AUDIO_FORMATS = {".wav": ("wav", "pcm_s16le"), ".flac": ("flac", "flac")}


def encode_audio(target: Path, wave: np.ndarray, sr: int) -> Path:
    """Implementation of :func:`avatar3d.io.media.write_audio` (see there)."""
    fmt_codec = _AUDIO_FORMATS.get(target.suffix.lower())
    if fmt_codec is None:
        raise MediaError(f"{target}: unsupported audio extension {target.suffix!r} (use .wav or .flac)")
    sr = check_sample_rate(sr, f"{target}: sample rate")
    x = audio_channels_first(wave, f"{target}: audio")  # (C, T)
    if x.shape[0] > 2:
        x = x.mean(axis=0, keepdims=True)
    layout = "stereo" if x.shape[0] == 2 else "mono"
    pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16).T.reshape(1, -1)  # packed s16
    with atomic_file(target) as tmp:
        try:
            with av.open(str(tmp), mode="w", format=fmt_codec[0]) as container:
                stream = container.add_stream(fmt_codec[1], rate=sr)
                stream.layout = layout
                frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout=layout)
                frame.sample_rate, frame.pts = sr, 0
                for pk in [*stream.encode(frame), *stream.encode(None)]:
                    container.mux(pk)
        except (av.FFmpegError, OSError) as e:
            raise MediaError(f"{target}: cannot write audio ({_reason(e)})") from None
    return target
