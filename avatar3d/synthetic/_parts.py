"""Procedural parts of the synthetic subject around the scanned face.

Each builder returns a triangle mesh (vertices, triangles with outward normals) plus per-vertex
extras; :mod:`.subject` samples Gaussians on them. All coordinates are head space at rest (metres).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._face import CHEEK_L, CHEEK_R, CHIN, FOREHEAD, LIP_UPPER_INNER, MOUTH_CORNERS_INNER, MOUTH_CORNERS_OUTER
from ._geometry import grid_mesh, orient_outward, points_in_polygon, smoothstep


@dataclass
class PartMesh:
    """A triangle mesh with outward-oriented triangles and an RGB colour per vertex."""

    verts: np.ndarray
    tris: np.ndarray
    colors: np.ndarray  # (V, 3) in [0, 1]


LIGHT = np.array([-0.35, -0.55, -0.76]) / np.linalg.norm([-0.35, -0.55, -0.76])  # towards the light


def shade(normals: np.ndarray, ambient: float = 0.5) -> np.ndarray:
    """View-independent Lambert factor baked into procedural colours (light from upper left)."""
    return ambient + (1 - ambient) * np.clip(normals @ LIGHT, 0.0, 1.0)


def vertex_normals(verts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    n = np.cross(verts[tris[:, 1]] - verts[tris[:, 0]], verts[tris[:, 2]] - verts[tris[:, 0]])
    out = np.zeros_like(verts)
    for k in range(3):
        np.add.at(out, tris[:, k], n)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _value_noise(u: np.ndarray, v: np.ndarray, rng: np.random.Generator, freq: tuple[int, int]) -> np.ndarray:
    """Smooth periodic-in-u noise in [-1, 1] on a (freq_u, freq_v) lattice; u, v in [0, 1]."""
    fu, fv = freq
    lat = rng.uniform(-1, 1, size=(fv + 2, fu))
    x, y = u * fu, v * fv
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    tx, ty = smoothstep(0, 1, x - x0), smoothstep(0, 1, y - y0)
    x0 %= fu
    x1 = (x0 + 1) % fu
    y0 = np.clip(y0, 0, fv)
    y1 = np.clip(y0 + 1, 0, fv + 1)
    a = lat[y0, x0] * (1 - tx) + lat[y0, x1] * tx
    b = lat[y1, x0] * (1 - tx) + lat[y1, x1] * tx
    return a * (1 - ty) + b * ty


# ---------------------------------------------------------------------------------- head shell
@dataclass
class HeadShape:
    centre: np.ndarray  # ellipsoid centre
    axes: np.ndarray  # semi-axes (x, y, z)
    hair_bottom: float  # y where the bob ends at the back and sides


def head_shape(lm: np.ndarray) -> HeadShape:
    width = abs(lm[CHEEK_L, 0] - lm[CHEEK_R, 0])
    y_eyes = lm[[33, 133, 263, 362], 1].mean()
    z_front = lm[FOREHEAD, 2]
    cy = y_eyes + 0.004
    top = lm[FOREHEAD, 1] - 0.05
    centre = np.array([0.0, cy, z_front + 0.096])
    axes = np.array([0.55 * width + 0.006, cy - top, 0.1])
    hair_bottom = lm[list(MOUTH_CORNERS_OUTER), 1].mean() + 0.012
    return HeadShape(centre, axes, hair_bottom)


OVAL_BLEND_RAD = 0.12  # angular width of each face-oval point's pull on the shell's radius
OVAL_REACH_RAD = 0.42  # the pull fades with this angular distance from the nearest oval point
FACE_HOLE_SHRINK = 0.94  # the face hole is the oval shrunk by this factor (the shell tucks under)
FACE_HOLE_FRONT_M = 0.02  # only triangles this far in front of the skull centre can be in the hole


def _meet_face_oval(dirs: np.ndarray, oval: np.ndarray, c: np.ndarray, ax: np.ndarray) -> tuple:
    """Radial correction (nv, nu) that makes the ellipsoid (centre ``c``, semi-axes ``ax``) meet the
    face-oval points ``oval`` (K, 3) and decays away from them, and each direction's angle (nv, nu)
    to the nearest oval point (radians)."""
    o = oval - c
    r_o = np.linalg.norm(o, axis=1)
    d_o = o / r_o[:, None]
    r_eo = 1.0 / np.sqrt(((d_o / ax) ** 2).sum(-1))
    delta = r_o - r_eo
    cosang = np.clip(dirs @ d_o.T, -1, 1)
    ang = np.arccos(cosang)  # (nv, nu, K)
    w = np.exp(-((ang / OVAL_BLEND_RAD) ** 2)) + 1e-12
    corr = (w * delta).sum(-1) / w.sum(-1)
    a_min = ang.min(-1)
    corr *= np.exp(-((a_min / OVAL_REACH_RAD) ** 2))
    return corr, a_min


def _cut_face_hole(verts: np.ndarray, tris: np.ndarray, oval: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``tris`` without those in front of the centre ``c`` whose gnomonic projection around it falls
    inside the (slightly shrunk) face oval ``oval`` (K, 3)."""

    def proj(p: np.ndarray) -> np.ndarray:
        d = p - c
        return d[:, :2] / np.maximum(-d[:, 2:3], 1e-6)

    oval_poly = proj(oval)
    oval_poly = oval_poly.mean(0) + FACE_HOLE_SHRINK * (oval_poly - oval_poly.mean(0))
    tc = verts[tris].mean(1)
    in_front = (tc - c)[:, 2] < -FACE_HOLE_FRONT_M
    inside = np.zeros(len(tris), bool)
    inside[in_front] = points_in_polygon(proj(tc[in_front]), oval_poly)
    return tris[~inside]


