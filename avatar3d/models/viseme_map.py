"""What each viseme looks like on this face: a per-subject linear map from the speech front end's
per-frame vector (15 viseme weights, voice activity, loudness) to the capture's expression coefficients.

A 5-7 s clip shows each viseme a handful of times (some never), so the map is ridge-regressed towards
a *generic prior built from the subject's own tracking*:

* two directions in expression space, regressed on the training frames: the expression as an affine
  function of the tracked inner-lip gap ("opening") and of the tracked mouth width ("spread /
  rounding"), both measured on the pose-free landmarks;
* per viseme, a generic (opening, width) target in the subject's own range (:data:`VISEME_SHAPES`:
  sil and PP closed, aa wide open, oh / ou rounded and narrow, E / ih spread, ...), turned into an
  expression through those two directions.

The fit minimises ``|X M - Y|^2 + sum_v lam |M_v - P_v|^2``: a viseme's data weight is its soft frame
count ``sum_t X_tv``, so the prior's share ``lam / (lam + n_v)`` shrinks as the viseme is seen more,
and a viseme never seen keeps its prior; silence keeps its closed mouth much more firmly
(:data:`PRIOR_WEIGHT`).

Least squares on soft posteriors shrinks the amplitude (the fitted lip gap varies less than the real
one), so the map's output is then scaled about its own mean over the training frames until the fitted
lip gap's std equals the subject's (the gain is reported): the mean opening stays the subject's.
(Scaling about the closed shape instead, as before, opened the mouth by 1.5-6 mm on average and
cost LMD; docs/results/mouth.md.) The scaled map can overshoot below closed lips, so its output is
floored per frame at the subject's closed lip gap (5th percentile of the training frames) along the
expression direction that opens the lips: silence and p/b/m close the mouth, never cross the lips.
The mouth width (rounding for oh / ou, spreading for E / ih) is shrunk the same way and is scaled
separately, along a direction that leaves the opening alone, up to :data:`MAX_WIDTH_GAIN`.
A lag (frames; negative = the lips lead the sound) is chosen among a few by the fit's residual.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..core.topology import INNER_LIP_PAIRS, MOUTH_CORNERS

VISEME_NAMES = ("sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh", "ou")
N_VISEME_FEATURES = len(VISEME_NAMES) + 2  # + voice activity + loudness

# generic mouth shape per viseme: (opening in [0, 1] from the subject's closed to wide-open lip gap,
# width in [-1, 1] from the subject's most rounded to most spread mouth)
VISEME_SHAPES: dict[str, tuple[float, float]] = {
    "sil": (0.0, 0.0),
    "PP": (0.0, 0.0),
    "FF": (0.12, 0.1),
    "TH": (0.3, 0.1),
    "DD": (0.35, 0.15),
    "kk": (0.4, 0.05),
    "CH": (0.3, -0.5),
    "SS": (0.2, 0.4),
    "nn": (0.3, 0.1),
    "RR": (0.3, -0.5),
    "aa": (1.0, 0.2),
    "E": (0.6, 0.6),
    "ih": (0.4, 0.6),
    "oh": (0.7, -0.8),
    "ou": (0.35, -1.0),
}


# visemes whose generic shape outweighs the subject's data by this factor (x ``prior_strength``):
# silence closes the mouth, even for a speaker whose lips rest parted in the pauses of the training
# clip (else another voice's pauses open the mouth and its sync with the sound is lost; docs/results/mouth.md)
PRIOR_WEIGHT: dict[str, float] = {"sil": 25.0}


def lip_gap(landmarks3d: np.ndarray) -> np.ndarray:
    """(..., 478, 3) pose-free landmarks -> (...,) mean vertical inner-lip gap (metres, y down)."""
    p = np.array(INNER_LIP_PAIRS)
    return (landmarks3d[..., p[:, 1], 1] - landmarks3d[..., p[:, 0], 1]).mean(-1)


def mouth_width(landmarks3d: np.ndarray) -> np.ndarray:
    """(..., 478, 3) pose-free landmarks -> (...,) distance between the mouth corners (metres)."""
    a, b = MOUTH_CORNERS
    return np.linalg.norm(landmarks3d[..., a, :] - landmarks3d[..., b, :], axis=-1)


@dataclass
class VisemeFit:
    """A fitted map: ``expression (T, E) = features (T, 17) @ matrix (17, E)``, read ``lag`` frames
    away (``expression[t]`` from ``features[t + lag]``)."""

    matrix: np.ndarray  # (17, E)
    lag: int = 0
    gain: float = 1.0
    stats: dict = field(default_factory=dict)
    # (E + 1,): the expression direction d that opens the lips (lip gap ≈ g0 + e @ d) and the closed
    # mouth's level f on it; an output with e @ d < f is lifted along d to f. Zeros: no floor.
    floor: np.ndarray | None = None
    width_gain: float = 1.0

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(T, 17) -> (T, E), with the lag applied (edge-clamped) and the closed-lip floor."""
        T = len(features)
        j = np.clip(np.arange(T) + self.lag, 0, max(T - 1, 0))
        e = np.asarray(features, np.float64)[j] @ self.matrix
        return e if self.floor is None else apply_lip_floor(e, self.floor)


