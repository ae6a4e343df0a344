"""``avatar3d view``: browser camera <-> Camera conversion, per-frame rendering, the CLI's errors, and
the viser server started and stopped on a free port (skipped without the optional extra)."""

from __future__ import annotations

import math
import socket
import time

import numpy as np
import pytest
import torch

from avatar3d import Avatar
from avatar3d.audio import load_audio
from avatar3d.cli import main
from avatar3d.config import AvatarConfig
from avatar3d.core.camera import Camera
from avatar3d.drive.motion import blinks, head_poses
from avatar3d.errors import FormatError
from avatar3d.export.bake import fit_bake, load_player
from avatar3d.io.media import write_audio
from avatar3d.models.gaussian_avatar import GaussianAvatar
from avatar3d.synthetic.speech import synth_speech
from avatar3d.viewer import server, start_viewer
from avatar3d.viewer.frames import (
    Clock,
    FrameCache,
    _plate_for,
    camera_from_viewer,
    look_at_wxyz,
    make_drive,
    matrix_to_wxyz,
    principal_offset,
    render_frame,
    viewer_pose,
    viewer_size,
    wxyz_to_matrix,
)
from avatar3d.viewer.sound import AUDIO_ID, SoundServer, audio_element_html, byte_range, control_html
from avatar3d.viewer.timeline import CACHE_CHUNKS

SIZE = 64


