"""Fit a morphable model to per-frame 2D landmarks seen by a pinhole camera.

Stages, as in the usual landmark trackers (all frames optimised together, batched):

1. per-frame rigid pose, closed-form initialisation (orthonormalised affine camera), then refined
   with L-BFGS on the neutral face;
2. rigid pose + per-frame expression, the model's fitted pose keys (FLAME: jaw, eyes) and controls
   (open model: ``jaw_open``, ``blink``) + one identity shape shared by all frames;
3. the same plus one shared focal length (optional: it is weakly observable without head rotation).

Loss: robust (pseudo-Huber) reprojection error in units of each frame's face size, divided by an
assumed landmark noise ``sigma``; unit-Gaussian priors on shape/expression (both models' coefficients
are in standard deviations) and scaled L2 priors on pose and controls; first-difference temporal
smoothness on everything per frame. The fitted pose follows INTERNALS.md:
``x_cam = rotation @ x_head + translation``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import roma
import torch
from torch import Tensor

from ..core.geometry import pseudo_huber
from .base import N_MEDIAPIPE, MorphableModel, as_tensor
from .lbs import rotate


@dataclass
class FitConfig:
    """Weights and iteration counts (defaults suit MediaPipe landmarks on 256-1024 px video)."""

    sigma: float = 0.02  # landmark noise, in face sizes (RMS radius of the 2D landmarks)
    robust_scale: float | None = 2.0  # pseudo-Huber knee, in sigmas (None: plain least squares)
    w_shape: float = 1.0  # prior on identity coefficients (std units)
    w_expression: float = 1.0  # prior on expression coefficients (std units)
    w_pose: float = 25.0  # prior on fitted pose axis-angles (radians): std 0.2 rad
    w_controls: float = 1.0  # prior on controls (open model: jaw_open in cm, blink in [0, 1])
    w_smooth: float = 4.0  # first differences of expression / pose / controls
    w_smooth_rigid: float = 10.0  # first differences of rotation (Frobenius) and translation
    w_focal: float = 10.0  # prior on log(focal / initial focal)
    optimize_shape: bool = True
    optimize_focal: bool = False
    rigid_iters: int = 60
    joint_iters: int = 150
    focal_iters: int = 100


@dataclass
class FitResult:
    """Per-frame parameters (T frames) and shared ones.

    Attributes:
        rotation: (T, 3, 3) head -> camera.   translation: (T, 3) metres.
        shape: (S,).   expression: (T, E).
        pose: {key: (T, d)} fitted pose keys.   controls: {name: (T,)} fitted controls.
        semantic: {name: (T,)} effective jaw_open / blink whichever parameter carries them.
        K: (3, 3) intrinsics used (the fitted focal when it was optimised).
        reprojection_error: (T,) mean pixel distance over the frame's valid landmarks (NaN if none).
        history: the loss after each optimisation stage.
    """

    rotation: Tensor
    translation: Tensor
    shape: Tensor
    expression: Tensor
    pose: dict[str, Tensor]
    controls: dict[str, Tensor]
    semantic: dict[str, Tensor]
    K: Tensor
    reprojection_error: Tensor
    history: list[float] = field(default_factory=list)

    @property
    def mean_error(self) -> float:
        """Mean reprojection error in pixels over frames with landmarks."""
        e = self.reprojection_error
        return float(e[torch.isfinite(e)].mean()) if torch.isfinite(e).any() else float("nan")

    def as_numpy(self) -> dict[str, np.ndarray]:
        """Flat dict of numpy arrays (``pose.jaw``, ``controls.blink``, ``semantic.jaw_open``, ...)."""
        out = {
            k: getattr(self, k)
            for k in ("rotation", "translation", "shape", "expression", "K", "reprojection_error")
        }
        for group in ("pose", "controls", "semantic"):
            out.update({f"{group}.{k}": v for k, v in getattr(self, group).items()})
        return {k: v.detach().cpu().numpy() for k, v in out.items()}


def project(points: Tensor, K: Tensor) -> Tensor:
    """Pinhole projection of camera-space points (B, L, 3) with K (3, 3) or (B, 3, 3) -> (B, L, 2)."""
    K = K if K.ndim == 3 else K[None]
    z = points[..., 2:3].clamp_min(1e-6)
    uv = points[..., :2] / z
    return uv * torch.stack([K[:, 0, 0], K[:, 1, 1]], -1)[:, None] + K[:, None, :2, 2]


def _rigid_init(X: Tensor, x: Tensor, w: Tensor, K: Tensor) -> tuple[Tensor, Tensor]:
    """Closed-form per-frame pose from an affine camera.

    Args:
        X: (L, 3) model landmarks. x: (T, L, 2) pixels. w: (T, L) weights. K: (3, 3).
    Returns:
        R: (T, 3, 3), t: (T, 3).
    """
    xn = (x - K[:2, 2]) / torch.stack([K[0, 0], K[1, 1]])  # [T, L, 2] normalised image coords
    ws = w / w.sum(1, keepdim=True).clamp_min(1e-12)
    Xc = X[None] - (ws[..., None] * X[None]).sum(1, keepdim=True)  # [T, L, 3]
    xbar = (ws[..., None] * xn).sum(1)  # [T, 2]
    xc = xn - xbar[:, None]
    A = torch.einsum("tl,tli,tlj->tij", ws, Xc, Xc) + 1e-9 * torch.eye(
        3, dtype=X.dtype, device=X.device
    )  # [T, 3, 3]
    Bm = torch.einsum("tl,tli,tlj->tij", ws, xc, Xc)  # [T, 2, 3]
    M = Bm @ torch.linalg.inv(A)  # [T, 2, 3] affine camera
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    R12 = U @ Vh  # [T, 2, 3] orthonormal rows
    R = torch.cat([R12, torch.linalg.cross(R12[:, 0], R12[:, 1])[:, None]], dim=1)
    s = S.mean(-1).clamp_min(1e-9)  # [T] scale = 1 / depth
    Xbar = (ws[..., None] * X[None]).sum(1)  # [T, 3]
    RX = (R @ Xbar[..., None]).squeeze(-1)
    tz = 1.0 / s - RX[:, 2]
    t = torch.cat([xbar / s[:, None] - RX[:, :2], tz[:, None]], dim=1)
    return R, t


def _bracket(ok: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For each frame: previous and next valid frame indices and the blend weight towards next."""
    T = len(ok)
    t = torch.arange(T, device=ok.device)
    valid = torch.nonzero(ok).reshape(-1)
    pos = torch.searchsorted(valid, t)  # first valid index >= t
    nxt = valid[pos.clamp(max=len(valid) - 1)]
    prv = valid[(pos - 1).clamp(min=0)]
    prv = torch.where(ok, t, torch.where(t < valid[0], nxt, prv))
    nxt = torch.where(ok, t, torch.where(t > valid[-1], prv, nxt))
    span = (nxt - prv).clamp(min=1)
    return prv, nxt, ((t - prv).clamp(min=0) / span).clamp(0, 1)


