"""The bottom layer: the face mesh's one triangle builder, group ids and similarity fits."""

import numpy as np
import pytest

from avatar3d.core import HEAD, MOUTH, TORSO
from avatar3d.core.geometry import similarity_align, similarity_fit
from avatar3d.core.topology import face_triangles


def test_face_triangles_form_a_closed_manifold_patch():
    tris = face_triangles()
    assert tris.shape == (852, 3) and tris.min() == 0 and tris.max() == 467
    edges = {}
    for t in tris:
        for a, b in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])):
            edges[(min(a, b), max(a, b))] = edges.get((min(a, b), max(a, b)), 0) + 1
    counts = np.array(list(edges.values()))
    assert counts.max() == 2  # no edge borders three triangles: the spurious cliques are gone
    # a genus-0 surface with four boundary loops (the outline, two eyes, the mouth): V - E + F = 2 - 4
    v, e, f = len(np.unique(tris)), len(edges), len(tris)
    assert v - e + f == 2 - 4
    with pytest.raises(ValueError):
        tris[0, 0] = 1  # shared and cached: read-only


@pytest.mark.parametrize("dim", [2, 3])
def test_similarity_fit_recovers_a_known_transform(dim):
    rng = np.random.default_rng(0)
    src = rng.normal(size=(40, dim))
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    R = q.copy()
    R[:, 0] *= np.sign(np.linalg.det(q))  # a rotation, not a reflection
    dst = 1.7 * src @ R.T + rng.normal(size=dim)
    s, R_hat, t = similarity_fit(src, dst)
    assert s == pytest.approx(1.7) and np.allclose(R_hat, R) and np.allclose(similarity_align(src, dst), dst)
    w = np.ones(40)
    w[:5] = 0.0
    noisy = dst.copy()
    noisy[:5] += 10.0  # outliers with zero weight do not move the fit
    assert np.allclose(similarity_align(src, noisy, w)[5:], dst[5:])


def test_group_ids_are_distinct():
    assert len({HEAD, MOUTH, TORSO}) == 3
