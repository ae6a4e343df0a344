"""``avatar3d view`` on long audio (avatar3d.viewer.stream): inputs read from the file around the
playhead, the streaming front end primed at seeks, the browsers' WAV made as it is read, and memory
that does not follow the audio's length."""

from __future__ import annotations

import io
import math
import tracemalloc
import urllib.request
import wave as wavemod
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar3d import Avatar
from avatar3d.audio import load_audio
from avatar3d.audio.features import clip_statistics, frame_features
from avatar3d.audio.visemes import FEATURE_DIM, speech_features
from avatar3d.config import AvatarConfig
from avatar3d.drive.motion import blinks, head_poses
from avatar3d.io.media import write_audio
from avatar3d.models.gaussian_avatar import GaussianAvatar
from avatar3d.viewer import stream
from avatar3d.viewer.sound import SoundServer, WavSource
from avatar3d.viewer.timeline import SHORT_AUDIO_S, make_drive

DATA = Path(__file__).parents[2].parent / "shared" / "data"
SR = 16000


def _front_end_avatar(n: int = 200) -> Avatar:
    """A small avatar trained (here: built) on the speech front end: 80 mels + 17 front-end channels."""
    torch.manual_seed(0)
    cfg = AvatarConfig.from_dict({"preset": "fast", "model": {"encoding": "frequency", "hidden": 16}})
    m = GaussianAvatar(cfg.model, n, n_mels=80 + FEATURE_DIM, n_expr=4)
    with torch.no_grad():
        m.means.copy_(torch.randn(n, 3) * 0.02)
        m.log_scales.fill_(math.log(0.012))
        m.opacity_logits.fill_(2.0)
        for p in m.deform.head[-1].parameters():
            p.normal_(0, 0.05)
    K = [[80.0, 0.0, 32.0], [0.0, 80.0, 32.0], [0.0, 0.0, 1.0]]
    vm = np.eye(4)
    vm[2, 3] = 0.5
    meta = {
        "width": 64,
        "height": 64,
        "K": K,
        "rest_viewmat": vm.tolist(),
        "fps": 25.0,
        "n_mels": 80 + FEATURE_DIM,
        "audio_window": cfg.model.audio_window,
        "audio_front_end": {"name": "visemes+mel", "version": 1, "viseme_channels": FEATURE_DIM},
    }
    track = {"head_poses": torch.eye(4).repeat(6, 1, 1), "blink": torch.linspace(0, 1, 6)}
    return Avatar(m, cfg, meta, track, np.full((64, 64, 3), 100, np.uint8))


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Real speech at 16 kHz (a minute of it), or a clean skip."""
    path = DATA / "speech_b_16k_60s.wav"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return load_audio(path)


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory, speech) -> tuple[Path, np.ndarray]:
    """75 s of speech, stored in stereo (mixed down on read): long enough to stream."""
    w = np.concatenate([speech, speech[::-1][: 15 * SR] * 0.5])
    path = tmp_path_factory.mktemp("long") / "long.wav"
    write_audio(path, np.stack([w, 0.8 * w], 1), SR)  # written at 16 kHz stereo
    return path, load_audio(path)


@pytest.fixture(scope="module")
def avatar() -> Avatar:
    return _front_end_avatar()


def test_segments_give_the_whole_file_features(avatar, long_wav):
    """A chunk's log-mel features, read from a segment of the file, equal the whole wave's (same
    normalisation): the segment starts on a frame's own sample and reaches past every window."""
    path, wave = long_wav
    s = stream.open_streamed(avatar, path, len(wave))
    s.stats = clip_statistics(wave, SR)
    s.front = None  # the mel half only
    n = avatar.audio.n_frames(wave)
    assert s.n_frames == n
    ref = frame_features(wave, SR, 25.0, n, avatar.meta.audio_window, stats=s.stats)
    for lo, hi in [(0, 70), (1000, 1064), (n - 70, n)]:
        got = stream._features(s, lo, hi).numpy()
        np.testing.assert_allclose(got, ref[lo:hi], atol=2e-4)


def test_front_end_streams_from_the_start_and_reprimes_at_a_seek(long_wav):
    path, wave = long_wav
    n = math.floor(len(wave) / SR * 25)
    fe = stream.FrontEnd(stream.FileAudio(path, len(wave)), 25.0, n)
    offline = speech_features(wave[: 24 * SR], 25.0)  # the start of the file, analysed whole
    rows = np.concatenate([fe.rows(a, a + 64) for a in range(0, 512, 64)])
    assert rows.shape == (512, FEATURE_DIM) and fe.primes == 1  # played through: one stream
    assert np.abs(rows - offline[:512]).mean() < 0.01
    a = n - 300  # a seek 30 s ahead: a new stream, primed just before
    far = fe.rows(a, a + 64)
    assert fe.primes == 2 and far.shape == (64, FEATURE_DIM)
    np.testing.assert_allclose(far[:, :15].sum(1), 1.0, atol=1e-4)  # viseme weights: distributions
    assert fe._first >= a - stream.PRIME_S * 25 - 4 and len(fe._rows) < 300
    near = fe.rows(a + 114, a + 178)  # a little ahead: runs on
    assert fe.primes == 2 and near.shape == (64, FEATURE_DIM)
    fe.rows(100, 164)  # back, out of what is kept: primes again
    assert fe.primes == 3
    last = fe.rows(n - 10, n)
    assert last.shape == (10, FEATURE_DIM) and fe.primes == 4
    fe.close()
    longer = stream.FrontEnd(stream.FileAudio(path, len(wave)), 25.0, n + 3)  # a header promising more
    tail = longer.rows(n - 2, n + 3)
    assert tail.shape == (5, FEATURE_DIM) and np.array_equal(tail[-1], tail[-2])
    longer.close()