def build_head(
    lm: np.ndarray, oval: list[int], skin: np.ndarray, hair: np.ndarray, rng: np.random.Generator
) -> PartMesh:
    """Scalp with a bob haircut and the skin under the jaw, joined to the face-oval rim.

    A lat-long ellipsoid around the skull centre, radially corrected so it meets the face oval,
    with the region behind the face cut out; the hair layer is pushed outwards by a few mm.
    """
    hs = head_shape(lm)
    c, ax = hs.centre, hs.axes
    nv, nu = 90, 160
    th = np.linspace(0.02, np.pi - 0.35, nv)  # polar angle from -y (top) downwards
    ph = np.linspace(0, 2 * np.pi, nu, endpoint=False)  # azimuth, 0 = facing the camera (-z)
    T, Pm = np.meshgrid(th, ph, indexing="ij")
    dirs = np.stack([np.sin(T) * np.sin(Pm), -np.cos(T), -np.sin(T) * np.cos(Pm)], -1)
    r_e = 1.0 / np.sqrt(((dirs / ax) ** 2).sum(-1))

    corr, a_min = _meet_face_oval(dirs, lm[oval], c, ax)
    r = r_e + corr
    pts = c + dirs * r[..., None]

    # Hair: everything above the bob line except near the face rim, where it thins out to the skin.
    y = pts[..., 1]
    # the bob's lower edge: a little longer at the back, with an uneven (cut) line
    back = smoothstep(c[2] - 0.02, c[2] + 0.06, pts[..., 2])
    hb = (
        hs.hair_bottom + 0.008 * back + 0.004 * _value_noise(Pm / (2 * np.pi), np.zeros_like(T), rng, (23, 1))
    )
    is_hair = smoothstep(hb + 0.005, hb - 0.005, y)
    # under the jaw in front: skin
    front_low = smoothstep(lm[CHIN, 1] - 0.05, lm[CHIN, 1] - 0.03, y) * smoothstep(
        c[2] - 0.01, c[2] - 0.03, pts[..., 2]
    )
    is_hair = is_hair * (1 - front_low)
    rim = smoothstep(0.02, 0.2, a_min)
    volume = 0.011 + 0.009 * smoothstep(c[1] - 0.03, hb - 0.01, y)  # the bob flares out
    thick = volume * is_hair * rim
    pts = c + dirs * (r + thick)[..., None]

    verts, tris = grid_mesh(pts, wrap_u=True)
    # close the crown with a cap vertex
    cap = c + np.array([0.0, -1.0, 0.0]) * (ax[1] + 0.011)
    k0 = np.arange(nu)
    cap_tris = np.stack([np.full(nu, len(verts)), k0, (k0 + 1) % nu], -1)
    verts = np.concatenate([verts, cap[None]])
    tris = np.concatenate([tris, cap_tris])
    tris = orient_outward(verts, tris, c)

    tris = _cut_face_hole(verts, tris, lm[oval], c)

    # Colours: hair with strand-like streaks (noise stretched along the meridians), skin below.
    u = np.r_[(Pm / (2 * np.pi)).ravel(), 0.0]
    v = np.r_[(T / np.pi).ravel(), 0.0]
    streak = 0.6 * _value_noise(u, v, rng, (90, 6)) + 0.4 * _value_noise(u, v, rng, (220, 12))
    hair_col = hair[None] * (1 + 0.16 * streak[:, None])
    hw = np.r_[is_hair.ravel(), 1.0][:, None]
    n = vertex_normals(verts, tris)
    col = hw * hair_col * shade(n, 0.5)[:, None] + (1 - hw) * skin[None] * shade(n, 0.78)[:, None]
    return PartMesh(verts, tris, np.clip(col, 0, 1))


