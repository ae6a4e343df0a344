"""The mouth-clear loss: face Gaussians in front of the mouth interior may not cover the lips' opening."""

from types import SimpleNamespace

import numpy as np
import torch

from avatar3d.config import ModelConfig
from avatar3d.core.groups import HEAD, MOUTH
from avatar3d.models.gaussian_avatar import GaussianAvatar
from avatar3d.train.mouth_clear import mouth_clear_loss, opening_mask

SIZE = 64


def _square(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def test_opening_mask_fills_the_contour_and_erodes_its_rim():
    c = _square(10, 20, 30, 30)
    m = opening_mask(c, (8, 18), (26, 14), 0.0)
    assert m.shape == (14, 26)
    assert 180 <= int(m.sum()) <= 250  # the polygon's 200 px², up to a one-pixel rim (cv2 fills edges)
    assert m[7, 12] and not m[0, 0]
    eroded = opening_mask(c, (8, 18), (26, 14), 1.0)
    assert eroded.sum() < m.sum() and not (eroded & ~m).any()


def _scene(head_depth: float):
    """One HEAD Gaussian on the camera axis at ``head_depth`` and a mouth interior at depth 0.5."""
    cfg = ModelConfig(n_head=2, n_mouth=2, n_torso=0, hidden=8, encoding="frequency")
    m = GaussianAvatar(cfg, 3)
    with torch.no_grad():
        m.means.copy_(torch.tensor([[0.0, 0.0, head_depth], [0.0, 0.0, 0.5], [0.002, 0.0, 0.5]]))
        m.log_scales.fill_(float(np.log(0.01)))
        m.log_scales[0] = float(np.log(0.04))  # the face Gaussian spans the opening
        m.opacity_logits.fill_(4.0)
        m.group.copy_(torch.tensor([HEAD, MOUTH, MOUTH]))
    gs = {
        "means": m.means,
        "quats": m.quats,
        "scales": torch.exp(m.log_scales),
        "opacities": torch.sigmoid(m.opacity_logits),
        "colors": torch.sigmoid(m.color_logits),
    }
    f = 1.5 * SIZE
    data = SimpleNamespace(
        inner_lips=torch.tensor(_square(26, 28, 38, 36), dtype=torch.float32)[None],
        K=torch.tensor([[f, 0, SIZE / 2], [0, f, SIZE / 2], [0, 0, 1.0]]),
        rest_viewmat=torch.eye(4),
        width=SIZE,
        height=SIZE,
    )
    return m, gs, data


def test_a_face_gaussian_in_front_of_the_teeth_is_penalised_and_pushed_out():
    m, gs, data = _scene(head_depth=0.45)
    loss = mouth_clear_loss(m, gs, data, 0, erode_px=1.0)
    assert loss is not None and float(loss.detach()) > 0.5
    loss.backward()
    assert m.opacity_logits.grad[0] > 0  # descending the loss fades it
    assert m.opacity_logits.grad[1:].abs().sum() == 0  # the mouth interior is not touched


def test_face_gaussians_behind_the_mouth_interior_are_not_penalised():
    m, gs, data = _scene(head_depth=0.7)  # the back of the head: the teeth hide it
    loss = mouth_clear_loss(m, gs, data, 0, erode_px=1.0)
    assert loss is not None and float(loss) < 1e-6


def test_closed_or_untracked_lips_add_no_loss():
    m, gs, data = _scene(head_depth=0.45)
    data.inner_lips = torch.tensor(_square(26, 30, 38, 30.5), dtype=torch.float32)[None]  # a slit
    assert mouth_clear_loss(m, gs, data, 0, erode_px=1.0) is None
    data.inner_lips = torch.full((1, 4, 2), float("nan"))
    assert mouth_clear_loss(m, gs, data, 0, erode_px=1.0) is None
