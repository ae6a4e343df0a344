"""A deterministic synthetic talking subject made of 3D Gaussians.

The face is MediaPipe's 478-landmark reading of a public-domain photo (``skimage.data.astronaut``),
lifted to a textured mesh in head space (OpenCV axes, metres, inter-ocular distance 0.063 m, origin at
the centroid of the rest landmarks). Around it: a scalp with a bob haircut, eyeballs, teeth, a dark
mouth cavity and tongue, a neck and shoulders. Everything is sampled as flat, nearly opaque Gaussian
discs. Controls: ``jaw_open`` and ``blink`` in [0, 1] and a rigid head pose about a neck pivot.

Head pose convention: a head-space point ``x`` is placed in the world at
``R @ (x - neck_pivot) + neck_pivot + t``. The torso never moves; the neck blends between the two.

Size: the default 6,000 Gaussians are placed where a 256 px portrait needs them (dense around the
eyes, brows, nose and lips; large soft discs on hair, neck and suit), a budget the PyTorch reference
rasteriser renders quickly on one CPU core (docs/design/synthetic-subject.md). Pass a larger
``n_gaussians`` for sharper ground truth at higher resolutions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import roma
import torch
from torch import Tensor

from ..core.camera import Camera, stack_cameras
from ..render.rasterize import rasterize
from ._face import FOREHEAD, JAW_MAX_RADIANS, FaceRig, FaceScan, build_face_rig, scan_photo
from ._geometry import bilinear, normals_to_quats, rotate_about_x_batch, sample_mesh, triangle_areas
from ._parts import PartMesh, build_head, build_mouth, build_neck, build_torso

PART_NAMES: tuple[str, ...] = (
    "face",
    "eyes",
    "hair",
    "teeth_upper",
    "teeth_lower",
    "mouth_wall",
    "tongue",
    "neck",
    "torso",
)
LABEL_HEAD, LABEL_TORSO = 0, 1  # rigid labels
DEFAULT_BACKGROUND: tuple[float, float, float] = (0.62, 0.66, 0.70)
DEFAULT_N_GAUSSIANS = 6_000  # sized for the PyTorch reference rasteriser at 256 px (see the module docs)
OPACITY = 0.95
SIGMA_PER_SPACING = 0.7  # disc standard deviation relative to the mean sample spacing (face)
SIGMA_PER_SPACING_PARTS = 0.75  # the same for the procedural parts (smooth, so a little softer)
FLATNESS = 0.12  # scale along the normal relative to the tangential scale

# sample spacing per part relative to the face's: smooth procedural parts get fewer, larger discs
_SPACING = {
    "face_detail": 0.8,
    "face": 1.25,
    "teeth": 0.9,
    "mouth": 1.05,
    "hair": 2.6,
    "neck": 2.6,
    "torso": 3.8,
}


def _feature_landmarks() -> list[int]:
    """Landmarks on the lips, eyes, brows and nose outlines."""
    # mediapipe is a hard dependency, but importing it costs most of a second: only when needed
    from mediapipe.python.solutions import face_mesh_connections as fmc

    feats: set[int] = set()
    for group in (
        fmc.FACEMESH_LIPS,
        fmc.FACEMESH_LEFT_EYE,
        fmc.FACEMESH_RIGHT_EYE,
        fmc.FACEMESH_NOSE,
        fmc.FACEMESH_LEFT_EYEBROW,
        fmc.FACEMESH_RIGHT_EYEBROW,
    ):
        for a, b in group:
            feats.update((a, b))
    return sorted(feats)


def _plain_skin_landmarks() -> list[int]:
    """Face landmarks away from the features and the rim: their photo colour is plain skin."""
    # mediapipe: imported only when needed (see _feature_landmarks)
    from mediapipe.python.solutions import face_mesh_connections as fmc

    rim = {v for e in fmc.FACEMESH_FACE_OVAL for v in e}
    feats = set(_feature_landmarks())
    return [i for i in range(468) if i not in rim and i not in feats]


def _detail_triangles(rig: FaceRig, radius: float = 0.009) -> np.ndarray:
    """Triangles near the eyes, brows, nose and lips (where the texture has detail), plus eyes."""
    centres = rig.verts[rig.tris].mean(1)
    d = np.linalg.norm(centres[:, None, :] - rig.verts[_feature_landmarks()][None], axis=-1).min(1)
    return (d < radius) | (rig.tri_part == 1)


@dataclass
class _PartSpec:
    """A procedural part: its mesh, relative sample spacing, head weight(s) and jaw weight."""

    name: str
    mesh: PartMesh
    spacing: float
    follow: np.ndarray | float
    jaw: float

    @property
    def area(self) -> float:
        return float(triangle_areas(self.mesh.verts, self.mesh.tris).sum())


def _palette(scan: FaceScan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(skin, hair, suit) RGB colours from the photo: plain face skin (a touch brighter than the
    shaded median), the hair above the forehead pulled towards a brown, the orange suit."""
    photo = scan.photo
    skin = np.clip(1.08 * np.median(bilinear(photo, scan.uv[_plain_skin_landmarks()]), axis=0), 0, 1)
    fx, fy = (int(v) for v in scan.uv[FOREHEAD])
    hair_patch = photo[fy - 34 : fy - 14, fx - 30 : fx + 30].reshape(-1, 3)
    hair = 0.4 * np.median(hair_patch, axis=0) + 0.6 * np.array([0.30, 0.19, 0.11])
    suit = np.median(photo[240:290, 70:120].reshape(-1, 3), axis=0)  # her left shoulder
    return skin, hair, suit


