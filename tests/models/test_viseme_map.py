"""The per-subject viseme -> expression map: recovery, prior, amplitude, and its use in the model."""

import numpy as np
import pytest
import torch

from avatar3d.config import ModelConfig
from avatar3d.core.topology import INNER_LIP_PAIRS, MOUTH_CORNERS
from avatar3d.models.gaussian_avatar import GaussianAvatar
from avatar3d.models.viseme_map import (
    MAX_WIDTH_GAIN,
    N_VISEME_FEATURES,
    VISEME_NAMES,
    apply_lip_floor,
    fit_viseme_map,
    lip_gap,
    mouth_width,
    prior_targets,
)

V = {v: i for i, v in enumerate(VISEME_NAMES)}


def _subject(T=600, E=6, seed=0, seen=None):
    """A synthetic subject whose landmarks are linear in the expression: coefficient 0 opens the
    mouth (lower inner lip down), 1 widens it; the others move unrelated points."""
    rng = np.random.default_rng(seed)
    base = rng.normal(scale=0.05, size=(478, 3))
    for a, b in INNER_LIP_PAIRS:
        base[b] = base[a] + [0, 0.001, 0]
    basis = rng.normal(scale=0.001, size=(E, 478, 3))
    basis[:2] = 0
    for _, b in INNER_LIP_PAIRS:
        basis[0, b, 1] = 0.004  # opening: 4 mm per unit
    a, b = MOUTH_CORNERS
    basis[1, a, 0], basis[1, b, 0] = -0.002, 0.002
    base[a, 0], base[b, 0] = -0.025, 0.025
    seen = list(VISEME_NAMES) if seen is None else seen
    ids = np.array([V[v] for v in seen])
    hard = rng.choice(ids, size=T)
    X = np.zeros((T, N_VISEME_FEATURES))
    X[np.arange(T), hard] = 1.0
    X[:, :15] = 0.8 * X[:, :15] + 0.2 * np.roll(X[:, :15], 1, 0)  # coarticulation blur
    X[:, 15] = (hard != V["sil"]).astype(float)
    X[:, 16] = rng.random(T)
    return X, base, basis, rng


def _landmarks(base, basis, Y):
    return base[None] + np.einsum("te,eld->tld", Y, basis)


def test_recovers_known_linear_map():
    X, base, basis, rng = _subject()
    M_true = rng.normal(size=(N_VISEME_FEATURES, basis.shape[0]))
    Y = X @ M_true
    fit = fit_viseme_map(
        X, Y, _landmarks(base, basis, Y), prior_strength=1e-3, extra_strength=1e-3, lags=(0,), calibrate=False
    )
    assert np.abs(fit.matrix - M_true).max() < 0.03  # voice is nearly collinear with 1 - sil
    assert fit.lag == 0


def test_lag_is_found():
    X, base, basis, rng = _subject()
    M_true = rng.normal(size=(N_VISEME_FEATURES, basis.shape[0]))
    T = len(X)
    Y = X[np.clip(np.arange(T) - 1, 0, T - 1)] @ M_true  # the expression follows the sound by a frame
    fit = fit_viseme_map(
        X, Y, _landmarks(base, basis, Y), prior_strength=1e-3, lags=(-2, -1, 0, 1), calibrate=False
    )
    assert fit.lag == -1


def test_prior_dominates_for_unseen_visemes():
    seen = ["sil", "aa", "E", "DD"]
    X, base, basis, rng = _subject(seen=seen)
    gz = np.where(X[:, V["aa"]] > 0.5, 1.0, 0.1) + 0.05 * rng.normal(size=len(X))
    Y = np.zeros((len(X), basis.shape[0]))
    Y[:, 0] = gz
    Y[:, 1] = np.where(X[:, V["E"]] > 0.5, 1.0, 0.0) + 0.05 * rng.normal(size=len(X))
    L = _landmarks(base, basis, Y)
    fit = fit_viseme_map(X, Y, L, calibrate=False)
    P, _ = prior_targets(Y, lip_gap(L), mouth_width(L))
    for v in ("PP", "oh", "ou", "FF"):
        assert np.allclose(fit.matrix[V[v]], P[V[v]], atol=1e-6), v
    # generic shapes on this subject: PP closed like sil, oh / ou rounder (narrower) than E
    assert P[V["PP"], 0] < P[V["aa"], 0] and P[V["PP"], 0] <= P[V["ih"], 0]
    assert P[V["ou"], 1] < P[V["E"], 1] and P[V["oh"], 1] < P[V["E"], 1]


