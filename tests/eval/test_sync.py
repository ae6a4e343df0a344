"""Our audio-visual sync measure on signals with a known lag, and SyncNet plumbing."""

import numpy as np
import pytest
import torch

from avatar3d.audio import audio_energy
from avatar3d.eval import sync as S


@pytest.fixture(scope="module")
def envelope():
    from avatar3d.synthetic import synth_speech

    wave = synth_speech(8.0, sr=16000, seed=3)
    return audio_energy(wave, 16000, 25.0, 200)  # (200,) frames at 25 fps


def test_known_lag_of_two_frames(envelope):
    rng = np.random.default_rng(0)
    T = len(envelope)
    lag = 2
    mouth = np.empty(T)
    mouth[lag:] = envelope[:-lag]  # the mouth follows the sound two frames later
    mouth[:lag] = envelope[0]
    mouth = 0.05 + 0.4 * mouth + rng.normal(0, 0.03, T)
    res = S.av_sync(mouth, envelope, max_lag=5)
    assert res.offset == 2
    assert res.peak > 0.8
    base = S.shuffled_baseline(mouth, envelope, max_lag=5)
    assert abs(base.peak) < 0.5
    assert res.confidence > base.confidence + 0.1
    assert res.confidence > 3 * base.extra["confidence_std"] + base.confidence
    lead = S.av_sync(np.roll(mouth, -4), envelope)  # mouth two frames *before* the sound
    assert lead.offset == -2


def test_lag_correlation_sign_convention():
    rng = np.random.default_rng(1)
    a = np.convolve(rng.normal(size=300), np.ones(3) / 3, mode="same")
    m = np.concatenate([np.zeros(3), a[:-3]])  # m[t] = a[t - 3]
    lags, corr = S.lag_correlations(m, a, 5)
    assert lags[np.argmax(corr)] == 3 and corr.max() > 0.99
    with pytest.raises(ValueError):
        S.lag_correlations(m[:-1], a)


def test_shuffle_moves_every_segment():
    rng = np.random.default_rng(0)
    x = np.arange(100.0)
    y = S.shuffle_segments(x, 10, rng)
    assert sorted(y) == sorted(x)
    for k in range(10):  # no segment stays in its place
        assert not np.array_equal(y[10 * k : 10 * k + 10], x[10 * k : 10 * k + 10])


def test_mouth_opening_is_scale_invariant():
    rng = np.random.default_rng(2)
    lm = rng.uniform(0, 100, (4, 478, 2))
    np.testing.assert_allclose(S.mouth_opening(lm), S.mouth_opening(3 * lm + 17), rtol=1e-9)
    lm[1] = np.nan
    assert np.isnan(S.mouth_opening(lm)[1])


def test_nan_frames_are_skipped(envelope):
    m = envelope.copy()
    m[::7] = np.nan
    res = S.av_sync(m, envelope)
    assert res.offset == 0 and res.peak > 0.99 and res.frames == int(np.isfinite(m).sum())


def test_report_has_avatar_truth_and_shuffled(envelope):
    rep = S.sync_report(envelope, envelope, envelope)
    assert rep["avatar"]["offset_frames"] == 0 and rep["ground_truth"]["offset_frames"] == 0
    assert rep["shuffled_audio"]["confidence"] < rep["avatar"]["confidence"]
    assert "not SyncNet" in rep["measure"] and rep["mouth_motion_ratio"] == 1.0
    assert S.sync_report(0.1 * envelope, envelope, envelope)["mouth_motion_ratio"] == 0.1
    still = 0.05 + 1e-4 * envelope  # a real mouth that does not move: no ratio
    assert S.sync_report(envelope, still, envelope)["mouth_motion_ratio"] is None


def test_syncnet_not_computed_without_weights(tmp_path):
    frames = np.zeros((10, 64, 64, 3), np.uint8)
    assert S.syncnet_scores(frames, np.zeros(16000), 25, None).startswith("not computed")
    r = S.syncnet_scores(frames, np.zeros(16000), 25, tmp_path / "none.model")
    assert r.startswith("not computed") and "not found" in r


def test_syncnet_runs_with_weights_in_reference_format(tmp_path):
    from avatar3d.eval._syncnet import SyncNetS, mfcc

    torch.manual_seed(0)
    path = tmp_path / "syncnet_v2.model"
    torch.save(SyncNetS().state_dict(), path)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (9, 224, 224, 3), dtype=np.uint8)
    wave = rng.normal(0, 0.1, 16000 * 9 // 25 + 800).astype(np.float32)
    r = S.syncnet_scores(frames, wave, 25.0, path)
    assert isinstance(r, dict) and r["windows"] == 4
    assert np.isfinite(r["lse_c"]) and r["lse_d"] > 0 and r["lse_c"] >= 0 and -15 <= r["offset_frames"] <= 15
    assert mfcc(np.ones(16000)).shape == (99, 13)  # python_speech_features frame count for 1 s
    torch.save({"netcnnaud.0.weight": torch.zeros(1)}, tmp_path / "bad.model")
    assert S.syncnet_scores(frames, wave, 25.0, tmp_path / "bad.model").startswith("not computed")


def test_constant_signals_are_not_scored(envelope):
    silent = np.zeros_like(envelope)
    r = S.av_sync(envelope, silent)
    assert r.offset is None and "constant" in r.extra["reason"]
    rep = S.sync_report(envelope, envelope, silent)
    assert rep["avatar"]["offset_frames"] is None and "reason" in rep["shuffled_audio"]
