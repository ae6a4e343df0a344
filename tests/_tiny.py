"""A tiny avatar built directly (no fit): a few hundred Gaussians in front of the capture camera,
for fast tests of loading, rendering and the CLI's error paths."""

from __future__ import annotations

import numpy as np
import torch


def tiny_avatar(n: int = 400, size: int = 64, fps: float = 25.0, seed: int = 0):
    from avatar3d import Avatar
    from avatar3d.config import AvatarConfig
    from avatar3d.core.groups import HEAD, MOUTH, TORSO
    from avatar3d.models.gaussian_avatar import GaussianAvatar

    cfg = AvatarConfig.preset_config("fast")
    g = torch.Generator().manual_seed(seed)
    model = GaussianAvatar(cfg.model, n)
    with torch.no_grad():
        model.means.copy_(torch.randn(n, 3, generator=g) * 0.05)
        model.log_scales.fill_(float(np.log(0.01)))
        model.opacity_logits.fill_(2.0)
        model.color_logits.copy_(torch.randn(n, 3, generator=g))
        model.group.copy_(torch.tensor([HEAD, MOUTH, TORSO])[torch.arange(n) % 3])
        model.landmarks.copy_(torch.randn(478, 3, generator=g) * 0.05)
    f = 1.2 * size
    K = [[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]]
    vm = np.eye(4)
    vm[2, 3] = 0.5
    meta = {
        "width": size,
        "height": size,
        "K": K,
        "rest_viewmat": vm.tolist(),
        "fps": fps,
        "n_mels": 80,
        "audio_window": 16,
        "n_gaussians": n,
    }
    track = {"head_poses": torch.eye(4).repeat(10, 1, 1), "blink": torch.zeros(10)}
    bg = np.full((size, size, 3), 128, np.uint8)
    return Avatar(model, cfg, meta, track, bg)
