"""FLAME, loaded from a user-supplied file (it needs registration; avatar3d never ships it).

Where the file comes from: an explicit path, else the environment variable ``AVATAR3D_FLAME_PATH``;
the landmark embedding likewise from a path or ``AVATAR3D_FLAME_LANDMARKS``.

Accepted files:

- the 2020 release's ``generic_model.pkl`` (a Python-2 pickle holding numpy arrays, chumpy arrays
  and a scipy sparse ``J_regressor``), read by :mod:`._safe_pickle`'s restricted unpickler -- no
  chumpy needed, nothing but array reconstruction is ever executed;
- an ``.npz`` with the same keys (``J_regressor`` dense).

Required keys and shapes (V vertices, F triangles, K = S + E components, 5 joints)::

    v_template (V, 3)   f (F, 3)   shapedirs (V, 3, K)   posedirs (V, 3, 36)
    J_regressor (5, V)  weights (V, 5)   kintree_table (2, 5)

K is split into identity and expression components by ``shape_components`` if given, else by a
scalar ``n_shape`` key in the file, else 300/100 when K == 400 (FLAME 2020 and 2023).
Optional keys ``l_eyelid`` and ``r_eyelid`` (V, 3) (the eyelid blendshapes some trackers add)
enable the ``blink`` control.

The landmark embedding file (``.npz`` or pickle) holds ``lmk_face_idx`` (L,), ``lmk_b_coords`` (L, 3)
and ``landmark_indices`` (L,) -- MediaPipe indices (0..477) of the embedded landmarks.

Coordinates: FLAME's own frame is y up, z towards the viewer. :class:`FlameModel` returns vertices
in avatar3d's head-space axes (x right, y down, z away from the camera: a 180-degree turn about x),
and takes pose axis-angles in those axes too; the jaw opens with a positive x rotation in both.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from ..errors import FormatError
from ._safe_pickle import load_pickle
from .base import (
    N_MEDIAPIPE,
    ControlDict,
    LandmarkEmbedding,
    MorphableModel,
    PoseDict,
    as_tensor,
    barycentric_points,
)
from .lbs import lbs, parents_from_kintree

FLAME_PATH_ENV = "AVATAR3D_FLAME_PATH"
FLAME_LANDMARKS_ENV = "AVATAR3D_FLAME_LANDMARKS"
N_JOINTS = 5  # global, neck, jaw, left eye, right eye
REQUIRED_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")
LANDMARK_KEYS = ("lmk_face_idx", "lmk_b_coords", "landmark_indices")
FLAME_MISSING = (
    f"no FLAME file given: pass a path or set {FLAME_PATH_ENV} (FLAME needs registration at "
    "flame.is.tue.mpg.de; avatar3d's open model needs no file)"
)
EMBEDDING_MISSING = f"no landmark embedding given: pass a path or set {FLAME_LANDMARKS_ENV}"
FLAME_COMPONENTS = 400  # shapedirs components of FLAME 2020 and 2023 ...
FLAME_SHAPE_COMPONENTS = 300  # ... of which identity (the other 100: expression)
WEIGHT_SUM_TOLERANCE = 1e-3  # skinning weights' rows must sum to 1 within this
BARY_TOLERANCE = 1e-3  # barycentric coordinates: rows sum to 1, none below minus this
_TO_HEAD = np.array([1.0, -1.0, -1.0])  # FLAME frame (y up, z to viewer) <-> head space (OpenCV)


# ---------------------------------------------------------------------------------------- reading
def read_arrays(path: str | Path) -> dict[str, object]:
    """A dict of numpy arrays (and scalars) from an ``.npz`` or a (restricted) pickle.

    Raises:
        FormatError: missing, unreadable, or not a dict of arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: file not found")
    if zipfile.is_zipfile(path):
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (ValueError, OSError, zipfile.BadZipFile) as e:
            raise FormatError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from None
    obj = load_pickle(path)
    if not isinstance(obj, dict):
        raise FormatError(f"{path}: expected a dict of arrays, found {type(obj).__name__}")
    return {str(k): v for k, v in obj.items()}