def _interpolate(x: Tensor, ok: Tensor) -> Tensor:
    """Linear interpolation over time (T, ...) of the frames where ``ok`` is False."""
    prv, nxt, a = _bracket(ok)
    a = a.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return (1 - a) * x.index_select(0, prv) + a * x.index_select(0, nxt)


def _interpolate_rotations(R: Tensor, ok: Tensor) -> Tensor:
    """Rotations (T, 3, 3) of frames where ``ok`` is False, by slerp between valid neighbours."""
    prv, nxt, a = _bracket(ok)
    R0, R1 = R.index_select(0, prv), R.index_select(0, nxt)
    rel = roma.rotmat_to_rotvec(R1 @ R0.transpose(1, 2))  # [T, 3]
    return roma.rotvec_to_rotmat(rel * a.to(R.dtype)[:, None]) @ R0


def _lbfgs(params: list[Tensor], closure, iters: int, history: list[float]) -> None:
    if iters <= 0 or not params:
        return
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=iters,
        history_size=20,
        tolerance_grad=1e-10,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def step():
        opt.zero_grad()
        loss = closure()
        loss.backward()
        return loss

    opt.step(step)
    with torch.no_grad():
        history.append(float(closure()))


MIN_DEPTH_M = 1e-3  # metres: start depths are clamped here before their log is taken
MIN_FACE_SIZE_PX = 1.0  # pixels: floor of a frame's face size (the loss's unit)


