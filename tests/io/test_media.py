"""avatar3d.io.media: probing, decoding, writing, sync, rotation, VFR, errors, real clips."""

from __future__ import annotations

import tracemalloc
import types
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from avatar3d.errors import MediaError
from avatar3d.io import (
    iter_frames,
    probe_video,
    read_audio,
    read_image,
    write_audio,
    write_image,
    write_video,
)
from avatar3d.io.media import _metadata_rotation, _norm_rotation, iter_audio, probe_audio, read_audio_range

DATA = Path(__file__).parents[2].parent / "shared" / "data"
TALKS = {  # name: (width, height, fps, seconds) from MANIFEST.md
    "talk_a.mp4": (700, 700, 30, 6.10),
    "talk_b.mp4": (844, 844, 25, 5.00),
    "talk_c.mp4": (700, 700, 30, 6.63),
    "talk_long_en.mp4": (512, 512, 25, 71.2),
    "talk_de.mp4": (512, 512, 25, 20.0),
}


@pytest.fixture(scope="module")
def real_data() -> Path:
    """../shared/data (real clips), or a clean skip when it is absent."""
    if not DATA.is_dir():
        pytest.skip(f"{DATA} is absent")
    return DATA


def _one_line_naming(exc: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


def _ramp_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """(n, h, w, 3) uint8; frame i is flat grey 4 * i (decodable back to its index)."""
    return np.repeat((np.arange(n, dtype=np.uint8) * 4)[:, None, None, None], h * w * 3).reshape(n, h, w, 3)


def _write_raw(
    path: Path, pts: list[int], rate: int = 30, rotation: float | None = None, size=(64, 32)
) -> None:
    """Write frames with explicit timestamps (VFR) and optional display rotation directly with PyAV."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=rate)
        v.width, v.height, v.pix_fmt = size[0], size[1], "yuv420p"
        v.codec_context.time_base = Fraction(1, rate)
        if rotation is not None:
            v.set_display_rotation(rotation)
        for i, p in enumerate(pts):
            img = np.full((size[1], size[0], 3), 20 * i, np.uint8)
            img[:8, :8] = (255, 0, 0)  # red marker at the coded top-left
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = p, Fraction(1, rate)
            for pk in v.encode(f):
                c.mux(pk)
        for pk in v.encode(None):
            c.mux(pk)


def _write_audio_file(
    path: Path, codec: str, sr: int, channels: int, seconds: float = 1.0, freq: float = 440.0
):
    """A sine in any container/codec via PyAV; returns nothing (read back by read_audio)."""
    t = np.arange(int(sr * seconds)) / sr
    x = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    layout = "stereo" if channels == 2 else "mono"
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=sr)
        s.layout = layout
        fmt = s.codec_context.codec.audio_formats[0].name
        planar = np.repeat(x[None], channels, axis=0)
        if fmt.startswith("s16"):
            data = (planar * 32767).astype(np.int16)
        elif fmt.startswith("s32"):
            data = (planar * 2**31 * 0.999).astype(np.int32)
        else:
            data = planar
        if not fmt.endswith("p"):
            data = data.T.reshape(1, -1)  # packed
        f = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout)
        f.sample_rate = sr
        for pk in s.encode(f):
            c.mux(pk)
        for pk in s.encode(None):
            c.mux(pk)


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)])


# ------------------------------------------------------------------------------------------------
# write_video round trip


def test_roundtrip_codecs_counts_and_av_sync(tmp_path):
    fps, sr, n, k = 25, 44100, 40, 23
    frames = np.zeros((n, 48, 64, 3), np.uint8)
    frames[k] = 255  # flash at frame k
    frames[0, :, :16], frames[0, :, 16:32], frames[0, :, 32:48] = (200, 30, 30), (30, 200, 30), (30, 30, 200)
    audio = np.zeros((int(n / fps * sr), 2), np.float32)  # (T, C) stereo
    s0 = round(k / fps * sr)
    audio[s0 : s0 + 64] = 0.9  # click at t = k / fps
    out = write_video(tmp_path / "rt.mp4", frames, fps, audio, sr)

    info = probe_video(out)
    assert (info.codec, info.audio_codec) == ("h264", "aac")
    assert (info.width, info.height, info.fps, info.n_frames) == (64, 48, 25.0, n)
    assert info.has_audio and info.audio_rate == sr and info.audio_channels == 2 and info.rotation == 0
    with av.open(str(out)) as c:  # really yuv420p H.264, tagged with the matrix used (BT.601)
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
        assert c.streams.video[0].codec_context.colorspace == 6

    decoded = list(iter_frames(out))
    assert len(decoded) == n and decoded[0].shape == (48, 64, 3) and decoded[0].dtype == np.uint8
    for band, colour in zip(
        (slice(2, 14), slice(18, 30), slice(34, 46)), ((200, 30, 30), (30, 200, 30), (30, 30, 200))
    ):
        assert np.abs(decoded[0][8:40, band].reshape(-1, 3).mean(0) - colour).max() < 6  # colours survive
    flash = int(np.argmax([f.mean() for f in decoded]))
    wave, rate = read_audio(out)
    assert rate == sr and wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) / rate - n / fps) <= 1 / fps
    click = np.argmax(np.abs(wave) > 0.3) / rate * fps  # in frames
    assert flash == k and abs(click - flash) < 1.0, (flash, click)
    assert not list(tmp_path.glob(".*")), "temp sibling left behind"


def test_write_video_pads_odd_size_and_fits_audio_to_video(tmp_path):
    frames = _ramp_frames(25, 47, 63)
    short = np.full(8000, 0.25, np.float32)  # 0.5 s at 16 kHz for a 1 s video -> zero padded
    write_video(tmp_path / "a.mp4", frames, 25, short, 16000)
    info = probe_video(tmp_path / "a.mp4")
    assert (info.width, info.height) == (64, 48)
    first = next(iter_frames(tmp_path / "a.mp4"))
    assert abs(int(first[:47, :63].mean()) - 0) <= 2
    wave, sr = read_audio(tmp_path / "a.mp4")
    assert abs(len(wave) / sr - 1.0) <= 1 / 25 and np.abs(wave[-2000:]).max() < 0.02

    long = np.zeros((1, 48000 * 3), np.float32)  # (C, T), 3 s at 48 kHz for a 1 s video -> trimmed
    write_video(tmp_path / "b.mkv", list(frames), 25.0, long, 48000)
    wave, sr = read_audio(tmp_path / "b.mkv")
    assert sr == 48000 and abs(len(wave) / sr - 1.0) <= 1 / 25


def test_ntsc_rate_and_resize_stride_max_frames(tmp_path):
    n = 30
    write_video(tmp_path / "v.mp4", _ramp_frames(n), Fraction(30000, 1001), preset="ultrafast")
    info = probe_video(tmp_path / "v.mp4")
    assert info.fps == pytest.approx(30000 / 1001) and info.n_frames == n
    got = list(iter_frames(tmp_path / "v.mp4", size=(32, 24), stride=3, max_frames=5))
    assert len(got) == 5 and all(g.shape == (24, 32, 3) for g in got)
    assert [round(g.mean() / 4) for g in got] == [0, 3, 6, 9, 12]
    assert len(list(iter_frames(tmp_path / "v.mp4", stride=7))) == 5  # 0, 7, 14, 21, 28
    up = next(iter_frames(tmp_path / "v.mp4", size=(100, 80)))
    assert up.shape == (80, 100, 3)
    with pytest.raises(ValueError):
        iter_frames(tmp_path / "v.mp4", stride=0)


def test_variable_frame_rate_becomes_constant(tmp_path):
    pts = [0, 1, 2, 4, 5, 6, 9, 10, 11, 12]  # gaps at 3, 7, 8 (dropped frames, like talk_a.mp4)
    _write_raw(tmp_path / "vfr.mp4", pts)
    info = probe_video(tmp_path / "vfr.mp4")
    frames = list(iter_frames(tmp_path / "vfr.mp4"))
    assert info.fps == 30 and info.source_frames == 10 and info.n_frames == len(frames) == 13
    assert [round(f[16:, 16:].mean() / 20) for f in frames] == [0, 1, 2, 2, 3, 4, 5, 5, 5, 6, 7, 8, 9]


@pytest.mark.parametrize(
    ("ccw", "shape", "marker"),
    [(-90, (64, 32), "top_right"), (90, (64, 32), "bottom_left"), (180, (32, 64), "bottom_right")],
)
def test_display_rotation_is_applied(tmp_path, ccw, shape, marker):
    """A phone-style rotated stream (display matrix) comes out upright, probe reports the displayed size."""
    _write_raw(tmp_path / "r.mp4", list(range(3)), rotation=ccw, size=(64, 32))
    info = probe_video(tmp_path / "r.mp4")
    assert (info.height, info.width) == shape and info.rotation == ccw % 360
    img = next(iter_frames(tmp_path / "r.mp4"))
    assert img.shape[:2] == shape
    h, w = shape
    corners = {
        "top_left": img[:4, :4],
        "top_right": img[:4, w - 4 :],
        "bottom_left": img[h - 4 :, :4],
        "bottom_right": img[h - 4 :, w - 4 :],
    }
    red = {name: c[..., 0].mean() > 180 and c[..., 1].mean() < 80 for name, c in corners.items()}
    assert red[marker] and sum(red.values()) == 1, red
    small = next(iter_frames(tmp_path / "r.mp4", size=(16, 8)))
    assert small.shape == (8, 16, 3)  # size is the displayed (W, H)


def test_legacy_rotate_tag_is_clockwise():
    assert _norm_rotation(_metadata_rotation(types.SimpleNamespace(metadata={"rotate": "90"}))) == 270
    assert _metadata_rotation(types.SimpleNamespace(metadata={})) == 0


def test_write_failure_leaves_no_file_and_keeps_existing(tmp_path):
    target = tmp_path / "out.mp4"
    target.write_bytes(b"old")

    def frames():
        yield np.zeros((16, 16, 3), np.uint8)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError):
        write_video(target, frames(), 25)
    with pytest.raises(ValueError):  # size change mid-stream
        write_video(target, [np.zeros((16, 16, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)], 25)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
    with pytest.raises(MediaError) as e:
        write_video(tmp_path / "none.mp4", [], 25)
    _one_line_naming(e, tmp_path / "none.mp4")
    with pytest.raises(MediaError):
        write_video(tmp_path / "x.avi", _ramp_frames(2), 25)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


# ------------------------------------------------------------------------------------------------
# audio in any container


@pytest.mark.parametrize(
    ("name", "codec", "sr", "channels"),
    [
        ("a8k.wav", "pcm_s16le", 8000, 2),
        ("a48k.flac", "flac", 48000, 2),
        ("a48k.ogg", "libopus", 48000, 2),
        ("a8k.mp3", "libmp3lame", 8000, 1),
        ("a441.m4a", "aac", 44100, 2),
        ("a48k.wav", "pcm_f32le", 48000, 2),
    ],
)
def test_read_audio_any_container_rate_layout(tmp_path, name, codec, sr, channels):
    try:
        av.codec.Codec(codec, "w")
    except av.codec.codec.UnknownCodecError:  # pragma: no cover - depends on the PyAV build
        pytest.skip(f"{codec} encoder not in this PyAV build")
    _write_audio_file(tmp_path / name, codec, sr, channels)
    wave, rate = read_audio(tmp_path / name)
    assert rate == sr and wave.ndim == 1 and wave.dtype == np.float32
    assert abs(len(wave) / sr - 1.0) < 0.06 and np.abs(wave).max() <= 1.0
    w16, r16 = read_audio(tmp_path / name, sr=16000)
    assert r16 == 16000 and abs(len(w16) - 16000 * len(wave) / sr) <= 2
    assert _peak_hz(w16, 16000) == pytest.approx(440, abs=3)
    assert 0.3 < np.abs(w16[4000:12000]).max() < 0.7  # mono = mean of channels, not their sum


def test_late_audio_track_shares_the_video_timeline(tmp_path):
    """An audio track starting 0.5 s after the video is zero-padded: sample i is at i / sr."""
    sr, path = 16000, tmp_path / "late.mp4"
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
        a = c.add_stream("aac", rate=sr)
        a.layout = "mono"
        for i in range(50):
            f = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 25)
            for pk in v.encode(f):
                c.mux(pk)
        x = np.zeros(sr, np.float32)
        x[8000:8050] = 0.9  # click 0.5 s into the track = 1.0 s on the container timeline
        for j in range(0, sr, 1024):
            af = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(x[None, j : j + 1024]), format="fltp", layout="mono"
            )
            af.sample_rate, af.pts, af.time_base = sr, 8000 + j, Fraction(1, sr)
            for pk in a.encode(af):
                c.mux(pk)
        for pk in [*v.encode(None), *a.encode(None)]:
            c.mux(pk)
    wave, rate = read_audio(path)
    assert abs(len(wave) / rate - 1.5) < 0.01 and abs(np.argmax(np.abs(wave) > 0.3) / rate - 1.0) < 0.002
    assert np.abs(wave[: int(0.45 * rate)]).max() < 1e-3


def test_write_audio_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    mono = np.clip(rng.standard_normal(16000) * 0.2, -1, 1).astype(np.float32)
    wave, sr = read_audio(write_audio(tmp_path / "audio.wav", mono, 16000))
    assert (
        sr == 16000 and np.abs(wave - mono).max() <= 0.5 / 32768 + 1e-7
    )  # 16-bit PCM, read back as s16 / 32768
    with av.open(str(tmp_path / "audio.wav")) as c:
        assert (c.streams.audio[0].codec_context.name, c.streams.audio[0].channels) == ("pcm_s16le", 1)
    stereo = np.stack([mono, -mono], axis=1)  # (T, 2)
    write_audio(tmp_path / "s.flac", stereo, 48000)
    assert probe_audio_channels(tmp_path / "s.flac") == 2
    with pytest.raises(MediaError):
        write_audio(tmp_path / "x.mp3", mono, 16000)
    with pytest.raises(MediaError, match="NaN"):
        write_audio(tmp_path / "n.wav", np.full(10, np.nan), 16000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio.wav", "s.flac"]


def probe_audio_channels(path: Path) -> int:
    with av.open(str(path)) as c:
        return c.streams.audio[0].channels


# ------------------------------------------------------------------------------------------------
# errors


def test_errors_are_one_line_media_errors(tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(MediaError) as e:
        probe_video(missing)
    assert "not found" in _one_line_naming(e, missing)
    with pytest.raises(MediaError):
        iter_frames(missing)  # raised at the call, not at first next()

    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    for fn in (probe_video, lambda p: list(iter_frames(p)), read_audio):
        with pytest.raises(MediaError) as e:
            fn(text)
        assert "not a readable media file" in _one_line_naming(e, text)

    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(MediaError) as e:
        probe_video(empty)
    assert "empty" in _one_line_naming(e, empty)
    with pytest.raises(MediaError) as e:
        read_audio(tmp_path)
    _one_line_naming(e, tmp_path)

    wav = tmp_path / "speech.wav"
    _write_audio_file(wav, "pcm_s16le", 16000, 1)
    for fn in (probe_video, lambda p: list(iter_frames(p))):
        with pytest.raises(MediaError) as e:
            fn(wav)
        assert "has no video stream" in _one_line_naming(e, wav)

    silent = write_video(tmp_path / "silent.mp4", _ramp_frames(5), 25)
    with pytest.raises(MediaError) as e:
        read_audio(silent)
    assert "has no audio track" in _one_line_naming(e, silent)
    assert probe_video(silent).has_audio is False


def test_video_track_without_frames(tmp_path):
    path = tmp_path / "noframes.mkv"
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
        a = c.add_stream("aac", rate=16000)
        a.layout = "mono"
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        f.sample_rate, f.pts = 16000, 0
        for pk in [*a.encode(f), *a.encode(None)]:
            c.mux(pk)
    for fn in (probe_video, lambda p: list(iter_frames(p))):
        with pytest.raises(MediaError) as e:
            fn(path)
        assert "no decodable frames" in _one_line_naming(e, path)


def test_truncated_file_yields_decodable_frames_or_media_error(tmp_path):
    rng = np.random.default_rng(0)
    full = write_video(
        tmp_path / "full.mp4",
        rng.integers(0, 255, (40, 64, 96, 3), dtype=np.uint8),
        25,
        rng.standard_normal(16000 * 2).astype(np.float32) * 0.1,
        16000,
        preset="ultrafast",
    )
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.3)])  # faststart: the index survives, the data does not
    with pytest.warns(RuntimeWarning, match="truncated"):
        frames = list(iter_frames(cut))
    assert 0 < len(frames) < 40 and len(frames) == probe_video(cut).n_frames
    with pytest.warns(RuntimeWarning, match="truncated"):
        wave, _ = read_audio(cut)
    assert 0 < len(wave) < 32000


def test_truncated_real_clip(real_data, tmp_path):
    data = (real_data / "talk_a.mp4").read_bytes()  # index (moov) at the end: 30% has no index
    cut = tmp_path / "talk_a_30.mp4"
    cut.write_bytes(data[: int(len(data) * 0.3)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            n = sum(1 for _ in iter_frames(cut))
        except MediaError as e:
            assert str(cut) in str(e) and "\n" not in str(e)
        else:
            assert 0 < n < 184


# ------------------------------------------------------------------------------------------------
# images


def test_image_roundtrip_and_modes(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    assert np.array_equal(read_image(write_image(tmp_path / "a.png", img)), img)
    smooth = np.stack(np.meshgrid(np.arange(30) * 8, np.arange(20) * 12) + [np.full((20, 30), 99)], -1)
    jpg = read_image(write_image(tmp_path / "a.jpg", smooth.astype(np.uint8)))
    assert jpg.shape == (20, 30, 3) and np.abs(jpg.astype(int) - smooth).mean() < 4
    mask = np.zeros((20, 30), bool)
    mask[5:10] = True
    write_image(tmp_path / "m.png", mask)
    assert np.array_equal(read_image(tmp_path / "m.png", mode="L"), mask.astype(np.uint8) * 255)
    assert read_image(tmp_path / "m.png", mode=None).shape == (20, 30)
    assert read_image(tmp_path / "m.png").shape == (20, 30, 3)
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    with pytest.raises(MediaError) as e:
        read_image(bad)
    _one_line_naming(e, bad)


def test_read_image_honours_exif_orientation(tmp_path):
    from PIL import Image

    im = Image.fromarray(np.zeros((10, 20, 3), np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW to display
    im.save(tmp_path / "o.jpg", exif=exif)
    assert read_image(tmp_path / "o.jpg").shape == (20, 10, 3)


# ------------------------------------------------------------------------------------------------
# real clips (../shared/data)


def test_real_clips_probe(real_data):
    for name, (w, h, fps, seconds) in TALKS.items():
        info = probe_video(real_data / name)
        assert (info.width, info.height, info.fps, info.codec) == (w, h, fps, "h264"), name
        assert abs(info.duration - seconds) < 0.1 and abs(info.n_frames - seconds * fps) <= 2, (name, info)
        assert info.has_audio and info.audio_rate == 44100 and info.audio_channels == 2


def test_real_clip_frames_and_audio(real_data):
    clip = real_data / "talk_a.mp4"  # variable frame rate: 135 coded frames spread over 6.13 s at 30 fps
    info = probe_video(clip)
    frames = list(iter_frames(clip, size=(350, 350)))
    assert info.source_frames == 135 and len(frames) == info.n_frames == 184
    assert frames[0].shape == (350, 350, 3) and 30 < frames[0].mean() < 230
    wave, sr = read_audio(clip, sr=16000)
    assert sr == 16000 and abs(len(wave) / sr - info.duration) < 0.1 and 0.01 < np.abs(wave).max() <= 1.0
    b = list(iter_frames(real_data / "talk_b.mp4", max_frames=3))
    assert len(b) == 3 and b[0].shape == (844, 844, 3)


def test_real_wavs(real_data):
    a, sr = read_audio(real_data / "speech_a_44k_stereo.wav")
    assert sr == 44100 and abs(len(a) / sr - 5.0) < 0.05
    b, sr = read_audio(real_data / "speech_b_16k_60s.wav", sr=16000)
    assert sr == 16000 and len(b) == 960000
    c, sr = read_audio(real_data / "talk_long_en.mp4", sr=16000)  # mp3 inside mp4 (not AAC)
    assert abs(len(c) / sr - 71.2) < 0.1


def _stereo3d_side_data(container):
    """Stereo3D side data of every decoded frame. PyAV 18.1.0 iterates a frame's side data as SideData
    objects, 18.1.1 as a mapping from type to SideData: accept both."""
    found = []
    for frame in container.decode(container.streams.video[0]):
        for item in frame.side_data:
            data = item if hasattr(item, "type") else frame.side_data[item]
            if "STEREO3D" in str(data.type).upper():
                found.append(data)
    return found


@pytest.mark.parametrize("layout, kind, mode", [("sbs", 1, "left_right"), ("ou", 2, "top_bottom")])
def test_stereo_videos_carry_the_frame_packing_that_players_read(tmp_path, layout, kind, mode):
    """A packed stereo pair is marked in the stream: the H.264 frame-packing SEI (read back as Stereo3D
    side data; type 1 = side by side, 2 = top-bottom) and, in Matroska, the StereoMode element."""
    import av

    frames = np.zeros((6, 32, 64, 3), np.uint8)
    for suffix in (".mp4", ".mkv"):
        path = write_video(tmp_path / f"pair{suffix}", frames, 25, stereo=layout)
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            sd = _stereo3d_side_data(c)
            assert sd, f"no Stereo3D side data in {path.name}"
            assert int(bytes(sd[0])[0]) == kind  # AVStereo3D.type
            if suffix == ".mkv":
                assert s.metadata.get("stereo_mode") == mode
    plain = write_video(tmp_path / "mono.mp4", frames, 25)
    with av.open(str(plain)) as c:
        assert not _stereo3d_side_data(c)
    with pytest.raises(ValueError, match="stereo"):
        write_video(tmp_path / "bad.mp4", frames, 25, stereo="diagonal")


# ------------------------------------------------------------------------------------------------
# chunked and ranged audio reads


def _noise_file(path: Path, sr: int, seconds: float, channels: int = 2, seed: int = 0) -> Path:
    """Band-limited noise (sample-exact alignment errors show at once) written with write_audio."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((int(sr * seconds), channels)).astype(np.float32)
    x = np.cumsum(x, axis=0) - np.cumsum(x, axis=0).mean(axis=0)
    return write_audio(path, np.clip(x / (np.abs(x).max() + 1e-6) * 0.8, -1, 1), sr)


@pytest.mark.parametrize("suffix,sr,channels", [(".wav", 44100, 2), (".flac", 48000, 1), (".wav", 16000, 1)])
@pytest.mark.parametrize("out_sr", [16000, None])
def test_iter_audio_equals_read_audio_and_ranges_equal_slices(tmp_path, suffix, sr, channels, out_sr):
    path = _noise_file(tmp_path / f"n{suffix}", sr, 3.3, channels)
    full, rate = read_audio(path, out_sr)
    chunks = list(iter_audio(path, out_sr, chunk=0.37))
    assert all(c.dtype == np.float32 and c.ndim == 1 for c in chunks)
    assert {len(c) for c in chunks[:-1]} == {round(0.37 * rate)}
    np.testing.assert_array_equal(np.concatenate(chunks), full)
    info = probe_audio(path)
    assert (info.sample_rate, info.channels) == (sr, channels)
    assert info.n_samples(out_sr) == len(full) and info.duration == pytest.approx(3.3, abs=1e-3)
    for t0, t1 in [(0.0, 0.5), (1.234, 2.5), (2.0, 2.0), (3.1, 9.0), (5.0, 6.0)]:
        seg = read_audio_range(path, t0, t1, out_sr)
        ref = full[round(t0 * rate) : round(t1 * rate)]
        assert seg.shape == ref.shape
        np.testing.assert_allclose(seg, ref, atol=1e-6)  # the resampler saw the same samples


def test_ranges_of_compressed_audio_and_a_late_start(tmp_path, real_data):
    """AAC in mp4 (real clip): ranges land on the same samples (AAC's noise substitution may differ
    a little after a seek); a track starting late is zero-padded in chunks as in read_audio."""
    clip = real_data / "talk_de.mp4"
    full, _ = read_audio(clip, 16000)
    np.testing.assert_array_equal(np.concatenate(list(iter_audio(clip, 16000, chunk=2.0))), full)
    assert probe_audio(clip).n_samples(16000) == len(full)
    for t0 in (0.5, 7.25, 19.5):
        seg = read_audio_range(clip, t0, t0 + 0.5, 16000)
        ref = full[round(t0 * 16000) : round((t0 + 0.5) * 16000)]
        assert seg.shape == ref.shape and np.abs(seg - ref).max() < 2e-3
        assert np.corrcoef(seg, ref)[0, 1] > 0.999
    test_late_audio_track_shares_the_video_timeline(tmp_path)  # writes tmp_path / "late.mp4"
    late, rate = read_audio(tmp_path / "late.mp4")
    np.testing.assert_array_equal(np.concatenate(list(iter_audio(tmp_path / "late.mp4", chunk=0.1))), late)
    assert probe_audio(tmp_path / "late.mp4").duration == pytest.approx(len(late) / rate, abs=0.01)


def test_chunked_reads_hold_no_more_than_a_chunk(tmp_path):
    """Reading ten minutes chunk by chunk, or one second of its end, allocates a few chunks' worth:
    never the whole file (read_audio's float copy of it is 38 MB)."""
    sr = 16000
    path = tmp_path / "long.wav"
    write_audio(path, np.tile(np.sin(np.arange(sr) / 7.0).astype(np.float32) * 0.5, 600), sr)
    tracemalloc.start()
    try:
        n = sum(len(c) for c in iter_audio(path, 22050, chunk=1.0))
        _, peak_iter = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        tail = read_audio_range(path, 598.5, 599.5, 22050)
        _, peak_range = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == round(600 * 22050) and len(tail) == 22050
    assert peak_iter < 4e6 and peak_range < 4e6, (peak_iter, peak_range)


def test_chunked_read_errors(tmp_path):
    wav = _noise_file(tmp_path / "a.wav", 16000, 0.5)
    for bad in ({"start": -1.0}, {"start": 2.0, "end": 1.0}, {"start": float("nan")}, {"chunk": 0.0}):
        with pytest.raises(ValueError):
            iter_audio(wav, **bad)
    with pytest.raises(MediaError) as e:
        iter_audio(tmp_path / "missing.wav")
    _one_line_naming(e, tmp_path / "missing.wav")
    silent = write_video(tmp_path / "silent.mp4", _ramp_frames(5), 25)
    for call in (probe_audio, lambda p: list(iter_audio(p)), lambda p: read_audio_range(p, 0, 1)):
        with pytest.raises(MediaError) as e:
            call(silent)
        _one_line_naming(e, silent)
    with pytest.raises(MediaError):
        list(iter_audio(wav, 123))  # an absurd target rate
    assert read_audio_range(wav, 2.0, 3.0).shape == (0,)  # past the end: nothing, no error
