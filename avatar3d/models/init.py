"""Initial Gaussians for an avatar from a capture: face mesh, head shell, mouth interior, torso.

Geometry prior as the field recommends (GaussianTalker, FlashAvatar): Gaussians start on the tracked
face surface (MediaPipe topology of the subject's canonical landmarks), on a smooth shell that closes
the head behind and above the face, inside the mouth cavity, and on the torso seen in a reference
frame. Colours are sampled from that frame where the point is visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..core.geometry import quats_from_normals
from ..core.groups import HEAD, MOUTH, TORSO
from ..core.topology import (
    CHIN,
    FOREHEAD,
    INNER_LIP_PAIRS,
    LEFT_CHEEK_OVAL,
    RIGHT_CHEEK_OVAL,
    eye_loops,
    face_oval_loop,
    face_triangles,
    inner_lip_loop,
)

EYE_BEHIND_LID_M = 0.0015  # the eye surface's rim behind the lid margin's mean depth
EYE_BULGE_M = 0.002  # ... and how far its centre bulges forward, like a cornea
EYE_MAX_ROUNDS = 50  # rejection-sampling rounds per eye opening


def eye_points(can: np.ndarray, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Points filling the two eye openings of the canonical landmarks (the face mesh leaves them as
    holes): uniform inside each lid contour (x, y), on a surface 1.5 mm behind the lid margin that bulges
    forward by 2 mm at the centre like a cornea. Returns (points (n, 3), normals (n, 3) facing -z).

    Without them, what the frames show through the openings is learnt by Gaussians at the back of
    the head, which a turned camera then sees in the wrong place."""
    from matplotlib.path import Path as MplPath  # only here: keeps matplotlib out of `import avatar3d`

    pts = []
    for k, ring in enumerate(eye_loops()):
        m = n // 2 + (n % 2 if k == 0 else 0)
        if m == 0:
            continue
        c = can[ring]
        poly = MplPath(c[:, :2])
        lo, hi = c[:, :2].min(0), c[:, :2].max(0)
        got = np.zeros((0, 2))
        for _ in range(EYE_MAX_ROUNDS):  # rejection sampling; a collapsed contour (no area) ends the loop
            if len(got) >= m:
                break
            cand = lo + rng.random((4 * m + 16, 2)) * (hi - lo)
            got = np.concatenate([got, cand[poly.contains_points(cand)]])
        if len(got) < m:  # degenerate opening: the points sit on its contour
            got = np.concatenate([got, c[rng.integers(len(c), size=m - len(got)), :2]])
        xy = got[:m]
        ctr = c[:, :2].mean(0)
        r2 = (((xy - ctr) / np.maximum((hi - lo) / 2, 1e-6)) ** 2).sum(1).clip(0, 1)
        z = c[:, 2].mean() + EYE_BEHIND_LID_M - EYE_BULGE_M * (1 - r2)
        pts.append(np.concatenate([xy, z[:, None]], 1))
    p = np.concatenate(pts) if pts else np.zeros((0, 3))
    return p, np.tile([0.0, 0.0, -1.0], (len(p), 1))


INNER_MOUTH_CORNERS = (78, 308)