def test_gain_restores_the_subjects_amplitude_and_keeps_the_mean():
    X, base, basis, rng = _subject(T=400)
    # a mouth that opens a lot on aa, with jitter the soft visemes cannot explain
    Y = np.zeros((len(X), basis.shape[0]))
    Y[:, 0] = 2.0 * X[:, V["aa"]] + 0.8 * X[:, V["oh"]] + 0.4 * rng.normal(size=len(X))
    L = _landmarks(base, basis, Y)
    raw = fit_viseme_map(X, Y, L, calibrate=False)
    cal = fit_viseme_map(X, Y, L, calibrate=True)
    real = lip_gap(L)
    g_raw = lip_gap(_landmarks(base, basis, raw.predict(X)))
    g_cal = lip_gap(_landmarks(base, basis, cal.predict(X)))
    assert g_raw.std() < 0.85 * real.std()
    assert 0.95 * real.std() < g_cal.std() < 1.05 * real.std()
    assert cal.gain > 1.0
    # the mean opening stays the subject's (scaling about the closed shape opened every frame more)
    assert abs(g_cal.mean() - real.mean()) < 0.15 * real.std()
    assert cal.stats["lip_gap_mean_fit"] == pytest.approx(g_cal.mean(), abs=1e-9)
    # silence and p/b/m close the lips (the floor: the 5th percentile gap) and never cross them
    one = np.eye(N_VISEME_FEATURES)
    closed = lip_gap(_landmarks(base, basis, cal.predict(one[[V["sil"]]])))[0]
    wide = lip_gap(_landmarks(base, basis, cal.predict(one[[V["aa"]]])))[0]
    assert closed == pytest.approx(np.percentile(real, 5), abs=0.05 * real.std())
    assert g_cal.min() >= np.percentile(real, 5) - 1e-9
    assert closed < real.mean() < wide


def test_width_is_scaled_without_moving_the_opening():
    X, base, basis, rng = _subject(T=400, seed=2)
    Y = np.zeros((len(X), basis.shape[0]))
    Y[:, 0] = 2.0 * X[:, V["aa"]] + 0.3 * rng.normal(size=len(X))
    # rounded on oh / ou, spread on E / ih, with jitter the visemes cannot explain
    Y[:, 1] = X[:, V["E"]] + X[:, V["ih"]] - X[:, V["oh"]] - X[:, V["ou"]] + 0.8 * rng.normal(size=len(X))
    L = _landmarks(base, basis, Y)
    cal = fit_viseme_map(X, Y, L)
    w_real = mouth_width(L).std()
    w_cal = mouth_width(_landmarks(base, basis, cal.predict(X))).std()
    assert 1.0 < cal.width_gain <= MAX_WIDTH_GAIN
    assert w_cal <= 1.02 * w_real and (w_cal > 0.95 * w_real or cal.width_gain == MAX_WIDTH_GAIN)
    one = np.eye(N_VISEME_FEATURES)
    width = {v: mouth_width(_landmarks(base, basis, cal.predict(one[[V[v]]])))[0] for v in ("ou", "E")}
    assert width["ou"] < width["E"]
    # the opening is the one the gain calibration chose
    assert lip_gap(_landmarks(base, basis, cal.predict(X))).std() == pytest.approx(lip_gap(L).std(), rel=0.05)


def test_lip_floor_is_the_same_in_numpy_and_torch():
    rng = np.random.default_rng(3)
    e = rng.normal(size=(50, 6))
    floor = np.append(rng.normal(size=6), 0.3)
    lifted = apply_lip_floor(e, floor)
    d = floor[:-1]
    assert (lifted @ d >= 0.3 - 1e-9).all()
    keep = e @ d >= 0.3
    assert np.array_equal(lifted[keep], e[keep])  # frames above the floor are untouched
    t = apply_lip_floor(torch.as_tensor(e), torch.as_tensor(floor))
    assert np.allclose(t.numpy(), lifted)
    assert np.array_equal(apply_lip_floor(e, np.zeros(7)), e)  # zeros: no floor (older avatars)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        fit_viseme_map(np.zeros((10, 5)), np.zeros((10, 3)), np.zeros((10, 478, 3)))


def test_model_adds_bounded_residual_to_viseme_expression():
    cfg = ModelConfig(n_head=10, n_mouth=4, n_torso=0, hidden=16, encoding="frequency", residual_scale=0.2)
    m = GaussianAvatar(cfg, 20, n_mels=8, n_expr=3, n_visemes=N_VISEME_FEATURES)
    m.viseme_matrix.copy_(torch.randn(N_VISEME_FEATURES, 3))
    feats = torch.randn(30, cfg.audio_window, 8 + N_VISEME_FEATURES)
    feats[..., 8:] = torch.rand(30, 1, N_VISEME_FEATURES)  # the same vector on every window step
    with torch.no_grad():
        for p in m.expr_head.parameters():
            p.mul_(100.0)  # a wild residual
        code = m.audio_code(feats, torch.arange(30))
        assert code.shape == (30, cfg.audio_dim + N_VISEME_FEATURES)
        assert torch.allclose(code[:, cfg.audio_dim :], feats[:, 0, 8:])  # lag 0: the frame's own vector
        e = m.predict_expression(code, torch.zeros(30, 1))
        vis = feats[:, 0, 8:] @ m.viseme_matrix
        assert (e - vis).abs().max() <= 0.2 + 1e-5
        m.audio.viseme_lag.fill_(-1)  # the lips lead: frame t reads the vector of frame t - 1
        code = m.audio_code(feats, torch.arange(1, 30))
        assert torch.allclose(code[:, cfg.audio_dim :], feats[:-1, 0, 8:])
