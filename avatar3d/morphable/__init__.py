"""Morphable face models: one interface, two implementations, one landmark fitter.

- :class:`MorphableModel` (``base.py``): parameters -> head-space vertices -> MediaPipe landmarks.
- :class:`FlameModel` (``flame.py``): a user-supplied FLAME file (``$AVATAR3D_FLAME_PATH``), read
  without chumpy through a restricted unpickler; skinning in ``lbs.py``.
- :class:`OpenFaceModel` (``open_model.py``): built per subject from MediaPipe landmarks; needs no
  licence-gated file. :func:`extend_to_head` closes a face mesh into a head surface.
- :func:`fit_landmarks` (``fit.py``): per-frame pose / expression / jaw / eyelids from 2D landmarks.
"""

from .base import N_MEDIAPIPE, LandmarkEmbedding, MorphableModel, barycentric_points
from .fit import FitConfig, FitResult, fit_landmarks, project
from .flame import (
    FLAME_LANDMARKS_ENV,
    FLAME_PATH_ENV,
    FlameData,
    FlameModel,
    load_flame_data,
    load_landmark_embedding,
)
from .head import extend_to_head
from .lbs import lbs
from .open_model import OpenFaceModel, eye_gap, lip_gap, mediapipe_faces

__all__ = [
    "FLAME_LANDMARKS_ENV",
    "FLAME_PATH_ENV",
    "N_MEDIAPIPE",
    "FitConfig",
    "FitResult",
    "FlameData",
    "FlameModel",
    "LandmarkEmbedding",
    "MorphableModel",
    "OpenFaceModel",
    "barycentric_points",
    "extend_to_head",
    "eye_gap",
    "fit_landmarks",
    "lbs",
    "lip_gap",
    "load_flame_data",
    "load_landmark_embedding",
    "mediapipe_faces",
    "project",
]
