"""Landmark detection (MediaPipe) and consistent subject selection."""

import warnings

import numpy as np
import pytest

from avatar3d.capture.landmarks import FaceLandmarker, SubjectSelector, face_box
from avatar3d.core.topology import (
    N_LANDMARKS,
    RIGID_INDICES,
    face_oval_loop,
    inner_lip_loop,
    outer_lip_loop,
    tessellation_edges,
)

from ._synth import astronaut_face


def _fake_face(cx, cy, size):
    """(478, 3) points filling a box of the given centre and size."""
    rng = np.random.default_rng(int(cx * 7 + cy))
    p = rng.uniform(-0.5, 0.5, size=(N_LANDMARKS, 3)) * size
    p[:4, :2] = np.array([[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]]) * size
    return (p + np.array([cx, cy, 0.0])).astype(np.float32)


def test_topology_loops_are_closed_polygons():
    oval, inner, outer = face_oval_loop(), inner_lip_loop(), outer_lip_loop()
    assert len(oval) == 36 and len(set(oval.tolist())) == 36 and oval[0] == 10
    assert len(inner) == 20 and {13, 14, 78, 308} <= set(inner.tolist())
    assert len(outer) == 20 and {0, 17, 61, 291} <= set(outer.tolist())
    assert tessellation_edges().shape == (2556, 2)
    assert not set(RIGID_INDICES) & (set(inner.tolist()) | {152})  # no lip or chin point is rigid


def test_detects_478_landmarks_on_a_real_face():
    img = astronaut_face(256)
    with FaceLandmarker(max_num_faces=2, static_image_mode=True) as lm:
        faces = lm.detect(img)
    assert len(faces) == 1
    pts = faces[0]
    assert pts.shape == (478, 3) and pts.dtype == np.float32
    c, s = face_box(pts)
    assert 90 < c[0] < 170 and 40 < c[1] < 140 and 30 < s < 120  # the face near the crop's centre
    # the subject's right eye (33) is on the image left of the left eye (263); chin below forehead
    assert pts[33, 0] < pts[263, 0] and pts[152, 1] > pts[10, 1]


def test_no_face_in_noise():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(256, 256, 3), dtype=np.uint8)
    with FaceLandmarker(static_image_mode=True) as lm:
        assert lm.detect(img) == []


def test_selector_prefers_large_central_face_then_follows_it():
    sel = SubjectSelector(640, 480, reacquire_after=5)
    big_centre = _fake_face(320, 240, 150)
    small_side = _fake_face(80, 100, 60)
    with pytest.warns(UserWarning, match="2 faces"):
        first = sel.select([small_side, big_centre], 0)
    assert first is big_centre
    # the subject drifts right; a newcomer appears at the centre: keep following the subject
    moved = _fake_face(335, 240, 150)
    newcomer = _fake_face(260, 250, 150)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        assert sel.select([newcomer, moved], 1) is moved
    # the subject vanishes, only a far face remains: lost, not swapped
    assert sel.select([small_side], 2) is None
    assert sel.max_faces_seen == 2


def test_selector_reacquires_after_a_long_absence():
    sel = SubjectSelector(640, 480, reacquire_after=3)
    sel.select([_fake_face(320, 240, 150)], 0)
    other = _fake_face(100, 100, 80)
    assert sel.select([other], 1) is None
    assert sel.select([other], 10) is other