def apply_lip_floor(expression, floor):
    """Lift expressions (..., E) whose lip opening ``e @ d`` is below the closed level ``f`` along
    ``d`` to ``f``; ``floor`` (E + 1,) = [d, f] (zeros: unchanged). numpy arrays or torch tensors."""
    d, f = floor[:-1], floor[-1]
    dd = (d * d).sum()
    if float(dd) <= 0.0:
        return expression
    lift = f - expression @ d
    lift = lift.clip(min=0) if hasattr(lift, "clip") else max(lift, 0)
    return expression + lift[..., None] * d / dd


def _affine(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Least-squares (1 + D, E) coefficients of y (T, E) on [1, x (T, D)] (tiny ridge for stability)."""
    A = np.concatenate([np.ones((len(x), 1)), x], 1)
    reg = 1e-8 * np.eye(A.shape[1]) * max(1.0, float((A * A).sum()))
    reg[0, 0] = 0.0
    return np.linalg.solve(A.T @ A + reg, A.T @ y)


def prior_targets(expression: np.ndarray, gap: np.ndarray, width: np.ndarray) -> tuple[np.ndarray, dict]:
    """Per-viseme generic expression targets (15, E) from the subject's tracked frames.

    expression (T, E), gap (T,), width (T,) of the same (training) frames. Opening 0 / 1 is the
    subject's 5th / 95th percentile lip gap; width -1 / +1 their 5th / 95th percentile mouth width.
    """
    g_lo, g_hi = np.percentile(gap, [5, 95])
    w_lo, w_mid, w_hi = np.percentile(width, [5, 50, 95])
    span_g = max(float(g_hi - g_lo), 1e-6)
    gz = (gap - g_lo) / span_g
    wz = (width - w_mid) / max(float(w_hi - w_lo) / 2, 1e-6)
    coef = _affine(expression, np.stack([gz, wz], 1))  # (3, E): mean, opening, width directions
    P = np.stack([coef[0] + o * coef[1] + w * coef[2] for o, w in (VISEME_SHAPES[v] for v in VISEME_NAMES)])
    info = {"gap_p5": float(g_lo), "gap_p95": float(g_hi), "width_p5": float(w_lo), "width_p95": float(w_hi)}
    return P, {**info, "closed": coef[0], "opening": coef[1], "width": coef[2]}


def ridge_towards(X: np.ndarray, Y: np.ndarray, P: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """argmin_M |X M - Y|^2 + sum_k lam_k |M_k - P_k|^2 -> (K, E). X (T, K), Y (T, E), P (K, E), lam (K,)."""
    A = X.T @ X + np.diag(lam)
    return np.linalg.solve(A, X.T @ Y + lam[:, None] * P)


def fit_viseme_map(
    features: np.ndarray,
    expression: np.ndarray,
    landmarks3d: np.ndarray,
    prior_strength: float = 8.0,
    extra_strength: float = 20.0,
    lags: tuple[int, ...] = (-2, -1, 0, 1),
    calibrate: bool = True,
    max_gain: float = 2.5,
    valid: np.ndarray | None = None,
) -> VisemeFit:
    """Fit the subject's viseme -> expression map on training frames only.

    Args:
        features: (T, 17) front-end vectors [15 viseme weights (rows sum to 1), voice, loudness].
        expression: (T, E) tracked expression coefficients of the same frames.
        landmarks3d: (T, 478, 3) tracked pose-free landmarks (for the lip gap and mouth width).
        prior_strength: frames' worth of weight of each viseme's prior target.
        extra_strength: ridge weight pulling the voice and loudness columns to zero.
        lags: candidate lags (frames); the one with the lowest fitted residual is kept.
        calibrate: scale the map about its mean output so the fitted lip gap's std matches the real
            one, and floor it at closed lips.
        valid: (T,) bool, the frames with tracking (others are skipped; the lag still counts them).
    """
    X = np.nan_to_num(np.asarray(features, np.float64))
    Y = np.asarray(expression, np.float64)
    L = np.asarray(landmarks3d, np.float64)
    if X.ndim != 2 or X.shape[1] != N_VISEME_FEATURES or len(X) != len(Y) or len(L) != len(Y):
        raise ValueError(
            f"features (T, {N_VISEME_FEATURES}), expression (T, E) and landmarks (T, 478, 3) must agree"
        )
    T = len(X)
    ok = np.ones(T, bool) if valid is None else np.asarray(valid, bool).copy()
    ok &= np.isfinite(Y).all(1) & np.isfinite(L).all((1, 2))
    if ok.sum() < 4:
        raise ValueError("fewer than 4 tracked frames to fit the viseme map on")
    Y = np.nan_to_num(Y)
    gap, width = lip_gap(np.nan_to_num(L)), mouth_width(np.nan_to_num(L))
    Xall = X
    Y, gap, width = Y[ok], gap[ok], width[ok]
    P15, info = prior_targets(Y, gap, width)
    E = Y.shape[1]
    P = np.concatenate([P15, np.zeros((2, E))])
    lam = np.concatenate(
        [
            prior_strength * np.array([PRIOR_WEIGHT.get(v, 1.0) for v in VISEME_NAMES]),
            np.full(2, extra_strength),
        ]
    )
    err, lag, M = _best_lag(Xall, Y, P, lam, lags, ok)
    fit = VisemeFit(M, lag)
    # the fitted lip gap, linear in the expression: gap ≈ g0 + expression @ dg (regressed on the frames)
    a = _affine(gap[:, None], Y)
    g0, dg = float(a[0, 0]), a[1:, 0]  # (E,)
    pred = fit.predict(Xall)[ok]
    std_real, std_fit = float(gap.std()), float((pred @ dg).std())
    gain = 1.0
    if calibrate and std_fit > 1e-9:
        floor = np.append(dg, info["gap_p5"] - g0)  # closed lips: the training frames' 5th percentile
        gain = float(np.clip(std_real / std_fit, 1.0, max_gain))
        fit = _calibrated(fit, Xall, ok, pred.mean(0), floor, std_real, gain, max_gain)
        gain = fit.gain
        fit = _widened(fit, Xall, ok, dg, _affine(width[:, None], Y)[1:, 0], float(width.std()))
    counts = Xall[ok, :15].sum(0)
    final = fit.predict(Xall)[ok]
    fit.stats = {
        "lag": int(lag),
        "gain": round(gain, 4),
        "width_gain": round(fit.width_gain, 4),
        "fit_mse": round(err, 5),
        "expression_var": round(float(Y.var(0).mean()), 5),
        "lip_gap_std_real": std_real,
        "lip_gap_std_fit": float((final @ dg).std()),
        "lip_gap_mean_real": float(gap.mean()),
        "lip_gap_mean_fit": g0 + float((final @ dg).mean()),
        "frames_per_viseme": {v: round(float(c), 1) for v, c in zip(VISEME_NAMES, counts)},
        **{k: info[k] for k in ("gap_p5", "gap_p95")},
    }
    return fit


def _calibrated(
    fit: VisemeFit,
    X: np.ndarray,
    ok: np.ndarray,
    mean: np.ndarray,
    floor: np.ndarray,
    std_real: float,
    gain: float,
    max_gain: float,
) -> VisemeFit:
    """``fit`` scaled about its mean output ``mean`` (E,) and floored at closed lips, with the gain
    that makes the floored output's lip gap vary as the real one (``std_real``) over frames ``ok``.

    The 15 viseme rows sum to 1, so scaling every viseme row about ``mean`` (and the voice and loudness
    rows about 0) scales the output about ``mean``. The floor lifts the lowest frames, which lowers
    the std a little: the gain is refined by a few fixed-point steps."""
    d = floor[:-1]
    out = fit
    for _ in range(4):
        M = fit.matrix.copy()
        M[:15] = mean + gain * (M[:15] - mean)
        M[15:] = gain * M[15:]
        out = VisemeFit(M, fit.lag, gain, floor=floor)
        std = float((out.predict(X)[ok] @ d).std())
        if std <= 1e-12 or abs(std / std_real - 1.0) < 0.01:
            break
        gain = float(np.clip(gain * std_real / std, 1.0, max_gain))
    return out


MAX_WIDTH_GAIN = 1.5  # the rounding / spreading is less predictable from sound than the opening


def _widened(fit: VisemeFit, X: np.ndarray, ok: np.ndarray, dg: np.ndarray, dw: np.ndarray, std_real: float):
    """``fit`` with its mouth-width (rounding / spreading) motion scaled about its mean until the
    width's std over frames ``ok`` equals the real one (``std_real``; gain in [1, MAX_WIDTH_GAIN]),
    leaving the lip opening as it is: the change is along the direction u with u·dg = 0, u·dw = 1
    (dg, dw (E,): the expression's lip-gap and width read-outs)."""
    pred = fit.predict(X)[ok]
    std = float((pred @ dw).std())
    if std <= 1e-12:
        return fit
    g = float(np.clip(std_real / std, 1.0, MAX_WIDTH_GAIN))
    D = np.stack([dg, dw], 1)
    u = D @ np.linalg.lstsq(D.T @ D, np.array([0.0, 1.0]), rcond=None)[0]
    M = fit.matrix.copy()
    centre = np.zeros_like(M)
    centre[:15] = pred.mean(0)  # the viseme rows sum to 1: move them about the mean output
    M = M + (g - 1.0) * ((M - centre) @ dw)[:, None] * u[None]
    return VisemeFit(M, fit.lag, fit.gain, floor=fit.floor, width_gain=g)


def _best_lag(
    X: np.ndarray, Y: np.ndarray, P: np.ndarray, lam: np.ndarray, lags: tuple[int, ...], ok: np.ndarray
) -> tuple[float, int, np.ndarray]:
    """(mean squared residual, lag, map (K, E)) of the lag whose ridge fit has the lowest residual.
    X (T, K) all frames (shifted by the lag, clamped at the clip's ends), Y (T_ok, E) the valid
    frames' expression, ``ok`` (T,) which frames are valid."""
    T = len(X)
    best = None
    for lag in lags:
        Xj = X[np.clip(np.arange(T) + lag, 0, T - 1)][ok]
        M = ridge_towards(Xj, Y, P, lam)
        err = float(((Xj @ M - Y) ** 2).mean())
        if best is None or err < best[0]:
            best = (err, lag, M)
    return best


__all__ = [
    "N_VISEME_FEATURES",
    "MAX_WIDTH_GAIN",
    "PRIOR_WEIGHT",
    "VISEME_NAMES",
    "VISEME_SHAPES",
    "VisemeFit",
    "apply_lip_floor",
    "fit_viseme_map",
    "lip_gap",
    "mouth_width",
    "prior_targets",
    "ridge_towards",
]