def _get(d: dict, key: str, path: Path) -> np.ndarray:
    if key not in d:
        raise FormatError(f"{path}: missing key '{key}'")
    try:
        arr = np.asarray(d[key])
    except Exception:  # noqa: BLE001 - any odd object is a format problem
        raise FormatError(f"{path}: '{key}' is not an array") from None
    if arr.dtype == object:
        raise FormatError(f"{path}: '{key}' is not a numeric array")
    return arr


def _check_shape(arr: np.ndarray, key: str, expected: tuple, path: Path) -> None:
    """``expected`` may hold ``None`` for free dimensions."""
    ok = arr.ndim == len(expected) and all(e is None or s == e for s, e in zip(arr.shape, expected))
    if not ok:
        exp = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise FormatError(f"{path}: '{key}' has shape {arr.shape}, expected {exp}")


def _float(arr: np.ndarray, key: str, path: Path) -> np.ndarray:
    if arr.dtype.kind not in "fiu" or not np.isfinite(arr).all():
        raise FormatError(f"{path}: '{key}' must be finite numbers")
    return arr.astype(np.float64)


def _index(arr: np.ndarray, key: str, upper: int, path: Path) -> np.ndarray:
    if arr.dtype.kind in "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise FormatError(f"{path}: '{key}' must hold integer indices, found dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= upper):
        raise FormatError(f"{path}: '{key}' has indices outside [0, {upper})")
    return arr


@dataclass(frozen=True)
class FlameData:
    """Validated FLAME arrays in FLAME's own frame (float64 numpy)."""

    v_template: np.ndarray  # [V, 3]
    faces: np.ndarray  # [F, 3] int64
    shapedirs: np.ndarray  # [V, 3, S + E]
    posedirs: np.ndarray  # [V, 3, 36]
    J_regressor: np.ndarray  # [5, V] dense
    weights: np.ndarray  # [V, 5]
    parents: np.ndarray  # [5], -1 for the root
    n_shape: int  # identity components in shapedirs (the rest are expression)
    eyelids: np.ndarray | None  # [2, V, 3] (left, right) or None
    source: str


def load_flame_data(path: str | Path | None = None, shape_components: int | None = None) -> FlameData:
    """Read and validate a FLAME file (see the module docstring for keys and shapes).

    Args:
        path: the file; ``None`` reads ``$AVATAR3D_FLAME_PATH``.
        shape_components: how many of ``shapedirs``' components are identity (the rest expression).
    Raises:
        FormatError: one line naming the file and the missing key / wrong shape / bad value.
    """
    path = Path(_path_or_env(path, FLAME_PATH_ENV, FLAME_MISSING))
    d = read_arrays(path)
    for key in REQUIRED_KEYS:
        _get(d, key, path)  # report the first missing key before any shape complaint
    v_template = _float(_get(d, "v_template", path), "v_template", path)
    _check_shape(v_template, "v_template", (None, 3), path)
    V = v_template.shape[0]
    faces = _get(d, "f", path)
    _check_shape(faces, "f", (None, 3), path)
    faces = _index(faces, "f", V, path)
    shapedirs = _float(_get(d, "shapedirs", path), "shapedirs", path)
    _check_shape(shapedirs, "shapedirs", (V, 3, None), path)
    parents = _parents(d, path)
    posedirs = _checked_float(d, "posedirs", (V, 3, 9 * (N_JOINTS - 1)), path)
    J_regressor = _checked_float(d, "J_regressor", (N_JOINTS, V), path)
    weights = _checked_float(d, "weights", (V, N_JOINTS), path)
    if np.abs(weights.sum(axis=1) - 1.0).max() > WEIGHT_SUM_TOLERANCE:
        raise FormatError(
            f"{path}: 'weights' rows must sum to 1 (worst row sums to "
            f"{weights.sum(axis=1)[np.abs(weights.sum(axis=1) - 1).argmax()]:.4f})"
        )
    n_shape = _shape_components(d, shapedirs.shape[2], shape_components, path)
    return FlameData(
        v_template,
        faces,
        shapedirs,
        posedirs,
        J_regressor,
        weights,
        parents,
        n_shape,
        _eyelids(d, V, path),
        str(path),
    )


def _path_or_env(path: str | Path | None, env: str, missing: str) -> str | Path:
    """``path``, else the environment variable ``env``; FormatError ``missing`` when neither is set."""
    if path is not None:
        return path
    value = os.environ.get(env)
    if not value:
        raise FormatError(missing)
    return value