def fit_landmarks(
    model: MorphableModel,
    landmarks2d: Tensor | np.ndarray,  # [T, 478, 2]
    K: Tensor | np.ndarray,  # [3, 3]
    valid: Tensor | np.ndarray | None = None,  # [T] or [T, 478] bool
    landmark_weights: Tensor | np.ndarray | None = None,  # [478]
    config: FitConfig | None = None,
) -> FitResult:
    """Fit ``model`` to MediaPipe landmarks in pixels (see the module docstring).

    Args:
        model: any :class:`MorphableModel` with a landmark embedding.
        landmarks2d: (T, 478, 2) pixel positions (MediaPipe order; only ``model.landmark_indices``
            are used).
        K: (3, 3) intrinsics in the same pixel units.
        valid: which frames / points were detected (default: finite points).
        landmark_weights: (478,) relative weight per MediaPipe landmark.
        config: :class:`FitConfig`.
    Returns:
        :class:`FitResult`.
    """
    cfg = config or FitConfig()
    obs = _observe(model, landmarks2d, K, valid, landmark_weights)
    problem = _LandmarkProblem(model, cfg, obs)
    history: list[float] = []
    rigid = [problem.u["omega"], problem.u["ab"], problem.u["log_z"]]
    per_frame = [problem.u["expression"]] + [problem.u[f"pose.{k}"] for k in model.fit_pose_keys]
    per_frame += [problem.u[f"controls.{k}"] for k in model.fit_controls]
    shared = [problem.u["shape"]] if cfg.optimize_shape and model.n_shape else []
    _lbfgs(rigid, problem.loss, cfg.rigid_iters, history)
    _lbfgs(rigid + per_frame + shared, problem.loss, cfg.joint_iters, history)
    if cfg.optimize_focal:
        _lbfgs(rigid + per_frame + shared + [problem.u["log_f"]], problem.loss, cfg.focal_iters, history)
    with torch.no_grad():
        return _result(model, problem, obs, history)


@dataclass
class _Observed:
    """The landmarks the fit sees: ``x`` (T, L, 2) pixels (0 where missing), ``ok`` (T, L) detected,
    ``w`` (T, L) weights, ``frame_ok`` (T,) frames with any landmark, ``size`` (T,) each frame's face
    size in pixels (interpolated where missing), ``K0`` (3, 3)."""

    x: Tensor
    ok: Tensor
    w: Tensor
    frame_ok: Tensor
    size: Tensor
    K0: Tensor


def _observe(model: MorphableModel, landmarks2d, K, valid, landmark_weights) -> _Observed:
    """Check and select the model's landmarks; raises ValueError on bad shapes, K or no landmarks."""
    dt, dev = model.dtype, model.device
    lm = as_tensor(landmarks2d, dtype=dt, device=dev)
    if lm.ndim != 3 or lm.shape[1:] != (N_MEDIAPIPE, 2):
        raise ValueError(f"landmarks2d must have shape (T, 478, 2), got {tuple(lm.shape)}")
    K0 = as_tensor(K, dtype=dt, device=dev)
    if K0.shape != (3, 3) or not bool(torch.isfinite(K0).all()) or K0[0, 0] <= 0 or K0[1, 1] <= 0:
        raise ValueError(f"K must be a (3, 3) intrinsics matrix with positive focal, got {K0.tolist()}")
    idx = model.landmark_indices.to(dev)
    x = lm[:, idx]  # [T, L, 2]
    ok = torch.isfinite(x).all(-1)  # [T, L]
    if valid is not None:
        v = as_tensor(valid, dtype=torch.bool, device=dev)
        ok &= v[:, None] if v.ndim == 1 else v[:, idx]
    w = ok.to(dt)
    if landmark_weights is not None:
        w = w * as_tensor(landmark_weights, dtype=dt, device=dev)[idx]
    x = torch.where(ok[..., None], x, torch.zeros_like(x))
    frame_ok = w.sum(1) > 0
    if not bool(frame_ok.any()):
        raise ValueError("no frame has any valid landmark")
    n_pts = w.sum(1).clamp_min(1)  # [T]
    centre = (w[..., None] * x).sum(1) / n_pts[:, None]
    size = ((w * (x - centre[:, None]).pow(2).sum(-1)).sum(1) / n_pts).sqrt()  # [T] face size, px
    size = _interpolate(size, frame_ok).clamp_min(MIN_FACE_SIZE_PX)
    return _Observed(x, ok, w, frame_ok, size, K0)