# ------------------------------------------------------------------------------ neck and torso
@dataclass
class TorsoShape:
    """Superellipsoid ``(|x/a|^(2/e2) + |z/c|^(2/e2))^(e2/e1) + |y/b|^(2/e1) = 1`` around ``centre``."""

    centre: np.ndarray
    axes: np.ndarray
    e1: float = 0.9
    e2: float = 0.75

    def inside(self, p: np.ndarray, margin: float = 0.0) -> np.ndarray:
        q = np.abs(p - self.centre) / (self.axes - margin)
        f = (q[:, 0] ** (2 / self.e2) + q[:, 2] ** (2 / self.e2)) ** (self.e2 / self.e1) + q[:, 1] ** (
            2 / self.e1
        )
        return f < 1.0


def torso_shape(lm: np.ndarray) -> TorsoShape:
    hs = head_shape(lm)
    return TorsoShape(np.array([0.0, lm[CHIN, 1] + 0.155, hs.centre[2] + 0.02]), np.array([0.2, 0.12, 0.11]))


def build_neck(lm: np.ndarray, skin: np.ndarray, collar: np.ndarray) -> tuple[PartMesh, np.ndarray]:
    """Elliptic cylinder from inside the head down into the torso; a dark turtleneck at its base.

    Returns the mesh and a per-vertex weight (1 at the top, 0 at the base) for following the head.
    """
    hs = head_shape(lm)
    y_top = lm[CHIN, 1] - 0.035
    y_bot = lm[CHIN, 1] + 0.085
    zc = hs.centre[2] + 0.012
    ys = np.linspace(y_top, y_bot, 24)
    ph = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    Y, Ph = np.meshgrid(ys, ph, indexing="ij")
    rx, rz = 0.054, 0.05
    # the turtleneck collar is a little wider than the neck
    widen = 1 + 0.08 * smoothstep(lm[CHIN, 1] + 0.03, lm[CHIN, 1] + 0.035, Y)
    pts = np.stack([rx * widen * np.sin(Ph), Y, zc - rz * widen * np.cos(Ph)], -1)
    verts, tris = grid_mesh(pts, wrap_u=True)
    tris = orient_outward_cyl(verts, tris, zc)
    tris = tris[~torso_shape(lm).inside(verts[tris].mean(1), margin=0.004)]  # hidden in the torso
    n = vertex_normals(verts, tris)
    collar_w = smoothstep(lm[CHIN, 1] + 0.029, lm[CHIN, 1] + 0.033, verts[:, 1])[:, None]
    under_chin = 0.78 + 0.22 * smoothstep(lm[CHIN, 1] - 0.005, lm[CHIN, 1] + 0.025, verts[:, 1])[:, None]
    col = (collar_w * collar[None] + (1 - collar_w) * skin[None] * under_chin) * shade(n, 0.7)[:, None]
    follow = smoothstep(lm[CHIN, 1] + 0.04, y_top + 0.01, verts[:, 1])
    return PartMesh(verts, tris, np.clip(col, 0, 1)), follow


def orient_outward_cyl(verts: np.ndarray, tris: np.ndarray, zc: float) -> np.ndarray:
    """Orient a vertical tube's triangles away from its axis (x = 0, z = zc)."""
    c = verts[tris].mean(1)
    n = np.cross(verts[tris[:, 1]] - verts[tris[:, 0]], verts[tris[:, 2]] - verts[tris[:, 0]])
    radial = c - np.stack([np.zeros(len(c)), c[:, 1], np.full(len(c), zc)], -1)
    flip = np.einsum("ij,ij->i", n, radial) < 0
    out = tris.copy()
    out[flip] = out[flip][:, [0, 2, 1]]
    return out


def build_torso(lm: np.ndarray, suit: np.ndarray, rng: np.random.Generator) -> PartMesh:
    """Shoulders and upper chest: a superellipsoid, flat-topped in the frontal plane, cut below."""
    ts = torso_shape(lm)
    (a, b, c), (cx, cy, zc) = ts.axes, ts.centre
    eta = np.linspace(-np.pi / 2, np.pi / 2, 60)  # elevation in the x-y (frontal) plane
    om = np.linspace(0, 2 * np.pi, 120, endpoint=False)  # around the vertical axis
    E, O = np.meshgrid(eta, om, indexing="ij")

    def spow(x: np.ndarray, e: float) -> np.ndarray:
        return np.sign(x) * np.abs(x) ** e

    x = a * spow(np.cos(E), ts.e1) * spow(np.cos(O), ts.e2)
    yy = -b * spow(np.sin(E), ts.e1)
    z = c * spow(np.cos(E), ts.e1) * spow(np.sin(O), ts.e2)
    pts = np.stack([cx + x, cy + yy, zc + z], -1)
    verts, tris = grid_mesh(pts, wrap_u=True)
    tris = orient_outward(verts, tris, ts.centre)
    tris = tris[verts[tris].mean(1)[:, 1] < cy + 0.06]
    n = vertex_normals(verts, tris)
    folds = 0.05 * _value_noise(O.ravel() / (2 * np.pi), E.ravel() / np.pi + 0.5, rng, (24, 8))
    col = suit[None] * (1 + folds[:, None]) * shade(n, 0.5)[:, None]
    return PartMesh(verts, tris, np.clip(col, 0, 1))


