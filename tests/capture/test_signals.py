"""Mouth / jaw / blink / expression signals from pose-free landmarks."""

import numpy as np

from avatar3d.capture.signals import blink_from_openness, compute_signals, expression_pca
from avatar3d.core.topology import INNER_LIP_PAIRS, LEFT_EYELID_PAIRS, RIGHT_EYELID_PAIRS


def _face(rng):
    """A crude (478, 3) face: random points with the eyes, lips, chin and forehead placed."""
    p = rng.normal(size=(478, 3)) * 0.02
    p[10] = [0, -0.09, 0]  # forehead
    p[152] = [0, 0.09, 0]  # chin
    p[[234, 454]] = [[-0.07, 0, 0.02], [0.07, 0, 0.02]]
    for (up, lo), x in zip(INNER_LIP_PAIRS, np.linspace(-0.02, 0.02, len(INNER_LIP_PAIRS))):
        p[up] = [x, 0.04, -0.01]
        p[lo] = [x, 0.04, -0.01]
    for pairs, corners, cx in ((RIGHT_EYELID_PAIRS, (33, 133), -0.03), (LEFT_EYELID_PAIRS, (263, 362), 0.03)):
        p[corners[0]] = [cx - 0.015 * np.sign(cx) * -1, -0.02, 0]
        p[corners[1]] = [cx + 0.015 * np.sign(cx) * -1, -0.02, 0]
        for k, (up, lo) in enumerate(pairs):
            p[up] = [cx + 0.004 * (k - 1), -0.025, 0]
            p[lo] = [cx + 0.004 * (k - 1), -0.015, 0]
    return p


def test_signals_follow_mouth_and_eyelids():
    rng = np.random.default_rng(0)
    base = _face(rng)
    T = 40
    lm = np.repeat(base[None], T, 0)
    gap = np.abs(np.sin(np.linspace(0, 3 * np.pi, T))) * 0.02
    for up, lo in INNER_LIP_PAIRS:
        lm[:, lo, 1] += gap  # lower lip drops
    lm[:, 152, 1] += gap * 0.8  # chin drops with it
    lm[:, 152, 2] += gap * 0.5  # ... swinging back
    closed = np.zeros(T, bool)
    closed[[7, 8, 30]] = True
    for pairs in (RIGHT_EYELID_PAIRS, LEFT_EYELID_PAIRS):
        for up, lo in pairs:
            lm[closed, up, 1] = lm[closed, lo, 1] - 0.0005
    valid = np.ones(T, bool)
    sig = compute_signals(lm, base, valid, expression_dims=4)
    assert sig.mouth_open.min() >= 0 and sig.mouth_open.max() <= 1
    assert np.corrcoef(sig.mouth_open, gap)[0, 1] > 0.95
    assert np.corrcoef(sig.jaw_open, gap)[0, 1] > 0.9 and sig.jaw_open.min() >= 0
    assert (sig.blink[closed] > 0.9).all() and (sig.blink[~closed] < 0.1).all()
    assert sig.blink_per_eye.shape == (T, 2) and sig.expression.shape == (T, 4)


def test_blink_without_blinks_stays_low():
    rng = np.random.default_rng(0)
    open_raw = 0.3 + 0.01 * rng.normal(size=(100, 2))
    b = blink_from_openness(open_raw, np.ones(100, bool))
    assert b.max() < 0.2


def test_expression_pca_reconstructs_low_rank_motion():
    rng = np.random.default_rng(0)
    canon = rng.normal(size=(478, 3))
    modes = rng.normal(size=(2, 478, 3)) * 0.01
    c = rng.normal(size=(50, 2))
    lm = canon + np.einsum("tk,knd->tnd", c, modes)
    coeffs, basis, mean = expression_pca(lm, canon, np.ones(50, bool), dims=5)
    rec = canon + mean + np.einsum("tk,knd->tnd", coeffs, basis)
    np.testing.assert_allclose(rec, lm, atol=1e-6)
    np.testing.assert_allclose(coeffs[:, :2].std(0, ddof=1), 1.0, rtol=1e-5)
    assert np.abs(coeffs[:, 2:]).max() < 1e-4  # rank 2: higher components empty
