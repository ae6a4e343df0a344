"""How far a capture of the synthetic subject is from its exact ground truth.

:func:`evaluate_capture` compares a ``CaptureSet`` with the ``SyntheticTruth`` of the clip it was
captured from:

- **Head frames.** The capture's head space is defined by its own canonical landmarks and the
  truth's by the subject's rest landmarks, so the two are aligned ONCE per clip with the best-fit
  similarity (Umeyama) ``x_truth ≈ s·A·x_cap + b`` between ``cap.canonical_landmarks`` and
  ``subject.canonical_landmarks`` (all 478 points). This alignment uses no poses. The capture's
  camera-space coordinates are then rescaled by ``s`` too (its metric scale comes from a 0.063 m
  inter-iris distance; the image fixes only depth/size ratios), which gives the aligned pose
  ``R' = R_cap·Aᵀ``, ``t' = s·t_cap − R_cap·Aᵀ·b`` in the truth's head frame.
- **rotation error:** per frame, the angle of ``R'_k · R_true_kᵀ`` (degrees); median over valid
  frames. Also: the same with the constant offset rotation fitted to the poses instead of the
  landmarks (what is left is pure tracking error), with the landmark alignment restricted to the
  rigid landmarks (``RIGID_INDICES``), and the relative error
  ``angle((R_cap_k R_cap_0ᵀ)(R_true_k R_true_0ᵀ)ᵀ)``.
- **translation error:** per frame ``|t'_k − t_true_k|`` divided by the head width (x-extent of the
  subject's 478 rest landmarks); median. Split into lateral (x, y) and depth (z) parts, and the
  error left after removing the clip's constant offset (the motion-tracking error).
- **focal error:** ``|f_cap/W_cap − f_true/W_true| / (f_true/W_true)``.
- **mouth correlation:** Pearson of ``cap.mouth_open`` with ``truth.jaw_open`` over valid frames
  (also of ``cap.jaw_open``).

:func:`evaluate_face_fit` and :func:`compare_face_fits` score morphable-model fits (open model,
FLAME) the same way. Used by ``benchmarks/bench_capture_synthetic.py``,
``benchmarks/bench_capture_flame.py`` and the capture tests.
"""

from __future__ import annotations

import numpy as np

from ..capture.face_model import neutral_landmarks
from ..core.geometry import similarity_fit
from ..core.topology import RIGID_INDICES


def angle_deg(R: np.ndarray) -> np.ndarray:
    c = (np.trace(R, axis1=-2, axis2=-1) - 1) / 2
    return np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))


