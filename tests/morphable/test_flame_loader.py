"""FLAME file loading: restricted unpickler, npz, validation errors, environment variables."""

from __future__ import annotations

import builtins
import os
import pickle
import sys

import numpy as np
import pytest
import torch

from avatar3d.errors import FormatError
from avatar3d.morphable import FLAME_LANDMARKS_ENV, FLAME_PATH_ENV, FlameModel, load_flame_data
from avatar3d.morphable.flame import REQUIRED_KEYS, read_arrays

from ._morphable_synth import N_SHAPE, dump_flame_pickle


def _npz(path, arrays, **override):
    d = {
        k: (v.toarray() if hasattr(v, "toarray") else v)
        for k, v in arrays.items()
        if k not in ("eye_sets", "bs_style", "bs_type")
    }
    d.update(override)
    d = {k: v for k, v in d.items() if v is not None}
    np.savez(path, **d)
    return path


def test_pickle_with_chumpy_and_sparse_loads_without_chumpy(flame_files, flame_arrays):
    data = load_flame_data(flame_files["pkl"], shape_components=N_SHAPE)
    assert "chumpy" not in sys.modules
    np.testing.assert_array_equal(data.v_template, flame_arrays["v_template"])
    np.testing.assert_array_equal(data.shapedirs, flame_arrays["shapedirs"])
    np.testing.assert_allclose(data.J_regressor, flame_arrays["J_regressor"].toarray())
    np.testing.assert_array_equal(data.faces, flame_arrays["f"].astype(np.int64))
    assert data.parents.tolist() == [-1, 0, 1, 1, 1]
    assert data.n_shape == N_SHAPE and data.shapedirs.shape[2] - data.n_shape == 8
    raw = read_arrays(flame_files["pkl"])
    assert raw["bs_style"] == "lbs" and isinstance(raw["weights"], np.ndarray)


def test_npz_gives_the_same_model(tmp_path, flame_files, flame_arrays):
    npz = _npz(tmp_path / "flame.npz", flame_arrays, n_shape=np.array(N_SHAPE))
    a = FlameModel.load(
        flame_files["pkl"], flame_files["landmarks"], shape_components=N_SHAPE, dtype=torch.float64
    )
    b = FlameModel.load(npz, flame_files["landmarks"], dtype=torch.float64)  # split read from the file
    g = torch.Generator().manual_seed(0)
    shape, expr = (
        torch.randn(2, N_SHAPE, generator=g, dtype=torch.float64),
        torch.randn(2, 8, generator=g, dtype=torch.float64),
    )
    pose = {"jaw": 0.2 * torch.rand(2, 3, generator=g, dtype=torch.float64)}
    torch.testing.assert_close(a.vertices(shape, expr, pose), b.vertices(shape, expr, pose))


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("func", [os.system, builtins.eval, builtins.exec])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path, flame_arrays, func):
    marker = tmp_path / "pwned"
    cmd = f"touch {marker}" if func is os.system else f"open({str(marker)!r}, 'w').close()"
    path = tmp_path / "generic_model.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"v_template": flame_arrays["v_template"], "payload": _Evil(func, cmd)}, fh, protocol=2)
    with pytest.raises(FormatError, match="disallowed global") as exc:
        load_flame_data(path)
    assert not marker.exists()
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_truncated_pickle_is_a_format_error(tmp_path, flame_files):
    bad = tmp_path / "cut.pkl"
    bad.write_bytes(flame_files["pkl"].read_bytes()[:5000])
    with pytest.raises(FormatError, match="cut.pkl"):
        load_flame_data(bad)


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_missing_key_is_named(tmp_path, flame_arrays, key):
    path = _npz(tmp_path / "flame.npz", flame_arrays, **{key: None})
    with pytest.raises(FormatError, match=f"flame.npz: missing key '{key}'"):
        load_flame_data(path, shape_components=N_SHAPE)


def test_missing_key_in_pickle_is_named(tmp_path, flame_arrays):
    arrays = {k: v for k, v in flame_arrays.items() if k != "posedirs"}
    dump_flame_pickle(tmp_path / "generic_model.pkl", arrays)
    with pytest.raises(FormatError, match="missing key 'posedirs'"):
        load_flame_data(tmp_path / "generic_model.pkl", shape_components=N_SHAPE)


