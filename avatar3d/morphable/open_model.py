"""The open default face model: built per subject from MediaPipe landmarks, no licence-gated file.

Topology: MediaPipe's face mesh. Its triangles are the 3-cliques of
``mediapipe.python.solutions.face_mesh_connections.FACEMESH_TESSELATION`` (468 vertices) minus two
spurious cliques (a triangle around a degree-3 vertex), consistently oriented so that normals face
the camera; holes remain at the eyes and the mouth. The 10 iris landmarks (468..477) are extra
vertices with a 4-triangle fan each, so vertex ``i`` *is* MediaPipe landmark ``i``.

Geometry, from the subject's own video (:meth:`OpenFaceModel.from_landmarks`, input: pose-free
head-space landmarks per frame):

- explicit semantic controls, each a displacement pattern regressed from the data and restricted to
  its region: ``jaw_open`` against the inner-lip gap, below the nose (unit: 1 cm of lip opening above
  the closed mouth, the 5th percentile of the clip) and ``blink`` against the eyelid gap, around the
  eyes (0 = eyes as open as usual, the clip's median; 1 = closed);
- identity = the robust mean of the frames with those controls taken out, i.e. the face with the
  mouth closed and the eyes open (frames re-weighted against tracking failures) -- one subject, so
  ``n_shape == 0``;
- an expression basis: PCA of what remains, scaled so that a coefficient of 1 is one standard
  deviation over the video (not orthogonalised against the controls, so that a smile's overlap with
  the jaw pattern stays with the smile when :meth:`~OpenFaceModel.encode` or the fitter solve jointly).

Limits (honest):

- it covers the face only -- no scalp, ears, neck, teeth or mouth interior; :func:`extend_to_head`
  adds a smooth closed shell (ellipsoidal back of the head) only to initialise primitives there;
- MediaPipe's depth is relative and regularised by its own face prior, so the model's z is only as
  good as that; metric scale comes from the capture stage's inter-ocular normalisation (0.063 m),
  not from the data; focal length must come from the perspective fit;
- expressions the video never shows are not in the basis (it is per subject, not a population
  model), and a basis built from a short clip is noisy; ``jaw_open`` mixes true jaw rotation with
  lip motion that opens the lips; ``blink`` is one control for both eyes;
- no pose-dependent correctives, no skinning: the only pose is a rigid ``global`` rotation.

Besides :meth:`~OpenFaceModel.vertices`, :meth:`~OpenFaceModel.encode` solves the parameters of
pose-free 3D points by linear least squares and :meth:`~OpenFaceModel.measure` reads ``jaw_open`` /
``blink`` straight off the lip and lid gaps. Files: :meth:`~OpenFaceModel.save` / ``load``
(safetensors: tensors ``template``, ``expression_basis``, ``control_basis``, ``format_version``,
``stats.*``).
"""

from __future__ import annotations

import functools
import itertools
from collections import defaultdict, deque
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar

import numpy as np
import roma
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..core.topology import (
    LEFT_EYE_CORNERS,
    LEFT_EYELID_PAIRS,
    RIGHT_EYE_CORNERS,
    RIGHT_EYELID_PAIRS,
    eye_loops,
    face_triangles,
    inner_lip_loop,
    outer_lip_loop,
)
from ..errors import FormatError
from .base import N_MEDIAPIPE, ControlDict, LandmarkEmbedding, MorphableModel, PoseDict, as_tensor
from .head import boundary_loops, extend_to_head  # noqa: F401  (extend_to_head: re-exported)
from .lbs import rotate

FORMAT_VERSION = 1
N_MESH = 468
LIP_PAIRS = ((13, 14), (82, 87), (312, 317))  # inner lip: upper, lower
EYE_PAIRS = RIGHT_EYELID_PAIRS + LEFT_EYELID_PAIRS  # lid: upper, lower
IRIS_FANS = ((468, (469, 470, 471, 472)), (473, (474, 475, 476, 477)))
JAW_UNIT = 0.01  # metres of inner-lip opening per unit of jaw_open
ORIENTATION_ORDER = (10, 234, 152, 454)  # forehead, image-left cheek, chin, image-right cheek
SUBNASALE, UPPER_INNER_LIP = 2, 13  # the jaw_open region ramps from the nose base to the upper lip
BLINK_OUTER_EYE_WIDTHS = 0.9  # the blink region ends this many eye widths from the eye's centre ...
BLINK_RAMP_EYE_WIDTHS = 0.35  # ... ramping up over this many eye widths inwards
LIP_CLOSED_QUANTILE = 0.05  # the clip's closed-mouth inner-lip gap
EYE_OPEN_QUANTILE = 0.5  # the clip's usual eyelid gap
CAUCHY_SCALE = 2.5  # x the median per-frame residual: the frame weights' Cauchy scale


