"""The capture's optional morphable-model fit (``CaptureConfig.morphable``): the open per-subject
model or a user-supplied FLAME file, fitted to every frame's landmarks with the capture's camera.

- ``"none"`` (default): no model fit; the capture's rigid tracking and landmark signals only.
- ``"open"``: :class:`~avatar3d.morphable.OpenFaceModel` built from the clip's own pose-free
  landmarks, then :func:`~avatar3d.morphable.fit_landmarks`.
- ``"flame"``: :class:`~avatar3d.morphable.FlameModel` from ``flame_path`` (else
  ``$AVATAR3D_FLAME_PATH``) with the MediaPipe landmark embedding ``flame_landmarks`` (else
  ``$AVATAR3D_FLAME_LANDMARKS``), loaded before any frame is decoded so that a missing, wrong or
  corrupt file fails at once with a one-line :class:`~avatar3d.errors.FormatError`.

The result goes to ``morphable.safetensors`` in the CaptureSet (per-frame ``rotation`` (T, 3, 3),
``translation`` (T, 3), ``expression`` (T, E), ``pose.<key>`` / ``controls.<name>`` /
``semantic.<name>``, ``shape`` (S,), ``K`` (3, 3), ``reprojection_error`` (T,) pixels) and a summary
to ``transforms.json`` (``avatar3d.morphable``). FLAME's own arrays are never copied into the
capture (its licence forbids redistribution); the open model is saved as ``open_model.safetensors``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from ..errors import FormatError
from ..morphable import (
    FLAME_LANDMARKS_ENV,
    FitConfig,
    FitResult,
    FlameModel,
    OpenFaceModel,
    fit_landmarks,
    load_flame_data,
    load_landmark_embedding,
    project,
)

MORPHABLE_KINDS = ("none", "open", "flame")
FLAME_SHAPE_DIMS = 100  # leading identity components fitted (FLAME has 300; landmarks fix few)
FLAME_EXPRESSION_DIMS = 50  # leading expression components fitted (of 100)


@dataclass
class FaceModelFit:
    """kind ("open" | "flame"), the model, the :class:`~avatar3d.morphable.FitResult`, and
    ``landmarks2d`` (T, L, 2) the fitted model's landmarks projected with the fitted pose and K,
    for the MediaPipe indices ``landmark_indices`` (L,)."""

    kind: str
    model: object
    result: object
    landmarks2d: np.ndarray
    landmark_indices: np.ndarray
    source: str
    landmarks_source: str | None = None


def load_face_model(config):
    """The FLAME model when ``config.morphable == "flame"`` (raises FormatError), else None."""
    if config.morphable != "flame":
        return None
    return load_flame(config.flame_path, config.flame_landmarks)


def load_flame(path: str | Path | None, landmarks: str | Path | None):
    """FLAME (``path`` or ``$AVATAR3D_FLAME_PATH``) with its MediaPipe landmark embedding
    (``landmarks`` or ``$AVATAR3D_FLAME_LANDMARKS``), the leading ``FLAME_SHAPE_DIMS`` identity and
    ``FLAME_EXPRESSION_DIMS`` expression components, float64. Raises FormatError (one line)."""
    data = load_flame_data(path)
    emb = load_landmark_embedding(landmarks, len(data.faces))
    n_shape = min(FLAME_SHAPE_DIMS, data.n_shape)
    n_expr = min(FLAME_EXPRESSION_DIMS, data.shapedirs.shape[2] - data.n_shape)
    model = FlameModel(data, emb, n_shape, n_expr, dtype=torch.float64)
    model.source = str(Path(data.source).resolve())
    model.landmarks_source = str(Path(landmarks or os.environ[FLAME_LANDMARKS_ENV]).resolve())
    return model


def fit_face_model(
    config,
    model,
    landmarks2d: np.ndarray,
    landmarks3d: np.ndarray,
    valid: np.ndarray,
    K: np.ndarray,
) -> FaceModelFit | None:
    """Fit ``config.morphable``'s model to the capture's landmarks.

    landmarks2d: (T, 478, 2) pixels; landmarks3d: (T, 478, 3) pose-free head space (builds the open
    model); valid: (T,) bool; K: (3, 3); model: from :func:`load_face_model` (FLAME) or None.
    """
    kind = config.morphable
    if kind == "none":
        return None
    if kind == "open":
        model = OpenFaceModel.from_landmarks(
            landmarks3d, n_expression=int(config.expression_dims), valid=valid
        ).to(dtype=torch.float64)
        source = "open"
    else:
        source = str(getattr(model, "source", "flame"))
    res = fit_landmarks(model, landmarks2d, K, valid=valid, config=FitConfig())
    lmk_src = getattr(model, "landmarks_source", None)
    return FaceModelFit(
        kind, model, res, predict_landmarks(model, res), model.landmark_indices.numpy(), source, lmk_src
    )


def predict_landmarks(model, res) -> np.ndarray:
    """(T, L, 2) pixels: the fitted model's landmarks posed by ``res`` and projected with ``res.K``."""
    with torch.no_grad():
        T = res.rotation.shape[0]
        X = model.landmark_positions(
            res.shape.expand(T, -1), res.expression, res.pose, None, res.controls
        )  # (T, L, 3) head space
        Xc = X @ res.rotation.transpose(1, 2) + res.translation[:, None]
        return project(Xc, res.K).numpy()


