"""Person masks, background plate and landmark region masks."""

import numpy as np

from avatar3d.capture.landmarks import FaceLandmarker
from avatar3d.capture.segmentation import BackgroundPlate, PersonSegmenter, region_masks

from ._synth import astronaut_face


def test_background_plate_recovers_occluded_background():
    rng = np.random.default_rng(0)
    bg = rng.integers(0, 255, size=(64, 96, 3), dtype=np.uint8)
    plate = BackgroundPlate(96, 64, margin=0.0)
    for x0 in (0, 30, 60):  # a "person" box moving right, covering every column at some point
        frame = bg.copy()
        frame[10:50, x0 : x0 + 30] = 255
        person = np.zeros((64, 96), np.uint8)
        person[10:50, x0 : x0 + 30] = 255
        plate.update(frame, person)
    out = plate.result()
    assert plate.n_frames == 3
    np.testing.assert_array_equal(out, bg)


def test_background_plate_inpaints_never_seen_pixels():
    bg = np.full((48, 48, 3), 100, np.uint8)
    plate = BackgroundPlate(48, 48, margin=0.0)
    frame = bg.copy()
    frame[16:32, 16:32] = 250
    person = np.zeros((48, 48), np.uint8)
    person[16:32, 16:32] = 255
    plate.update(frame, person)
    out = plate.result().astype(int)
    assert np.abs(out[16:32, 16:32] - 100).max() <= 4  # filled from the surrounding background


def test_person_mask_and_regions_on_a_real_face():
    img = astronaut_face(256)
    with PersonSegmenter() as seg:
        person = seg.mask(img)
    assert person.shape == (256, 256) and set(np.unique(person)) <= {0, 255}
    assert 0.15 < (person > 0).mean() < 0.95
    with FaceLandmarker(static_image_mode=True) as lm:
        pts = lm.detect(img)[0]
    m = region_masks(pts[:, :2], person)
    face, head, torso, mouth = (m[k] > 0 for k in ("face", "head", "torso", "mouth"))
    assert face.sum() > 1500
    assert (face & ~head).sum() == 0  # the head contains the face
    assert head.sum() > 1.15 * face.sum()  # ... and hair above it
    assert (head & torso).sum() == 0
    assert torso.sum() > 0 and (torso & ~(person > 0)).sum() == 0
    # torso lies below the chin line (through the chin, parallel to the eye line)
    ex = pts[[263, 362], :2].mean(0) - pts[[33, 133], :2].mean(0)
    ey = np.array([-ex[1], ex[0]]) / np.linalg.norm(ex)
    ys, xs = np.nonzero(torso)
    below = (xs + 0.5 - pts[152, 0]) * ey[0] + (ys + 0.5 - pts[152, 1]) * ey[1]
    assert below.min() > -1.0
    assert (mouth & ~face).sum() == 0  # mouth interior inside the face