def mouth_midline(landmarks) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The mouth slit of (478, 3) head-space landmarks (array or tensor) as a polyline: x (K,) increasing
    and y (K,) of the midpoints of the inner-lip pairs and the inner mouth corners; (None, None) when the
    landmarks are degenerate (all equal, e.g. an untrained model's zero buffer)."""
    lm = landmarks.detach().cpu().numpy() if hasattr(landmarks, "detach") else np.asarray(landmarks)
    lm = lm.astype(np.float64)
    pairs = np.array(INNER_LIP_PAIRS)
    pts = np.concatenate(
        [0.5 * (lm[pairs[:, 0], :2] + lm[pairs[:, 1], :2]), lm[list(INNER_MOUTH_CORNERS), :2]]
    )
    order = np.argsort(pts[:, 0])
    xs, ys = pts[order, 0], pts[order, 1]
    if not np.all(np.diff(xs) > 1e-6):
        return None, None
    return xs, ys


@dataclass
class InitInputs:
    canonical: np.ndarray  # (478, 3) head-space landmarks
    image: np.ndarray  # (H, W, 3) float in [0, 1], the reference frame
    mask: np.ndarray  # (H, W) float person mask in [0, 1]
    viewmat: np.ndarray  # (4, 4) head -> camera for the reference frame
    K: np.ndarray  # (3, 3) intrinsics at the image's size


def _project(points: np.ndarray, viewmat: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pc = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    uv = pc[:, :2] / pc[:, 2:3] * np.diag(K)[:2] + K[:2, 2]
    return uv, pc


def _sample(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    H, W = image.shape[:2]
    x = np.clip(uv[:, 0] - 0.5, 0, W - 1)
    y = np.clip(uv[:, 1] - 0.5, 0, H - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, W - 1), np.minimum(y0 + 1, H - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    img = image if image.ndim == 3 else image[..., None]
    out = (
        img[y0, x0] * (1 - fx) * (1 - fy)
        + img[y0, x1] * fx * (1 - fy)
        + img[y1, x0] * (1 - fx) * fy
        + img[y1, x1] * fx * fy
    )
    return out


def _sample_triangles(v: np.ndarray, f: np.ndarray, n: int, rng) -> tuple[np.ndarray, np.ndarray, float]:
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    cr = np.cross(b - a, c - a)
    area = 0.5 * np.linalg.norm(cr, axis=1)
    tri = rng.choice(len(f), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    pts = (1 - s)[:, None] * a[tri] + (s * (1 - r2))[:, None] * b[tri] + (s * r2)[:, None] * c[tri]
    nrm = cr[tri] / np.maximum(np.linalg.norm(cr[tri], axis=1, keepdims=True), 1e-12)
    return pts, nrm, float(area.sum())


@dataclass
class ShellFit:
    """An ellipsoid head shell (centre ``ctr``, radii ``ax, ay, az``) whose width follows the person's
    silhouette: per row of the head, ``rows`` (R,) head-space heights, ``left`` / ``right`` (R,) the
    factors applied to the x radius on each side, ``depth`` (R,) the factor on the z radius; ``top``
    the factor on the y radius above the centre."""

    ctr: np.ndarray
    ax: float
    ay: float
    az: float
    rows: np.ndarray
    left: np.ndarray
    right: np.ndarray
    depth: np.ndarray
    top: float = 1.0

    def points(self, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points and outward normals of the shell for unit directions d (M, 3)."""
        ry = self.ay * np.where(d[:, 1] < 0, self.top, 1.0)
        y = self.ctr[1] + d[:, 1] * ry
        fx = np.where(d[:, 0] < 0, np.interp(y, self.rows, self.left), np.interp(y, self.rows, self.right))
        r = np.stack([self.ax * fx, ry, self.az * np.interp(y, self.rows, self.depth)], 1)
        p = self.ctr + d * r
        nrm = d / r  # the normal of the local ellipsoid (the factors vary slowly along y)
        return p, nrm / np.linalg.norm(nrm, axis=1, keepdims=True)


def fit_shell_to_silhouette(
    ctr: np.ndarray,
    ax: float,
    ay: float,
    mask: np.ndarray,
    viewmat: np.ndarray,
    K: np.ndarray,
    az: float | None = None,
    n_rows: int = 48,
    lo: float = 0.85,
    hi: float = 1.6,
) -> ShellFit:
    """Widen (or narrow) the default head ellipsoid, row by row, to the person mask of the reference
    frame, so hair that stands out from the skull starts where the frame shows it.

    For each head-space row y, the half-widths at the ellipsoid's centre depth are found by walking
    out from the centre along the row (projected with ``viewmat`` / ``K``) until the mask drops below
    0.5 on each side: a contiguous run, so the shoulders or another person further out do not count.
    The factors against the ellipsoid's own half-width are smoothed over the rows, clamped to
    [``lo``, ``hi``] and taken from the nearest well-measured row near the top and bottom of the
    ellipsoid, where its width is too small to measure. The depth stays the default's (a frontal
    silhouette does not measure it; the default is already a little deeper than a typical head). The
    top of the shell follows the silhouette the same way along the vertical through the centre. A
    side that cannot be measured on at least three rows (the mask reaches the image border, as in a
    close-up, or runs on past ``hi`` times the default width) keeps the default's width; without a
    usable mask (nothing above 0.5 at the centre) the plain ellipsoid is returned.
    """
    az = 1.2857 * ax if az is None else az  # the default proportions: depth 0.72, width 0.56 of the face
    rows = ctr[1] + np.linspace(-0.98, 0.98, n_rows) * ay
    plain = ShellFit(ctr, ax, ay, az, rows, np.ones(n_rows), np.ones(n_rows), np.ones(n_rows), 1.0)
    m = np.asarray(mask, np.float64)
    if m.ndim != 2 or m.size == 0:
        return plain
    H, W = m.shape

    def inside(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(in the mask, in the image) for head-space points."""
        uv, pc = _project(pts, viewmat, K)
        ok = (pc[:, 2] > 1e-6) & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
        val = np.zeros(len(pts))
        val[ok] = _sample(m, uv[ok])[:, 0]
        return val > 0.5, ok

    def run(origin: np.ndarray, direction: np.ndarray, reach: float, n: int = 160) -> float:
        """Distance along ``direction`` from ``origin`` to the end of the mask's contiguous run; NaN
        when it cannot be told: the origin is outside the mask, or the run reaches the image border
        (a close-up, a head cut by the frame) or goes on past ``reach``."""
        steps = np.linspace(0.0, reach, n)
        ok, seen = inside(origin + steps[:, None] * direction)
        if not ok[0]:
            return float("nan")
        bad = np.nonzero(~ok)[0]
        if len(bad) == 0 or not seen[bad[0]]:
            return float("nan")
        return float(steps[bad[0] - 1])

    if not inside(ctr[None])[0][0]:
        return plain
    t = run(ctr.copy(), np.array([0.0, -1.0, 0.0]), hi * ay * 1.05)
    top = float(np.clip(t / ay, lo, 1.35)) if np.isfinite(t) else 1.0
    lin = np.linspace(-0.98, 0.98, n_rows)
    ry = ay * np.where(lin < 0, top, 1.0)
    rows = ctr[1] + lin * ry
    reach = hi * ax * 1.05
    base = ax * np.sqrt(np.clip(1 - lin**2, 0, 1))
    fac = {}
    for side, sgn in (("left", -1.0), ("right", 1.0)):
        w = np.array([run(np.array([ctr[0], y, ctr[2]]), np.array([sgn, 0.0, 0.0]), reach) for y in rows])
        good = np.isfinite(w) & (base > 0.45 * ax)
        if good.sum() < 3:
            fac[side] = np.ones(n_rows)
            continue
        f = np.clip(w / np.maximum(base, 1e-9), lo, hi)
        f = np.interp(rows, rows[good], f[good])  # the ends take the nearest measured row
        k = np.ones(5) / 5
        fac[side] = np.clip(np.convolve(np.pad(f, 2, mode="edge"), k, mode="valid"), lo, hi)
    depth = np.ones(n_rows)  # the silhouette says nothing about depth: keep the default's
    return ShellFit(ctr, ax, ay, az, rows, fac["left"], fac["right"], depth, top)


def torso_relief(
    mask: np.ndarray, pix: np.ndarray, face_half: float, metres_per_px: float, axis_u: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Depth relief of the body seen in the reference frame: each row's contiguous run of the person
    mask is taken as the front half of an elliptic cross-section (a vertical cylinder), so the neck
    and shoulders curve away from the camera instead of standing as a flat card, which a turned
    camera would see edge-on.

    pix: (N, 2) pixel positions (u, v) inside the mask; face_half: half the face's width in pixels;
    metres_per_px: lateral metres per pixel at the body's depth. The cross-section's depth/width ratio
    is 1 for a run as narrow as the face (the neck: round) and falls to 0.55 for runs twice the face
    width or wider (shoulders and chest: flatter). A run cut by the image's left or right border (the
    shoulders often are) does not show its centre: with ``axis_u`` (the body's vertical axis, e.g. the
    chin's column) it is centred there, wide enough to reach both of its ends. Returns (dz (N,) metres added to the front depth,
    normals (N, 3) in camera space, facing the camera).
    """
    m = np.asarray(mask) > 0.5
    H, W = m.shape
    u = np.clip(pix[:, 0], 0, W - 1e-6)
    v = np.clip(pix[:, 1].astype(int), 0, H - 1)
    centre = np.zeros(len(pix))
    half = np.ones(len(pix))
    for row in np.unique(v):
        sel = v == row
        line = m[row].astype(np.int8)
        edges = np.diff(np.concatenate([[0], line, [0]]))
        starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]  # runs [start, end)
        if len(starts) == 0:
            continue
        k = np.clip(np.searchsorted(starts, u[sel], side="right") - 1, 0, len(starts) - 1)
        a, b = starts[k].astype(float), ends[k].astype(float)
        c, h = 0.5 * (a + b), 0.5 * (b - a)
        if axis_u is not None:
            cut = ((a <= 0) | (b >= W)) & (a <= axis_u) & (axis_u <= b)
            c = np.where(cut, axis_u, c)
            h = np.where(cut, np.maximum(axis_u - a, b - axis_u), h)
        centre[sel] = c
        half[sel] = np.maximum(h, 1.0)
    x = np.clip((u - centre) / half, -1.0, 1.0)
    ratio = np.interp(half / max(face_half, 1.0), [1.0, 2.0], [1.0, 0.55])
    root = np.sqrt(np.clip(1 - x**2, 0, 1))
    dz = ratio * half * metres_per_px * (1 - root)
    # outward normal of x²/a² + z²/b² = 1 on its front half, a = half, b = ratio·half (pixels)
    n = np.stack([x / half, np.zeros_like(x), -root / (ratio * half)], 1)
    return dz, n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


TEETH_COLOUR = (0.80, 0.77, 0.72)
CAVITY_COLOUR = (0.30, 0.10, 0.10)
UPPER_TEETH_SHARE, LOWER_TEETH_SHARE = 0.28, 0.22  # of the mouth budget; the rest: cavity and tongue
MOUTH_SPAN = 0.85  # the interior's width, in inner-lip widths
TOOTH_HEIGHT = 0.18  # the upper teeth's height, in inner-lip widths
LOWER_TOOTH_HEIGHT = 0.8  # the lower teeth's height, in upper-tooth heights
TEETH_OFF_SLIT_M = 0.0015  # each row of teeth starts this far above / below the mouth slit
CAVITY_HEIGHT = 0.6  # the cavity's height, in inner-lip widths
CAVITY_ABOVE_SLIT = 0.45  # the share of the cavity's height above the slit
TEETH_DEPTH_M = (0.004, 0.004)  # teeth: (start, range) of depth behind the inner lips' mean
CAVITY_DEPTH_M = (0.009, 0.02)  # cavity and tongue: (start, range) of depth behind the inner lips
CAVITY_SIZE = 0.6  # cavity Gaussian size in inner-lip widths, for a budget of 4 (shrinks as 1/sqrt(n))
TEETH_SIZE = 0.9  # tooth Gaussian size, in cavity Gaussian sizes


def mouth_interior(can: np.ndarray, n: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mouth-interior Gaussians behind the inner lips (TalkingGaussian's inside-mouth branch):
    an upper and a lower row of teeth just behind the lips, above and below the slit (light, small),
    and the cavity and tongue behind them (dark red, larger). Returns points (n, 3), colours (n, 3) and
    sizes (n,) in metres."""
    lips = can[inner_lip_loop()]
    lip_w = lips[:, 0].max() - lips[:, 0].min()
    mc = lips.mean(0)
    xs, ys = mouth_midline(can)
    n_up, n_low = int(UPPER_TEETH_SHARE * n), int(LOWER_TEETH_SHARE * n)
    n_cav = n - n_up - n_low
    u = rng.random((n, 3))
    x = mc[0] + (u[:, 0] - 0.5) * MOUTH_SPAN * lip_w
    mid = np.interp(x, xs, ys) if xs is not None else np.full(n, mc[1])
    h = TOOTH_HEIGHT * lip_w
    y = np.concatenate(
        [
            mid[:n_up] - TEETH_OFF_SLIT_M - u[:n_up, 1] * h,  # upper teeth, above the slit
            mid[n_up : n_up + n_low] + TEETH_OFF_SLIT_M + u[n_up : n_up + n_low, 1] * LOWER_TOOTH_HEIGHT * h,
            mid[n_up + n_low :] + (u[n_up + n_low :, 1] - CAVITY_ABOVE_SLIT) * CAVITY_HEIGHT * lip_w,
        ]
    )
    (t0, dt), (c0, dc) = TEETH_DEPTH_M, CAVITY_DEPTH_M
    z = mc[2] + np.concatenate([t0 + u[: n_up + n_low, 2] * dt, c0 + u[n_up + n_low :, 2] * dc])
    col = np.concatenate([np.tile(TEETH_COLOUR, (n_up + n_low, 1)), np.tile(CAVITY_COLOUR, (n_cav, 1))])
    s_cav = CAVITY_SIZE * lip_w / np.sqrt(max(n, 4) / 4)
    # teeth overlap each other several times over (a closed, light surface; sparse ones look speckled)
    size = np.concatenate([np.full(n_up + n_low, TEETH_SIZE * s_cav), np.full(n_cav, s_cav)])
    return np.stack([x, y, z], 1), col, size


# ---- the initial Gaussian set: budgets, shapes and sizes (head-space metres unless noted)
FACE_SHARE = 0.55  # fraction of the head budget sampled on the face mesh
EYE_SHARE = 0.02  # fraction of the head budget filling the eye openings (the rest: the head shell)
SHELL_HALF_WIDTH = 0.56  # default shell x radius, in face widths (face-oval x extent)
SHELL_HALF_HEIGHT = 0.72  # default shell y radius, in forehead-to-chin heights
SHELL_HALF_DEPTH = 0.72  # default shell z radius, in face widths
SHELL_CENTRE_DOWN = 0.42  # shell centre below the forehead, in forehead-to-chin heights
SHELL_CENTRE_BACK = 0.55  # shell centre behind the cheeks' depth, in shell z radii
SHELL_OVERSAMPLE = 3  # shell directions drawn per kept shell point (the face and jaw cut-outs drop some)
SHELL_FACE_CLEARANCE_M = 0.015  # no shell inside the face oval less than this behind its deepest point
SHELL_BELOW_CHIN_M = 0.01  # no shell below this much above the chin
ELLIPSOID_AREA_P = 1.6  # exponent of Thomsen's approximation of an ellipsoid's surface area
SHELL_FACING_COS = 0.2  # a shell point's colour is seen when its normal faces the camera by this cosine
MASK_ON = 0.5  # person-mask value above which a pixel is the person
MIN_SEEN_SHELL = 10  # fewer shell points seen than this: the hair colour is the default
DEFAULT_HAIR_COLOUR = (0.25, 0.2, 0.15)  # RGB in [0, 1]
TORSO_ABOVE_CHIN = 0.15  # torso pixels start this far above the chin, in forehead-to-chin pixel heights
TORSO_BEHIND_HEAD_M = 0.05  # torso plane depth behind the head origin's camera depth
DEFAULT_TORSO_SIZE_M = 0.01  # torso Gaussian size when the frame shows no torso
FLATNESS = 0.3  # scale along the normal relative to the tangential scale
SIZE_FACTOR = 0.8  # every initial scale times this (neighbouring Gaussians overlap less)
COLOUR_RANGE = (0.02, 0.98)  # initial colours clipped here (their logits stay finite)
INITIAL_OPACITY = 0.9

_FACING_CAMERA = (0.0, 0.0, -1.0)  # the unit normal facing the frontal camera (head space)


class _Part(NamedTuple):
    """One part of the initial set: points (N, 3), unit normals (N, 3), colours (N, 3) in [0, 1] and
    sizes (N,) in metres."""

    points: np.ndarray
    normals: np.ndarray
    colors: np.ndarray
    sizes: np.ndarray


class _Samples(NamedTuple):
    """Points (N, 3) with unit normals (N, 3) and one size (metres) for all of them."""

    points: np.ndarray
    normals: np.ndarray
    size: float


def _face_toward_camera(can: np.ndarray) -> np.ndarray:
    """The face mesh's triangles (F, 3), each ordered so its normal points to the frontal camera (-z)."""
    faces = face_triangles()
    a, b, c = can[faces[:, 0]], can[faces[:, 1]], can[faces[:, 2]]
    flip = np.cross(b - a, c - a)[:, 2] > 0
    faces = faces.copy()
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return faces


def _face_samples(can: np.ndarray, n_face: int, n_eye: int, rng) -> _Samples:
    """``n_face`` points on the face mesh, then ``n_eye`` filling the eye openings; the size is the
    face mesh's mean sample spacing."""
    p_face, n_face_nrm, face_area = _sample_triangles(can[:468], _face_toward_camera(can), n_face, rng)
    s_face = np.sqrt(face_area / n_face)
    p_eye, n_eye_nrm = eye_points(can, n_eye, rng)
    return _Samples(np.concatenate([p_face, p_eye]), np.concatenate([n_face_nrm, n_eye_nrm]), s_face)


def _default_shell(can: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """The default head ellipsoid's centre (3,) and radii (ax, ay, az) from the face's proportions."""
    oval = can[face_oval_loop()]
    width = oval[:, 0].max() - oval[:, 0].min()
    top, chin = can[FOREHEAD, 1], can[CHIN, 1]
    ax = SHELL_HALF_WIDTH * width
    ay = SHELL_HALF_HEIGHT * (chin - top)
    az = SHELL_HALF_DEPTH * width
    cheeks_z = can[[RIGHT_CHEEK_OVAL, LEFT_CHEEK_OVAL], 2].mean()
    ctr = np.array(
        [oval[:, 0].mean(), top + SHELL_CENTRE_DOWN * (chin - top), cheeks_z + SHELL_CENTRE_BACK * az]
    )
    return ctr, ax, ay, az


def _shell_samples(can: np.ndarray, inp: InitInputs, n_shell: int, rng) -> _Samples:
    """Up to ``n_shell`` points on the silhouette-fitted head shell, outside the face and above the jaw;
    the size is the shell's mean sample spacing."""
    from matplotlib.path import Path as MplPath  # only here: keeps matplotlib out of `import avatar3d`

    oval = can[face_oval_loop()]
    ctr, ax, ay, az = _default_shell(can)
    d = rng.normal(size=(n_shell * SHELL_OVERSAMPLE, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    fit = fit_shell_to_silhouette(ctr, ax, ay, inp.mask, inp.viewmat, inp.K, az=az)
    p_shell, n_shell_nrm = fit.points(d)
    inside_oval = MplPath(oval[:, :2]).contains_points(p_shell[:, :2])
    keep = ~(inside_oval & (p_shell[:, 2] < oval[:, 2].max() + SHELL_FACE_CLEARANCE_M))
    keep &= p_shell[:, 1] < can[CHIN, 1] - SHELL_BELOW_CHIN_M  # no shell below the jaw line
    p_shell, n_shell_nrm = p_shell[keep][:n_shell], n_shell_nrm[keep][:n_shell]
    p = ELLIPSOID_AREA_P
    shell_area = 4 * np.pi * ((ax * ay) ** p + (ax * az) ** p + (ay * az) ** p) ** (1 / p) / 3
    fx, fz = 0.5 * (fit.left.mean() + fit.right.mean()), fit.depth.mean()
    shell_area *= (fx * fz + fx * fit.top + fz * fit.top) / 3  # the silhouette fit's change of area
    return _Samples(p_shell, n_shell_nrm, np.sqrt(shell_area / max(len(p_shell), 1)))


def _face_colours(face: _Samples, inp: InitInputs) -> np.ndarray:
    """Reference-frame colours (N, 3) of the face points; those facing away take the seen ones' median."""
    uv_f, pc_f = _project(face.points, inp.viewmat, inp.K)
    ncam = face.normals @ inp.viewmat[:3, :3].T
    vis_f = (ncam * pc_f).sum(1) < 0
    col_face = _sample(inp.image, uv_f)
    if vis_f.any() and (~vis_f).any():
        col_face[~vis_f] = np.median(col_face[vis_f], axis=0)
    return col_face


def _shell_colours(shell: _Samples, inp: InitInputs) -> np.ndarray:
    """Reference-frame colours (N, 3) of the shell points seen on the person; the rest take the hair
    colour (the seen ones' median, or a default brown when too few are seen)."""
    uv_s, pc_s = _project(shell.points, inp.viewmat, inp.K)
    ncam_s = shell.normals @ inp.viewmat[:3, :3].T
    facing = (ncam_s * pc_s).sum(1) < -SHELL_FACING_COS * np.linalg.norm(pc_s, axis=1)
    vis_s = facing & (_sample(inp.mask, uv_s)[:, 0] > MASK_ON)
    col_shell = _sample(inp.image, uv_s)
    seen = vis_s.sum() > MIN_SEEN_SHELL
    hair = np.median(col_shell[vis_s], axis=0) if seen else np.array(DEFAULT_HAIR_COLOUR)
    col_shell[~vis_s] = hair
    return col_shell


def _torso_pixels(can: np.ndarray, inp: InitInputs) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Person-mask pixels (u, v) below the chin and outside the face, the face oval in pixels (K, 2) and
    the chin's pixel (2,)."""
    from matplotlib.path import Path as MplPath  # only here: keeps matplotlib out of `import avatar3d`

    chin_uv, _ = _project(can[[CHIN]], inp.viewmat, inp.K)
    forehead_v = _project(can[[FOREHEAD]], inp.viewmat, inp.K)[0][0, 1]
    vv, uu = np.nonzero(inp.mask > MASK_ON)
    sel = vv > chin_uv[0, 1] - TORSO_ABOVE_CHIN * (chin_uv[0, 1] - forehead_v)
    oval_uv, _ = _project(can[face_oval_loop()], inp.viewmat, inp.K)
    in_face = MplPath(oval_uv).contains_points(np.stack([uu, vv], 1) + 0.5)
    sel &= ~in_face
    return uu[sel], vv[sel], oval_uv, chin_uv[0]


def _torso_part(can: np.ndarray, inp: InitInputs, n_torso: int, rng) -> _Part:
    """The torso: ``n_torso`` person-mask pixels below the chin lifted onto a plane behind the neck,
    with the depth relief of :func:`torso_relief`; coloured from the reference frame."""
    uu, vv, oval_uv, chin_uv = _torso_pixels(can, inp)
    if len(uu) == 0 or n_torso == 0:
        empty = np.zeros((0, 3))
        return _Part(empty, empty, empty, np.full(0, DEFAULT_TORSO_SIZE_M))
    pick = rng.choice(len(uu), size=n_torso, replace=len(uu) < n_torso)
    pix = np.stack([uu[pick], vv[pick]], 1) + rng.random((n_torso, 2))
    depth = inp.viewmat[:3, 3][2] + TORSO_BEHIND_HEAD_M
    face_half = 0.5 * float(np.ptp(oval_uv[:, 0]))
    dz, n_cam = torso_relief(inp.mask, pix, face_half, depth / inp.K[0, 0], axis_u=float(chin_uv[0]))
    ray = np.concatenate([(pix - inp.K[:2, 2]) / np.diag(inp.K)[:2], np.ones((n_torso, 1))], 1)
    pc = ray * (depth + dz)[:, None]
    inv = np.linalg.inv(inp.viewmat)
    p_torso = pc @ inv[:3, :3].T + inv[:3, 3]
    s_torso = np.sqrt(len(uu) / n_torso) * depth / inp.K[0, 0]
    return _Part(p_torso, n_cam @ inv[:3, :3].T, _sample(inp.image, pix), np.full(n_torso, s_torso))


def _as_gaussians(head: _Part, mouth: _Part, torso: _Part) -> dict[str, Tensor]:
    """The parts as the float32 tensors of :func:`initial_gaussians` (group ids HEAD, MOUTH, TORSO)."""
    parts = (head, mouth, torso)
    means = np.concatenate([p.points for p in parts])
    normals = np.concatenate([p.normals for p in parts])
    sz = np.concatenate([p.sizes for p in parts])
    scales = np.stack([sz, sz, sz * FLATNESS], 1) * SIZE_FACTOR
    colors = np.concatenate([p.colors for p in parts]).clip(*COLOUR_RANGE)
    group = np.concatenate([np.full(len(p.points), gid) for p, gid in zip(parts, (HEAD, MOUTH, TORSO))])

    def f32(x):
        return torch.as_tensor(x, dtype=torch.float32)

    return {
        "means": f32(means),
        "quats": quats_from_normals(f32(normals)),
        "scales": f32(scales),
        "opacities": torch.full((len(means),), INITIAL_OPACITY),
        "colors": f32(colors),
        "group": torch.as_tensor(group, dtype=torch.int64),
    }


def initial_gaussians(
    inp: InitInputs, n_head: int, n_mouth: int, n_torso: int, seed: int = 0
) -> dict[str, Tensor]:
    """Build the initial Gaussian set.

    Stages (in the order they draw from the seeded generator): the face mesh and eye openings, the
    silhouette-fitted head shell, the mouth interior, the torso relief; then colours from the
    reference frame. See docs/design/initialisation.md for why each part starts where it does.

    Returns a dict of float32 tensors: means (N, 3), quats (N, 4), scales (N, 3), opacities (N,),
    colors (N, 3) in [0, 1], and group (N,) int64 (HEAD, MOUTH or TORSO).
    """
    rng = np.random.default_rng(seed)
    can = np.asarray(inp.canonical, dtype=np.float64)
    n_face, n_eye = int(n_head * FACE_SHARE), int(n_head * EYE_SHARE)
    face = _face_samples(can, n_face, n_eye, rng)
    shell = _shell_samples(can, inp, n_head - n_face - n_eye, rng)
    p_mouth, col_mouth, s_mouth = mouth_interior(can, n_mouth, rng)
    mouth = _Part(p_mouth, np.tile(_FACING_CAMERA, (n_mouth, 1)), col_mouth, s_mouth)
    head = _Part(
        np.concatenate([face.points, shell.points]),
        np.concatenate([face.normals, shell.normals]),
        np.concatenate([_face_colours(face, inp), _shell_colours(shell, inp)]),
        np.concatenate([np.full(len(face.points), face.size), np.full(len(shell.points), shell.size)]),
    )
    return _as_gaussians(head, mouth, _torso_part(can, inp, n_torso, rng))
