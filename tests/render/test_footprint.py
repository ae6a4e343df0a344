"""The 3D footprint filter: renders finer than training keep each Gaussian's training footprint."""

import math

import pytest
import torch

from avatar3d.render import rasterize
from avatar3d.render._constants import EPS2D
from avatar3d.render.footprint import footprint_scales

F, W, DEPTH = 100.0, 32, 1.0


def _camera(scale: float):
    K = torch.tensor([[F * scale, 0.0, W * scale / 2], [0.0, F * scale, W * scale / 2], [0.0, 0.0, 1.0]])
    vm = torch.eye(4)
    vm[2, 3] = DEPTH  # the Gaussian at the origin sits DEPTH in front of the camera
    return vm, K


def _alpha_mass(scales: torch.Tensor, scale: float) -> float:
    """Summed alpha (in pixels) of one faint Gaussian at the image centre, rendered at ``scale`` x."""
    vm, K = _camera(scale)
    out = rasterize(
        torch.zeros(1, 3, dtype=torch.float64),
        torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64),
        scales.double(),
        torch.tensor([0.2], dtype=torch.float64),
        torch.ones(1, 3, dtype=torch.float64),
        vm[None].double(),
        K[None].double(),
        int(W * scale),
        int(W * scale),
        backend="torch",
    )
    return float(out.alphas.sum())


def test_the_training_camera_leaves_scales_alone() -> None:
    s = torch.full((5, 3), 1e-3)
    vm, K = _camera(1.0)
    out = footprint_scales(torch.randn(5, 3) * 0.01, s, vm[None], K[None], vm, K)
    assert out is s


def test_a_coarser_camera_leaves_scales_alone() -> None:
    s = torch.full((5, 3), 1e-3)
    vm, K = _camera(1.0)
    vm_far = vm.clone()
    vm_far[2, 3] = 2 * DEPTH
    for cam in ((vm[None], (K * torch.tensor([[0.5], [0.5], [1.0]]))[None]), (vm_far[None], K[None])):
        assert torch.equal(footprint_scales(torch.zeros(5, 3), s, *cam, vm, K), s)


@pytest.mark.parametrize("scale", [2.0, 3.0])
def test_a_sub_pixel_gaussian_keeps_its_training_footprint(scale: float) -> None:
    """At k x the training resolution a sub-pixel Gaussian covers k^2 x the pixels it covered in
    training, as the training render upsampled would; unfiltered, it shrinks to a speck."""
    s = torch.full((1, 3), 1e-5)  # 0.001 px at the training camera: the dilation is all of it
    vm, K = _camera(1.0)
    train = _alpha_mass(s, 1.0)
    assert train == pytest.approx(0.2 * 2 * math.pi * EPS2D, rel=0.1)  # sampled, cut at 1/255
    vmr, Kr = _camera(scale)
    filtered = footprint_scales(torch.zeros(1, 3), s, vmr[None], Kr[None], vm, K)
    assert _alpha_mass(filtered, scale) == pytest.approx(scale**2 * train, rel=0.1)
    assert _alpha_mass(s, scale) < 1.1 * train  # what the cracks were made of


def test_a_closer_camera_is_finer_too() -> None:
    s = torch.full((1, 3), 1e-5)
    vm, K = _camera(1.0)
    near = vm.clone()
    near[2, 3] = DEPTH / 2
    out = footprint_scales(torch.zeros(1, 3), s, near[None], K[None], vm, K)
    # half the depth: a render pixel is half a training pixel wide at the Gaussian
    assert float(out[0, 0]) == pytest.approx(math.sqrt(1e-10 + EPS2D * 0.75 * (DEPTH / F) ** 2), rel=1e-4)


def test_a_stereo_pair_takes_its_finest_camera() -> None:
    s = torch.full((1, 3), 1e-5)
    vm, K = _camera(1.0)
    _, K2 = _camera(2.0)
    both = footprint_scales(torch.zeros(1, 3), s, torch.stack([vm, vm]), torch.stack([K, K2]), vm, K)
    fine = footprint_scales(torch.zeros(1, 3), s, vm[None], K2[None], vm, K)
    assert torch.equal(both, fine)


def test_an_avatar_renders_its_capture_view_unchanged_and_finer_views_filtered() -> None:
    """Wired through the model: the training camera renders as in training; twice its size, the
    filter is on (the avatar records its training camera when it is built)."""
    from tests._tiny import tiny_avatar

    av = tiny_avatar()
    m = av.model
    with torch.no_grad():
        m.log_scales.fill_(math.log(1e-4))  # sub-pixel: what the filter is for
        gs = m.posed(torch.zeros(m.code_dim), torch.zeros(1), None)
    vm = torch.as_tensor(av.meta.viewmat, dtype=torch.float32)[None]
    K = torch.as_tensor(av.meta.intrinsics, dtype=torch.float32)[None]
    assert m.render_scales(gs, vm, K) is gs["scales"]
    K2 = K * torch.tensor([[2.0], [2.0], [1.0]])
    wider = m.render_scales(gs, vm, K2)
    assert bool((wider > gs["scales"]).all())
    m.train_camera = None  # an avatar built without one (a bare model) renders unfiltered
    assert m.render_scales(gs, vm, K2) is gs["scales"]


def test_the_share_scales_the_added_variance() -> None:
    s = torch.full((1, 3), 1e-5)
    vm, K = _camera(1.0)
    _, K2 = _camera(2.0)
    full, half, none = (
        footprint_scales(torch.zeros(1, 3), s, vm[None], K2[None], vm, K, share) for share in (1.0, 0.5, 0.0)
    )
    assert float(half[0, 0] ** 2 - s[0, 0] ** 2) == pytest.approx(0.5 * float(full[0, 0] ** 2 - s[0, 0] ** 2))
    assert none is s


def test_the_render_config_sets_the_share() -> None:
    from avatar3d.config import AvatarConfig, ConfigError

    assert AvatarConfig.from_dict({"render": {"footprint": 0.0}}).render.footprint == 0.0
    with pytest.raises(ConfigError, match="footprint"):
        AvatarConfig.from_dict({"render": {"footprint": 2.0}})


def test_an_avatars_config_sets_its_models_share() -> None:
    """``avatar3d render --set render.footprint=0`` replaces the loaded avatar's config."""
    import dataclasses

    from tests._tiny import tiny_avatar

    av = tiny_avatar()
    assert av.model.footprint_share == av.config.render.footprint
    av.config = dataclasses.replace(av.config, render=dataclasses.replace(av.config.render, footprint=0.0))
    assert av.model.footprint_share == 0.0