# ---------------------------------------------------------------------------------------- topology
def _orient(tris: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Consistent winding by breadth-first propagation across shared edges."""
    by_edge: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, t in enumerate(tris):
        for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
            by_edge[(min(a, b), max(a, b))].append(i)
    out: list[tuple[int, int, int] | None] = [None] * len(tris)
    for seed in range(len(tris)):
        if out[seed] is not None:
            continue
        out[seed] = tris[seed]
        queue = deque([seed])
        while queue:
            i = queue.popleft()
            t = out[i]
            for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
                for j in by_edge[(min(a, b), max(a, b))]:
                    if out[j] is None:
                        u = tris[j]
                        # neighbour must traverse the shared edge b -> a
                        directed = {(u[0], u[1]), (u[1], u[2]), (u[2], u[0])}
                        out[j] = u if (b, a) in directed else (u[0], u[2], u[1])
                        queue.append(j)
    return out  # type: ignore[return-value]


@functools.lru_cache(maxsize=1)
def mediapipe_triangles() -> np.ndarray:
    """(852, 3) int64: MediaPipe's face-mesh triangles, wound so normals face the camera (-z)."""
    tris = [tuple(int(v) for v in t) for t in face_triangles()]
    faces = np.array(_orient(tris), dtype=np.int64)
    outer = max(boundary_loops(faces), key=len)
    pos = [outer.index(v) for v in ORIENTATION_ORDER]
    rolled = [(p - pos[0]) % len(outer) for p in pos]
    if rolled != sorted(rolled):  # boundary must run forehead -> image-left -> chin -> image-right
        faces = faces[:, [0, 2, 1]]
    return faces


def mediapipe_faces(with_iris: bool = True) -> np.ndarray:
    """(852 + 8, 3) triangles over the 478 landmarks (the iris fans last) or (852, 3) without."""
    faces = mediapipe_triangles()
    if not with_iris:
        return faces.copy()
    fans = [(c, ring[i], ring[(i + 1) % 4]) for c, ring in IRIS_FANS for i in range(4)]
    return np.concatenate([faces, np.array(fans, dtype=np.int64)])


def identity_embedding(faces: np.ndarray, n_vertices: int = N_MEDIAPIPE) -> LandmarkEmbedding:
    """Embedding where landmark ``i`` is vertex ``i`` (one-hot barycentric coordinates)."""
    face_idx, bary = np.zeros(n_vertices, np.int64), np.zeros((n_vertices, 3))
    found = np.zeros(n_vertices, bool)
    for f, tri in enumerate(faces):
        for k, v in enumerate(tri):
            if not found[v]:
                face_idx[v], bary[v, k], found[v] = f, 1.0, True
    if not found.all():
        raise ValueError(f"vertices {np.flatnonzero(~found)[:5].tolist()} are in no triangle")
    return LandmarkEmbedding(torch.as_tensor(face_idx), torch.as_tensor(bary), torch.arange(n_vertices))


# ---------------------------------------------------------------------------------------- measures
def lip_gap(points: Tensor) -> Tensor:
    """Mean inner-lip opening (...,) in metres of points (..., 478, 3)."""
    return torch.stack([(points[..., b, :] - points[..., a, :]).norm(dim=-1) for a, b in LIP_PAIRS]).mean(0)


def eye_gap(points: Tensor) -> Tensor:
    """Mean eyelid opening (...,) over both eyes, in metres, of points (..., 478, 3)."""
    return torch.stack([(points[..., b, :] - points[..., a, :]).norm(dim=-1) for a, b in EYE_PAIRS]).mean(0)


def _stable_weights(shape: Tensor) -> Tensor:
    """(478,) weights for rigid alignment: points above the mouth, minus eyes and irises."""
    moving = set(itertools.chain(inner_lip_loop().tolist(), outer_lip_loop().tolist(), *eye_loops()))
    moving |= set(range(N_MESH, N_MEDIAPIPE))
    w = (shape[:, 1] < shape[UPPER_INNER_LIP, 1]).to(shape.dtype)  # y down: above the upper inner lip
    w[list(moving)] = 0
    return w


# ---------------------------------------------------------------------------------------- model
class OpenFaceModel(MorphableModel):
    """Per-subject linear face model over MediaPipe's 478 points (see the module docstring).

    ``vertices = R(global) @ (template + expression @ basis + sum_c controls[c] * control_basis[c])
    + translation``, with rotation about the head-space origin.
    """

    pose_dims: ClassVar[Mapping[str, int]] = MappingProxyType({"global": 3})
    semantic_controls = ("jaw_open", "blink")
    fit_controls = ("jaw_open", "blink")
    fit_pose_keys = ()
    n_shape = 0

    def __init__(
        self,
        template: Tensor,  # [478, 3]
        expression_basis: Tensor,  # [E, 478, 3]
        control_basis: Tensor,  # [2, 478, 3] in semantic_controls order
        stats: dict[str, float] | None = None,
    ) -> None:
        if template.shape != (N_MEDIAPIPE, 3):
            raise ValueError(f"template must have shape (478, 3), got {tuple(template.shape)}")
        if expression_basis.ndim != 3 or expression_basis.shape[1:] != (N_MEDIAPIPE, 3):
            raise ValueError(
                f"expression_basis must have shape (E, 478, 3), got {tuple(expression_basis.shape)}"
            )
        if control_basis.shape != (len(self.semantic_controls), N_MEDIAPIPE, 3):
            raise ValueError(f"control_basis must have shape (2, 478, 3), got {tuple(control_basis.shape)}")
        self.template = template
        self.expression_basis = expression_basis.to(template)
        self.control_basis = control_basis.to(template)
        self.n_expression = int(expression_basis.shape[0])
        self.stats = dict(stats or {})
        faces = mediapipe_faces(with_iris=True)
        self.faces = torch.as_tensor(faces, device=template.device)
        self.embedding = identity_embedding(faces).to(template.device, template.dtype)

    # ------------------------------------------------------------------ properties
    @property
    def n_vertices(self) -> int:
        return N_MEDIAPIPE

    @property
    def device(self) -> torch.device:
        return self.template.device

    @property
    def dtype(self) -> torch.dtype:
        return self.template.dtype

    def to(self, device=None, dtype: torch.dtype | None = None) -> OpenFaceModel:
        kw = {"device": device, "dtype": dtype or self.dtype}
        return OpenFaceModel(
            self.template.to(**kw), self.expression_basis.to(**kw), self.control_basis.to(**kw), self.stats
        )

    # ------------------------------------------------------------------ evaluation
    def vertices(
        self,
        shape: Tensor,  # [B, 0]
        expression: Tensor,  # [B, E]
        pose: PoseDict | None = None,
        translation: Tensor | None = None,  # [B, 3]
        controls: ControlDict | None = None,
    ) -> Tensor:
        """Head-space vertices (B, 478, 3); vertex i is MediaPipe landmark i."""
        B = self._check_inputs(shape, expression, pose, translation, controls)
        v = self.template + torch.einsum("be,evc->bvc", expression.to(self.dtype), self.expression_basis)
        for k, name in enumerate(self.semantic_controls):
            if controls and name in controls:
                v = v + controls[name][:, None, None] * self.control_basis[k]
        if pose and "global" in pose:
            v = rotate(v, roma.rotvec_to_rotmat(pose["global"]))
        if translation is not None:
            v = v + translation[:, None, :]
        return v.expand(B, -1, -1) if v.shape[0] != B else v

    def landmarks(self, vertices: Tensor) -> Tensor:
        return vertices  # vertex i is landmark i

    def encode(self, points: Tensor, ridge: float = 1e-3) -> dict[str, Tensor | dict[str, Tensor]]:
        """Least-squares parameters of pose-free head-space points (B, 478, 3).

        Returns ``{"expression": (B, E), "controls": {name: (B,)}}``. ``ridge * face_size**2`` is the
        L2 weight on every coefficient (expression in standard deviations, jaw_open in cm, blink in
        [0, 1]): a unit coefficient costs as much as a ``sqrt(ridge)`` face-size residual.
        """
        if points.ndim != 3 or points.shape[1:] != (N_MEDIAPIPE, 3):
            raise ValueError(f"points must have shape (B, 478, 3), got {tuple(points.shape)}")
        A = torch.cat([self.expression_basis, self.control_basis]).reshape(-1, 3 * N_MEDIAPIPE)  # [P, 1434]
        y = (points.to(self.dtype) - self.template).reshape(points.shape[0], -1)  # [B, 1434]
        scale = self.stats.get("face_size", 0.1)  # make the prior resolution independent
        lhs = A @ A.T + ridge * scale**2 * torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
        coef = torch.linalg.solve(lhs, A @ y.T).T  # [B, P]
        E = self.n_expression
        return {
            "expression": coef[:, :E],
            "controls": {n: coef[:, E + k] for k, n in enumerate(self.semantic_controls)},
        }

    def measure(self, points: Tensor) -> dict[str, Tensor]:
        """Direct measurements (B,) of pose-free points (B, 478, 3) in control units (no fitting)."""
        s = self.stats
        if "lip_gap_closed" not in s or "eye_gap_open" not in s:
            raise ValueError("this model has no gap statistics (it was not built by from_landmarks)")
        return {
            "jaw_open": (lip_gap(points) - s["lip_gap_closed"]) / JAW_UNIT,
            "blink": 1.0 - eye_gap(points) / s["eye_gap_open"],
        }

    # ------------------------------------------------------------------ building
    @classmethod
    def from_landmarks(
        cls,
        landmarks3d: Tensor | np.ndarray,  # [T, 478, 3]
        n_expression: int = 16,
        valid: Tensor | np.ndarray | None = None,  # [T] bool
        align: bool = True,
        robust_iterations: int = 3,
    ) -> OpenFaceModel:
        """Build the subject's model from pose-free head-space landmarks of T frames.

        Args:
            landmarks3d: (T, 478, 3) per-frame landmarks, rigidly aligned to head space.
            n_expression: PCA components kept (fewer when the data has fewer frames).
            valid: (T,) frames to use (default: all with finite points).
            align: refine each frame's rigid alignment on stable points (above the mouth, not the
                eyes) against the median shape before building.
            robust_iterations: re-weighting passes that down-weight frames with large residuals.
        """
        X = as_tensor(landmarks3d, dtype=torch.float64)
        if X.ndim != 3 or X.shape[1:] != (N_MEDIAPIPE, 3):
            raise ValueError(f"landmarks3d must have shape (T, 478, 3), got {tuple(X.shape)}")
        keep = torch.isfinite(X).all(dim=(1, 2))
        if valid is not None:
            keep &= as_tensor(valid, dtype=torch.bool, device=X.device)
        X = X[keep]
        T = X.shape[0]
        if T < 8:
            raise ValueError(f"need at least 8 valid frames to build a face model, got {T}")
        if align:
            X = _align_frames(X)

        lip, eye = lip_gap(X), eye_gap(X)  # [T]
        lip_closed = torch.quantile(lip, LIP_CLOSED_QUANTILE)
        eye_open = torch.quantile(eye, EYE_OPEN_QUANTILE)
        m_jaw, m_blink = _region_masks(X.median(dim=0).values)  # [478] each
        Y = X.reshape(T, -1)  # [T, 1434]
        D = torch.stack([torch.ones_like(lip), lip - lip_closed, eye - eye_open], dim=1)  # [T, 3]
        w = torch.ones(T, dtype=X.dtype, device=X.device)
        for _ in range(max(1, robust_iterations)):
            sw = w.sqrt()[:, None]
            coef = torch.linalg.lstsq(D * sw, Y * sw).solution  # [3, 1434]
            # each control moves only its region: what else co-varies with a gap (other expressions)
            # is left to the PCA below instead of leaking into the control
            jaw_per_m = coef[1].reshape(N_MEDIAPIPE, 3) * m_jaw[:, None]
            eye_per_m = coef[2].reshape(N_MEDIAPIPE, 3) * m_blink[:, None]
            Z = X - D[:, 1, None, None] * jaw_per_m - D[:, 2, None, None] * eye_per_m  # controls removed
            template = (w[:, None, None] * Z).sum(0) / w.sum()
            resid = (Z - template).reshape(T, -1)  # [T, 1434]
            r = resid.pow(2).mean(1).sqrt()  # [T] per-frame RMS
            c = CAUCHY_SCALE * r.median().clamp_min(1e-12)
            w = 1.0 / (1.0 + (r / c).pow(2))  # Cauchy weights: tracking failures fade out
        jaw_dir = jaw_per_m.reshape(-1) * JAW_UNIT  # displacement per 1 cm of lip opening
        blink_dir = -eye_per_m.reshape(-1) * eye_open  # displacement from open (0) to closed (1)
        controls = torch.stack([jaw_dir, blink_dir])  # [2, 1434]

        # expression: PCA of the rest. Not forced orthogonal to the controls: a real expression (a smile)
        # overlaps the jaw pattern, and an orthogonalised basis would hand that overlap to jaw_open.
        sw = w.sqrt()[:, None]
        _, S, Vh = torch.linalg.svd(resid * sw, full_matrices=False)
        E = int(min(n_expression, T - 1, int((S > S[0] * 1e-6).sum()) if S[0] > 0 else 0))
        basis = Vh[:E] * (S[:E, None] / w.sum().sqrt())  # one std per unit

        face_size = float((template - template.mean(0)).norm(dim=1).pow(2).mean().sqrt())
        stats = {
            "lip_gap_closed": float(lip_closed),
            "eye_gap_open": float(eye_open),
            "n_frames": float(T),
            "face_size": face_size,
            "residual_rms": float((resid - (resid @ Vh[:E].T) @ Vh[:E]).pow(2).mean().sqrt()),
        }
        model = cls(
            template.float(),
            basis.reshape(E, N_MEDIAPIPE, 3).float(),
            controls.reshape(2, N_MEDIAPIPE, 3).float(),
            stats,
        )
        return model

    # ------------------------------------------------------------------ files
    def state_dict(self) -> dict[str, Tensor]:
        """Tensors for :func:`safetensors.torch.save_file` (contiguous, CPU, float32)."""
        out = {
            "template": self.template,
            "expression_basis": self.expression_basis,
            "control_basis": self.control_basis,
            "format_version": torch.tensor([FORMAT_VERSION]),
        }
        out.update({f"stats.{k}": torch.tensor([v], dtype=torch.float64) for k, v in self.stats.items()})
        return {k: v.detach().to("cpu").contiguous() for k, v in out.items()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], source: str = "state dict") -> OpenFaceModel:
        for key in ("template", "expression_basis", "control_basis", "format_version"):
            if key not in state:
                raise FormatError(f"{source}: missing key '{key}'")
        version = int(state["format_version"].reshape(-1)[0])
        if version != FORMAT_VERSION:
            raise FormatError(
                f"{source}: open face model format version {version}, expected {FORMAT_VERSION}"
            )
        stats = {
            k[len("stats.") :]: float(v.reshape(-1)[0]) for k, v in state.items() if k.startswith("stats.")
        }
        try:
            return cls(
                state["template"].float(),
                state["expression_basis"].float(),
                state["control_basis"].float(),
                stats,
            )
        except ValueError as e:
            raise FormatError(f"{source}: {e}") from None

    def save(self, path: str | Path) -> None:
        """Write a ``.safetensors`` file."""
        save_file(self.state_dict(), str(path))

    @classmethod
    def load(cls, path: str | Path, device=None) -> OpenFaceModel:
        """Read a file written by :meth:`save` (safetensors: no code runs on load)."""
        path = Path(path)
        if not path.is_file():
            raise FormatError(f"{path}: file not found")
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise FormatError(f"{path}: not a readable safetensors file ({e})") from None
        model = cls.from_state_dict(state, str(path))
        return model if device is None else model.to(device)


