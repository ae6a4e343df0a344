"""The optional LPIPS training term: read from a local weights file (faked here), checked before any
work, applied on the lower-face crop from the joint stage on."""

from types import SimpleNamespace

import pytest
import torch

import avatar3d.capture as capture
from avatar3d import Avatar
from avatar3d.config import AvatarConfig
from avatar3d.core.lpips import LPIPSNet
from avatar3d.errors import ConfigError
from avatar3d.train.trainer import lpips_crop, lpips_term, train


def fake_lpips_weights(path, seed: int = 0):
    """A full LPIPS-alex state dict in the lpips package's key layout, random but valid."""
    torch.manual_seed(seed)
    ref = LPIPSNet("alex")
    state = {k: v for k, v in ref.state_dict().items() if k.startswith("features.")}
    for k, c in enumerate((64, 192, 384, 256, 256)):
        state[f"lin{k}.model.1.weight"] = torch.rand(1, c, 1, 1)
    torch.save(state, path)
    return path


def _cfg(**train) -> AvatarConfig:
    return AvatarConfig.from_dict({"preset": "fast", "train": train})


def test_no_file_no_term():
    assert lpips_term(_cfg()) is None


def test_weights_file_gives_a_frozen_differentiable_term(tmp_path):
    net = lpips_term(_cfg(lpips_weights=str(fake_lpips_weights(tmp_path / "lpips.pth"))))
    assert isinstance(net, LPIPSNet)
    assert not any(p.requires_grad for p in net.parameters())
    a = torch.rand(1, 3, 64, 64, requires_grad=True)
    b = torch.rand(1, 3, 64, 64)
    d = net(a, b)[0]
    d.backward()
    assert d > 0 and a.grad is not None and a.grad.abs().sum() > 0
    assert float(net(b, b)[0]) == pytest.approx(0.0, abs=1e-6)


def test_missing_or_corrupt_file_is_a_one_line_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found") as e:
        lpips_term(_cfg(lpips_weights=str(tmp_path / "missing.pth")))
    assert "\n" not in str(e.value) and "train.lpips_weights" in str(e.value)
    bad = tmp_path / "junk.pth"
    bad.write_bytes(b"definitely not torch")
    with pytest.raises(ConfigError, match="junk.pth") as e:
        lpips_term(_cfg(lpips_weights=str(bad)))
    assert "\n" not in str(e.value)


def test_train_checks_the_file_before_any_work(tmp_path):
    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"the capture was read ({name}) before the config was checked")

    with pytest.raises(ConfigError, match="not found"):
        train(Untouchable(), _cfg(lpips_weights=str(tmp_path / "missing.pth")))


def test_crop_is_a_square_inside_the_image_around_the_mouth():
    data = SimpleNamespace(
        width=256,
        height=200,
        mouth_boxes=torch.tensor([[110.0, 140, 150, 160], [0, 0, 10, 10], [240, 190, 256, 200]]),
    )
    for i in range(3):
        y0, y1, x0, x1 = lpips_crop(data, i)
        assert y1 - y0 == x1 - x0 >= 64
        assert 0 <= y0 and y1 <= 200 and 0 <= x0 and x1 <= 256
    y0, y1, x0, x1 = lpips_crop(data, 0)
    assert x0 <= 110 and x1 >= 150 and y0 <= 140 and y1 >= 160  # the mouth is inside


def test_fit_checks_the_file_before_the_capture(tmp_path, monkeypatch):
    """Avatar.fit on a video: a bad LPIPS file is reported before minutes of capture work."""

    def no_capture(*a, **k):
        raise AssertionError("the capture ran before the config was checked")

    monkeypatch.setattr(capture, "run_capture", no_capture)
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not read")
    cfg = AvatarConfig.preset_config("fast")
    cfg.train.lpips_weights = str(tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match="not found"):
        Avatar.fit(video, config=cfg, workdir=tmp_path / "work", progress=False, log=None)
    assert not (tmp_path / "work").exists()