class _LandmarkProblem:
    """The fit's variables ``u`` (preconditioned: each parameter divided by a scale ``sc``), the
    parameters they stand for (:meth:`params`) and the loss of the module docstring (:meth:`loss`)."""

    def __init__(self, model: MorphableModel, cfg: FitConfig, obs: _Observed) -> None:
        dt, dev = model.dtype, model.device
        T = obs.x.shape[0]
        self.model, self.cfg, self.obs, self.T = model, cfg, obs, T
        with torch.no_grad():
            X0, sens = _sensitivities(model)
            R0, t0 = _rigid_init(X0, obs.x, obs.w, obs.K0)
            self.R0, t0 = _interpolate_rotations(R0, obs.frame_ok), _interpolate(t0, obs.frame_ok)
        self.radius = float((X0 - X0.mean(0)).pow(2).sum(1).mean().sqrt())  # face size in model units
        L_ref = float(obs.w.sum(1).max())
        zeros = functools.partial(torch.zeros, dtype=dt, device=dev)

        # Jacobi preconditioning: each optimised variable is the parameter divided by a scale that
        # makes the loss's curvature about equal for all of them (else L-BFGS crawls: a radian of
        # rotation moves landmarks far more than a unit of an expression coefficient).
        def scale(group: str, weight: float, shared: bool = False) -> Tensor:
            h = sens[group] + weight * cfg.sigma**2  # curvature relative to 1 / sigma^2
            return (L_ref / (h * (T if shared else 1))).sqrt()

        tz = t0[:, 2].clamp_min(MIN_DEPTH_M)
        self.sc = {
            "ab": (self.radius / tz)[:, None],
            "shape": scale("shape", cfg.w_shape, shared=True),
            "expression": scale("expression", cfg.w_expression),
        }
        self.sc.update({f"pose.{k}": scale(f"pose.{k}", cfg.w_pose) for k in model.fit_pose_keys})
        self.sc.update({f"controls.{k}": scale(f"controls.{k}", cfg.w_controls) for k in model.fit_controls})
        self.ab0, self.log_z0 = t0[:, :2] / tz[:, None], tz.log()
        u = {
            "omega": zeros(T, 3),
            "ab": zeros(T, 2),
            "log_z": zeros(T),
            "log_f": zeros(()),
            "shape": zeros(model.n_shape),
            "expression": zeros(T, model.n_expression),
        }
        u.update({f"pose.{k}": zeros(T, model.pose_dims[k]) for k in model.fit_pose_keys})
        u.update({f"controls.{k}": zeros(T) for k in model.fit_controls})
        self.u = {k: v.requires_grad_(True) for k, v in u.items()}
        self.delta = None if cfg.robust_scale is None else cfg.robust_scale * cfg.sigma
        self.pair_ok = (obs.frame_ok[1:] & obs.frame_ok[:-1]).to(dt)  # smoothness between observed frames

    def params(self) -> dict:
        u, sc, model = self.u, self.sc, self.model
        out = {
            "shape": u["shape"] * sc["shape"],
            "expression": u["expression"] * sc["expression"],
            "pose": {k: u[f"pose.{k}"] * sc[f"pose.{k}"] for k in model.fit_pose_keys},
            "controls": {k: u[f"controls.{k}"] * sc[f"controls.{k}"] for k in model.fit_controls},
        }
        out["R"] = roma.rotvec_to_rotmat(u["omega"]) @ self.R0
        z = (self.log_z0 + u["log_z"]).exp()
        out["t"] = torch.cat([(self.ab0 + u["ab"] * sc["ab"]) * z[:, None], z[:, None]], dim=1)
        K0 = self.obs.K0
        Kf = K0.clone()
        Kf[0, 0], Kf[1, 1] = K0[0, 0] * u["log_f"].exp(), K0[1, 1] * u["log_f"].exp()
        out["K"] = Kf
        return out

    def predict(self, p: dict) -> Tensor:
        Xh = self.model.landmark_positions(
            p["shape"].expand(self.T, -1), p["expression"], p["pose"], None, p["controls"]
        )  # [T, L, 3]
        return project(rotate(Xh, p["R"]) + p["t"][:, None], p["K"])

    def _diff2(self, v: Tensor) -> Tensor:
        if v.shape[0] < 2:
            return v.new_zeros(())
        return (self.pair_ok * (v[1:] - v[:-1]).pow(2).reshape(v.shape[0] - 1, -1).sum(1)).sum()

    def loss(self) -> Tensor:
        cfg, obs, T, diff2 = self.cfg, self.obs, self.T, self._diff2
        p = self.params()
        r2 = ((self.predict(p) - obs.x) / obs.size[:, None, None]).pow(2).sum(-1)  # [T, L] face sizes^2
        data = (obs.w * pseudo_huber(r2, self.delta)).sum() / cfg.sigma**2
        prior = T * (cfg.w_shape * p["shape"].pow(2).sum() + cfg.w_focal * self.u["log_f"].pow(2))
        prior = prior + cfg.w_expression * p["expression"].pow(2).sum()
        smooth = cfg.w_smooth * diff2(p["expression"])
        for v in p["pose"].values():
            prior = prior + cfg.w_pose * v.pow(2).sum()
            smooth = smooth + cfg.w_smooth * diff2(v)
        for v in p["controls"].values():
            prior = prior + cfg.w_controls * v.pow(2).sum()
            smooth = smooth + cfg.w_smooth * diff2(v)
        smooth = smooth + cfg.w_smooth_rigid * (diff2(p["R"].reshape(T, 9)) + diff2(p["t"] / self.radius))
        return (data + prior + smooth) / T