def project_so3(M: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(M)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def evaluate_capture(cap, truth) -> dict:
    """Compare a CaptureSet of a synthetic clip with its SyntheticTruth (module docstring); returns
    the figures by name (degrees, fractions of the head width, correlations)."""
    subj = truth.subject
    idx = np.asarray(cap.frame_indices)
    ok = np.asarray(cap.valid, bool) & (idx < truth.n_frames)
    idx_ok = idx[ok]
    R_true = np.empty((len(idx_ok), 3, 3))
    t_true = np.empty((len(idx_ok), 3))
    for j, i in enumerate(idx_ok):
        R_true[j], t_true[j] = truth.head_pose_in_camera(int(i))
    R_cap = np.asarray(cap.rotation, np.float64)[ok]
    t_cap = np.asarray(cap.translation, np.float64)[ok]

    rest = np.asarray(subj.canonical_landmarks, np.float64)
    s, A, b = similarity_fit(np.asarray(cap.canonical_landmarks, np.float64), rest)
    resid = rest - (s * np.asarray(cap.canonical_landmarks, np.float64) @ A.T + b)
    head_w = float(rest[:, 0].max() - rest[:, 0].min())

    R_al = R_cap @ A.T
    t_al = s * t_cap - R_al @ b
    rot_err = angle_deg(R_al @ np.swapaxes(R_true, -1, -2))
    # constant offset fitted to the poses: R_true_k ≈ R_cap_k · C
    C = project_so3(np.einsum("kji,kjl->il", R_cap, R_true))
    rot_err_fit = angle_deg((R_cap @ C) @ np.swapaxes(R_true, -1, -2))
    # diagnostic: head frames aligned on the rigid landmarks only (no mouth, eyelids or brows)
    rig = np.array(RIGID_INDICES)
    _, A_rig, _ = similarity_fit(np.asarray(cap.canonical_landmarks, np.float64)[rig], rest[rig])
    rot_err_rig = angle_deg(R_cap @ A_rig.T @ np.swapaxes(R_true, -1, -2))
    rel_cap = R_cap @ np.swapaxes(R_cap[:1], -1, -2)
    rel_true = R_true @ np.swapaxes(R_true[:1], -1, -2)
    rot_err_rel = angle_deg(rel_cap @ np.swapaxes(rel_true, -1, -2))

    dt = t_al - t_true
    dt_motion = dt - dt.mean(0)

    f_true = float(truth.camera.K[0, 0]) / truth.camera.width
    f_cap = float(cap.focal) / cap.width
    jaw = np.asarray(truth.jaw_open, np.float64)[idx_ok]

    def corr(x):
        x = np.asarray(x, np.float64)[ok]
        if x.std() < 1e-12 or jaw.std() < 1e-12:
            return float("nan")
        return float(np.corrcoef(x, jaw)[0, 1])

    return {
        "n_frames": len(idx),
        "n_valid": int(ok.sum()),
        "rotation_deg": float(np.median(rot_err)),
        "rotation_deg_p95": float(np.percentile(rot_err, 95)),
        "rotation_deg_posefit": float(np.median(rot_err_fit)),
        "rotation_deg_rigid_aligned": float(np.median(rot_err_rig)),
        "rotation_deg_rel0": float(np.median(rot_err_rel)),
        "align_offset_deg": float(angle_deg(A @ C)),  # landmark vs pose-fitted head-frame offset
        "translation_rel": float(np.median(np.linalg.norm(dt, axis=1)) / head_w),
        "translation_lateral_rel": float(np.median(np.linalg.norm(dt[:, :2], axis=1)) / head_w),
        "translation_depth_rel": float(np.median(np.abs(dt[:, 2])) / head_w),
        "translation_motion_rel": float(np.median(np.linalg.norm(dt_motion, axis=1)) / head_w),
        "head_width_m": head_w,
        "depth_true_m": float(np.median(t_true[:, 2])),
        "depth_cap_m": float(np.median(t_al[:, 2])),
        "sim_scale": s,
        "sim_residual_mm": float(np.median(np.linalg.norm(resid, axis=1)) * 1000),
        "focal_true": f_true,
        "focal_cap": f_cap,
        "focal_rel": abs(f_cap - f_true) / f_true,
        "mouth_corr": corr(cap.mouth_open),
        "jaw_corr": corr(cap.jaw_open),
    }


def evaluate_face_fit(
    fit,
    truth,
    frame_indices: np.ndarray,
    valid: np.ndarray,
    observed2d: np.ndarray,
    size: int,
    common: np.ndarray | None = None,
) -> dict:
    """Compare a :class:`~avatar3d.capture.face_model.FaceModelFit` with the synthetic truth.

    observed2d: (T, 478, 2) the capture's detections; common: MediaPipe indices for the shared
    reprojection figure (default: the model's own landmarks).
    """
    px = 512.0 / size
    idx = fit.landmark_indices
    ok = valid & (frame_indices < truth.n_frames)
    err = np.linalg.norm(fit.landmarks2d - observed2d[:, idx], axis=-1)  # (T, L)
    common = idx if common is None else common
    pos = {int(m): k for k, m in enumerate(idx)}
    sel = np.array([pos[int(m)] for m in common if int(m) in pos])
    R_true = np.stack([truth.head_pose_in_camera(int(i))[0] for i in frame_indices[ok]])
    R_fit = fit.result.rotation.numpy().astype(np.float64)[ok]
    rest = np.asarray(truth.subject.canonical_landmarks, np.float64)[idx]
    _, A, _ = similarity_fit(neutral_landmarks(fit).astype(np.float64), rest)
    rot = angle_deg(R_fit @ A.T @ np.swapaxes(R_true, -1, -2))
    C = project_so3(np.einsum("kji,kjl->il", R_fit, R_true))
    rot_fit = angle_deg((R_fit @ C) @ np.swapaxes(R_true, -1, -2))
    rel = angle_deg(
        (R_fit @ np.swapaxes(R_fit[:1], -1, -2))
        @ np.swapaxes(R_true @ np.swapaxes(R_true[:1], -1, -2), -1, -2)
    )
    jaw_true = np.asarray(truth.jaw_open, np.float64)[frame_indices[ok]]
    jaw = fit.result.semantic["jaw_open"].numpy().astype(np.float64)[ok]
    return {
        "n_landmarks": len(idx),
        "reproj_px512": float(np.median(err[ok]) * px),
        "reproj_common_px512": float(np.median(err[ok][:, sel]) * px),
        "rotation_deg": float(np.median(rot)),
        "rotation_deg_posefit": float(np.median(rot_fit)),
        "rotation_deg_rel0": float(np.median(rel)),
        "jaw_corr": float(np.corrcoef(jaw, jaw_true)[0, 1]) if jaw.std() > 1e-12 else float("nan"),
    }


def compare_face_fits(fits: dict, caps: dict, truth) -> dict:
    """Figures of each fit (``fits``/``caps``: kind -> FaceModelFit / CaptureSet), with the shared
    reprojection figure over the FLAME embedding's landmarks."""
    common = fits["flame"].landmark_indices
    out = {}
    for kind, fit in fits.items():
        cs = caps[kind]
        m = evaluate_face_fit(
            fit,
            truth,
            np.asarray(cs.frame_indices),
            np.asarray(cs.valid, bool),
            np.asarray(cs.landmarks2d, np.float64),
            max(cs.width, cs.height),
            common,
        )
        out.update({f"{kind}_{k}": v for k, v in m.items()})
    return out
