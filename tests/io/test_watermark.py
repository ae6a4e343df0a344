"""The provenance watermark: embed -> H.264 -> attacks -> detect, its PSNR cost, and `avatar3d verify`."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from avatar3d.api import RenderResult
from avatar3d.cli import main
from avatar3d.io import watermark as wm
from avatar3d.io.media import iter_frames, write_video

FPS = 25
PAYLOAD = wm.Payload(0x5A17C0DE, "0.1.0")


def _moving_scene(n: int = 75, size: int = 512) -> list[np.ndarray]:
    """A render-like talking-head scene: a real face (skimage astronaut, public domain) in a disc
    that sways and nods over a smooth studio backdrop. (n, size, size, 3) uint8."""
    import cv2
    from skimage import data

    face = cv2.resize(data.astronaut()[20:300, 120:400], (300, 300), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    back = np.stack([70 + 60 * xx, 90 + 40 * yy, 140 - 30 * xx * yy], -1)
    disc = (np.hypot(*np.mgrid[-150:150, -150:150]) < 140)[..., None]
    out = []
    for k in range(n):
        t = k / 25.0
        x0 = int(size / 2 - 150 + 12 * np.sin(1.3 * t))
        y0 = int(size / 2 - 130 + 6 * np.sin(2.1 * t + 1))
        f = back.copy()
        roi = f[y0 : y0 + 300, x0 : x0 + 300]
        roi[:] = np.where(disc, face, roi)
        out.append(np.clip(f, 0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """(marked.mp4, unmarked.mp4, source frames, marked frames): 3 s at 512x512, CRF 18."""
    d = tmp_path_factory.mktemp("wm")
    frames = _moving_scene()
    marked = [wm.embed(f, PAYLOAD, k) for k, f in enumerate(frames)]
    write_video(d / "marked.mp4", marked, FPS, crf=18)
    write_video(d / "plain.mp4", frames, FPS, crf=18)
    return d / "marked.mp4", d / "plain.mp4", frames, marked


def _attacked(path, tmp_path, **kw):
    out = tmp_path / "attacked.mp4"
    write_video(out, wm.attack_frames(iter_frames(path), **kw), FPS, crf=28)
    return out


def test_payload_bits_roundtrip_and_crc():
    bits = PAYLOAD.to_bits()
    assert bits.shape == (64,) and set(np.unique(bits)) <= {0, 1}
    assert wm.Payload.from_bits(bits) == PAYLOAD
    for i in (0, 31, 40, 63):  # any single flipped bit fails the CRC
        b = bits.copy()
        b[i] ^= 1
        assert wm.Payload.from_bits(b) is None
    with pytest.raises(wm.WatermarkError):
        wm.Payload(2**32, "0.1.0")
    with pytest.raises(wm.WatermarkError):
        wm.Payload(1, "16.0.0")


def test_psnr_cost_at_least_45_db(clips):
    _, _, frames, marked = clips
    mse = np.mean([(m.astype(np.float64) - f) ** 2 for m, f in zip(marked, frames)])
    assert 10 * np.log10(255**2 / mse) >= 45.0
    assert not np.array_equal(marked[0], frames[0])


def test_detects_and_decodes_after_h264(clips):
    d = wm.detect(clips[0])
    assert d.present and d.score >= wm.Z_THRESHOLD
    assert d.payload == PAYLOAD
    assert d.scale == pytest.approx((1.0, 1.0), abs=0.03)  # the rescale grid's peak is flat within ~2 %


@pytest.mark.parametrize(
    "attack",
    [
        {},
        {"scale": 0.5},
        {"scale": 0.5, "interp": cv2.INTER_CUBIC},
        {"scale": 0.5, "interp": cv2.INTER_LINEAR},
        {"scale": 0.75, "interp": cv2.INTER_CUBIC},
        {"crop": 0.1},
        {"crop": 0.1, "scale": 0.5},
    ],
    ids=[
        "crf28",
        "crf28+half",
        "crf28+half-bicubic",
        "crf28+half-bilinear",
        "crf28+0.75-bicubic",
        "crf28+crop10",
        "crf28+crop10+half",
    ],
)
def test_survives_attacks(clips, tmp_path, attack):
    d = wm.detect(_attacked(clips[0], tmp_path, **attack))
    assert d.present, d
    assert d.payload == PAYLOAD
    if "scale" in attack:
        s = attack["scale"]
        assert d.scale == pytest.approx((s, s), abs=0.03)


def test_unmarked_video_is_not_detected(clips, tmp_path):
    assert not wm.detect(clips[1]).present
    assert not wm.detect(_attacked(clips[1], tmp_path, scale=0.5)).present


def test_another_key_does_not_detect(clips):
    assert not wm.detect(clips[0], key=wm.KEY + 1).present


def test_real_clip_is_not_detected(shared_data):
    assert not wm.detect(shared_data / "talk_b.mp4", max_frames=60).present


def test_embed_rejects_bad_frames():
    with pytest.raises(wm.WatermarkError):
        wm.embed(np.zeros((64, 64), np.uint8), PAYLOAD)
    with pytest.raises(wm.WatermarkError):
        wm.detect([np.zeros((40, 40, 3), np.uint8)] * 3)


def test_cli_verify(clips, tmp_path, capsys):
    assert main(["verify", str(clips[0])]) == 0
    out = capsys.readouterr().out
    assert "present" in out and f"{PAYLOAD.avatar_id:08x}" in out and "0.1.0" in out
    assert main(["verify", str(clips[1]), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["present"] is False and rep["avatar_id"] is None
    bad = tmp_path / "notavideo.mp4"
    bad.write_text("hello")
    assert main(["verify", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("avatar3d: error:") and len(err.strip().splitlines()) == 1
    assert main(["verify", str(tmp_path / "missing.mp4")]) == 2


def test_render_result_save_marks_unless_disabled(clips, tmp_path):
    frames = np.stack(clips[2][:50])
    audio = np.zeros(16000 * 2, np.float32)
    res = RenderResult(frames, FPS, audio, 16000, avatar_id=0xABCDEF01)
    d = wm.detect(res.save(tmp_path / "on.mp4"))
    assert d.present and d.payload is not None and d.payload.avatar_id == 0xABCDEF01
    res.watermark = False
    assert not wm.detect(res.save(tmp_path / "off.mp4")).present