def _as_tensor(x, dtype=torch.float32) -> Tensor:
    return torch.as_tensor(np.asarray(x), dtype=dtype)


NECK_COLLAR_COLOUR = (0.05, 0.05, 0.06)  # RGB of the dark turtleneck at the neck's base
MIN_FACE_SAMPLES = 50  # Gaussians per face-mesh class at least (tiny budgets)
MIN_PART_SAMPLES = 30  # Gaussians per procedural part at least
RIM_TINT = 0.6  # how far the lower face rim's photo colour is pulled towards the shaded skin
RIM_SKIN_SHADE = 0.9  # the skin colour's brightness at the rim


def _part_specs(lm: np.ndarray, scan: FaceScan, palette: tuple, rng: np.random.Generator) -> list[_PartSpec]:
    """Every procedural part (mouth interior, hair, neck, torso) with its spacing and weights."""
    skin, hair, suit = palette
    neck_mesh, neck_follow = build_neck(lm, skin, np.array(NECK_COLLAR_COLOUR))
    specs = [
        _PartSpec(name, pm, _SPACING["teeth" if name.startswith("teeth") else "mouth"], 1.0, jaw)
        for name, pm, jaw in build_mouth(lm)
    ]
    specs += [
        _PartSpec("hair", build_head(lm, scan.oval, skin, hair, rng), _SPACING["hair"], 1.0, 0.0),
        _PartSpec("neck", neck_mesh, _SPACING["neck"], neck_follow, 0.0),
        _PartSpec("torso", build_torso(lm, suit, rng), _SPACING["torso"], 0.0, 0.0),
    ]
    return specs


class _Budget(NamedTuple):
    """How the Gaussian budget is shared: the face's rest triangle areas (F,), its two density classes
    ((triangle mask, spacing multiplier): near the features, elsewhere) and the squared sample spacing
    (m²) on the plain face, from which every part's spacing follows."""

    tri_area: np.ndarray
    classes: list[tuple[np.ndarray, float]]
    spacing2: float


def _share_budget(rig: FaceRig, specs: list[_PartSpec], n_gaussians: int) -> _Budget:
    """Share ``n_gaussians`` over the face and the parts by area and per-part spacing multiplier."""
    tri_area = triangle_areas(rig.verts, rig.tris)
    detail = _detail_triangles(rig)
    classes = [(detail, _SPACING["face_detail"]), (~detail, _SPACING["face"])]
    weighted = sum(float(tri_area[m].sum()) / k**2 for m, k in classes)
    weighted += sum(sp.area / sp.spacing**2 for sp in specs)
    return _Budget(tri_area, classes, weighted / n_gaussians)


