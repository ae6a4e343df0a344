"""The trainer fits the viseme map on the training frames only, and the audio pre-training leaves the
speech front end's channels alone."""

from types import SimpleNamespace

import numpy as np
import torch

from avatar3d.config import AvatarConfig
from avatar3d.models.gaussian_avatar import GaussianAvatar
from avatar3d.models.viseme_map import N_VISEME_FEATURES
from avatar3d.train.audio_aug import audio_targets_loss
from avatar3d.train.trainer import fit_visemes


def _setup(T=120, E=4, seed=0):
    rng = np.random.default_rng(seed)
    cfg = AvatarConfig.from_dict({"preset": "fast", "model": {"encoding": "frequency", "hidden": 16}})
    m = GaussianAvatar(cfg.model, 10, n_mels=8, n_expr=E, n_visemes=N_VISEME_FEATURES)
    X = rng.dirichlet(np.ones(15), size=T)
    vis = np.concatenate([X, rng.random((T, 2))], 1).astype(np.float32)
    expr = rng.normal(size=(T, E)).astype(np.float32)
    lm = rng.normal(scale=0.03, size=(T, 478, 3))
    n_train = T - 11
    data = SimpleNamespace(
        visemes=torch.as_tensor(vis),
        expression=torch.as_tensor(expr),
        train_idx=np.arange(n_train),
        test_idx=np.arange(n_train, T),
    )
    cs = SimpleNamespace(landmarks3d=lm, valid=np.ones(T, bool), n_frames=T)
    return cfg, m, data, cs, rng


def test_held_out_frames_do_not_change_the_map():
    cfg, m, data, cs, rng = _setup()
    fit_visemes(m, cs, data, cfg)
    before = m.viseme_matrix.clone()
    # scramble everything about the held-out frames: the map must not move
    data.expression[data.test_idx] = torch.as_tensor(
        rng.normal(scale=50, size=(len(data.test_idx), 4)), dtype=torch.float32
    )
    cs.landmarks3d[data.test_idx] = rng.normal(scale=5, size=(len(data.test_idx), 478, 3))
    data.visemes[data.test_idx] = torch.as_tensor(
        rng.random((len(data.test_idx), N_VISEME_FEATURES)), dtype=torch.float32
    )
    stats = fit_visemes(m, cs, data, cfg)
    assert torch.equal(before, m.viseme_matrix)
    assert int(m.audio.viseme_lag) == stats["lag"]
    assert abs(sum(stats["frames_per_viseme"].values()) - len(data.train_idx)) < 0.5


def test_augmentation_leaves_viseme_channels_alone():
    cfg, m, data, cs, _ = _setup()
    T = len(data.expression)
    feats = torch.randn(T, cfg.model.audio_window, 8)
    data.features = torch.cat([feats, data.visemes[:, None, :].expand(-1, cfg.model.audio_window, -1)], -1)
    data.blink = torch.zeros(T)
    data.mouth = torch.rand(T, 2)
    fit_visemes(m, cs, data, cfg)
    seen = []
    orig = m.audio.forward
    m.audio.forward = lambda x: seen.append(x.detach().clone()) or orig(x)
    idx = torch.arange(20, 30)
    audio_targets_loss(m, data, idx, augment=True, generator=torch.Generator().manual_seed(0))
    win = seen[0]
    assert torch.equal(win[:, m.cfg.smooth_window // 2, 0, 8:], data.visemes[idx])
    assert not torch.equal(win[..., :8], feats[idx][:, None].expand_as(win[..., :8]))
