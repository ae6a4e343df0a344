"""A render to a file goes in segments (``.<name>.parts/``) and resumes after an interruption with
frames identical to an uninterrupted render. In-process here; tests/cli/test_render_resume.py kills
real ``avatar3d render`` processes."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
from _tiny import tiny_avatar

from avatar3d._version import __version__
from avatar3d.drive.frames import SEGMENT_ENV, segment_frames
from avatar3d.errors import Avatar3DError, ConfigError
from avatar3d.io import segments as seg_mod
from avatar3d.io.media import iter_frames, read_audio
from avatar3d.io.outputs import OutputError
from avatar3d.io.segments import MANIFEST, RenderParts, parts_dir
from avatar3d.io.watermark import Payload, embed_frames

SEG = 6


@pytest.fixture(scope="module")
def avatar():
    return tiny_avatar()


@pytest.fixture
def wave():
    t = np.arange(int(16000 * 1.7)) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)


@pytest.fixture(autouse=True)
def short_segments(monkeypatch):
    monkeypatch.setenv(SEGMENT_ENV, str(SEG))


def _stream(avatar, wave, **kw):
    return avatar.stream(wave, sample_rate=16000, progress=False, pose="generated", **kw)


def _packets(path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]


def _interrupt_after(stream, n_frames: int):
    """Make the stream raise KeyboardInterrupt (like Ctrl-C or the CLI's SIGTERM) at frame ``n_frames``."""
    frames, seen = stream._frames, [0]

    def interrupted(a, b):
        for x in frames(a, b):
            if seen[0] == n_frames:
                raise KeyboardInterrupt
            seen[0] += 1
            yield x

    stream._frames = interrupted


def _counting(stream) -> list[int]:
    frames, made = stream._frames, []

    def counted(a, b):
        for k, x in zip(range(a, b), frames(a, b)):
            made.append(k)
            yield x

    stream._frames = counted
    return made


def _leftovers(d) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


def test_segment_length_default_and_override(monkeypatch):
    monkeypatch.delenv(SEGMENT_ENV)
    assert segment_frames() == 250
    monkeypatch.setenv(SEGMENT_ENV, "0")
    with pytest.raises(ConfigError, match=SEGMENT_ENV):
        segment_frames()


def test_codes_from_an_offset_equal_those_of_a_whole_run(avatar, wave):
    n = avatar.audio.n_frames(wave)
    whole = np.concatenate([c.numpy() for c in avatar.audio.codes(wave, 25.0, n, chunk=8)])
    for start in (0, 1, 7, 8, 13, n - 1):
        part = np.concatenate([c.numpy() for c in avatar.audio.codes(wave, 25.0, n, chunk=8, start=start)])
        assert np.array_equal(part, whole[start:])


def test_frames_of_any_span_equal_the_whole_stream(avatar, wave):
    s = _stream(avatar, wave)
    whole = list(s)
    spans = [(0, 5), (5, 17), (17, 18), (18, len(s))]
    pieces = [f for a, b in spans for f, _ in s._frames(a, b)]
    assert len(pieces) == len(whole) and all(np.array_equal(x, y) for x, y in zip(pieces, whole))


def test_segments_carry_the_watermark_of_their_global_frame_index(avatar, wave, tmp_path, monkeypatch):
    s = _stream(avatar, wave)
    written: list[np.ndarray] = []
    real = seg_mod.write_video

    def spy(path, frames, fps, **kw):
        frames = list(frames)
        written.extend(frames)
        return real(path, frames, fps, **kw)

    monkeypatch.setattr(seg_mod, "write_video", spy)
    s.save(tmp_path / "o.mp4", log=None)
    expected = list(embed_frames(iter(s), Payload(s.avatar_id, __version__)))  # the single-file path's frames
    assert len(written) == len(expected) == len(s)
    assert all(np.array_equal(x, y) for x, y in zip(written, expected))


def test_save_joins_segments_without_reencoding(avatar, wave, tmp_path):
    s = _stream(avatar, wave)
    out = s.save(tmp_path / "o.mp4", log=None)
    assert _leftovers(tmp_path) == []  # no parts directory, no temp files
    frames = list(iter_frames(out))
    assert len(frames) == len(s) == 42 and frames[0].shape == (64, 64, 3)
    got, sr = read_audio(out)
    assert sr == 16000 and len(got) == round(len(s) / 25 * 16000)
    # the joined stream is the parts' packets: decoding order, keyframes every segment
    with av.open(str(out)) as c:
        pk = [p for p in c.demux(c.streams.video[0]) if p.size]
    assert [p.is_keyframe for p in pk].count(True) == -(-len(s) // SEG)
    assert all(a.dts < b.dts for a, b in zip(pk, pk[1:])) and all(p.dts <= p.pts for p in pk)


@pytest.mark.parametrize("container", [".mp4", ".mkv"])
def test_an_interrupted_render_resumes_with_identical_frames(avatar, wave, tmp_path, container):
    ref = _stream(avatar, wave).save(tmp_path / f"ref{container}", log=None)
    out = tmp_path / f"o{container}"
    s = _stream(avatar, wave)
    _interrupt_after(s, 2 * SEG + 3)
    with pytest.raises(KeyboardInterrupt):
        s.save(out, log=None)
    assert not out.exists()
    manifest = json.loads((parts_dir(out) / MANIFEST).read_text())
    assert [p["frames"] for p in manifest["parts"]] == [SEG, SEG]
    assert sorted(p.name for p in parts_dir(out).iterdir()) == [
        ".lock",
        MANIFEST,
        "part-000000.mp4",
        "part-000001.mp4",
    ]

    s, notes = _stream(avatar, wave), []
    made = _counting(s)
    s.save(out, log=notes.append)
    assert made == list(range(2 * SEG, len(s)))  # only the frames not in a finished part
    assert any(f"{2 * SEG} of {len(s)} frames were rendered by an interrupted run" in n for n in notes)
    assert _packets(out) == _packets(ref)  # the same bitstream: x264 is deterministic for equal frames
    assert all(np.array_equal(a, b) for a, b in zip(iter_frames(out), iter_frames(ref)))
    assert np.array_equal(read_audio(out)[0], read_audio(ref)[0])
    assert _leftovers(tmp_path) == []


def _killed(avatar, wave, out, after=3 * SEG + 1):
    s = _stream(avatar, wave)
    _interrupt_after(s, after)
    with pytest.raises(KeyboardInterrupt):
        s.save(out, log=None)


@pytest.mark.parametrize(
    ("change", "what"),
    [
        (dict(camera="frontal"), "cameras"),
        (dict(pose="static"), "motion"),
        (dict(blink=[0.5] * 42), "blinks"),
        (dict(background="white"), "background"),
        (dict(size=(48, 48)), "cameras"),
    ],
)
def test_other_settings_discard_the_parts(avatar, wave, tmp_path, change, what):
    out = tmp_path / "o.mp4"
    _killed(avatar, wave, out)
    s, notes = avatar.stream(wave, sample_rate=16000, progress=False, **{"pose": "generated", **change}), []
    made = _counting(s)
    s.save(out, log=notes.append)
    assert made == list(range(len(s)))
    assert any("removing the render parts" in n and what in n for n in notes), notes
    assert _leftovers(tmp_path) == []


def test_other_audio_or_watermark_discard_the_parts(avatar, wave, tmp_path):
    out = tmp_path / "o.mp4"
    _killed(avatar, wave, out)
    notes: list[str] = []
    _stream(avatar, wave[::-1].copy()).save(out, log=notes.append)
    assert any("other audio" in n for n in notes), notes
    _killed(avatar, wave, out)
    notes.clear()
    _stream(avatar, wave).save(out, watermark=False, log=notes.append)
    assert any("removing the render parts" in n and "watermark" in n for n in notes), notes


def test_a_damaged_part_is_rendered_again(avatar, wave, tmp_path):
    ref = _stream(avatar, wave).save(tmp_path / "ref.mp4", log=None)
    out = tmp_path / "o.mp4"
    _killed(avatar, wave, out)
    part = parts_dir(out) / "part-000001.mp4"
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])  # truncated
    s, notes = _stream(avatar, wave), []
    made = _counting(s)
    s.save(out, log=notes.append)
    assert made == [*range(SEG, 2 * SEG), *range(3 * SEG, len(s))]
    assert any("part-000001.mp4 cannot be reused" in n for n in notes), notes
    assert _packets(out) == _packets(ref)


