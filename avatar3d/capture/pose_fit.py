"""Bundle adjustment of the rigid head: every frame's pose and offsets of the rigid shape, focal fixed.

:func:`bundle_adjust` minimises one objective (see its docstring) with one of two solvers:

- without smoothness and on up to ``LM_MAX_FRAMES`` frames (the focal search), Levenberg-Marquardt
  with the points eliminated (:func:`.bundle.lm_bundle_adjust`), to convergence;
- with smoothness, over all frames of a clip, L-BFGS from a start that already fits.

Why a converged solver for the focal search, and why the tracks' points keep the canonical relief:
docs/design/feature-tracks.md and docs/design/focal-and-depth.md.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import roma
import torch

from ..core.geometry import pseudo_huber
from .bundle import Observations, PointPrior, lm_bundle_adjust
from .feature_tracks import FeatureTracks
from .resection import MIN_DEPTH_M, init_track_points

REF_SIZE = 512.0  # pixels: errors and robust scales are expressed at this longest-side size
M_TO_MM = 1000.0  # priors and smoothness are written in millimetres
SHAPE_WEIGHT = 0.01  # prior on rigid-shape offsets (per mm², per point)
DEPTH_WEIGHT = 1.0  # the same along the head's depth axis in the focal search: the relief stays MediaPipe's
ACC_KNEE_DEG = 1.0  # degrees per frame²: rotation accelerations above this knee are smoothed less
ACC_KNEE_MM = 2.0  # mm per frame²: the same for translation (real head motion can change abruptly)
TRACK_DEPTH_WEIGHT = 0.2  # per mm², on face tracks' depth off the canonical relief
TRACK_DEPTH_KNEE_MM = 5.0  # ... growing linearly beyond this offset
LM_ITERATIONS = 15  # Levenberg-Marquardt iterations of each fit in the focal search
LM_MAX_FRAMES = 400  # its reduced system is dense, (6 frames)²: longer fits use L-BFGS
LM_FIXED_SHAPE_WEIGHT = 1e6  # per mm²: the LM path's stand-in for a shape held fixed
MIN_TZ_M = 1e-3  # metres: floor of the start depths the L-BFGS path takes the log of
LBFGS_HISTORY = 20
LBFGS_TOLERANCE_GRAD = 1e-9
LBFGS_TOLERANCE_CHANGE = 1e-12


@dataclass(frozen=True)
class BundleSettings:
    """Weights of :func:`bundle_adjust`'s objective (pixels at ``REF_SIZE``, millimetres).

    shape_weight: prior on the rigid shape's offsets across the face (None: the shape stays fixed);
    depth_weight: the same along the head's depth axis (None: ``shape_weight``);
    smooth_rotation / smooth_translation: weights of the squared accelerations (degrees, mm);
    robust_px: pseudo-Huber scale of the landmarks; iterations: L-BFGS iterations;
    track_weight / track_robust_px: weight and pseudo-Huber scale of the feature tracks.
    """

    shape_weight: float | None = SHAPE_WEIGHT
    depth_weight: float | None = None
    smooth_rotation: float = 0.0
    smooth_translation: float = 0.0
    robust_px: float = 1.5
    iterations: int = 60
    track_weight: float = 1.0
    track_robust_px: float = 1.0


@dataclass
class BAResult:
    rotation: np.ndarray  # (T, 3, 3)
    translation: np.ndarray  # (T, 3)
    offsets: np.ndarray  # (L, 3) metres added to the rigid canonical points
    cost: float  # final objective


@contextmanager
def torch_threads(n: int = 1):
    """Small optimisations run far faster single-threaded (no intra-op scheduling overhead)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def bundle_adjust(
    canon: np.ndarray,
    obs2d: np.ndarray,
    valid: np.ndarray,
    R0: np.ndarray,
    t0: np.ndarray,
    focal: float,
    width: int,
    height: int,
    settings: BundleSettings | None = None,
    *,
    breaks: np.ndarray | None = None,
    tracks: FeatureTracks | None = None,
) -> BAResult:
    """Joint fit of the frames' poses and offsets of the rigid shape, the focal fixed.

    Objective (``settings``: :class:`BundleSettings`): mean pseudo-Huber rigid-landmark reprojection
    error (pixels at 512 px) over valid frames + ``smooth_rotation`` × mean squared rotation
    acceleration (degrees, rotation vectors about a reference) + ``smooth_translation`` × mean squared
    translation acceleration (mm) (both squares soft above ``ACC_KNEE_DEG`` / ``ACC_KNEE_MM``, so that
    a real abrupt turn is not flattened) + the mean squared shape offset (mm), weighted
    ``shape_weight`` across the face (x, y) and ``depth_weight`` along the head's depth axis.

    With ``tracks`` (optical-flow points on the rigid head, :mod:`.feature_tracks`), one free
    head-space point per track joins the fit, and ``track_weight`` × the mean pseudo-Huber
    reprojection error of its observations (scale ``track_robust_px`` at 512 px) joins the objective.
    The landmarks still fix the head frame; the tracks, which follow the skull's own texture, carry
    most of the frame-to-frame motion.

    Without smoothness and on up to ``LM_MAX_FRAMES`` frames, Levenberg-Marquardt (at most
    ``LM_ITERATIONS``) minimises it to convergence, which comparing its cost across focals needs.
    With smoothness, L-BFGS (``iterations``) refines a start that already fits: each frame's
    translation is parameterised by the image position of the head origin and log(t_z / f).

    canon: (L, 3) rigid canonical points; obs2d: (T, L, 2); valid: (T,); R0: (T, 3, 3); t0: (T, 3);
    breaks: (T,) bool, True at t when no smoothness should link frame t-1 to t (cuts).
    """
    s = settings or BundleSettings()
    if s.smooth_rotation == 0 and s.smooth_translation == 0 and int(valid.sum()) <= LM_MAX_FRAMES:
        use = tracks if s.track_weight > 0 else None
        return _bundle_adjust_lm(canon, obs2d, valid, R0, t0, focal, width, height, s, use)
    problem = _LbfgsProblem.build(canon, obs2d, valid, R0, t0, focal, width, height, s, breaks, tracks)
    with torch_threads(1):
        if s.iterations > 0:
            _minimise(problem.params, problem.objective, s.iterations)
        with torch.no_grad():
            cost = float(problem.objective())
            R = problem.rotation().numpy()
            return BAResult(R, problem.translation().numpy().copy(), problem.dC.numpy().copy(), cost)


