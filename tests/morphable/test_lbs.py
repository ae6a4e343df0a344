"""Linear blend skinning of the synthetic FLAME: rest pose, jaw, eyes, reference, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from avatar3d.morphable import FlameModel, lbs
from avatar3d.morphable.lbs import parents_from_kintree

from ._morphable_synth import N_EXPR, N_SHAPE

C = np.array([1.0, -1.0, -1.0])  # FLAME frame <-> head space


@pytest.fixture(scope="module")
def model(flame_files) -> FlameModel:
    return FlameModel.load(
        flame_files["pkl"], flame_files["landmarks"], shape_components=N_SHAPE, dtype=torch.float64
    )


def _params(model, B=1, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return scale * torch.randn(*s, generator=g, dtype=torch.float64)

    return (
        r(B, N_SHAPE),
        r(B, N_EXPR),
        {"global": 0.3 * r(B, 3), "neck": 0.2 * r(B, 3), "jaw": 0.2 * r(B, 3), "eyes": 0.2 * r(B, 6)},
        0.1 * r(B, 3),
    )


def reference_lbs(a: dict, coeffs, rotvecs_flame, translation_head):
    """Straightforward numpy FLAME: one vertex at a time through the tree, scipy rotations."""
    v = a["v_template"] + np.einsum("vck,k->vc", a["shapedirs"], coeffs)
    Jr = a["J_regressor"].toarray()
    joints = Jr @ v
    parents = parents_from_kintree(a["kintree_table"])
    R = [Rotation.from_rotvec(r).as_matrix() for r in rotvecs_flame]
    feat = np.concatenate([(R[j] - np.eye(3)).reshape(-1) for j in range(1, 5)])
    v = v + np.einsum("vcp,p->vc", a["posedirs"], feat)
    G = [None] * 5
    for j in range(5):  # parents precede children in FLAME's tree
        local = np.eye(4)
        local[:3, :3] = R[j]
        local[:3, 3] = joints[j] - (joints[parents[j]] if parents[j] >= 0 else 0)
        G[j] = local if parents[j] < 0 else G[parents[j]] @ local
    out = np.zeros_like(v)
    for i in range(len(v)):
        T = sum(
            a["weights"][i, j] * G[j] @ np.block([[np.eye(3), -joints[j][:, None]], [np.zeros((1, 3)), 1]])
            for j in range(5)
        )
        out[i] = (T @ np.append(v[i], 1.0))[:3]
    return out * C + translation_head


def test_rest_pose_reproduces_template(model, flame_arrays):
    n = model.neutral(3)
    v = model.vertices(n["shape"], n["expression"], n["pose"], n["translation"])
    expected = torch.as_tensor(flame_arrays["v_template"] * C)
    for b in range(3):
        torch.testing.assert_close(v[b], expected, atol=1e-12, rtol=0)


def test_matches_numpy_reference(model, flame_arrays):
    shape, expr, pose, trans = _params(model, B=2, seed=3)
    v = model.vertices(shape, expr, pose, trans)
    for b in range(2):
        rv = (
            torch.stack(
                [pose["global"][b], pose["neck"][b], pose["jaw"][b], pose["eyes"][b, :3], pose["eyes"][b, 3:]]
            ).numpy()
            * C
        )  # head-space axes -> FLAME axes
        ref = reference_lbs(flame_arrays, torch.cat([shape[b], expr[b]]).numpy(), rv, trans[b].numpy())
        np.testing.assert_allclose(v[b].numpy(), ref, atol=1e-12)


def test_jaw_moves_only_jaw_weighted_vertices(model, flame_arrays):
    n = model.neutral(1)
    jaw = torch.tensor([[0.3, 0.0, 0.0]], dtype=torch.float64)
    v0 = model.vertices(n["shape"], n["expression"])[0]
    v1 = model.vertices(n["shape"], n["expression"], {"jaw": jaw})[0]
    moved = (v1 - v0).norm(dim=1).numpy()
    w_jaw = flame_arrays["weights"][:, 2]
    assert moved[w_jaw == 0].max() < 1e-12
    assert moved[w_jaw > 0.5].min() > 1e-4 and np.median(moved[w_jaw > 0.5]) > 5e-3
    chin = int(np.argmax(v0[:, 1].numpy() * (w_jaw > 0.99)))  # lowest jaw vertex (head space: y down)
    assert v1[chin, 1] > v0[chin, 1] - 1e-9 and v1[chin, 2] > v0[chin, 2]  # opens: chin goes back
    # the jaw_open control is the jaw's x rotation
    v2 = model.vertices(n["shape"], n["expression"], controls={"jaw_open": jaw[:, 0]})[0]
    torch.testing.assert_close(v2, v1)
    assert model.semantic_values(n["expression"], {"jaw": jaw})["jaw_open"].item() == pytest.approx(0.3)


def test_eyes_rotate_rigidly_about_their_joints(model, flame_arrays):
    n = model.neutral(1)
    eyes = torch.tensor([[0.0, 0.25, 0.0, 0.1, 0.0, 0.0]], dtype=torch.float64)  # left yaw, right pitch
    v0 = model.vertices(n["shape"], n["expression"])[0]
    v1 = model.vertices(n["shape"], n["expression"], {"eyes": eyes})[0]
    J = model.joints(n["shape"], n["expression"])[0]
    moved = (v1 - v0).norm(dim=1) > 1e-12
    eye_l, eye_r = flame_arrays["eye_sets"]
    assert set(np.flatnonzero(moved.numpy())) == set(eye_l.tolist()) | set(eye_r.tolist())
    for ids, j, rv in ((eye_l, 3, eyes[0, :3]), (eye_r, 4, eyes[0, 3:])):
        R = torch.as_tensor(Rotation.from_rotvec(rv.numpy()).as_matrix())
        torch.testing.assert_close(v1[ids] - J[j], (v0[ids] - J[j]) @ R.T, atol=1e-12, rtol=0)


def test_global_rotation_is_rigid_about_root(model):
    shape, expr, _, _ = _params(model, seed=5)
    rv = torch.tensor([[0.1, -0.4, 0.2]], dtype=torch.float64)
    v0 = model.vertices(shape, expr)[0]
    v1 = model.vertices(shape, expr, {"global": rv})[0]
    root = model.joints(shape, expr)[0, 0]
    R = torch.as_tensor(Rotation.from_rotvec(rv[0].numpy()).as_matrix())
    torch.testing.assert_close(v1 - root, (v0 - root) @ R.T, atol=1e-12, rtol=0)


def test_landmarks_from_subset_match_full_mesh(model):
    shape, expr, pose, trans = _params(model, B=3, seed=7)
    full = model.landmarks(model.vertices(shape, expr, pose, trans))
    fast = model.landmark_positions(shape, expr, pose, trans)
    torch.testing.assert_close(fast, full, atol=1e-12, rtol=0)
    assert fast.shape == (3, model.n_landmarks, 3)


def test_lbs_gradcheck(model):
    ids = torch.arange(0, model.n_vertices, 37)  # a few vertices keep gradcheck fast
    coeffs = 0.5 * torch.randn(2, N_SHAPE + N_EXPR, dtype=torch.float64, requires_grad=True)
    rotvecs = 0.3 * torch.randn(2, 5, 3, dtype=torch.float64)
    rotvecs[0, 2] = 0.0  # include a zero rotation
    rotvecs.requires_grad_(True)

    def f(c, r):
        return lbs(
            c,
            r,
            model.v_template[ids],
            model.shapedirs[ids],
            model.posedirs[ids],
            model.joint_template,
            model.joint_shapedirs,
            model.parents,
            model.weights[ids],
        )[0]

    assert torch.autograd.gradcheck(f, (coeffs, rotvecs), eps=1e-6, atol=1e-6)


def test_bad_parameter_shapes_are_clear(model):
    n = model.neutral(2)
    with pytest.raises(ValueError, match=r"expression must have shape \(2, 8\)"):
        model.vertices(n["shape"], n["expression"][:, :3])
    with pytest.raises(ValueError, match="unknown pose key 'elbow'"):
        model.vertices(n["shape"], n["expression"], {"elbow": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match=r"pose\['eyes'\] must have shape \(2, 6\)"):
        model.vertices(n["shape"], n["expression"], {"eyes": torch.zeros(2, 3)})