def test_streamed_drive_matches_the_decoded_one(avatar, long_wav):
    """The streamed drive of a long file gives the decoded drive's poses and blinks exactly and its
    codes closely (sampled normalisation, a re-primed front end), a chunk at a time."""
    path, wave = long_wav
    assert len(wave) > SHORT_AUDIO_S * SR
    d = make_drive(avatar, path)
    ref = make_drive(avatar, path, stream=False)
    try:
        assert d.streamed is not None and isinstance(d.sound, WavSource) and ref.streamed is None
        n = ref.n_frames
        assert d.n_frames == n and d.chunk == stream.STREAM_CHUNK
        ks = [0, 63, 64, 500, 1500, n - 1, 10]
        codes = torch.stack([d.codes[k] for k in ks])
        want = torch.stack([ref.codes[k] for k in ks])
        rel = float((codes - want).norm() / want.norm())
        print(f"streamed codes off the decoded ones by {rel:.3f} (relative rms)")
        assert rel < 0.05, rel
        for k in ks:
            for mode in ("static", "track", "generated"):
                np.testing.assert_allclose(
                    d.poses[mode][k], head_poses(mode, n, 25.0, avatar.track["head_poses"])[k]
                )
            for mode in ("auto", "track", "none"):
                assert d.blinks[mode][k] == blinks(mode, n, 25.0, avatar.track["blink"])[k]
        assert len(d.cached_chunks()) <= 3
    finally:
        d.close()
        ref.close()


def test_the_browsers_wav_is_made_as_it_is_read(long_wav):
    path, wave = long_wav
    src = WavSource(stream.FileAudio(path, len(wave)).chunks, len(wave), SR)
    data = b"".join(src.iter_bytes(0, src.size))
    assert len(data) == src.size == 44 + 2 * len(wave)
    with wavemod.open(io.BytesIO(data)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (SR, 1, 2, len(wave))
        pcm = np.frombuffer(w.readframes(len(wave)), "<i2") / 32767.0
    assert np.abs(pcm - wave).max() < 1e-4
    for first, count in [(0, 10), (40, 9), (45, 1001), (src.size - 7, 7), (1_000_001, 64_000)]:
        assert b"".join(src.iter_bytes(first, count)) == data[first : first + count], (first, count)
    srv = SoundServer(src)
    try:
        url = f"http://127.0.0.1:{srv.port}{srv.url_path}"
        req = urllib.request.Request(url, headers={"Range": "bytes=2000001-2003000"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 206 and r.read() == data[2000001:2003001]
            assert r.headers["Content-Range"] == f"bytes 2000001-2003000/{src.size}"
    finally:
        srv.close()


def _traced_peak(avatar, path: Path) -> float:
    """Bytes allocated at most while a drive of ``path`` starts, seeks to its end and back, and serves
    a third of its WAV."""
    tracemalloc.start()
    try:
        d = make_drive(avatar, path)
        for k in (0, d.n_frames - 5, d.n_frames // 2, 300):
            d.codes[k]
        for _ in d.sound.iter_bytes(0, d.sound.size // 3):
            pass
        _, peak = tracemalloc.get_traced_memory()
        d.close()
    finally:
        tracemalloc.stop()
    return peak


def test_memory_does_not_follow_the_audio_length(avatar, tmp_path, speech):
    """Four times the audio, the same memory: 16 minutes (61 MB decoded at 16 kHz float) against 4."""
    short = _traced_peak(avatar, write_audio(tmp_path / "four.wav", np.tile(speech, 4), SR))
    long = _traced_peak(avatar, write_audio(tmp_path / "sixteen.wav", np.tile(speech, 16), SR))
    assert long < 1.3 * short and long < 120e6, (short, long)


def test_poses_of_a_window_are_the_whole_motions():
    track = np.tile(np.eye(4), (7, 1, 1)) * np.arange(1, 8)[:, None, None]
    for mode in ("generated", "track", "static"):
        whole = head_poses(mode, 3000, 25.0, track)
        np.testing.assert_array_equal(stream._poses(track, 2500, 2564, 25.0)[mode], whole[2500:2564])
        np.testing.assert_array_equal(
            stream._poses(track, 0, 10, 30.0)[mode], head_poses(mode, 10, 30.0, track)
        )


def test_frame_period_meets_the_analysis_grids():
    assert stream.frame_period(25.0) == 4  # 2560 samples: 5 VAD blocks, 8 mel hops
    assert stream.frame_period(30.0) == 24
    assert stream.frame_period(30000 / 1001) == 15  # no common grid within reach: whole samples
    for fps in (25.0, 30.0, 50.0, 24.0):
        p = stream.frame_period(fps)
        assert (p * SR / fps) % 2560 == 0