def _minimise(params: list[torch.Tensor], objective, iterations: int) -> None:
    """L-BFGS (strong Wolfe line search) on ``params`` for at most ``iterations`` iterations."""
    opt = torch.optim.LBFGS(
        params,
        lr=1,
        max_iter=iterations,
        history_size=LBFGS_HISTORY,
        line_search_fn="strong_wolfe",
        tolerance_grad=LBFGS_TOLERANCE_GRAD,
        tolerance_change=LBFGS_TOLERANCE_CHANGE,
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    opt.step(closure)


@dataclass
class _TrackTerms:
    """The feature tracks in the L-BFGS objective: free points ``X`` (n, 3), their observations, and
    the face tracks' canonical depths ``z_surf`` (n,) with ``w_face`` (n,) 1 on the face."""

    X: torch.Tensor
    z_surf: torch.Tensor
    w_face: torch.Tensor
    n_face: float
    frame: torch.Tensor
    track: torch.Tensor
    uv: torch.Tensor


@dataclass
class _LbfgsProblem:
    """:func:`bundle_adjust`'s objective over L-BFGS variables: rotation vectors ``rv`` about
    ``R_ref``, the head origin's image position ``ab`` (units of the image size), ``q`` = log(t_z / f),
    the shape offsets ``dC`` and the tracks' points."""

    rv: torch.Tensor
    R_ref: torch.Tensor
    ab: torch.Tensor
    q: torch.Tensor
    C: torch.Tensor
    dC: torch.Tensor
    w_shape: torch.Tensor
    U: torch.Tensor
    w: torch.Tensor
    n_valid: float
    c: torch.Tensor
    acc_w: torch.Tensor
    acc_n: float
    tracks: _TrackTerms | None
    focal: float
    size: float
    px: float
    s: BundleSettings

    @classmethod
    def build(cls, canon, obs2d, valid, R0, t0, focal, width, height, s: BundleSettings, breaks, tracks):
        T = obs2d.shape[0]
        dt = torch.float64
        size = float(max(width, height))
        vidx = np.flatnonzero(valid)
        R_ref = torch.as_tensor(R0[vidx[len(vidx) // 2]], dtype=dt)
        rv = roma.rotmat_to_rotvec(torch.as_tensor(R0, dtype=dt) @ R_ref.T).requires_grad_(True)
        t0 = np.asarray(t0, np.float64)
        tz0 = np.maximum(t0[:, 2], MIN_TZ_M)
        ab = torch.as_tensor(t0[:, :2] / tz0[:, None] * focal / size, dtype=dt).requires_grad_(True)
        q = torch.as_tensor(np.log(tz0 / focal), dtype=dt).requires_grad_(True)
        C = torch.as_tensor(canon, dtype=dt)
        w_xy = float(s.shape_weight or 0.0)
        w_z = w_xy if s.depth_weight is None else float(s.depth_weight)
        # acceleration term k couples frames k, k+1, k+2: drop it when a break lies at k+1 or k+2
        brk = np.zeros(T, bool) if breaks is None else np.asarray(breaks, bool)
        acc_w = torch.as_tensor(~(brk[1:-1] | brk[2:]) if T >= 3 else np.zeros(0), dtype=dt)
        use_tracks = tracks is not None and len(tracks) > 0 and s.track_weight > 0
        return cls(
            rv=rv,
            R_ref=R_ref,
            ab=ab,
            q=q,
            C=C,
            dC=torch.zeros_like(C, requires_grad=s.shape_weight is not None),
            w_shape=torch.tensor([w_xy, w_xy, w_z], dtype=dt),
            U=torch.as_tensor(np.nan_to_num(obs2d), dtype=dt),
            w=torch.as_tensor(valid, dtype=dt),
            n_valid=max(float(valid.sum()), 1.0),
            c=torch.tensor([width / 2, height / 2], dtype=dt),
            acc_w=acc_w,
            acc_n=max(float(acc_w.sum()), 1.0),
            tracks=_track_terms(tracks, canon, R0, t0, focal, width, height) if use_tracks else None,
            focal=focal,
            size=size,
            px=REF_SIZE / size,
            s=s,
        )

    @property
    def params(self) -> list[torch.Tensor]:
        out = [self.rv, self.ab, self.q] + ([self.dC] if self.s.shape_weight is not None else [])
        return out + ([self.tracks.X] if self.tracks is not None else [])

    def rotation(self) -> torch.Tensor:
        return roma.rotvec_to_rotmat(self.rv) @ self.R_ref  # (T, 3, 3)

    def translation(self) -> torch.Tensor:
        tz = self.focal * torch.exp(self.q)  # (T,)
        return torch.cat([self.ab * (self.size * torch.exp(self.q))[:, None], tz[:, None]], -1)

    def _project(self, Xc: torch.Tensor) -> torch.Tensor:
        return Xc[..., :2] / Xc[..., 2:3].clamp_min(MIN_DEPTH_M) * self.focal + self.c

    def objective(self) -> torch.Tensor:
        s = self.s
        R = self.rotation()
        tr = self.translation()
        Xc = torch.einsum("tij,nj->tni", R, self.C + self.dC) + tr[:, None, :]  # (T, L, 3)
        e2 = ((self._project(Xc) - self.U) * self.px).pow(2).sum(-1)  # (T, L) squared error at 512 px
        rho = s.robust_px**2 * (torch.sqrt(1 + e2 / s.robust_px**2) - 1)
        loss = (rho.mean(-1) * self.w).sum() / self.n_valid
        if self.tracks is not None:
            loss = self._track_loss(loss, R, tr)
        loss = self._smoothness(loss, tr)
        if s.shape_weight is not None:
            loss = loss + ((M_TO_MM * self.dC).pow(2) * self.w_shape).sum(-1).mean()
        return loss

    def _track_loss(self, loss: torch.Tensor, R: torch.Tensor, tr: torch.Tensor) -> torch.Tensor:
        k = self.tracks
        Xk = torch.einsum("oij,oj->oi", R[k.frame], k.X[k.track]) + tr[k.frame]
        e2k = ((self._project(Xk) - k.uv) * self.px).pow(2).sum(-1)
        loss = loss + self.s.track_weight * (pseudo_huber(e2k, self.s.track_robust_px) / 2).mean()
        # the face's tracks stay near the canonical relief: free track depths and the head's
        # rotation are otherwise traded off (the bas-relief ambiguity of a distant, turning head)
        dz2 = (M_TO_MM * (k.X[:, 2] - k.z_surf)).pow(2)
        return (
            loss + TRACK_DEPTH_WEIGHT * (pseudo_huber(dz2, TRACK_DEPTH_KNEE_MM) * k.w_face).sum() / k.n_face
        )

    def _smoothness(self, loss: torch.Tensor, tr: torch.Tensor) -> torch.Tensor:
        s, rv = self.s, self.rv
        if len(rv) >= 3 and s.smooth_rotation > 0:
            acc_r = torch.rad2deg(rv[2:] - 2 * rv[1:-1] + rv[:-2]).pow(2).sum(-1)
            loss = (
                loss + s.smooth_rotation * (pseudo_huber(acc_r, ACC_KNEE_DEG) * self.acc_w).sum() / self.acc_n
            )
        if len(rv) >= 3 and s.smooth_translation > 0:
            acc_t = (M_TO_MM * (tr[2:] - 2 * tr[1:-1] + tr[:-2])).pow(2).sum(-1)
            loss = (
                loss
                + s.smooth_translation * (pseudo_huber(acc_t, ACC_KNEE_MM) * self.acc_w).sum() / self.acc_n
            )
        return loss


def _track_terms(tracks: FeatureTracks, canon, R0, t0, focal, width, height) -> _TrackTerms:
    dt = torch.float64
    X_init, X_surf, on_face = init_track_points(tracks, canon, R0, t0, focal, width, height, surface=True)
    return _TrackTerms(
        X=torch.as_tensor(X_init, dtype=dt).requires_grad_(True),
        z_surf=torch.as_tensor(X_surf[:, 2], dtype=dt),
        w_face=torch.as_tensor(on_face, dtype=dt),
        n_face=max(float(on_face.sum()), 1.0),
        frame=torch.as_tensor(tracks.frame),
        track=torch.as_tensor(tracks.track),
        uv=torch.as_tensor(tracks.uv, dtype=dt),
    )


def _bundle_adjust_lm(
    canon, obs2d, valid, R0, t0, focal, width, height, s: BundleSettings, tracks: FeatureTracks | None
) -> BAResult:
    """:func:`bundle_adjust`'s objective, the focal fixed and without smoothness, minimised by
    Levenberg-Marquardt (:func:`.bundle.lm_bundle_adjust`)."""
    blocks = [_landmark_block(canon, obs2d, valid, s)]
    if tracks is not None and len(tracks):
        blocks.append(_track_block(tracks, canon, R0, t0, focal, width, height, s))
    obs = Observations(
        np.concatenate([b.frame for b in blocks]),
        np.concatenate([b.point for b in blocks]),
        np.concatenate([b.uv for b in blocks]).astype(np.float64),
        np.concatenate([b.weight for b in blocks]),
        np.concatenate([b.knee for b in blocks]),
    )
    prior = PointPrior(
        np.concatenate([b.anchor for b in blocks]),
        np.concatenate([b.prior_weight for b in blocks]),
        np.concatenate([b.prior_knee for b in blocks]),
    )
    X0 = np.concatenate([b.X0 for b in blocks])
    size = float(max(width, height))
    res = lm_bundle_adjust(
        R0, t0, X0, obs, prior, focal, width / 2, height / 2, REF_SIZE / size, iterations=LM_ITERATIONS
    )
    L = len(canon)
    return BAResult(res.rotation, res.translation, res.points[:L] - canon, res.cost)


@dataclass
class _PointBlock:
    """One group of points of the LM problem: their observations, priors and start."""

    frame: np.ndarray
    point: np.ndarray
    uv: np.ndarray
    weight: np.ndarray
    knee: np.ndarray
    anchor: np.ndarray
    prior_weight: np.ndarray
    prior_knee: np.ndarray
    X0: np.ndarray


def _landmark_block(canon, obs2d, valid, s: BundleSettings) -> _PointBlock:
    """The rigid landmarks: points 0..L-1, anchored at the canonical shape."""
    L = len(canon)
    vidx = np.flatnonzero(valid)
    n_valid = max(len(vidx), 1)
    U = obs2d[vidx].reshape(-1, 2)
    fr = np.repeat(vidx, L)
    pt = np.tile(np.arange(L), len(vidx))
    ok = np.isfinite(U).all(-1)
    w_xy = LM_FIXED_SHAPE_WEIGHT if s.shape_weight is None else float(s.shape_weight)
    w_z = w_xy if s.depth_weight is None or s.shape_weight is None else float(s.depth_weight)
    return _PointBlock(
        fr[ok],
        pt[ok],
        U[ok],
        np.full(ok.sum(), 1.0 / (n_valid * L)),
        np.full(ok.sum(), float(s.robust_px)),
        np.asarray(canon, np.float64),
        np.tile([w_xy / L, w_xy / L, w_z / L], (L, 1)),
        np.full(L, np.inf),
        np.asarray(canon, np.float64),
    )


def _track_block(
    tracks: FeatureTracks, canon, R0, t0, focal, width, height, s: BundleSettings
) -> _PointBlock:
    """The feature tracks' points (after the landmarks'): depth held near the face's relief."""
    L = len(canon)
    X_init, X_surf, on_face = init_track_points(tracks, canon, R0, t0, focal, width, height, surface=True)
    n_obs = len(tracks.frame)
    n_face = max(float(on_face.sum()), 1.0)
    w = np.zeros((len(X_surf), 3))
    w[:, 2] = TRACK_DEPTH_WEIGHT * on_face / n_face
    return _PointBlock(
        tracks.frame,
        L + tracks.track,
        tracks.uv,
        np.full(n_obs, s.track_weight / n_obs),
        np.full(n_obs, float(s.track_robust_px)),
        X_surf,
        w,
        np.full(len(X_surf), TRACK_DEPTH_KNEE_MM),
        X_init,
    )
