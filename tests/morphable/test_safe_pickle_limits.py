"""The restricted unpickler's resource limits: a few hundred bytes must not cost gigabytes."""

from __future__ import annotations

import pickle
import resource
import time

import numpy as np
import pytest

from avatar3d.errors import FormatError
from avatar3d.morphable._safe_pickle import _SPARSE, MAX_NODES, _sparse_to_dense, load_pickle


def _laughs(levels: int) -> object:
    o: object = [np.zeros(3)]
    for _ in range(levels):
        o = [o] * 10
    return o


def test_billion_laughs_is_refused_fast(tmp_path):
    p = tmp_path / "generic_model.pkl"
    p.write_bytes(pickle.dumps({"v_template": _laughs(25)}, protocol=2))
    assert p.stat().st_size < 1000
    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(FormatError, match="refusing to load"):
        load_pickle(p)
    assert time.perf_counter() - t0 < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KB


def test_shared_references_within_the_limit_load_once(tmp_path):
    p = tmp_path / "ok.pkl"
    inner = np.arange(4.0)
    p.write_bytes(pickle.dumps({"a": [inner] * 5, "b": _laughs(3)}, protocol=2))
    out = load_pickle(p)
    assert len(out["a"]) == 5 and np.array_equal(out["a"][0], inner)
    assert 10**3 < MAX_NODES


def test_sparse_shape_bomb_is_refused():
    """A sparse matrix whose declared shape would take terabytes when made dense."""
    m = _SPARSE["csc"]()
    m.__setstate__(
        {
            "_shape": (10**6, 10**6),
            "data": np.ones(1),
            "indices": np.zeros(1, int),
            "indptr": np.array([0, 1] + [1] * (10**6 - 1)),
        }
    )
    with pytest.raises(FormatError, match="too large"):
        _sparse_to_dense(m, "bomb.pkl")