def _checked_float(d: dict, key: str, expected: tuple, path: Path) -> np.ndarray:
    arr = _float(_get(d, key, path), key, path)
    _check_shape(arr, key, expected, path)
    return arr


def _parents(d: dict, path: Path) -> np.ndarray:
    kintree = _get(d, "kintree_table", path)
    _check_shape(kintree, "kintree_table", (2, N_JOINTS), path)
    try:
        return parents_from_kintree(kintree)
    except ValueError as e:
        raise FormatError(f"{path}: bad 'kintree_table': {e}") from None


def _shape_components(d: dict, K: int, shape_components: int | None, path: Path) -> int:
    """How many of the K ``shapedirs`` components are identity: given, else the file's ``n_shape``,
    else FLAME's split when K is FLAME's."""
    if shape_components is None and "n_shape" in d:
        shape_components = int(np.asarray(d["n_shape"]).reshape(-1)[0])
    if shape_components is None:
        if K != FLAME_COMPONENTS:
            raise FormatError(
                f"{path}: 'shapedirs' has {K} components; cannot tell identity from expression "
                "(pass shape_components= or store a scalar 'n_shape' in the file)"
            )
        shape_components = FLAME_SHAPE_COMPONENTS
    if not 0 <= shape_components <= K:
        raise FormatError(f"{path}: n_shape={shape_components} is outside [0, {K}] for 'shapedirs'")
    return int(shape_components)


def _eyelids(d: dict, V: int, path: Path) -> np.ndarray | None:
    """(2, V, 3) eyelid blendshapes (left, right) when the file has them, else None."""
    if "l_eyelid" not in d and "r_eyelid" not in d:
        return None
    return np.stack([_checked_float(d, key, (V, 3), path) for key in ("l_eyelid", "r_eyelid")])


def load_landmark_embedding(path: str | Path | None, n_faces: int) -> LandmarkEmbedding:
    """Read and validate a landmark embedding (``lmk_face_idx``, ``lmk_b_coords``, ``landmark_indices``).

    Args:
        path: ``.npz`` or pickle; ``None`` reads ``$AVATAR3D_FLAME_LANDMARKS``.
        n_faces: the model's triangle count (indices are checked against it).
    """
    path = Path(_path_or_env(path, FLAME_LANDMARKS_ENV, EMBEDDING_MISSING))
    d = read_arrays(path)
    for key in LANDMARK_KEYS:
        _get(d, key, path)
    face_idx = _get(d, "lmk_face_idx", path)
    if face_idx.ndim == 2 and 1 in face_idx.shape:  # some files store (1, L) or (L, 1)
        face_idx = face_idx.reshape(-1)
    _check_shape(face_idx, "lmk_face_idx", (None,), path)
    L = face_idx.shape[0]
    face_idx = _index(face_idx, "lmk_face_idx", n_faces, path)
    bary = _float(_get(d, "lmk_b_coords", path), "lmk_b_coords", path)
    _check_shape(bary, "lmk_b_coords", (L, 3), path)
    if np.abs(bary.sum(axis=1) - 1).max() > BARY_TOLERANCE or bary.min() < -BARY_TOLERANCE:
        raise FormatError(f"{path}: 'lmk_b_coords' rows must be barycentric (non-negative, summing to 1)")
    idx = _get(d, "landmark_indices", path)
    _check_shape(idx, "landmark_indices", (L,), path)
    idx = _index(idx, "landmark_indices", N_MEDIAPIPE, path)
    if len(np.unique(idx)) != L:
        raise FormatError(f"{path}: 'landmark_indices' contains repeated MediaPipe indices")
    return LandmarkEmbedding(torch.as_tensor(face_idx), torch.as_tensor(bary), torch.as_tensor(idx))


