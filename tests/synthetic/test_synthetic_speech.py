"""Synthetic speech and the subject's ground-truth audio -> mouth mapping."""

from __future__ import annotations

import numpy as np
import pytest

from avatar3d.core.constants import SAMPLE_RATE as SR
from avatar3d.synthetic import VOICES, Voice, mouth_from_audio, synth_speech


def silent_runs(wave: np.ndarray, sr: int, min_seconds: float) -> list[tuple[int, int]]:
    """(start, end) sample ranges where the wave is exactly 0 for at least ``min_seconds``."""
    z = np.r_[False, wave == 0, False].astype(np.int8)
    starts = np.nonzero(np.diff(z) == 1)[0]
    ends = np.nonzero(np.diff(z) == -1)[0]
    return [(s, e) for s, e in zip(starts, ends) if e - s >= min_seconds * sr]


def median_pitch(wave: np.ndarray, sr: int) -> float:
    """Median autocorrelation pitch over loud 40 ms frames."""
    n = int(0.04 * sr)
    f0 = []
    for s in range(0, len(wave) - n, n):
        x = wave[s : s + n].astype(np.float64)
        if np.sqrt(np.mean(x * x)) < 0.05:
            continue
        x = x - x.mean()
        ac = np.correlate(x, x, "full")[n - 1 :]
        lo, hi = int(sr / 400), int(sr / 60)
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.3 * ac[0]:
            f0.append(sr / lag)
    return float(np.median(f0))


def test_deterministic_and_seed_dependent():
    a = synth_speech(3.0, sr=SR, seed=0)
    assert a.dtype == np.float32 and a.shape == (3 * SR,)
    assert np.array_equal(a, synth_speech(3.0, sr=SR, seed=0))
    b = synth_speech(3.0, sr=SR, seed=1)
    assert not np.allclose(a, b)
    assert np.abs(a).max() == pytest.approx(0.8, abs=1e-3)
    assert np.isfinite(a).all()


def test_pitch_range_and_voices():
    wave = synth_speech(6.0, sr=SR, seed=2)
    f0 = median_pitch(wave, SR)
    assert 95 < f0 < 230, f0
    low = median_pitch(synth_speech(6.0, sr=SR, seed=2, voice="low"), SR)
    high = median_pitch(synth_speech(6.0, sr=SR, seed=2, voice=Voice(pitch_scale=1.3, formant_scale=1.1)), SR)
    assert low < 0.8 * f0 < f0 < 0.9 * high, (low, f0, high)
    assert set(VOICES) >= {"default", "low", "high"}
    with pytest.raises(ValueError, match="unknown voice"):
        synth_speech(1.0, voice="robot")


def test_other_sample_rates():
    w = synth_speech(1.5, sr=22050, seed=4)
    assert w.shape == (round(1.5 * 22050),) and np.isfinite(w).all() and np.abs(w).max() > 0.5
    with pytest.raises(ValueError):
        synth_speech(0.0)


def test_silences_close_the_mouth_and_vowels_open_it():
    fps = 25
    wave = synth_speech(8.0, sr=SR, seed=0)
    runs = silent_runs(wave, SR, 0.25)
    assert len(runs) >= 2, "expected pauses between phrases"
    n = 8 * fps
    jaw = mouth_from_audio(wave, SR, fps, n)
    assert jaw.shape == (n,) and jaw.dtype == np.float32
    assert jaw.min() >= 0 and jaw.max() <= 1
    t = np.arange(n) / fps
    quiet = np.zeros(n, bool)
    for s, e in runs:  # frames well inside a pause (the envelope is smoothed over ~0.1 s)
        quiet |= (t > s / SR + 0.12) & (t < e / SR - 0.12)
    assert quiet.sum() >= 5
    assert jaw[quiet].max() < 0.02
    assert 0.7 < np.percentile(jaw, 97) <= 1.0
    # the mouth moves with the syllables (not a constant plateau while speaking)
    speaking = jaw > 0.1
    assert np.std(np.diff(jaw[speaking])) > 0.03


def test_mouth_from_audio_edge_cases():
    assert np.array_equal(mouth_from_audio(np.zeros(SR, np.float32), SR, 25, 25), np.zeros(25, np.float32))
    assert mouth_from_audio(np.zeros(0, np.float32), SR, 25, 4).shape == (4,)
    assert mouth_from_audio(synth_speech(1.0, seed=3), SR, 25, 0).shape == (0,)
    # scale invariant: a quieter recording of the same speech gives the same mouth
    w = synth_speech(3.0, seed=3)
    assert np.allclose(mouth_from_audio(w, SR, 30, 90), mouth_from_audio(0.1 * w, SR, 30, 90), atol=0.01)