def _tiny_avatar():
    """A 300-Gaussian avatar (a coloured blob of head, mouth and torso Gaussians) with a rest camera
    slightly off-axis, a short training track and a gradient background plate: builds in milliseconds."""
    torch.manual_seed(0)
    cfg = AvatarConfig.from_dict({"preset": "fast", "model": {"encoding": "frequency", "hidden": 16}})
    n = 300
    m = GaussianAvatar(cfg.model, n, n_mels=80, n_expr=4)
    with torch.no_grad():
        m.means.copy_(torch.randn(n, 3) * torch.tensor([0.02, 0.025, 0.02]))
        m.log_scales.fill_(math.log(0.012))
        m.opacity_logits.fill_(2.0)
        m.color_logits.copy_(torch.randn(n, 3))
        m.group[: n // 6] = 1  # mouth
        m.group[-n // 6 :] = 2  # torso
        for p in m.deform.head[-1].parameters():
            p.normal_(0, 0.05)
    rest = Camera.look_at((0.05, -0.02, -0.5), (0.0, 0.0, 0.0), width=SIZE, height=SIZE, fov_degrees=25)
    meta = {
        "width": SIZE,
        "height": SIZE,
        "K": rest.K.tolist(),
        "rest_viewmat": rest.world_to_camera.tolist(),
        "fps": 25.0,
        "n_mels": 80,
        "audio_window": cfg.model.audio_window,
    }
    yaw = np.radians(np.linspace(-5, 5, 6))
    poses = np.tile(np.eye(4), (6, 1, 1))
    poses[:, 0, 0] = poses[:, 2, 2] = np.cos(yaw)
    poses[:, 0, 2], poses[:, 2, 0] = np.sin(yaw), -np.sin(yaw)
    track = {"head_poses": torch.as_tensor(poses, dtype=torch.float32), "blink": torch.linspace(0, 1, 6)}
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    plate = np.stack([xx * 255 // SIZE, yy * 255 // SIZE, np.full_like(xx, 90)], -1).astype(np.uint8)
    return Avatar(m, cfg, meta, track, plate)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    av = _tiny_avatar()
    d = tmp_path_factory.mktemp("view")
    av.save(d / "avatar")
    rng = np.random.default_rng(0)
    wave = (0.2 * np.sin(2 * np.pi * 180 * np.arange(16000) / 16000) * rng.uniform(0.2, 1, 16000)).astype(
        np.float32
    )
    return av, d / "avatar", wave


@pytest.fixture(scope="module")
def wav(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    write_audio(path, tiny[2], 16000)
    return path


def _viser_view_of(cam: Camera):
    """What a viser browser reports after being placed at ``cam`` (its position / look_at / up)."""
    p = viewer_pose(cam)
    wxyz = look_at_wxyz(p.position, p.look_at, p.up)
    return wxyz, p.position, p.fov, cam.width / cam.height


# ------------------------------------------------------------------------------ cameras
def test_quaternion_round_trip():
    rng = np.random.default_rng(1)
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        R = wxyz_to_matrix(q)
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(R), 1)
        back = matrix_to_wxyz(R)
        assert np.allclose(back, q if q[0] >= 0 else -q, atol=1e-9)
    assert np.allclose(wxyz_to_matrix([1, 0, 0, 0]), np.eye(3))
    # 90 degrees about +y takes +z to +x
    assert np.allclose(
        wxyz_to_matrix([math.cos(math.pi / 4), 0, math.sin(math.pi / 4), 0]) @ [0, 0, 1], [1, 0, 0]
    )


def test_viser_camera_convention_looks_along_plus_z():
    """viser: wxyz/position are camera -> world with OpenCV axes (+z forward, -y up). A camera at
    (0, 0, -1) with the identity rotation looks along +z at the origin, with world -y up."""
    cam = camera_from_viewer((1, 0, 0, 0), (0, 0, -1), math.radians(30), 1.0, 64)
    assert np.allclose(cam.center, [0, 0, -1])
    uv = cam.K @ (cam.world_to_camera @ [0, 0, 0, 1])[:3]
    assert np.allclose(uv[:2] / uv[2], [32, 32])  # the origin lands in the image centre
    above = cam.K @ (cam.world_to_camera @ [0, -0.1, 0, 1])[:3]
    assert above[1] / above[2] < 32  # world -y (up) is up in the image
    right = cam.K @ (cam.world_to_camera @ [0.1, 0, 0, 1])[:3]
    assert right[0] / right[2] > 32
    # vertical fov: the image's top edge is 15 degrees above the axis
    assert np.isclose(cam.K[1, 1], 32 / math.tan(math.radians(15)))


@pytest.mark.parametrize("aspect", [1.0, 16 / 9, 0.6])
def test_viewer_size_keeps_the_pixel_budget(aspect):
    w, h = viewer_size(aspect, 384)
    assert abs(w / h - aspect) < 0.02 and abs(w * h / 384**2 - 1) < 0.02 and w % 2 == 0 and h % 2 == 0


def test_viser_camera_at_the_rest_camera_reproduces_its_view_matrix(tiny):
    av = tiny[0]
    rest = av.rest_camera
    wxyz, pos, fov, aspect = _viser_view_of(rest)
    cam = camera_from_viewer(wxyz, pos, fov, aspect, SIZE)
    assert (cam.width, cam.height) == (rest.width, rest.height)
    np.testing.assert_allclose(cam.world_to_camera, rest.world_to_camera, atol=1e-9)
    np.testing.assert_allclose(cam.K, rest.K, atol=1e-9)
    # the orbit centre is on the viewing axis, at the head's depth
    p = viewer_pose(rest)
    assert np.isclose(np.linalg.norm(p.look_at - p.position), 0.5, atol=0.01)


def test_off_centre_capture_camera_keeps_its_principal_point():
    base = Camera.look_at((0.05, -0.02, -0.5), width=96, height=72, fov_degrees=25)
    K = base.K.copy()
    K[0, 2] += 6.0
    K[1, 2] -= 4.0
    rest = Camera(K, base.world_to_camera, 96, 72)
    wxyz, pos, fov, aspect = _viser_view_of(rest)
    cam = camera_from_viewer(wxyz, pos, fov, aspect, int(math.sqrt(96 * 72)), principal_offset(rest))
    np.testing.assert_allclose(cam.K, rest.K, atol=1e-9)
    np.testing.assert_allclose(cam.world_to_camera, rest.world_to_camera, atol=1e-9)


def test_viser_camera_matches_orbit_cameras():
    for yaw, pitch in [(0, 0), (35, 10), (-60, -20), (170, 5)]:
        ref = Camera.orbit(yaw, pitch, distance=0.6, width=80, height=60, fov_degrees=20)
        wxyz, pos, fov, aspect = _viser_view_of(ref)
        cam = camera_from_viewer(wxyz, pos, fov, aspect, int(math.sqrt(80 * 60)))
        np.testing.assert_allclose(cam.world_to_camera, ref.world_to_camera, atol=1e-9)
        assert abs(cam.K[1, 1] / cam.height - ref.K[1, 1] / ref.height) < 1e-9


def test_viser_itself_agrees(tiny):
    """viser's own CameraHandle, given our position / look_at / up, derives the orientation we expect."""
    viser = pytest.importorskip("viser")
    from types import SimpleNamespace

    rest = tiny[0].rest_camera
    p = viewer_pose(rest)
    client = SimpleNamespace(_websock_connection=SimpleNamespace(queue_message=lambda m: None))
    handle = viser.CameraHandle(client)
    handle._state.update_timestamp = time.time()
    handle._state.up_direction = np.array([0.0, -1.0, 0.0])
    handle._state.look_at = np.array([0.0, 0.0, 1.0])
    handle.position = p.position
    handle.look_at = p.look_at
    handle.up_direction = p.up
    cam = camera_from_viewer(handle.wxyz, handle.position, p.fov, 1.0, SIZE)
    np.testing.assert_allclose(cam.world_to_camera, rest.world_to_camera, atol=1e-7)


# ------------------------------------------------------------------------------ frames
def test_idle_drive_loops_seamlessly(tiny):
    av = tiny[0]
    d = make_drive(av, None, idle_seconds=4.0)
    assert d.sound is None and d.n_frames >= 100 and d.n_frames % 12 == 0  # whole mirrored track loops
    assert torch.allclose(d.codes[0], d.codes[-1])  # silence throughout
    for mode in ("track", "generated"):
        P = d.poses[mode]
        step = np.abs(np.diff(np.concatenate([P, P[:1]]), axis=0)).max()
        assert step < 0.05, mode  # no jump anywhere, the loop seam included
    assert d.blinks["auto"].max() > 0.9  # at least one blink in 4 s
    assert d.index(0) == 0 and d.index(d.seconds) == 0 and d.index(1.0) == 25


def test_frame_at_rest_camera_matches_avatar_render(tiny, wav):
    """The viewer's frame k at the rest camera (placed through the viser conversion) is frame k of
    Avatar.render with the same audio, pose, blinks and background."""
    av = tiny[0]
    d = make_drive(av, wav)
    wxyz, pos, fov, aspect = _viser_view_of(av.rest_camera)
    cam = camera_from_viewer(wxyz, pos, fov, aspect, SIZE)
    for pose, blink, bg in [
        ("static", "auto", "plate"),
        ("track", "track", "#336699"),
        ("generated", "none", "plate"),
    ]:
        ref = av.render(wav, camera="capture", pose=pose, blink=blink, background=bg, progress=False)
        assert len(ref) == d.n_frames
        cache = FrameCache()
        for k in (0, 7, d.n_frames - 1):
            img = render_frame(av, d, cam, k / d.fps, pose=pose, blink=blink, background=bg, cache=cache)
            diff = np.abs(img.astype(int) - ref.frames[k].astype(int)).max()
            assert diff <= 1, (pose, blink, bg, k, diff)


def test_frames_change_with_time_view_and_settings(tiny, wav):
    av = tiny[0]
    d = make_drive(av, wav)
    rest = av.rest_camera
    cache = FrameCache()
    a = render_frame(av, d, rest, 0.1, cache=cache)
    again = render_frame(av, d, rest, 0.1, cache=cache)
    assert cache.hits == 1 and np.array_equal(a, again)  # paused, same camera: the posed Gaussians are reused
    assert not np.array_equal(a, render_frame(av, d, rest, 0.5))  # the audio moves the face
    side = Camera.orbit(40, 0, distance=0.5, width=SIZE, height=SIZE, fov_degrees=25)
    assert not np.array_equal(a, render_frame(av, d, side, 0.1))
    closed = render_frame(av, d, rest, 0.1, blink=1.0, background="white")
    assert closed.shape == a.shape and (closed == 255).all(-1).mean() > 0.2
    wide = camera_from_viewer(*_viser_view_of(rest)[:3], 16 / 9, 64)
    assert render_frame(av, d, wide, 0.1).shape == (48, 86, 3)
    with pytest.raises(Exception, match="pose"):
        render_frame(av, d, rest, 0.0, pose="dance")


def test_plate_is_exact_at_the_rest_camera_and_scaled_elsewhere(tiny):
    av = tiny[0]
    rest = av.rest_camera
    plate = _plate_for(av, rest, None)[0].numpy()
    assert np.allclose(plate * 255, av.background, atol=1e-3)
    big = _plate_for(av, rest.resized(2 * SIZE, 2 * SIZE), None)[0].numpy() * 255
    assert np.abs(big[::2, ::2].mean() - av.background.mean()) < 2


def test_clock_plays_pauses_seeks_and_loops():
    now = [100.0]
    c = Clock(2.0, playing=True, now=lambda: now[0])
    now[0] += 0.5
    assert np.isclose(c.time(), 0.5)
    c.pause()
    now[0] += 5
    assert np.isclose(c.time(), 0.5)
    c.seek(1.9)
    c.play()
    now[0] += 0.3
    assert np.isclose(c.time(), 0.2)  # looped


def test_long_audio_drive_is_computed_in_chunks_with_a_bounded_cache(tiny):
    """Audio longer than a few chunks: every frame's inputs equal Avatar.render's (the codes of
    AudioDriver.codes, the poses and blinks of the drive), while only CACHE_CHUNKS chunks are held."""
    av, _, wave = tiny
    long = np.tile(wave, 12)  # 12 s: 300 frames, two chunks of 256
    d = make_drive(av, long, sample_rate=16000)
    try:
        n = d.n_frames
        assert n == 300 and d.sound is not None and d.sound.is_file()
        ref = torch.cat(list(av.audio_codes(long, 25.0, n)))
        for k in (0, 100, 255, 256, 299, 3, -1):
            assert torch.equal(d.codes[k], ref[k]), k
            for mode in ("static", "track", "generated"):
                assert np.array_equal(d.poses[mode][k], head_poses(mode, n, 25.0, av.track["head_poses"])[k])
            assert d.blinks["auto"][k] == blinks("auto", n, 25.0, av.track["blink"])[k]
        assert torch.equal(d.codes[250:260], ref[250:260]) and d.codes.shape == tuple(ref.shape)
        assert len(d.cached_chunks()) <= CACHE_CHUNKS
        with pytest.raises(IndexError):
            d.codes[n]
    finally:
        d.close()
    assert not d.sound.exists()


def test_sound_is_served_with_byte_ranges(tiny, wav):
    import urllib.error
    import urllib.request

    d = make_drive(tiny[0], wav)
    srv = SoundServer(d.sound)
    try:
        data = d.sound.read_bytes()
        back = load_audio(d.sound, sr=16000)
        assert len(back) == len(tiny[2]) and np.abs(back - tiny[2]).max() < 1e-3
        url = f"http://127.0.0.1:{srv.port}{srv.url_path}"
        with urllib.request.urlopen(url, timeout=5) as r:
            assert r.status == 200 and r.read() == data and r.headers["Accept-Ranges"] == "bytes"
        req = urllib.request.Request(url, headers={"Range": "bytes=100-1099"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 206 and r.read() == data[100:1100]
            assert r.headers["Content-Range"] == f"bytes 100-1099/{len(data)}"
        with urllib.request.urlopen(
            urllib.request.Request(url, headers={"Range": "bytes=-10"}), timeout=5
        ) as r:
            assert r.read() == data[-10:]
        for bad, code in ((url.replace(srv.url_path, "/sound.wav"), 404), (url, 416)):
            hdr = {"Range": f"bytes={len(data)}-"} if code == 416 else {}
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(urllib.request.Request(bad, headers=hdr), timeout=5)
            assert e.value.code == code
    finally:
        srv.close()
        d.close()
    assert (
        byte_range(None, 10) is None
        and byte_range("bytes=2-", 10) == (2, 9)
        and byte_range("bytes=5-99", 10) == (5, 9)
    )
    html = audio_element_html(srv.port, srv.url_path)
    assert f'id="{AUDIO_ID}"' in html and f":{srv.port}{srv.url_path}" in html and "location.hostname" in html
    play, pause = control_html(12.3456, True, 7), control_html(-1.0, False, 8)
    assert "currentTime=12.346" in play and "play()" in play and 'data-n="7"' in play
    assert "currentTime=0.000" in pause and "pause()" in pause and "<script" not in play + pause
    assert "playbackRate" in play and "if(true)" in control_html(1.0, True, 9, seek=True)


def test_frames_through_the_bake_follow_the_full_model(tiny, wav, tmp_path):
    """``view --bake``: frames rendered through a linear bake of the avatar are close to the full
    model's at the same time, pose and blink (and differ from the canonical, motionless face)."""
    av = tiny[0]
    bake = fit_bake(av, [synth_speech(3.0, 16000, seed=1)], k=8, n_probes=64, max_samples=75)
    bake.save(tmp_path / "web" / "bake.safetensors")
    player = load_player(av, tmp_path / "web")  # an export --web folder, or the file itself
    with pytest.raises(FormatError, match="bake not found"):
        load_player(av, tmp_path)
    d = make_drive(av, wav)
    try:
        for k in (0, 12, 24):
            kw = {"pose": "generated", "blink": "auto", "background": "black"}
            full = render_frame(av, d, av.rest_camera, k / d.fps, **kw).astype(float)
            baked = render_frame(av, d, av.rest_camera, k / d.fps, bake=player, **kw).astype(float)
            assert 10 * np.log10(255.0**2 / max(((full - baked) ** 2).mean(), 1e-9)) > 30.0, k
    finally:
        d.close()


# ------------------------------------------------------------------------------ CLI
def _run(args, capsys):
    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_help_lists_view(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "view" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["view", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "--audio" in out and "Sound" in out


def test_view_without_viser_is_one_line(tmp_path, capsys, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_viser(name, *a, **k):
        if name == "viser" or name.startswith("viser."):
            raise ImportError("No module named 'viser'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_viser)
    code, err = _run(["view", tmp_path], capsys)
    assert code == 2 and len(err) == 1
    assert 'avatar3d view needs the optional viewer: pip install "avatar3d[view]"' in err[0]


def _bad_inputs(tiny, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really")
    return [
        (["view", tmp_path / "nope"], "not found"),
        (["view", tmp_path], "avatar"),  # a directory that is not an avatar
        (["view", tiny[1], "--audio", tmp_path / "missing.wav"], "missing.wav"),
        (["view", tiny[1], "--audio", broken], "broken.wav"),
        (["view", tiny[1], "--port", "70000"], "port"),
        (["view", tiny[1], "--host", "no.such.host.invalid"], "host"),
        (["view", tiny[1], "--size", "8"], "size"),
        (["view", tiny[1], "--background", "plaid"], "background"),
        (["view", tiny[1], "--bake", tmp_path / "none.safetensors"], "bake not found"),
        (["view", tiny[1], "--bake", broken], "unreadable bake"),
    ]


def test_view_bad_input_is_one_line(tiny, tmp_path, capsys, monkeypatch):
    """Every bad input is refused before a server starts (so this runs without viser too)."""

    def no_server(*a, **k):
        raise AssertionError("a server was started")

    monkeypatch.setattr(server, "import_viser", lambda: None)
    monkeypatch.setattr(server, "AvatarViewer", no_server)
    for args, word in _bad_inputs(tiny, tmp_path):
        code, err = _run(args, capsys)
        assert code == 2 and len(err) == 1 and word in err[0].lower(), (args, err)


# ------------------------------------------------------------------------------ the server
def test_server_serves_a_browser_camera(tiny, wav):
    """Start on a free port, connect like a browser (a websocket speaking viser's protocol), send a
    camera at the rest view, receive rendered frames; change settings; stop."""
    viser = pytest.importorskip("viser")
    import msgspec
    from websockets.sync.client import connect

    viewer = start_viewer(tiny[1], wav, port=0, size=SIZE, log=None)
    try:
        assert viewer.port > 0 and viewer.url == f"http://127.0.0.1:{viewer.port}"
        with socket.create_connection(("127.0.0.1", viewer.port), timeout=5):
            pass
        p = viewer_pose(tiny[0].rest_camera)
        assert np.allclose(viewer.server.initial_camera.position, p.position)
        with connect(
            f"ws://127.0.0.1:{viewer.port}",
            subprotocols=[f"viser-v{viser.__version__}"],
            open_timeout=10,
            close_timeout=0.5,
        ) as ws:

            def vec(x):
                return [float(v) for v in x]

            msg = {
                "type": "ViewerCameraMessage",
                "wxyz": vec(look_at_wxyz(p.position, p.look_at, p.up)),
                "position": vec(p.position),
                "fov": float(p.fov),
                "near": 0.01,
                "far": 100.0,
                "image_height": 300,
                "image_width": 300,
                "look_at": vec(p.look_at),
                "up_direction": vec(p.up),
            }
            viewer.clock.pause()
            viewer.clock.seek(0.2)
            ws.send(msgspec.msgpack.encode(msg))
            deadline = time.time() + 20
            while time.time() < deadline and (
                viewer.last_frame is None or viewer.last_frame.shape[0] != SIZE
            ):
                time.sleep(0.05)  # first the half-size frame while "moving", then the full one
            assert viewer.last_frame is not None and viewer.last_frame.shape == (SIZE, SIZE, 3)
            ref = render_frame(tiny[0], viewer.drive, tiny[0].rest_camera, 0.2)
            assert np.abs(viewer.last_frame.astype(int) - ref.astype(int)).max() <= 1
            n = viewer.frames_rendered
            viewer._bg.value = "white"  # a GUI change re-renders
            deadline = time.time() + 10
            while time.time() < deadline and viewer.frames_rendered == n:
                time.sleep(0.05)
            assert viewer.frames_rendered > n and (viewer.last_frame == 255).all(-1).mean() > 0.2
            viewer.clock.play()  # playing advances frames in real time
            n = viewer.frames_rendered
            time.sleep(0.6)
            assert viewer.frames_rendered > n
            assert len(ws.recv(timeout=5)) > 0  # messages flow to the browser
            viewer._sound.value = True  # sound: the browser's audio element is told to play, then to pause
            deadline = time.time() + 5
            while time.time() < deadline and "play()" not in viewer._sound_ctl.content:
                time.sleep(0.05)
            assert "play()" in viewer._sound_ctl.content
            viewer.clock.pause()
            deadline = time.time() + 5
            while time.time() < deadline and "pause()" not in viewer._sound_ctl.content:
                time.sleep(0.05)
            assert "pause()" in viewer._sound_ctl.content
    finally:
        viewer.stop()
    assert not viewer._thread.is_alive()
