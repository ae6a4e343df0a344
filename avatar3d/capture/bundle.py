"""Levenberg-Marquardt bundle adjustment with the points eliminated (Schur complement).

The rigid fit's objective (:func:`avatar3d.capture.pose_fit.bundle_adjust`) is a sum of robust
reprojection errors of head-space points (the rigid landmarks and the feature tracks' points) seen
in posed frames, plus priors on those points. L-BFGS creeps along its long, narrow valleys (a track's
depth against the head's turn), and a focal search compares costs of such fits at different focals,
differences far smaller than what L-BFGS leaves unconverged. Gauss-Newton with the points' 3×3
blocks eliminated converges in tens of iterations instead:

- each observation ``o`` contributes ``w_o ρ(|r_o|²)`` with ``r_o`` its reprojection error (pixels
  at 512 px), ``ρ(s) = k²(√(1 + s/k²) − 1)`` (pseudo-Huber, ``k`` the observation's knee), handled by
  iteratively reweighted least squares;
- each point ``p`` has a prior ``Σ_axes w_pa · soft((1000 (X_pa − A_pa))², k_p)`` (millimetres; a
  plain square when ``k_p`` is infinite);
- the poses are updated on the left, ``R ← exp(δ) R``, ``t ← t + δt``;
- the reduced system over the poses is dense, ``6T × 6T``, built as one symmetric rank-k update,
  so it suits the focal search's frames; long clips' smoothed fits stay with L-BFGS (why and what it
  costs: docs/design/feature-tracks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import roma
import scipy.linalg
import scipy.linalg.blas
import torch

DAMPING_START = 1e-3  # Marquardt's lambda at the first iteration
DAMPING_MIN = 1e-9
DAMPING_MAX = 1e8  # past this the fit stops: no step lowers the cost
DAMPING_DOWN = 3  # after an accepted step
DAMPING_UP = 5  # after a step that raised the cost
DAMPING_UP_SINGULAR = 10  # after a reduced system that was not positive definite


@dataclass
class Observations:
    """Image observations of head-space points: ``frame``, ``point`` (O,) int; ``uv`` (O, 2) pixels;
    ``weight`` (O,) the observation's weight in the objective; ``knee`` (O,) its pseudo-Huber scale
    in pixels at 512 px."""

    frame: np.ndarray
    point: np.ndarray
    uv: np.ndarray
    weight: np.ndarray
    knee: np.ndarray


@dataclass
class PointPrior:
    """Per point ``p`` and axis ``a``: ``weight`` (P, 3) × soft((1000·(X − anchor))², ``knee`` (P,))
    with the millimetre offset from ``anchor`` (P, 3); ``knee`` infinite gives a plain square."""

    anchor: np.ndarray
    weight: np.ndarray
    knee: np.ndarray


@dataclass
class LMResult:
    rotation: np.ndarray  # (T, 3, 3)
    translation: np.ndarray  # (T, 3)
    points: np.ndarray  # (P, 3)
    cost: float
    iterations: int


def _hat(v: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 3, 3) cross-product matrices."""
    z = np.zeros(v.shape[:-1])
    return np.stack(
        [
            np.stack([z, -v[..., 2], v[..., 1]], -1),
            np.stack([v[..., 2], z, -v[..., 0]], -1),
            np.stack([-v[..., 1], v[..., 0], z], -1),
        ],
        -2,
    )