def _result(
    model: MorphableModel, problem: _LandmarkProblem, obs: _Observed, history: list[float]
) -> FitResult:
    """The fitted parameters, interpolated over frames without landmarks, and the per-frame error."""
    p = problem.params()
    frame_ok = obs.frame_ok
    if not bool(frame_ok.all()):  # frames without landmarks: interpolate their neighbours
        p["R"] = _interpolate_rotations(p["R"], frame_ok)
        for key in ("t", "expression"):
            p[key] = _interpolate(p[key], frame_ok)
        for group in ("pose", "controls"):
            p[group] = {k: _interpolate(v, frame_ok) for k, v in p[group].items()}
    err = (problem.predict(p) - obs.x).norm(dim=-1)  # [T, L] pixels
    okf = obs.ok.to(model.dtype)
    per = (err * okf).sum(1) / okf.sum(1).clamp_min(1)
    per = torch.where(okf.sum(1) > 0, per, torch.full_like(per, float("nan")))
    if not all(bool(torch.isfinite(v).all()) for v in (p["R"], p["t"], p["expression"], p["shape"])):
        raise FloatingPointError("landmark fit diverged (non-finite parameters); check K and landmarks")
    semantic = model.semantic_values(p["expression"], p["pose"], p["controls"])
    return FitResult(
        p["R"], p["t"], p["shape"], p["expression"], p["pose"], p["controls"], semantic, p["K"], per, history
    )


def _sensitivities(model: MorphableModel, eps: float = 1e-3) -> tuple[Tensor, dict[str, Tensor]]:
    """Neutral landmarks (L, 3) and, per fitted parameter coordinate, sum_l |dX_l/dp|^2 / radius^2."""
    groups = [("shape", model.n_shape), ("expression", model.n_expression)]
    groups += [(f"pose.{k}", model.pose_dims[k]) for k in model.fit_pose_keys]
    groups += [(f"controls.{k}", 1) for k in model.fit_controls]
    N = sum(d for _, d in groups)
    eye = eps * torch.eye(N, dtype=model.dtype, device=model.device)
    eye = torch.cat([torch.zeros(1, N, dtype=model.dtype, device=model.device), eye])  # row 0: neutral
    cols, o = {}, 0
    for g, d in groups:
        cols[g] = eye[:, o : o + d]
        o += d
    X = model.landmark_positions(
        cols["shape"],
        cols["expression"],
        {k: cols[f"pose.{k}"] for k in model.fit_pose_keys},
        None,
        {k: cols[f"controls.{k}"][:, 0] for k in model.fit_controls},
    )  # [N + 1, L, 3]
    X0 = X[0]
    radius2 = (X0 - X0.mean(0)).pow(2).sum(1).mean()
    D = ((X[1:] - X0) / eps).pow(2).sum((1, 2)) / radius2  # [N]
    out, o = {}, 0
    for g, d in groups:
        out[g] = D[o : o + d].reshape(d) if not g.startswith("controls.") else D[o]
        o += d
    return X0, out
