"""Fixtures for the morphable-model tests (generators live in ``_morphable_synth.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ._morphable_synth import dump_flame_pickle, make_embedding, make_flame_arrays, synthetic_face_layout


@pytest.fixture(scope="session")
def flame_arrays() -> dict:
    return make_flame_arrays()


@pytest.fixture(scope="session")
def flame_files(tmp_path_factory, flame_arrays) -> dict:
    """generic_model.pkl (FLAME 2020 layout, chumpy + scipy sparse) and a landmark embedding .npz."""
    root = tmp_path_factory.mktemp("flame")
    pkl = root / "generic_model.pkl"
    dump_flame_pickle(pkl, flame_arrays)
    emb = make_embedding(flame_arrays)
    emb_path = root / "mediapipe_landmark_embedding.npz"
    np.savez(emb_path, **emb)
    return {"pkl": pkl, "landmarks": emb_path, "embedding": emb}


@pytest.fixture(scope="session")
def face_layout() -> np.ndarray:
    return synthetic_face_layout()


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Small batched problems: one intra-op thread is faster and steadier on loaded 2-core machines."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