def _region_masks(shape: Tensor) -> tuple[Tensor, Tensor]:
    """Soft (478,) masks of the regions ``jaw_open`` and ``blink`` may move, from a head-space shape.

    Jaw: below the nose base (landmark 2), ramping to 1 at the upper inner lip (13). Blink: within
    0.55..0.9 eye widths of each eye's contour centre (eyelids and irises, not brows or cheeks).
    """
    y = shape[:, 1]  # y down
    m_jaw = ((y - y[SUBNASALE]) / (y[UPPER_INNER_LIP] - y[SUBNASALE]).clamp_min(1e-6)).clamp(0, 1)
    m_blink = torch.zeros_like(y)
    left, right = eye_loops()
    for contour, (a, b) in ((right, RIGHT_EYE_CORNERS), (left, LEFT_EYE_CORNERS[::-1])):
        idx = sorted(int(i) for i in contour)
        centre = shape[idx].mean(0)
        width = (shape[a] - shape[b]).norm()
        d = (shape - centre).norm(dim=1)
        ramp = ((BLINK_OUTER_EYE_WIDTHS * width - d) / (BLINK_RAMP_EYE_WIDTHS * width)).clamp(0, 1)
        m_blink = torch.maximum(m_blink, ramp)
    return m_jaw, m_blink


def _align_frames(X: Tensor, iterations: int = 2) -> Tensor:
    """Rigidly re-align frames (T, 478, 3) to their median shape on stable points."""
    ref = X.median(dim=0).values
    w = _stable_weights(ref)
    for _ in range(iterations):
        R, t = roma.rigid_points_registration(X, ref.expand_as(X), weights=w.expand(X.shape[0], -1))
        X = X @ R.transpose(1, 2) + t[:, None, :]
        ref = X.median(dim=0).values
    return X