class _FaceSamples(NamedTuple):
    """Gaussians bound to the deforming face mesh: triangle (N,), barycentrics (N, 3), rest sigma (N,)
    metres, colour (N, 3) and part index (N,)."""

    tri: np.ndarray
    bary: np.ndarray
    sigma: np.ndarray
    colors: np.ndarray
    part: np.ndarray


def _sample_face(
    rig: FaceRig, scan: FaceScan, skin: np.ndarray, budget: _Budget, rng: np.random.Generator
) -> _FaceSamples:
    """Face and eye Gaussians on the mesh (denser around the features), coloured from the photo with
    the lower rim tinted towards the skin."""
    m_tri, m_bary, m_sigma = [], [], []
    for mask, mult in budget.classes:
        idx = np.nonzero(mask)[0]
        n = max(int(budget.tri_area[idx].sum() / (budget.spacing2 * mult**2)), MIN_FACE_SAMPLES)
        ms = sample_mesh(rig.verts, rig.tris[idx], n, rng)
        m_tri.append(idx[ms.tri])
        m_bary.append(ms.bary)
        m_sigma.append(np.full(len(ms.tri), SIGMA_PER_SPACING * ms.spacing))
    tri_m, bary_m = np.concatenate(m_tri), np.concatenate(m_bary)
    uv = np.einsum("nk,nkd->nd", bary_m, rig.uv[rig.tris[tri_m]])
    rim = np.einsum("nk,nk->n", bary_m, rig.rim_w[rig.tris[tri_m]])[:, None]
    colors = (1 - RIM_TINT * rim) * bilinear(scan.photo, uv) + RIM_TINT * rim * (RIM_SKIN_SHADE * skin)
    part = np.where(rig.tri_part[tri_m] == 1, PART_NAMES.index("eyes"), PART_NAMES.index("face"))
    return _FaceSamples(tri_m, bary_m, np.concatenate(m_sigma), colors, part)


class _FreeSamples(NamedTuple):
    """Fixed discs on the procedural parts: means (N, 3), normals (N, 3), sigma (N,) metres, colours
    (N, 3), jaw weight (N,), head weight (N,) and part index (N,)."""

    means: np.ndarray
    normals: np.ndarray
    sigma: np.ndarray
    colors: np.ndarray
    jaw: np.ndarray
    head_w: np.ndarray
    part: np.ndarray


def _sample_parts(specs: list[_PartSpec], spacing2: float, rng: np.random.Generator) -> _FreeSamples:
    """Discs on every procedural part, each with its part's jaw weight and interpolated head weight."""
    out: list[list[np.ndarray]] = [[] for _ in _FreeSamples._fields]
    for sp in specs:
        n = max(int(sp.area / (spacing2 * sp.spacing**2)), MIN_PART_SAMPLES)
        s = sample_mesh(sp.mesh.verts, sp.mesh.tris, n, rng)
        corners = sp.mesh.tris[s.tri]
        follow = np.broadcast_to(np.asarray(sp.follow, float), (len(sp.mesh.verts),))
        for acc, x in zip(
            out,
            (
                s.points,
                s.normals,
                np.full(len(s.tri), SIGMA_PER_SPACING_PARTS * s.spacing),
                np.einsum("nk,nkd->nd", s.bary, sp.mesh.colors[corners]),
                np.full(len(s.tri), sp.jaw),
                np.einsum("nk,nk->n", s.bary, follow[corners]),
                np.full(len(s.tri), PART_NAMES.index(sp.name)),
            ),
        ):
            acc.append(x)
    return _FreeSamples(*(np.concatenate(acc) for acc in out))