# ---------------------------------------------------------------------------------------- model
class FlameModel(MorphableModel):
    """FLAME with linear blend skinning implemented in :mod:`.lbs` (torch, batched, differentiable).

    Pose keys (axis-angle in head-space axes): ``global`` (B,3) about the root joint, ``neck`` (B,3),
    ``jaw`` (B,3), ``eyes`` (B,6) = left eye then right eye. Controls: ``jaw_open`` (radians, added to
    the jaw's x rotation) and, when the file has eyelid blendshapes, ``blink`` (0 open .. 1 closed).
    """

    pose_dims: ClassVar[Mapping[str, int]] = MappingProxyType({"global": 3, "neck": 3, "jaw": 3, "eyes": 6})

    def __init__(
        self,
        data: FlameData,
        embedding: LandmarkEmbedding | None = None,
        n_shape: int | None = None,
        n_expression: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        S_all, E_all = data.n_shape, data.shapedirs.shape[2] - data.n_shape
        self.n_shape = S_all if n_shape is None else int(n_shape)
        self.n_expression = E_all if n_expression is None else int(n_expression)
        if not (0 <= self.n_shape <= S_all and 0 <= self.n_expression <= E_all):
            raise ValueError(
                f"{data.source} has {S_all} shape and {E_all} expression components; "
                f"asked for {self.n_shape} and {self.n_expression}"
            )
        self.source = data.source
        kw = {"dtype": dtype, "device": device}
        dirs = np.concatenate(
            [data.shapedirs[:, :, : self.n_shape], data.shapedirs[:, :, S_all : S_all + self.n_expression]],
            axis=2,
        )
        self.v_template = as_tensor(data.v_template, **kw)  # [V, 3] FLAME frame
        self.shapedirs = as_tensor(dirs, **kw)  # [V, 3, S + E]
        self.posedirs = as_tensor(data.posedirs, **kw)  # [V, 3, 36]
        self.J_regressor = as_tensor(data.J_regressor, **kw)  # [5, V]
        self.weights = as_tensor(data.weights, **kw)  # [V, 5]
        self.parents = [int(p) for p in data.parents]
        self.joint_template = self.J_regressor @ self.v_template  # [5, 3]
        self.joint_shapedirs = torch.einsum("jv,vck->jck", self.J_regressor, self.shapedirs)  # [5, 3, K]
        self.eyelids = None if data.eyelids is None else as_tensor(data.eyelids, **kw)  # [2, V, 3]
        self.faces = torch.as_tensor(data.faces, dtype=torch.long, device=device)
        self.embedding = None if embedding is None else embedding.to(device, dtype)
        self.semantic_controls = ("jaw_open",) + (("blink",) if self.eyelids is not None else ())
        self.fit_controls = ("blink",) if self.eyelids is not None else ()
        has_iris = embedding is not None and bool((embedding.landmark_indices >= 468).any())
        self.fit_pose_keys = ("jaw", "eyes") if has_iris else ("jaw",)
        self._subset_cache: dict | None = None

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        landmarks: str | Path | None = None,
        *,
        n_shape: int | None = None,
        n_expression: int | None = None,
        shape_components: int | None = None,
        require_landmarks: bool = False,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> FlameModel:
        """Load FLAME (``path`` or ``$AVATAR3D_FLAME_PATH``) and its landmark embedding.

        Args:
            path: FLAME ``.pkl`` / ``.npz``.
            landmarks: embedding file; ``None`` reads ``$AVATAR3D_FLAME_LANDMARKS`` when set.
            n_shape, n_expression: how many leading identity / expression components to use.
            shape_components: identity components stored in the file's ``shapedirs`` (see module doc).
            require_landmarks: raise when no embedding is available (fitting needs one).
        """
        data = load_flame_data(path, shape_components)
        emb = None
        if landmarks is not None or os.environ.get(FLAME_LANDMARKS_ENV) or require_landmarks:
            emb = load_landmark_embedding(landmarks, len(data.faces))
        return cls(data, emb, n_shape, n_expression, dtype=dtype, device=device)

    # ------------------------------------------------------------------ properties
    @property
    def n_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def device(self) -> torch.device:
        return self.v_template.device

    @property
    def dtype(self) -> torch.dtype:
        return self.v_template.dtype

    # ------------------------------------------------------------------ evaluation
    def _rotvecs(self, B: int, pose: PoseDict | None, controls: ControlDict | None) -> Tensor:
        """(B, 5, 3) axis-angles in FLAME's frame from head-space pose and controls."""
        pose = pose or {}
        z = self.v_template.new_zeros(B, 3)
        jaw = pose.get("jaw", z)
        if controls and "jaw_open" in controls:
            jaw = jaw + torch.stack([controls["jaw_open"], z[:, 0], z[:, 0]], dim=-1)
        eyes = pose.get("eyes", self.v_template.new_zeros(B, 6))
        rv = torch.stack([pose.get("global", z), pose.get("neck", z), jaw, eyes[:, :3], eyes[:, 3:]], dim=1)
        return rv * rv.new_tensor(_TO_HEAD)  # a rotation vector transforms like a vector under C

    def _vertex_data(self, ids: Tensor | None) -> dict[str, Tensor]:
        """Per-vertex arrays for all vertices (``ids is None``) or a subset (index_select: fast)."""
        names = ("v_template", "shapedirs", "posedirs", "weights")
        if ids is None:
            out = {n: getattr(self, n) for n in names}
            out["eyelids"] = self.eyelids
        else:
            out = {n: getattr(self, n).index_select(0, ids) for n in names}
            out["eyelids"] = None if self.eyelids is None else self.eyelids.index_select(1, ids)
        return out

    def _evaluate(self, data: dict[str, Tensor], shape, expression, pose, translation, controls) -> Tensor:
        B = self._check_inputs(shape, expression, pose, translation, controls)
        coeffs = torch.cat([shape, expression], dim=1).to(self.dtype)
        v_template = data["v_template"]
        if data["eyelids"] is not None and controls and "blink" in controls:
            lid = data["eyelids"].sum(0)  # both lids close together
            v_template = v_template + controls["blink"][:, None, None] * lid
        verts, _ = lbs(
            coeffs,
            self._rotvecs(B, pose, controls),
            v_template,
            data["shapedirs"],
            data["posedirs"],
            self.joint_template,
            self.joint_shapedirs,
            self.parents,
            data["weights"],
        )
        verts = verts * verts.new_tensor(_TO_HEAD)
        if translation is not None:
            verts = verts + translation[:, None, :]
        return verts

    def vertices(
        self,
        shape: Tensor,  # [B, S]
        expression: Tensor,  # [B, E]
        pose: PoseDict | None = None,
        translation: Tensor | None = None,  # [B, 3]
        controls: ControlDict | None = None,
    ) -> Tensor:
        """Head-space vertices (B, V, 3)."""
        return self._evaluate(self._vertex_data(None), shape, expression, pose, translation, controls)

    def joints(
        self,
        shape: Tensor,
        expression: Tensor,
        pose: PoseDict | None = None,
        translation: Tensor | None = None,
    ) -> Tensor:
        """Posed joint positions (B, 5, 3) in head space."""
        B = self._check_inputs(shape, expression, pose, translation, None)
        coeffs = torch.cat([shape, expression], dim=1).to(self.dtype)
        _, j = lbs(
            coeffs,
            self._rotvecs(B, pose, None),
            self.v_template[:1],
            self.shapedirs[:1],
            self.posedirs[:1],
            self.joint_template,
            self.joint_shapedirs,
            self.parents,
            self.weights[:1],
        )
        j = j * j.new_tensor(_TO_HEAD)
        return j if translation is None else j + translation[:, None, :]

    def landmark_positions(self, shape, expression, pose=None, translation=None, controls=None) -> Tensor:
        """Landmarks (B, L, 3), deforming only the vertices of the embedded triangles."""
        emb = self._require_embedding()
        if self._subset_cache is None:
            tri = self.faces.index_select(0, emb.face_idx)  # [L, 3]
            ids, local = torch.unique(tri.reshape(-1), return_inverse=True)
            self._subset_cache = {
                "data": self._vertex_data(ids),
                "faces": local.reshape(-1, 3),
                "face_idx": torch.arange(emb.n_landmarks, device=ids.device),
            }
        c = self._subset_cache
        verts = self._evaluate(c["data"], shape, expression, pose, translation, controls)  # [B, n, 3]
        return barycentric_points(verts, c["faces"], c["face_idx"], emb.bary)

    def semantic_values(self, expression, pose=None, controls=None) -> dict[str, Tensor]:
        out = super().semantic_values(expression, pose, controls)
        if pose and "jaw" in pose:
            out["jaw_open"] = out["jaw_open"] + pose["jaw"][:, 0]
        return out
