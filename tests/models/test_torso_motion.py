"""The torso follows the head pose through a learned rigid motion (TorsoMotion)."""

from __future__ import annotations

import math

import roma
import torch

from avatar3d.config import ModelConfig
from avatar3d.models.deform import TorsoMotion
from avatar3d.models.gaussian_avatar import HEAD, TORSO, GaussianAvatar


def _pose(yaw_deg: float = 0.0, shift=(0.0, 0.0, 0.0)) -> torch.Tensor:
    P = torch.eye(4)
    P[:3, :3] = roma.rotvec_to_rotmat(torch.tensor([0.0, math.radians(yaw_deg), 0.0]))
    P[:3, 3] = torch.tensor(shift)
    return P


def _avatar(n: int = 40) -> GaussianAvatar:
    torch.manual_seed(2)
    m = GaussianAvatar(ModelConfig(encoding="frequency", hidden=16), n, n_mels=80, n_expr=4)
    with torch.no_grad():
        m.means.copy_((torch.rand(n, 3) - 0.5) * 0.2)
        m.group[: n // 2] = TORSO
        m.torso_motion.pivot.copy_(m.means[: n // 2].mean(0))
    return m


def _randomise(mod: TorsoMotion) -> None:
    with torch.no_grad():
        for p in mod.net.parameters():
            p.normal_(0, 0.5)


def test_rest_pose_leaves_the_torso_exactly_in_place_even_when_trained():
    mod = TorsoMotion()
    _randomise(mod)
    R, t = mod(torch.eye(4))
    torch.testing.assert_close(R, torch.eye(3))
    torch.testing.assert_close(t, torch.zeros(3))
    R, t = mod(_pose(10, (0.02, 0, 0)))
    assert float((R - torch.eye(3)).abs().max().detach()) > 1e-4 and float(t.abs().max().detach()) > 1e-4
    assert float(roma.rotmat_to_rotvec(R.detach()).norm()) <= mod.max_angle + 1e-6
    assert float(t.detach().abs().max()) <= mod.max_shift + 1e-6


def test_new_model_has_a_static_torso_and_learns_to_move_it():
    m = _avatar()
    torso = m.group == TORSO
    a, e = torch.zeros(32), torch.zeros(1)
    still = m.posed(a, e, None, deform=False)["means"][torso]
    moved = m.posed(a, e, _pose(8, (0.03, 0.0, 0.0)), deform=False)
    torch.testing.assert_close(moved["means"][torso], still)  # zero-initialised: static at first
    head = m.group == HEAD
    assert not torch.allclose(moved["means"][head], m.means[head])  # the head did move
    # a loss that wants the torso to follow the head's shift reaches the torso network
    still = still.detach()
    target = still + torch.tensor([0.03, 0.0, 0.0])
    opt = torch.optim.Adam(m.torso_motion.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        out = m.posed(a, e, _pose(8, (0.03, 0.0, 0.0)), deform=False)["means"][torso]
        loss = (out - target).abs().mean()
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.2 * first
    # and the rest pose still leaves it where it was captured
    torch.testing.assert_close(m.posed(a, e, torch.eye(4), deform=False)["means"][torso], still)


def test_switched_off_by_config():
    m = _avatar()
    _randomise(m.torso_motion)
    m.cfg.torso_motion = False
    torso = m.group == TORSO
    out = m.posed(torch.zeros(32), torch.zeros(1), _pose(8, (0.03, 0.0, 0.0)), deform=False)["means"][torso]
    torch.testing.assert_close(out, m.means[torso])


def test_avatars_saved_before_torso_motion_load_with_a_static_torso():
    m = _avatar()
    state = {k: v for k, v in m.state_dict().items() if not k.startswith("torso_motion.")}
    back = GaussianAvatar(ModelConfig(encoding="frequency", hidden=16), 40, n_mels=80, n_expr=4)
    _randomise(back.torso_motion)
    back.load_state_dict(state)
    torso = back.group == TORSO
    posed = back.posed(torch.zeros(32), torch.zeros(1), _pose(8, (0.03, 0.0, 0.0)), deform=False)
    out = posed["means"][torso]
    torch.testing.assert_close(out, m.means[torso])
