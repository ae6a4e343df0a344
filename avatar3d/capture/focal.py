"""The focal-length search: a one-dimensional search over log f of a converged bundle adjustment.

Why it is built this way, and why a monocular clip does not determine the focal:
docs/design/focal-and-depth.md (and docs/design/feature-tracks.md for the tracks' part).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import roma
import torch

from ..core.topology import FEATURE_RIGID_INDICES
from .canonical import CanonicalFit, metric_canonical
from .feature_tracks import FeatureTracks
from .pose_fit import DEPTH_WEIGHT, SHAPE_WEIGHT, BundleSettings, bundle_adjust
from .resection import pnp, resect_intersect, weak_perspective_init

_log = logging.getLogger(__name__)

FOCAL_INDICES = FEATURE_RIGID_INDICES  # landmarks the focal search fits (see topology.py)
FOCAL_FRAMES_TRACKS = 120  # frames of the focal search with tracks (evenly spaced)
MIN_TRACK_LENGTH = 3  # frames: shorter tracks (within the searched frames) are left out
COARSE_POINTS = 7  # log-spaced focals over the whole range
FINE_OFFSETS = np.arange(-2, 3)  # then 5 points about the best one ...
FINE_SHRINK = 3  # ... spaced a third of the coarse step
MIN_CURVATURE = 1e-12  # a flatter parabola through the best three points is not refined


def search_focal(
    fit: CanonicalFit,
    obs2d: np.ndarray,
    valid: np.ndarray,
    width: int,
    height: int,
    config,
    tracks: FeatureTracks | None = None,
) -> float:
    """Focal (pixels): minimum over log f of the bundle-adjustment objective (poses and rigid offsets
    free, focal fixed) on ``config.focal_frames`` valid frames, plus the log-focal prior.

    - Each candidate's fit is minimised to convergence (Levenberg-Marquardt, :func:`.bundle_adjust`).
    - For each candidate the canonical shape is rebuilt through a camera of that focal
      (:func:`.metric_canonical`), so that the shape's own perspective does not vote for a focal.
    - The depth relief stays MediaPipe's (``DEPTH_WEIGHT`` on depth offsets).
    - Only landmarks on image features are fitted (``FOCAL_INDICES``: nose and eye corners).
    - Frames are chosen to span the clip's head rotations (:func:`spread_frames`).
    - With ``tracks`` (optical-flow feature tracks, cut at breaks), their observations join each
      candidate's fit, on ``FOCAL_FRAMES_TRACKS`` evenly spaced frames (tracks need runs of frames),
      after a resection-intersection start, weighted ``config.focal_track_weight``.
    - A ``COARSE_POINTS`` log grid over ``config.focal_search × max(W, H)`` finds the basin, a finer
      grid about the best point and the parabola through the best three refine it.

    A minimum at either end of the range gives a warning: the clip does not determine the focal,
    and ``capture.focal`` should be given. obs2d: (T, 478, 2) pixels; valid: (T,) bool;
    config: CaptureConfig.
    """
    size = float(max(width, height))
    problem = _FocalProblem.build(fit, obs2d, valid, width, height, config, tracks)
    lo, hi = (math.log(v * size) for v in config.focal_search)
    best = _grid_search(problem.cost, lo, hi)
    if min(best - lo, hi - best) < 1e-9:
        warnings.warn(
            f"the focal search ended at the edge of its range ({math.exp(best) / size:.2f} × the "
            "longest side): this clip does not determine the focal length; if it is known, give it "
            "(avatar3d capture --focal PIXELS, or capture.focal)",
            stacklevel=2,
        )
    _log.debug(
        "focal search (f / size: cost): %s -> %.3f",
        ", ".join(f"{math.exp(g) / size:.3f}: {c:.4f}" for g, c in sorted(problem.cache.items())),
        math.exp(best) / size,
    )
    return float(math.exp(best))


def _grid_search(cost, lo: float, hi: float) -> float:
    """Minimum of ``cost`` over [lo, hi]: a coarse grid, a finer one about its best point, then the
    vertex of the parabola through the best fine point and its neighbours."""
    grid = np.linspace(lo, hi, COARSE_POINTS)
    k = int(np.argmin([cost(g) for g in grid]))
    step = (grid[1] - grid[0]) / FINE_SHRINK
    grid = np.unique(np.clip(grid[k] + step * FINE_OFFSETS, grid[0], grid[-1]))
    costs = np.array([cost(g) for g in grid])
    k = int(np.argmin(costs))
    best = grid[k]
    if 0 < k < len(grid) - 1:
        c0, c1, c2 = costs[k - 1 : k + 2]
        curv = c0 - 2 * c1 + c2
        if curv > MIN_CURVATURE:
            step = grid[1] - grid[0]
            best = grid[k] + float(np.clip(0.5 * step * (c0 - c2) / curv, -step, step))
    return best


@dataclass
class _FocalProblem:
    """The searched frames (``sub``, ``obs`` (F, L, 2) at ``FOCAL_INDICES``), their tracks, and the
    cost of each candidate log-focal (cached)."""

    sub: CanonicalFit
    obs: np.ndarray
    tracks: FeatureTracks | None
    width: int
    height: int
    config: object
    log_prior: float
    cache: dict[float, float] = field(default_factory=dict)

    @classmethod
    def build(cls, fit, obs2d, valid, width, height, config, tracks) -> _FocalProblem:
        use_tracks = tracks is not None and len(tracks) > 0
        pick = _focal_frames(fit, valid, config, use_tracks)
        tracks = tracks.subset(pick).min_length(MIN_TRACK_LENGTH) if use_tracks else None
        if tracks is not None and not len(tracks):
            tracks = None
        size = float(max(width, height))
        obs = obs2d[pick][:, np.array(FOCAL_INDICES)]
        return cls(fit.frames(pick), obs, tracks, width, height, config, math.log(config.focal_prior * size))

    def cost(self, logf: float) -> float:
        if logf in self.cache:
            return self.cache[logf]
        f = math.exp(logf)
        W, H, cfg = self.width, self.height, self.config
        ones = np.ones(len(self.obs), bool)
        canon = metric_canonical(self.sub, ones, f, W, H)[0][np.array(FOCAL_INDICES)]
        R0, t0 = weak_perspective_init(self.sub, ones, f, W / 2, H / 2)
        R0, t0 = pnp(canon, self.obs, R0, t0, f, W / 2, H / 2)
        if self.tracks is not None:
            R0, t0 = resect_intersect(self.tracks, canon, R0, t0, f, W, H)
        settings = BundleSettings(
            shape_weight=SHAPE_WEIGHT,
            depth_weight=DEPTH_WEIGHT,
            robust_px=cfg.robust_scale_px,
            track_weight=cfg.focal_track_weight,
            track_robust_px=cfg.track_robust_scale_px,
        )
        ba = bundle_adjust(canon, self.obs, ones, R0, t0, f, W, H, settings, tracks=self.tracks)
        self.cache[logf] = ba.cost + cfg.focal_prior_weight * (logf - self.log_prior) ** 2
        return self.cache[logf]


def _focal_frames(fit: CanonicalFit, valid: np.ndarray, config, use_tracks: bool) -> np.ndarray:
    """The frames the search fits: with tracks (which need runs of frames), many more, evenly spaced;
    without, ``config.focal_frames`` spanning the head's rotations."""
    if use_tracks:
        vidx = np.flatnonzero(valid)
        n = min(max(int(config.focal_frames), FOCAL_FRAMES_TRACKS), len(vidx))
        return vidx[np.unique(np.linspace(0, len(vidx) - 1, n).round().astype(int))]
    n = min(int(config.focal_frames), int(valid.sum()))
    return spread_frames(fit, valid, n)


def spread_frames(fit: CanonicalFit, valid: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` valid frame indices that span the clip's head rotations: farthest-point sampling
    on the rotation vectors of the per-frame similarity (relative to the median one), half of them,
    the other half evenly spaced in time (robust to a few frames with odd rotations)."""
    vidx = np.flatnonzero(valid)
    if len(vidx) <= n:
        return vidx
    R = torch.as_tensor(fit.rotation[vidx], dtype=torch.float64)
    rv = roma.rotmat_to_rotvec(R @ R[len(vidx) // 2].T).numpy()
    rv -= np.median(rv, axis=0)
    even = np.unique(np.linspace(0, len(vidx) - 1, n - n // 2).round().astype(int))
    chosen = list(even)
    d = np.min(np.linalg.norm(rv[:, None] - rv[even][None], axis=-1), axis=1)
    while len(chosen) < n:
        k = int(np.argmax(d))
        chosen.append(k)
        d = np.minimum(d, np.linalg.norm(rv - rv[k], axis=-1))
    return vidx[np.unique(chosen)]
