"""The open per-subject face model: topology, building from landmarks, controls, files, head shell."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import trimesh

from avatar3d.errors import FormatError
from avatar3d.morphable import OpenFaceModel, extend_to_head, mediapipe_faces
from avatar3d.morphable.head import boundary_loops
from avatar3d.morphable.open_model import ORIENTATION_ORDER, mediapipe_triangles

from ._morphable_synth import make_open_sequence


@pytest.fixture(scope="module")
def sequence(face_layout) -> dict:
    return make_open_sequence(face_layout, T=120, seed=0)


@pytest.fixture(scope="module")
def model(sequence) -> OpenFaceModel:
    return OpenFaceModel.from_landmarks(sequence["X"], n_expression=16)


def _corr(a, b) -> float:
    return float(np.corrcoef(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))[0, 1])


# ------------------------------------------------------------------------------------ topology
def test_topology_is_a_consistently_wound_face_mesh():
    tris = mediapipe_triangles()
    assert tris.shape == (852, 3)
    undirected = Counter(tuple(sorted(e)) for t in tris for e in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])))
    assert max(undirected.values()) == 2  # manifold: the two spurious 3-cliques are gone
    directed = Counter((int(a), int(b)) for t in tris for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])))
    assert max(directed.values()) == 1  # consistent winding
    loops = sorted(boundary_loops(tris), key=len, reverse=True)
    assert [len(lp) for lp in loops] == [36, 20, 16, 16]  # face outline, mouth, two eyes
    outer = loops[0]
    pos = [outer.index(v) for v in ORIENTATION_ORDER]
    rolled = [(p - pos[0]) % len(outer) for p in pos]
    assert rolled == sorted(rolled)  # forehead -> image-left cheek -> chin -> image-right cheek
    faces = mediapipe_faces()
    assert faces.shape == (860, 3) and set(np.unique(faces)) == set(range(478))


def test_synthetic_layout_follows_mediapipe_conventions(face_layout):
    p = face_layout
    assert p[10, 1] < p[1, 1] < p[152, 1]  # forehead above nose tip above chin (y down)
    assert p[234, 0] < 0 < p[454, 0] and p[33, 0] < 0 < p[263, 0]  # subject's right on the image left
    tri = mediapipe_triangles()
    n = np.cross(p[tri[:, 1]] - p[tri[:, 0]], p[tri[:, 2]] - p[tri[:, 0]])
    assert (n[:, 2] < 0).mean() > 0.95  # normals face the camera (-z)


# ------------------------------------------------------------------------------------ building
def test_jaw_open_is_recovered_from_3d(model, sequence):
    X = torch.as_tensor(sequence["X"], dtype=torch.float32)
    enc = model.encode(X)
    assert enc["expression"].shape == (120, 16)
    assert _corr(enc["controls"]["jaw_open"], sequence["theta"]) > 0.95
    assert _corr(enc["controls"]["blink"], sequence["blink"]) > 0.85
    # units: jaw_open is centimetres of inner-lip opening above the closed mouth
    measured = model.measure(X)["jaw_open"].numpy()
    assert _corr(measured, sequence["theta"]) > 0.95
    slope = np.polyfit(measured, enc["controls"]["jaw_open"].numpy(), 1)[0]
    assert 0.8 < slope < 1.2


def test_control_patterns_are_local_and_point_the_right_way(model):
    jaw, blink = model.control_basis  # [478, 3] each, head space (y down)
    assert jaw[152, 1] > 0 and jaw[14, 1] > 0  # chin and lower lip go down
    assert jaw[14, 1] > 5 * abs(float(jaw[13, 1]))  # the upper lip hardly moves
    assert jaw[[10, 151, 159, 386]].abs().max() == 0  # nothing above the nose
    assert blink[159, 1] > 0 and blink[386, 1] > 0  # upper lids go down
    assert blink[145, 1] < 0 and blink[374, 1] < 0  # lower lids go up a little
    assert blink[[152, 14, 10, 1]].abs().max() == 0  # not the chin, mouth, forehead or nose
    # the controls are not (nearly) expressible by the expression basis: the joint solve is well posed
    E = model.expression_basis.reshape(model.n_expression, -1).double()
    C = model.control_basis.reshape(2, -1).double()
    Q, _ = torch.linalg.qr(E.T)
    outside = C.T - Q @ (Q.T @ C.T)
    assert (outside.norm(dim=0) > 0.25 * C.norm(dim=1)).all()


def test_vertices_evaluate_the_linear_model(model):
    g = torch.Generator().manual_seed(0)
    B = 3
    expr = torch.randn(B, model.n_expression, generator=g)
    controls = {"jaw_open": torch.rand(B, generator=g), "blink": torch.rand(B, generator=g)}
    rv = 0.2 * torch.randn(B, 3, generator=g)
    t = torch.randn(B, 3, generator=g)
    v = model.vertices(torch.zeros(B, 0), expr, {"global": rv}, t, controls)
    assert v.shape == (B, 478, 3)
    rest = model.vertices(torch.zeros(B, 0), expr, controls=controls)
    lin = (
        model.template
        + torch.einsum("be,evc->bvc", expr, model.expression_basis)
        + controls["jaw_open"][:, None, None] * model.control_basis[0]
        + controls["blink"][:, None, None] * model.control_basis[1]
    )
    torch.testing.assert_close(rest, lin)
    from scipy.spatial.transform import Rotation

    for b in range(B):
        R = torch.as_tensor(Rotation.from_rotvec(rv[b].numpy()).as_matrix(), dtype=torch.float32)
        torch.testing.assert_close(v[b], rest[b] @ R.T + t[b], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(model.landmarks(v), v)  # vertex i is landmark i
    torch.testing.assert_close(model.landmark_indices, torch.arange(478))


def test_outlier_frames_do_not_move_the_identity(face_layout, sequence, model):
    X = sequence["X"].copy()
    rng = np.random.default_rng(5)
    X[[3, 50, 90]] += rng.normal(scale=0.01, size=(3, 478, 3))  # tracking failures
    X[7] = np.nan  # a missed detection
    robust = OpenFaceModel.from_landmarks(X, n_expression=16)
    naive = OpenFaceModel.from_landmarks(X, n_expression=16, robust_iterations=1)
    ideal = OpenFaceModel.from_landmarks(np.delete(sequence["X"], [3, 7, 50, 90], axis=0), n_expression=16)
    assert robust.stats["n_frames"] == 119

    def dist(m: OpenFaceModel) -> float:
        return float((m.template - ideal.template).norm(dim=1).max())

    # (the closed-mouth reference is a quantile over frames, so it shifts a little with any frame set)
    assert dist(robust) < 1e-3 and dist(robust) < dist(naive) / 3


def test_bad_input_is_rejected(sequence):
    with pytest.raises(ValueError, match=r"\(T, 478, 3\)"):
        OpenFaceModel.from_landmarks(sequence["X"][:, :468])
    with pytest.raises(ValueError, match="at least 8 valid frames"):
        OpenFaceModel.from_landmarks(sequence["X"][:5])


def test_few_frames_limit_the_basis(sequence):
    small = OpenFaceModel.from_landmarks(sequence["X"][:10], n_expression=16)
    assert small.n_expression == 9 and small.expression_basis.shape == (9, 478, 3)


# ------------------------------------------------------------------------------------ files
def test_save_load_roundtrip(tmp_path, model):
    path = tmp_path / "face.safetensors"
    model.save(path)
    back = OpenFaceModel.load(path)
    for name in ("template", "expression_basis", "control_basis"):
        torch.testing.assert_close(getattr(back, name), getattr(model, name))
    assert back.stats == pytest.approx(model.stats)


def test_bad_files_are_format_errors(tmp_path, model):
    with pytest.raises(FormatError, match="file not found"):
        OpenFaceModel.load(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(FormatError, match="junk.safetensors: not a readable safetensors file"):
        OpenFaceModel.load(junk)
    from safetensors.torch import save_file

    state = model.state_dict()
    state["format_version"] = torch.tensor([99])
    save_file(state, str(tmp_path / "future.safetensors"))
    with pytest.raises(FormatError, match="format version 99"):
        OpenFaceModel.load(tmp_path / "future.safetensors")
    del state["control_basis"]
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(FormatError, match="missing key 'control_basis'"):
        OpenFaceModel.load(tmp_path / "partial.safetensors")


# ------------------------------------------------------------------------------------ head shell
def test_extend_to_head_closes_the_face(model):
    v, f = model.template, model.faces
    hv, hf = extend_to_head(v, f)
    torch.testing.assert_close(hv[: len(v)], v)
    assert torch.equal(hf[: len(f)], f)
    parts = trimesh.Trimesh(hv.numpy(), hf.numpy(), process=False).split(only_watertight=False)
    head = max(parts, key=lambda m: len(m.faces))
    assert len(head.faces) == len(hf) - 8  # everything but the two iris fans
    assert head.is_watertight and head.is_winding_consistent
    assert head.volume > 0  # outward normals
    assert head.euler_number == 2
    face_w = float(v[:, 0].max() - v[:, 0].min())
    depth = float(hv[:, 2].max() - v[:, 2].min())
    assert 1.0 * face_w < depth < 2.0 * face_w  # a head, not a plate or a tube
    assert float(hv[len(v) :, 2].mean()) > float(v[:, 2].mean())  # the new surface is mostly behind


def test_extend_to_head_rejects_closed_meshes():
    ico = trimesh.creation.icosphere(subdivisions=1)
    with pytest.raises(ValueError, match="closed already"):
        extend_to_head(torch.as_tensor(ico.vertices), torch.as_tensor(ico.faces))