def neutral_landmarks(fit: FaceModelFit) -> np.ndarray:
    """(L, 3) head-space landmarks of the fitted identity with a neutral face (no expression/jaw)."""
    p = fit.model.neutral(1)
    shape = fit.result.shape[None] if fit.result.shape.numel() else p["shape"]
    with torch.no_grad():
        return fit.model.landmark_positions(shape, p["expression"], p["pose"], None, p["controls"])[0].numpy()


def morphable_arrays(fit: FaceModelFit) -> dict[str, np.ndarray]:
    """Flat float32 arrays for ``morphable.safetensors`` (see the module docstring)."""
    arrays = fit.result.as_numpy().items()
    out = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays if v.size}
    out["landmark_indices"] = fit.landmark_indices.astype(np.int64)
    return out


def write_morphable(root: Path, fit: FaceModelFit) -> dict:
    """Write ``morphable.safetensors`` (and the open model) under ``root``; returns the JSON summary."""
    save_file(morphable_arrays(fit), str(root / "morphable.safetensors"))
    if fit.kind == "open":
        fit.model.to(dtype=torch.float32).save(root / "open_model.safetensors")
    err = fit.result.reprojection_error.numpy()
    return {
        "model": fit.kind,
        "source": fit.source,
        "n_shape": int(fit.model.n_shape),
        "n_expression": int(fit.model.n_expression),
        "n_landmarks": len(fit.landmark_indices),
        "landmarks": fit.landmarks_source,
        "reprojection_error_px_median": float(np.nanmedian(err)) if np.isfinite(err).any() else None,
    }


def load_fit(root: str | Path) -> FaceModelFit:
    """Read a CaptureSet's morphable fit back: the model (``open_model.safetensors``, or the FLAME
    file and embedding named in ``transforms.json``) and its parameters as a ``FitResult``.

    Raises :class:`~avatar3d.errors.FormatError` when the capture has no fit or a file is unusable.
    """
    root = Path(root)
    try:
        meta = json.loads((root / "transforms.json").read_text())["avatar3d"].get("morphable")
    except (OSError, ValueError, KeyError) as e:
        raise FormatError(f"{root}: unreadable transforms.json ({e})") from None
    if not meta:
        raise FormatError(f"{root}: this capture has no morphable fit (capture.morphable was 'none')")
    if not (root / "morphable.safetensors").is_file():
        raise FormatError(f"{root}: morphable.safetensors is missing")
    a = {k: torch.as_tensor(v) for k, v in load_file(str(root / "morphable.safetensors")).items()}
    if meta["model"] == "open":
        model = OpenFaceModel.load(root / "open_model.safetensors").to(dtype=torch.float64)
    else:
        model = load_flame(meta["source"], meta["landmarks"])
    d = torch.float64
    group = lambda g: {k[len(g) + 1 :]: v.to(d) for k, v in a.items() if k.startswith(g + ".")}
    T = a["rotation"].shape[0]
    res = FitResult(
        a["rotation"].to(d),
        a["translation"].to(d),
        a["shape"].to(d) if "shape" in a else torch.zeros(0, dtype=d),
        a["expression"].to(d) if "expression" in a else torch.zeros(T, 0, dtype=d),
        group("pose"),
        group("controls"),
        group("semantic"),
        a["K"].to(d),
        a["reprojection_error"].to(d),
    )
    return FaceModelFit(
        meta["model"],
        model,
        res,
        predict_landmarks(model, res),
        a["landmark_indices"].numpy(),
        meta["source"],
        meta.get("landmarks"),
    )