@pytest.mark.parametrize(
    "key, bad, message",
    [
        ("posedirs", np.zeros((642, 3, 35)), r"'posedirs' has shape \(642, 3, 35\), expected \(642, 3, 36\)"),
        ("v_template", np.zeros((642, 2)), r"'v_template' has shape \(642, 2\), expected \(\*, 3\)"),
        ("shapedirs", np.zeros((600, 3, 20)), r"'shapedirs' has shape \(600, 3, 20\)"),
        ("J_regressor", np.zeros((4, 642)), r"'J_regressor' has shape \(4, 642\), expected \(5, 642\)"),
        ("weights", np.full((642, 5), 0.5), r"'weights' rows must sum to 1"),
        ("kintree_table", np.array([[-1, -1, 1, 1, 1], [0, 1, 2, 3, 4]]), r"exactly one root"),
        ("f", np.full((10, 3), 9999), r"'f' has indices outside \[0, 642\)"),
        ("v_template", np.full((642, 3), np.nan), r"'v_template' must be finite"),
    ],
)
def test_bad_arrays_are_named(tmp_path, flame_arrays, key, bad, message):
    path = _npz(tmp_path / "flame.npz", flame_arrays, **{key: bad})
    with pytest.raises(FormatError, match=message) as exc:
        load_flame_data(path, shape_components=N_SHAPE)
    assert "\n" not in str(exc.value)


def test_unknown_split_asks_for_it(tmp_path, flame_arrays):
    path = _npz(tmp_path / "flame.npz", flame_arrays)
    with pytest.raises(FormatError, match="shape_components"):
        load_flame_data(path)


def test_environment_variables(monkeypatch, flame_files):
    monkeypatch.delenv(FLAME_PATH_ENV, raising=False)
    monkeypatch.delenv(FLAME_LANDMARKS_ENV, raising=False)
    with pytest.raises(FormatError, match=FLAME_PATH_ENV):
        FlameModel.load()
    monkeypatch.setenv(FLAME_PATH_ENV, str(flame_files["pkl"]))
    model = FlameModel.load(shape_components=N_SHAPE)
    assert model.embedding is None
    with pytest.raises(ValueError, match="no landmark embedding"):
        _ = model.landmark_indices
    monkeypatch.setenv(FLAME_LANDMARKS_ENV, str(flame_files["landmarks"]))
    model = FlameModel.load(shape_components=N_SHAPE)
    assert model.n_landmarks == len(flame_files["embedding"]["landmark_indices"])
    monkeypatch.setenv(FLAME_PATH_ENV, str(flame_files["pkl"]) + ".missing")
    with pytest.raises(FormatError, match="file not found"):
        FlameModel.load(shape_components=N_SHAPE)


@pytest.mark.parametrize(
    "key, bad, message",
    [
        ("lmk_face_idx", "out", r"'lmk_face_idx' has indices outside \[0, 1280\)"),
        ("lmk_b_coords", "neg", r"'lmk_b_coords' rows must be barycentric"),
        ("landmark_indices", "dup", r"repeated MediaPipe indices"),
        ("landmark_indices", "big", r"'landmark_indices' has indices outside \[0, 478\)"),
        ("lmk_b_coords", "missing", r"missing key 'lmk_b_coords'"),
    ],
)
def test_bad_landmark_embedding(tmp_path, flame_files, key, bad, message):
    emb = {k: v.copy() for k, v in flame_files["embedding"].items()}
    if bad == "out":
        emb[key][0] = 1280
    elif bad == "neg":
        emb[key][0] = [1.5, -0.5, 0.0]
    elif bad == "dup":
        emb[key][1] = emb[key][0]
    elif bad == "big":
        emb[key][0] = 478
    else:
        del emb[key]
    path = tmp_path / "emb.pkl"
    with open(path, "wb") as fh:  # the embedding may also come as a (plain) pickle
        pickle.dump(emb, fh, protocol=4)
    with pytest.raises(FormatError, match=message):
        FlameModel.load(flame_files["pkl"], path, shape_components=N_SHAPE)


def test_eyelid_blendshapes_enable_blink(tmp_path, flame_arrays, flame_files):
    V = len(flame_arrays["v_template"])
    lid = np.zeros((V, 3))
    lid[flame_arrays["eye_sets"][0], 1] = -0.004  # FLAME frame: y up, the lid moves down
    path = _npz(
        tmp_path / "flame.npz",
        flame_arrays,
        n_shape=np.array(N_SHAPE),
        l_eyelid=lid,
        r_eyelid=np.zeros((V, 3)),
    )
    model = FlameModel.load(path, flame_files["landmarks"], dtype=torch.float64)
    assert model.semantic_controls == ("jaw_open", "blink") and model.fit_controls == ("blink",)
    n = model.neutral(1)
    v0 = model.vertices(n["shape"], n["expression"])
    v1 = model.vertices(n["shape"], n["expression"], controls={"blink": torch.ones(1, dtype=torch.float64)})
    moved = (v1 - v0)[0].norm(dim=1) > 1e-9
    assert set(np.flatnonzero(moved.numpy())) == set(flame_arrays["eye_sets"][0].tolist())
    assert ((v1 - v0)[0, moved, 1] > 0).all()  # head space: y down, so closing lids move +y
