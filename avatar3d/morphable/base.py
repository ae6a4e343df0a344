"""The morphable-model interface every face model implements (FLAME, the open default).

A model maps per-frame parameters to vertices in **head space** (INTERNALS.md: OpenCV axes as seen
by a frontal camera -- x to the image right, y down, z away from the camera -- in metres):

- ``shape``       (B, S): identity coefficients (S may be 0 for a per-subject model);
- ``expression``  (B, E): expression coefficients;
- ``pose``        dict of axis-angle tensors in head-space axes, keys from :attr:`pose_dims`
                  (FLAME: ``global`` (B,3), ``neck`` (B,3), ``jaw`` (B,3), ``eyes`` (B,6));
- ``translation`` (B, 3): added last;
- ``controls``    dict of named semantic scalars (B,) from :attr:`semantic_controls`
                  (``jaw_open``, ``blink``), each an explicit direction of the model.

Landmarks come from a landmark embedding: each landmark is a point on one triangle (face index
plus barycentric coordinates) and corresponds to one of MediaPipe's 478 landmark indices.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

N_MEDIAPIPE = 478  # MediaPipe face landmarker points: 468 mesh + 10 iris

PoseDict = Mapping[str, Tensor]
ControlDict = Mapping[str, Tensor]


@dataclass(frozen=True)
class LandmarkEmbedding:
    """Landmarks as points on mesh triangles.

    Attributes:
        face_idx: (L,) long, triangle index of each landmark.
        bary: (L, 3) float, barycentric coordinates on that triangle (rows sum to 1).
        landmark_indices: (L,) long, the MediaPipe index (0..477) of each landmark.
    """

    face_idx: Tensor  # [L]
    bary: Tensor  # [L, 3]
    landmark_indices: Tensor  # [L]

    def __post_init__(self) -> None:
        L = self.face_idx.shape[0]
        if self.face_idx.ndim != 1 or self.bary.shape != (L, 3) or self.landmark_indices.shape != (L,):
            raise ValueError(
                f"landmark embedding shapes disagree: face_idx {tuple(self.face_idx.shape)}, "
                f"bary {tuple(self.bary.shape)}, landmark_indices {tuple(self.landmark_indices.shape)}"
            )

    @property
    def n_landmarks(self) -> int:
        return int(self.face_idx.shape[0])

    def to(self, device=None, dtype: torch.dtype | None = None) -> LandmarkEmbedding:
        return LandmarkEmbedding(
            self.face_idx.to(device),
            self.bary.to(device=device, dtype=dtype or self.bary.dtype),
            self.landmark_indices.to(device),
        )


def barycentric_points(vertices: Tensor, faces: Tensor, face_idx: Tensor, bary: Tensor) -> Tensor:
    """Points given by barycentric coordinates on triangles.

    Args:
        vertices: (B, V, 3).
        faces: (F, 3) long.
        face_idx: (L,) long.
        bary: (L, 3).
    Returns:
        (B, L, 3).
    """
    corners = faces.index_select(0, face_idx).reshape(-1)  # [L * 3]; index_select: cheap on CPU
    tri = vertices.index_select(1, corners).reshape(vertices.shape[0], -1, 3, 3)  # [B, L, corner, xyz]
    return (tri * bary.to(vertices.dtype)[None, :, :, None]).sum(dim=2)


def _check_batch(name: str, x: Tensor, B: int, dim: int) -> None:
    if x.ndim != 2 or x.shape[0] != B or x.shape[1] != dim:
        raise ValueError(f"{name} must have shape ({B}, {dim}), got {tuple(x.shape)}")


class MorphableModel(ABC):
    """Abstract face model: parameters -> head-space vertices -> landmarks.

    Subclasses set ``faces``, ``embedding``, ``n_shape``, ``n_expression``, ``pose_dims``,
    ``semantic_controls``, ``fit_pose_keys`` and ``fit_controls`` and implement :meth:`vertices`.
    """

    n_shape: int
    n_expression: int
    faces: Tensor  # [F, 3] long
    embedding: LandmarkEmbedding | None
    pose_dims: Mapping[str, int]  # accepted pose keys -> axis-angle dims
    semantic_controls: tuple[str, ...]  # names accepted in `controls`
    fit_pose_keys: tuple[str, ...]  # pose keys a landmark fitter estimates per frame
    fit_controls: tuple[str, ...]  # controls a landmark fitter estimates per frame

    # ------------------------------------------------------------------ geometry
    @property
    @abstractmethod
    def n_vertices(self) -> int: ...

    @property
    @abstractmethod
    def device(self) -> torch.device: ...

    @property
    @abstractmethod
    def dtype(self) -> torch.dtype: ...

    @abstractmethod
    def vertices(
        self,
        shape: Tensor,  # [B, S]
        expression: Tensor,  # [B, E]
        pose: PoseDict | None = None,
        translation: Tensor | None = None,  # [B, 3]
        controls: ControlDict | None = None,
    ) -> Tensor:
        """Head-space vertices (B, V, 3)."""

    def landmark_positions(
        self,
        shape: Tensor,
        expression: Tensor,
        pose: PoseDict | None = None,
        translation: Tensor | None = None,
        controls: ControlDict | None = None,
    ) -> Tensor:
        """Landmarks (B, L, 3) straight from parameters (models may compute only what is needed)."""
        return self.landmarks(self.vertices(shape, expression, pose, translation, controls))

    def landmarks(self, vertices: Tensor) -> Tensor:
        """Landmarks (B, L, 3) of vertices (B, V, 3) through the landmark embedding."""
        emb = self._require_embedding()
        return barycentric_points(vertices, self.faces, emb.face_idx, emb.bary)

    @property
    def landmark_indices(self) -> Tensor:
        """(L,) long: the MediaPipe index of each of :meth:`landmarks`' rows."""
        return self._require_embedding().landmark_indices

    @property
    def n_landmarks(self) -> int:
        return self._require_embedding().n_landmarks

    def _require_embedding(self) -> LandmarkEmbedding:
        if self.embedding is None:
            raise ValueError(f"{type(self).__name__} has no landmark embedding loaded")
        return self.embedding

    # ------------------------------------------------------------------ semantics
    def semantic_values(
        self, expression: Tensor, pose: PoseDict | None = None, controls: ControlDict | None = None
    ) -> dict[str, Tensor]:
        """Each semantic control's effective value (B,), whichever parameter carries it."""
        B = expression.shape[0]
        controls = controls or {}
        zero = expression.new_zeros(B)
        return {name: controls.get(name, zero) for name in self.semantic_controls}

    # ------------------------------------------------------------------ helpers
    def neutral(self, batch: int = 1) -> dict:
        """Zero parameters for ``batch`` frames: keys shape, expression, pose, translation, controls."""
        kw = {"device": self.device, "dtype": self.dtype}
        return {
            "shape": torch.zeros(batch, self.n_shape, **kw),
            "expression": torch.zeros(batch, self.n_expression, **kw),
            "pose": {k: torch.zeros(batch, d, **kw) for k, d in self.pose_dims.items()},
            "translation": torch.zeros(batch, 3, **kw),
            "controls": {k: torch.zeros(batch, **kw) for k in self.semantic_controls},
        }

    def _check_inputs(
        self,
        shape: Tensor,
        expression: Tensor,
        pose: PoseDict | None,
        translation: Tensor | None,
        controls: ControlDict | None,
    ) -> int:
        """Validate parameter shapes; returns the batch size B."""
        if shape.ndim != 2:
            raise ValueError(f"shape must have shape (B, {self.n_shape}), got {tuple(shape.shape)}")
        B = shape.shape[0]
        _check_batch("shape", shape, B, self.n_shape)
        _check_batch("expression", expression, B, self.n_expression)
        for k, v in (pose or {}).items():
            if k not in self.pose_dims:
                raise ValueError(
                    f"unknown pose key {k!r}; {type(self).__name__} accepts {list(self.pose_dims)}"
                )
            _check_batch(f"pose[{k!r}]", v, B, self.pose_dims[k])
        if translation is not None:
            _check_batch("translation", translation, B, 3)
        for k, v in (controls or {}).items():
            if k not in self.semantic_controls:
                raise ValueError(
                    f"unknown control {k!r}; {type(self).__name__} accepts {list(self.semantic_controls)}"
                )
            if v.shape != (B,):
                raise ValueError(f"controls[{k!r}] must have shape ({B},), got {tuple(v.shape)}")
        return B


def as_tensor(x, dtype: torch.dtype | None = None, device=None) -> Tensor:
    """``torch.as_tensor`` that also accepts numpy arrays of any byte order."""
    if isinstance(x, np.ndarray) and not x.dtype.isnative:
        x = x.astype(x.dtype.newbyteorder("="))
    return torch.as_tensor(x, dtype=dtype, device=device)