class SyntheticSubject:
    """The ground-truth talking subject.

    Args:
        seed: drives the sample positions and the procedural texture noise (the face shape and
            texture come from the photo and do not depend on it).
        n_gaussians: approximate total number of Gaussians.

    Attributes:
        n: number of Gaussians.
        labels: (N,) int64 rigid label, :data:`LABEL_HEAD` (follows the head pose) or :data:`LABEL_TORSO`.
        head_weight: (N,) float how much each Gaussian follows the head (0/1 except on the neck).
        part: (N,) int64 index into :data:`PART_NAMES`.
        canonical_landmarks: (478, 3) rest landmarks in head space (centroid at the origin).
        jaw_pivot, neck_pivot: (3,) pivots in head space.
    """

    def __init__(self, seed: int = 0, n_gaussians: int = DEFAULT_N_GAUSSIANS) -> None:
        if n_gaussians < 2000:
            raise ValueError(f"n_gaussians must be at least 2000, got {n_gaussians}")
        self.seed = int(seed)
        self.n_gaussians = int(n_gaussians)
        rng = np.random.default_rng(self.seed)
        scan = scan_photo()
        rig = build_face_rig(scan)
        self._rig = rig
        self.canonical_landmarks = rig.landmarks.copy()
        self.jaw_pivot = rig.jaw_pivot.copy()
        self.neck_pivot = rig.neck_pivot.copy()
        skin, hair, suit = _palette(scan)
        self.skin_color, self.hair_color, self.suit_color = skin, hair, suit

        specs = _part_specs(rig.landmarks, scan, (skin, hair, suit), rng)
        budget = _share_budget(rig, specs, n_gaussians)
        face = _sample_face(rig, scan, skin, budget, rng)
        free = _sample_parts(specs, budget.spacing2, rng)

        self._m_tri = torch.as_tensor(face.tri)
        self._m_bary = _as_tensor(face.bary)
        self._m_sigma = _as_tensor(face.sigma)
        self._V_rest = _as_tensor(rig.verts)
        self._V_blink = _as_tensor(rig.blink_d)
        self._V_jaw = _as_tensor(rig.jaw_w)
        self._tris = torch.as_tensor(rig.tris)
        self._tri_area_rest = _as_tensor(budget.tri_area)
        self._f_means = _as_tensor(free.means)
        self._f_normals = _as_tensor(free.normals)
        self._f_sigma = _as_tensor(free.sigma)
        self._f_jaw = _as_tensor(free.jaw)
        n_m = len(face.tri)
        self.n = n_m + len(self._f_means)
        self._colors = _as_tensor(np.clip(np.concatenate([face.colors, free.colors]), 0.0, 1.0))
        self.head_weight = _as_tensor(np.r_[np.ones(n_m), free.head_w])
        self.labels = torch.where(self.head_weight > 0.5, LABEL_HEAD, LABEL_TORSO).to(torch.int64)
        self.part = torch.as_tensor(np.r_[face.part, free.part]).to(torch.int64)
        self._opacities = torch.full((self.n,), OPACITY)

    # ------------------------------------------------------------------------------ posing
    def landmarks(
        self,
        jaw_open: float = 0.0,
        blink: float = 0.0,
        head_R: np.ndarray | None = None,
        head_t: np.ndarray | None = None,
    ) -> np.ndarray:
        """The 478 MediaPipe-topology landmarks (world space) for the given controls."""
        rig = self._rig
        P = rig.landmarks + float(blink) * rig.landmark_blink_d
        ang = float(jaw_open) * JAW_MAX_RADIANS * rig.landmark_jaw_w
        d = P - self.jaw_pivot
        c, s = np.cos(ang), np.sin(ang)
        P = np.stack([d[:, 0], c * d[:, 1] - s * d[:, 2], s * d[:, 1] + c * d[:, 2]], -1) + self.jaw_pivot
        if head_R is not None or head_t is not None:
            R = np.eye(3) if head_R is None else np.asarray(head_R, float)
            t = np.zeros(3) if head_t is None else np.asarray(head_t, float)
            P = (P - self.neck_pivot) @ R.T + self.neck_pivot + t
        return P

    def gaussians(
        self,
        jaw_open: float = 0.0,
        blink: float = 0.0,
        head_R: np.ndarray | Tensor | None = None,
        head_t: np.ndarray | Tensor | None = None,
    ) -> dict[str, Tensor]:
        """World-space Gaussians: ``means`` (N, 3), ``quats`` (N, 4) wxyz, ``scales`` (N, 3) linear,
        ``opacities`` (N,), ``colors`` (N, 3) RGB in [0, 1] — the keyword arguments of
        :func:`avatar3d.render.rasterize.rasterize`."""
        g, _ = self.posed(jaw_open, blink, head_R, head_t)
        return g

    def posed(
        self,
        jaw_open: float = 0.0,
        blink: float = 0.0,
        head_R: np.ndarray | Tensor | None = None,
        head_t: np.ndarray | Tensor | None = None,
    ) -> tuple[dict[str, Tensor], Tensor]:
        """:meth:`gaussians` plus the discs' outward unit normals (N, 3) (for back-face culling)."""
        jaw_open = float(np.clip(jaw_open, 0.0, 1.0))
        blink = float(np.clip(blink, 0.0, 1.0))
        theta = jaw_open * float(JAW_MAX_RADIANS)
        pivot = _as_tensor(self.jaw_pivot)
        with torch.no_grad():
            # mesh-bound Gaussians: deform the vertices, then re-derive positions, normals, sizes
            V = self._V_rest + blink * self._V_blink
            V, _ = rotate_about_x_batch(V, torch.zeros_like(V), pivot, theta * self._V_jaw)
            tv = V[self._tris]  # (F, 3, 3)
            fn = torch.linalg.cross(tv[:, 1] - tv[:, 0], tv[:, 2] - tv[:, 0])
            area = 0.5 * fn.norm(dim=-1)
            fn = fn / (2 * area[:, None]).clamp(min=1e-12)
            stretch = (area / self._tri_area_rest.clamp(min=1e-14)).clamp(0.25, 16.0).sqrt()
            m_means = torch.einsum("nk,nkd->nd", self._m_bary, tv[self._m_tri])
            m_normals = fn[self._m_tri]
            m_sigma = self._m_sigma * stretch[self._m_tri]
            # free Gaussians: the jaw rotates the lower teeth and tongue
            f_means, f_normals = rotate_about_x_batch(
                self._f_means, self._f_normals, pivot, theta * self._f_jaw
            )
            means = torch.cat([m_means, f_means])
            normals = torch.cat([m_normals, f_normals])
            sigma = torch.cat([m_sigma, self._f_sigma])
            if head_R is not None or head_t is not None:
                means, normals = self._apply_head_pose(means, normals, head_R, head_t)
            scales = torch.stack([sigma, sigma, FLATNESS * sigma], -1)
            g = {
                "means": means.contiguous(),
                "quats": normals_to_quats(normals),
                "scales": scales,
                "opacities": self._opacities.clone(),
                "colors": self._colors.clone(),
            }
            return g, normals

    def _apply_head_pose(self, means: Tensor, normals: Tensor, head_R, head_t) -> tuple[Tensor, Tensor]:
        R = np.eye(3) if head_R is None else np.asarray(torch.as_tensor(head_R).cpu(), float)
        t = np.zeros(3) if head_t is None else np.asarray(torch.as_tensor(head_t).cpu(), float).reshape(3)
        p = _as_tensor(self.neck_pivot)
        w = self.head_weight
        Rf, tf = _as_tensor(R), _as_tensor(t)
        full = w >= 1.0
        out_m = means.clone()
        out_n = normals.clone()
        out_m[full] = (means[full] - p) @ Rf.T + p + tf
        out_n[full] = normals[full] @ Rf.T
        part = (w > 0) & ~full
        if part.any():
            rotvec = roma.rotmat_to_rotvec(torch.as_tensor(R, dtype=torch.float64))
            Rw = roma.rotvec_to_rotmat(_as_tensor(rotvec)[None] * w[part, None])
            out_m[part] = torch.einsum("nij,nj->ni", Rw, means[part] - p) + p + w[part, None] * tf
            out_n[part] = torch.einsum("nij,nj->ni", Rw, normals[part])
        return out_m, out_n

    # ------------------------------------------------------------------------------ rendering
    def render(
        self,
        cameras: Camera | Sequence[Camera],
        jaw_open: float = 0.0,
        blink: float = 0.0,
        head_R: np.ndarray | Tensor | None = None,
        head_t: np.ndarray | Tensor | None = None,
        background: Sequence[float] = DEFAULT_BACKGROUND,
        cull_backfaces: bool = True,
        backend: str = "auto",
    ) -> Tensor:
        """Render the posed subject into one or more cameras of one image size.

        Returns (C, H, W, 3) float32 RGB in [0, 1] over a uniform ``background`` colour.
        ``cull_backfaces`` skips discs facing away from each camera (see :func:`render_gaussians`);
        the ground truth of :mod:`avatar3d.synthetic.video` is rendered with it on.
        """
        cams = [cameras] if isinstance(cameras, Camera) else list(cameras)
        g, normals = self.posed(jaw_open, blink, head_R, head_t)
        return render_gaussians(g, cams, background, normals if cull_backfaces else None, backend)

    def head_pose_in_camera(
        self, camera: Camera, head_R: np.ndarray | None = None, head_t: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(R_c, t_c)`` with ``x_cam = R_c @ x_head + t_c`` (the tracking convention)."""
        R = np.eye(3) if head_R is None else np.asarray(head_R, float)
        t = np.zeros(3) if head_t is None else np.asarray(head_t, float)
        Wr, Wt = camera.world_to_camera[:3, :3], camera.world_to_camera[:3, 3]
        return Wr @ R, Wr @ (self.neck_pivot - R @ self.neck_pivot + t) + Wt

    def portrait_camera(
        self, size: int = 256, face_fraction: float = 0.4, fov_degrees: float = 18.0
    ) -> Camera:
        """A frontal camera framing head and shoulders with the face ~``face_fraction`` of the width."""
        lm = self.canonical_landmarks
        face_w = float(lm[:, 0].max() - lm[:, 0].min())
        focal = 0.5 * size / math.tan(math.radians(fov_degrees) / 2)
        dist = focal * face_w / (face_fraction * size)
        top = lm[FOREHEAD, 1] - 0.08  # a little headroom above the hair
        target = np.array([0.0, top + 0.5 * size * dist / focal, 0.0])
        return Camera.look_at(
            target + np.array([0.0, 0.0, -dist]), target, (0, -1, 0), size, size, focal=focal
        )


def render_gaussians(
    g: dict[str, Tensor],
    cameras: Sequence[Camera],
    background: Sequence[float] = DEFAULT_BACKGROUND,
    normals: Tensor | None = None,
    backend: str = "auto",
) -> Tensor:
    """Rasterise a :meth:`SyntheticSubject.gaussians` dict into ``cameras`` -> (C, H, W, 3).

    With ``normals`` (outward, from :meth:`SyntheticSubject.posed`), discs facing away from a camera
    are skipped for that camera (each camera is then rendered on its own, so an image never
    depends on which other cameras share the call). They sit behind the nearly opaque front
    surface, so the image barely changes and the rasteriser has fewer Gaussian/tile pairs to
    composite (docs/design/synthetic-subject.md).
    """
    cams = list(cameras)
    bg = _as_tensor(background).reshape(1, 3)
    with torch.no_grad():
        if normals is None:
            viewmats, Ks = stack_cameras(cams)
            out = rasterize(
                g["means"],
                g["quats"],
                g["scales"],
                g["opacities"],
                g["colors"],
                viewmats,
                Ks,
                cams[0].width,
                cams[0].height,
                backgrounds=bg.expand(len(cams), 3).contiguous(),
                backend=backend,
            )
            return out.colors.clamp(0.0, 1.0)
        images = []
        for cam in cams:
            to_cam = _as_tensor(cam.center)[None] - g["means"]
            keep = (to_cam * normals).sum(-1) > -0.2 * to_cam.norm(dim=-1)
            viewmat, K = stack_cameras([cam])
            out = rasterize(
                g["means"][keep],
                g["quats"][keep],
                g["scales"][keep],
                g["opacities"][keep],
                g["colors"][keep],
                viewmat,
                K,
                cam.width,
                cam.height,
                backgrounds=bg,
                backend=backend,
            )
            images.append(out.colors[0].clamp(0.0, 1.0))
        return torch.stack(images)