def test_an_unreadable_manifest_starts_over_and_resume_false_too(avatar, wave, tmp_path):
    out = tmp_path / "o.mp4"
    _killed(avatar, wave, out)
    (parts_dir(out) / MANIFEST).write_text("{not json")
    s, notes = _stream(avatar, wave), []
    made = _counting(s)
    s.save(out, log=notes.append)
    assert made == list(range(len(s))) and any("unreadable" in n for n in notes)
    _killed(avatar, wave, out)
    s = _stream(avatar, wave)
    made = _counting(s)
    s.save(out, resume=False, log=None)
    assert made == list(range(len(s))) and _leftovers(tmp_path) == []


def test_a_second_render_of_the_same_output_is_refused(avatar, wave, tmp_path):
    out = tmp_path / "o.mp4"
    with RenderParts(out, {"a": "1"}, 10, 5), pytest.raises(OutputError, match="another process"):
        _stream(avatar, wave).save(out, log=None)


def test_a_bad_output_fails_before_any_frame(avatar, wave, tmp_path):
    for bad in (tmp_path / "o.avi", tmp_path):
        s = _stream(avatar, wave)
        made = _counting(s)
        with pytest.raises(Avatar3DError, match="container|directory"):
            s.save(bad, log=None)
        assert made == []
    assert _leftovers(tmp_path) == []


def test_an_interrupted_join_is_done_again_from_the_parts(avatar, wave, tmp_path, monkeypatch):
    ref = _stream(avatar, wave).save(tmp_path / "ref.mp4", log=None)
    out = tmp_path / "o.mp4"
    real = seg_mod._AacSource.upto

    def interrupted(self, *a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(seg_mod._AacSource, "upto", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _stream(avatar, wave).save(out, log=None)
    assert not out.exists() and (parts_dir(out) / MANIFEST).is_file()
    assert _leftovers(tmp_path) == [parts_dir(out).name]  # the output's temp file is gone
    monkeypatch.setattr(seg_mod._AacSource, "upto", real)
    s, notes = _stream(avatar, wave), []
    made = _counting(s)
    s.save(out, log=notes.append)
    assert made == [] and any(f"{len(s)} of {len(s)} frames" in n for n in notes)
    assert _packets(out) == _packets(ref) and _leftovers(tmp_path) == []
