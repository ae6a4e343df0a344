"""Mel re-voicing augmentation and the audio pre-training stage."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from avatar3d.config import ModelConfig
from avatar3d.models.gaussian_avatar import GaussianAvatar
from avatar3d.train.audio_aug import augment_mel, heldout_mouth_correlation, pretrain_audio


def test_shape_determinism_and_that_it_changes_the_input():
    x = torch.randn(6, 8, 16, 80)
    a = augment_mel(x, torch.Generator().manual_seed(3))
    b = augment_mel(x, torch.Generator().manual_seed(3))
    c = augment_mel(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert 0.05 < float((a - x).abs().mean()) < 3.0


def test_shift_moves_a_spectral_peak_by_at_most_max_shift_and_keeps_timing():
    imp = torch.zeros(64, 3, 80)
    imp[:, 1, 40] = 1.0  # one mel step, one bin
    out = augment_mel(imp, torch.Generator().manual_seed(0), max_shift=4, tilt=0, gain=0, max_mask=0, noise=0)
    peaks = out[:, 1].argmax(-1)
    assert ((peaks - 40).abs() <= 4).all() and len(set(peaks.tolist())) > 3
    assert torch.equal(out[:, 0], torch.zeros_like(out[:, 0])) and torch.equal(out[:, 2], out[:, 0])


def test_band_mask_is_one_contiguous_band_per_element():
    x = torch.ones(32, 4, 80)
    out = augment_mel(x, torch.Generator().manual_seed(1), max_shift=0, tilt=0, gain=0, max_mask=10, noise=0)
    for e in out:
        zero = (e == 0).all(0).nonzero().flatten()
        assert len(zero) <= 10
        if len(zero):
            assert (zero.diff() == 1).all()


def _toy_data(T: int = 220, seed: int = 0):
    """Features whose loudness (mean over bins) is the mouth opening; the expression follows it."""
    g = np.random.default_rng(seed)
    mouth = np.convolve(g.random(T), np.ones(9) / 9, "same")  # speech-like: changes over ~1/3 s
    mouth = (mouth - mouth.min()) / np.ptp(mouth)
    env = (mouth - 0.5) * 3
    feats = g.normal(0, 0.3, (T, 16, 80)) + env[:, None, None]
    n_hold = T // 11
    f32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    return SimpleNamespace(
        features=f32(feats),
        mouth=f32(np.stack([mouth, mouth], 1)),
        expression=f32(np.tile(mouth[:, None], (1, 16)) * 2 - 1),
        blink=torch.zeros(T),
        train_idx=np.arange(T - n_hold),
        test_idx=np.arange(T - n_hold, T),
    )


@pytest.mark.slow  # an audio-branch fit: ~20 s per case on 2 busy cores
@pytest.mark.parametrize("augment", [False, True])
def test_pretraining_learns_the_mouth_from_audio(augment):
    torch.manual_seed(0)
    model = GaussianAvatar(ModelConfig(), 10)
    data = _toy_data()
    before = heldout_mouth_correlation(model, data)
    stats = pretrain_audio(model, data, steps=300, batch=32, lr=2e-3, seed=0, augment=augment)
    assert stats["steps"] == 300 and np.isfinite(stats["loss"])
    assert stats["heldout_mouth_corr"] > max(0.55, before + 0.2), (before, stats)
    assert model.training  # the read-out's eval() is undone


def test_no_steps_or_no_frames_is_a_no_op():
    model = GaussianAvatar(ModelConfig(), 10)
    data = _toy_data()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert pretrain_audio(model, data, steps=0, batch=8, lr=1e-3, seed=0, augment=True) == {"steps": 0}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
