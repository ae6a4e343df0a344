"""The open model on a real talking clip (../shared/data/talk_a.mp4): conventions and fit quality.

MediaPipe's face mesh runs on the clip's first 90 frames; the test aligns the 3D points itself (a
similarity to their median, inter-ocular distance 0.063 m) instead of using the capture stage.
"""

from __future__ import annotations

import numpy as np
import pytest
import roma
import torch

from avatar3d.io.media import iter_frames
from avatar3d.morphable import OpenFaceModel, eye_gap, fit_landmarks, lip_gap

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def clip_landmarks(shared_data) -> np.ndarray:
    mp = pytest.importorskip("mediapipe")

    pts = []
    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=False, max_num_faces=1, refine_landmarks=True
    ) as mesh:
        for img in iter_frames(shared_data / "talk_a.mp4", max_frames=90):
            H, W = img.shape[:2]
            found = mesh.process(img).multi_face_landmarks
            pts.append(
                [[p.x * W, p.y * H, p.z * W] for p in found[0].landmark]
                if found
                else np.full((478, 3), np.nan)
            )
    return np.asarray(pts)  # [T, 478, 3]: pixels, depth in pixel units


def _head_space(pts: np.ndarray) -> torch.Tensor:
    P = torch.as_tensor(pts[np.isfinite(pts).all(axis=(1, 2))])
    ref = P[0]
    for _ in range(3):
        R, t, s = roma.rigid_points_registration(P, ref.expand_as(P), compute_scaling=True)
        A = s[:, None, None] * P @ R.transpose(1, 2) + t[:, None]
        ref = A.median(dim=0).values
    return (A - ref.mean(0)) * (0.063 / (ref[468] - ref[473]).norm())


def test_open_model_on_a_real_clip(clip_landmarks):
    X = _head_space(clip_landmarks)
    assert len(X) >= 80
    model = OpenFaceModel.from_landmarks(X, n_expression=16)
    v, tri = model.template, model.faces[:852]
    # index conventions the module relies on
    assert v[234, 0] < v[1, 0] < v[454, 0] and v[10, 1] < v[1, 1] < v[152, 1]
    assert (v[468] - v[159]).norm() < (v[468] - v[386]).norm()  # 468.. is the eye through 159
    n = torch.linalg.cross(v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]])
    assert float((n[:, 2] < 0).double().mean()) > 0.9  # normals face the camera
    enc = model.encode(X.float())
    assert np.corrcoef(enc["controls"]["jaw_open"], lip_gap(X))[0, 1] > 0.9
    assert np.corrcoef(enc["controls"]["blink"], eye_gap(X))[0, 1] < -0.6

    W = 700.0  # talk_a is 700 x 700; an 18-degree-ish field of view is a fair guess here
    K = np.array([[1.2 * W, 0, W / 2], [0, 1.2 * W, W / 2], [0, 0, 1.0]])
    res = fit_landmarks(model, clip_landmarks[:, :, :2], K)
    assert res.mean_error < 2.0  # pixels
    gap = lip_gap(torch.as_tensor(clip_landmarks[:, :, :2]).double().nan_to_num())  # image lip gap
    ok = np.isfinite(clip_landmarks).all(axis=(1, 2))
    assert np.corrcoef(res.semantic["jaw_open"][ok], gap[ok])[0, 1] > 0.85