def _rho(s: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-Huber ``k²(√(1+s/k²) − 1)`` of squared residuals and its derivative in ``s``."""
    root = np.sqrt(1 + s / k**2)
    return k**2 * (root - 1), 0.5 / root


def _soft(x2: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``2k²(√(1+x2/k²) − 1)`` (→ ``x2`` for infinite ``k``) and its derivative in ``x2``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        inf = ~np.isfinite(k)
        kk = np.where(inf, 1.0, k)
        root = np.sqrt(1 + x2 / kk**2)
        val = np.where(inf, x2, 2 * kk**2 * (root - 1))
        der = np.where(inf, 1.0, 1.0 / root)
    return val, der


class _Problem:
    def __init__(self, obs: Observations, prior: PointPrior, n_frames: int, n_points: int, focal, cx, cy, px):
        self.obs, self.prior = obs, prior
        self.T, self.P = n_frames, n_points
        self.f, self.c, self.px = float(focal), np.array([cx, cy], np.float64), float(px)
        # where each observation's (6, 3) pose-point block lands in the (6T, 3P) matrix C
        self.rows = (6 * obs.frame[:, None, None] + np.arange(6)[None, :, None]).repeat(3, 2)
        self.cols = (3 * obs.point[:, None, None] + np.arange(3)[None, None, :]).repeat(6, 1)

    def cost(self, R, t, X) -> float:
        o = self.obs
        Xc = np.einsum("oij,oj->oi", R[o.frame], X[o.point]) + t[o.frame]
        uv = Xc[:, :2] / np.maximum(Xc[:, 2:3], 1e-4) * self.f + self.c
        s = (((uv - o.uv) * self.px) ** 2).sum(-1)
        total = float((o.weight * _rho(s, o.knee)[0]).sum())
        d2 = (1000.0 * (X - self.prior.anchor)) ** 2
        return total + float((self.prior.weight * _soft(d2, self.prior.knee[:, None])[0]).sum())

    def normal_equations(self, R, t, X):
        """Gauss-Newton blocks: H_pp (T, 6, 6), H_xx (P, 3, 3), H_px (O, 6, 3), g_p (T, 6), g_x (P, 3)."""
        o = self.obs
        RX = np.einsum("oij,oj->oi", R[o.frame], X[o.point])
        Xc = RX + t[o.frame]
        z = np.maximum(Xc[:, 2], 1e-4)
        uv = Xc[:, :2] / z[:, None] * self.f + self.c
        r = (uv - o.uv) * self.px  # (O, 2)
        s = (r**2).sum(-1)
        _, d = _rho(s, o.knee)
        om = 2 * o.weight * d  # gradient Σ 2wρ'·Jᵀr, Gauss-Newton Hessian Σ 2wρ'·JᵀJ (IRLS)
        # d uv / d Xc (O, 2, 3), scaled to 512-px units
        a = self.f * self.px / z
        Jc = np.zeros((len(z), 2, 3))
        Jc[:, 0, 0] = a
        Jc[:, 1, 1] = a
        Jc[:, 0, 2] = -a * Xc[:, 0] / z
        Jc[:, 1, 2] = -a * Xc[:, 1] / z
        Jp = np.concatenate([Jc @ -_hat(RX), Jc], -1)  # (O, 2, 6): left rotation, translation
        Jx = Jc @ R[o.frame]  # (O, 2, 3)
        wJp = om[:, None, None] * Jp
        H_pp = np.zeros((self.T, 6, 6))
        np.add.at(H_pp, o.frame, np.swapaxes(wJp, 1, 2) @ Jp)
        g_p = np.zeros((self.T, 6))
        np.add.at(g_p, o.frame, (np.swapaxes(wJp, 1, 2) @ r[..., None])[..., 0])
        wJx = om[:, None, None] * Jx
        H_xx = np.zeros((self.P, 3, 3))
        np.add.at(H_xx, o.point, np.swapaxes(wJx, 1, 2) @ Jx)
        g_x = np.zeros((self.P, 3))
        np.add.at(g_x, o.point, (np.swapaxes(wJx, 1, 2) @ r[..., None])[..., 0])
        H_px = np.swapaxes(wJp, 1, 2) @ Jx
        # priors: w soft((1000 e)²) -> gradient 2·w·soft'·1e6·e, Hessian 2·w·soft'·1e6
        e = X - self.prior.anchor
        _, ds = _soft((1000.0 * e) ** 2, self.prior.knee[:, None])
        h = 2e6 * self.prior.weight * ds
        H_xx[:, [0, 1, 2], [0, 1, 2]] += h
        g_x += h * e
        return H_pp, H_xx, H_px, g_p, g_x


def lm_bundle_adjust(
    R0: np.ndarray,
    t0: np.ndarray,
    X0: np.ndarray,
    obs: Observations,
    prior: PointPrior,
    focal: float,
    cx: float,
    cy: float,
    px: float,
    iterations: int = 50,
    rtol: float = 1e-6,
) -> LMResult:
    """Minimise the objective of the module docstring over the poses (R0 (T, 3, 3), t0 (T, 3)) and
    the points (X0 (P, 3)), the focal fixed. Frames without observations keep their pose; a point
    without observations stays at its prior's minimum or where it was.

    ``px`` converts pixels of the image to the 512-px units of residuals and knees. Stops after
    ``iterations`` accepted or rejected steps, or when a step lowers the cost by less than ``rtol``
    (relative).
    """
    if len(obs.frame) == 0:  # nothing to fit: the points settle on their priors' anchors where weighted
        X = np.array(X0, np.float64)
        X[prior.weight > 0] = prior.anchor[prior.weight > 0]
        return LMResult(np.array(R0, np.float64), np.array(t0, np.float64), X, 0.0, 0)
    # only frames with observations take part; the others keep their pose
    active, frame = np.unique(obs.frame, return_inverse=True)
    obs = Observations(frame.ravel(), obs.point, obs.uv, obs.weight, obs.knee)
    R_all, t_all = np.array(R0, np.float64), np.array(t0, np.float64)
    pb = _Problem(obs, prior, len(active), len(X0), focal, cx, cy, px)
    R, t, X = R_all[active], t_all[active], np.array(X0, np.float64)
    cost = pb.cost(R, t, X)
    lam = DAMPING_START
    n_it = 0
    for n_it in range(1, iterations + 1):
        step, lam = _damped_step(pb, R, t, X, cost, lam)
        if step is None:
            break
        rel = (cost - step[3]) / max(cost, 1e-30)
        R, t, X, cost = step
        if rel < rtol:
            break
    R_all[active], t_all[active] = R, t
    return LMResult(R_all, t_all, X, cost, n_it)


def _damped_step(pb: _Problem, R, t, X, cost: float, lam: float):
    """One Levenberg-Marquardt iteration: the damping grows until a step lowers the cost. Returns
    ((R, t, X, cost) after the step, or None when the damping passed ``DAMPING_MAX``; the damping)."""
    blocks = pb.normal_equations(R, t, X)
    while True:
        stepped = _solve(pb, blocks, R, t, X, lam)
        if stepped is None:
            lam *= DAMPING_UP_SINGULAR
            if lam > DAMPING_MAX:
                return None, lam
            continue
        R_new, t_new, X_new = stepped
        new = pb.cost(R_new, t_new, X_new)
        if np.isfinite(new) and new <= cost:
            return (R_new, t_new, X_new, new), max(lam / DAMPING_DOWN, DAMPING_MIN)
        lam *= DAMPING_UP
        if lam > DAMPING_MAX:
            return None, lam


def _solve(pb: _Problem, blocks, R, t, X, lam: float):
    """The damped Gauss-Newton step, the points eliminated: (R, t, X) after it, or None when the
    reduced system is not positive definite."""
    H_pp, H_xx, H_px, g_p, g_x = blocks
    o, T, P = pb.obs, pb.T, pb.P
    # Marquardt damping on the diagonals (with a floor for points without prior or depth)
    Hp = H_pp.copy()
    Hp[:, range(6), range(6)] *= 1 + lam
    Hx = H_xx.copy()
    dx = np.einsum("pii->pi", Hx)
    Hx[:, range(3), range(3)] += lam * (dx + 1e-9 * (dx.mean() + 1e-12)) + 1e-12
    Hx_inv = np.linalg.inv(Hx)
    # Schur complement over the poses, S = Hp − B Hx⁻¹ Bᵀ (B: the pose-point blocks H_px),
    # as one symmetric rank-k update with C = B·chol(Hx⁻¹): S = Hp − C Cᵀ
    Lc = np.linalg.cholesky(Hx_inv)
    C = np.zeros((6 * T, 3 * P))
    C[pb.rows, pb.cols] = H_px @ Lc[o.point]
    S = scipy.linalg.blas.dsyrk(-1.0, C, beta=1.0, c=scipy.linalg.block_diag(*Hp), lower=0)
    Y = H_px @ Hx_inv[o.point]  # (O, 6, 3)
    rhs = -g_p.copy()
    np.add.at(rhs, o.frame, (Y @ g_x[o.point][..., None])[..., 0])
    try:
        dpose = scipy.linalg.solve(S, rhs.ravel(), assume_a="pos", lower=False, check_finite=False)
    except (np.linalg.LinAlgError, ValueError):
        return None
    dpose = dpose.reshape(T, 6)
    BTd = np.zeros((P, 3))
    np.add.at(BTd, o.point, (np.swapaxes(H_px, 1, 2) @ dpose[o.frame][..., None])[..., 0])
    dX = -np.einsum("pij,pj->pi", Hx_inv, g_x + BTd)
    R_new = roma.rotvec_to_rotmat(torch.as_tensor(dpose[:, :3])).numpy() @ R
    return R_new, t + dpose[:, 3:], X + dX