# --------------------------------------------------------------------------------- mouth inside
def build_mouth(lm: np.ndarray) -> list[tuple[str, PartMesh, float]]:
    """Upper and lower teeth rows, a dark palate/throat wall and the tongue, behind closed lips.

    Returns ``(name, mesh, jaw weight)`` per part (1: moves with the jaw, 0: with the skull).
    """
    xl, xr = lm[MOUTH_CORNERS_INNER[0], 0], lm[MOUTH_CORNERS_INNER[1], 0]
    cx, hw = 0.5 * (xl + xr), 0.5 * (xr - xl)
    line = lm[[MOUTH_CORNERS_INNER[0]] + LIP_UPPER_INNER + [MOUTH_CORNERS_INNER[1]]]
    order = np.argsort(line[:, 0])
    lx, ly, lz = line[order, 0], line[order, 1], line[order, 2]
    z_mid = float(np.interp(cx, lx, lz))

    def sheet(width: float, ys: tuple[float, float], depth, nv: int = 12, nu: int = 40):
        s = np.linspace(-1, 1, nu)
        v = np.linspace(0, 1, nv)
        V, S = np.meshgrid(v, s, indexing="ij")
        x = cx + S * hw * width
        y0 = np.interp(x, lx, ly)
        y = y0 + ys[0] + (ys[1] - ys[0]) * V
        z = z_mid + depth(S, V)
        return np.stack([x, y, z], -1), S, V

    parts: list[tuple[str, PartMesh, float]] = []
    behind = np.array([cx, ly.mean(), z_mid + 0.06])

    def teeth(ys, dz, shade_k, jaw: float, name: str, width: float = 0.78):
        pts, S, V = sheet(width, ys, lambda S, V: dz + 0.011 * S**2 + 0.002 * V * (1 if jaw else -1))
        verts, tris = grid_mesh(pts)
        tris = orient_outward(verts, tris, behind)
        s = S.ravel() * width * hw
        # faint gaps between teeth every 8.5 mm from the midline
        phase = np.abs(s) / 0.0085
        gap = np.exp(-(((phase - np.round(phase)) / 0.07) ** 2))
        edge = smoothstep(0.0, 0.2, V.ravel() if jaw == 0 else 1 - V.ravel())
        base = np.array([0.96, 0.94, 0.88]) * shade_k
        col = base[None] * (1 - 0.22 * gap[:, None]) * (0.85 + 0.15 * edge[:, None])
        col *= (1 - 0.3 * (np.abs(S.ravel()) ** 2))[:, None]
        parts.append((name, PartMesh(verts, tris, np.clip(col, 0, 1)), jaw))

    teeth((-0.0095, 0.0028), 0.0032, 1.0, 0.0, "teeth_upper")
    teeth((-0.0012, 0.0085), 0.0048, 0.85, 1.0, "teeth_lower")

    # palate / throat: a dark wall behind the teeth, deepest at the centre
    pts, S, V = sheet(0.9, (-0.02, 0.016), lambda S, V: 0.016 + 0.01 * (1 - S**2) + 0.006 * S**2, nv=16)
    verts, tris = grid_mesh(pts)
    tris = orient_outward(verts, tris, behind + np.array([0, 0, 0.04]))
    dark = 0.55 + 0.45 * np.abs(S.ravel()) ** 1.5
    col = np.array([0.30, 0.05, 0.06])[None] * dark[:, None]
    parts.append(("mouth_wall", PartMesh(verts, tris, col), 0.0))

    # tongue: a sloped sheet on the jaw, front edge just behind the lower teeth
    pts, S, V = sheet(0.72, (0.003, 0.013), lambda S, V: 0.02 - 0.012 * V + 0.008 * S**2, nv=10)
    verts, tris = grid_mesh(pts)
    tris = orient_outward(verts, tris, behind + np.array([0, 0.03, 0]))
    col = (
        np.array([0.62, 0.27, 0.29])[None]
        * (0.6 + 0.4 * V.ravel()[:, None])
        * (1 - 0.3 * S.ravel()[:, None] ** 2)
    )
    parts.append(("tongue", PartMesh(verts, tris, col), 1.0))
    return parts
