"""Spatial encodings of the deformation field: hash grid / tri-plane lookups against a plain reference,
gradients, continuity, determinism, the tcnn path, and loading avatars saved before the option existed."""

import math

import pytest
import torch

from avatar3d import Avatar
from avatar3d.config import AvatarConfig, ModelConfig
from avatar3d.errors import ConfigError
from avatar3d.models import encoding as E
from avatar3d.models.encoding import HashGridEncoding, SpatialEncoding, grid_layout
from avatar3d.models.gaussian_avatar import GaussianAvatar, encoding_of_state

PRIMES = (1, 2654435761, 805459861)


def _reference(enc: HashGridEncoding, x: torch.Tensor) -> torch.Tensor:
    """Point-by-point, corner-by-corner lookup written as tcnn's kernel reads (float64)."""
    D, F = enc.n_dims, enc.features
    table = enc.params.detach().double().view(-1, F)
    out = torch.zeros(x.shape[0], enc.levels, F, dtype=torch.float64)
    for n in range(x.shape[0]):
        for lv in range(enc.levels):
            s, r = float(enc.scales[lv]), int(enc.res[lv])
            size, off = int(enc.sizes[lv]), int(enc.offsets[lv])
            pos = [float(x[n, d]) * s + 0.5 for d in range(D)]
            g = [math.floor(p) for p in pos]
            f = [p - q for p, q in zip(pos, g)]
            for c in range(2**D):
                w, loc = 1.0, []
                for d in range(D):
                    b = (c >> d) & 1
                    w *= f[d] if b else 1 - f[d]
                    loc.append(g[d] + b)
                if r**D <= size:
                    idx = sum(loc[d] * r**d for d in range(D))
                else:
                    idx = 0
                    for d in range(D):
                        idx ^= (loc[d] * PRIMES[d]) & 0xFFFFFFFF
                out[n, lv] += w * table[idx % size + off]
    return out.view(x.shape[0], -1)


@pytest.mark.parametrize("dims", [2, 3])
def test_lookup_matches_reference_dense_and_hashed_levels(dims):
    torch.manual_seed(0)
    enc = HashGridEncoding(dims, levels=6, features=2, log2_table=10, base_res=4, max_res=200)
    assert 0 < enc.n_dense < enc.levels  # both kinds of level are exercised
    with torch.no_grad():
        enc.params.normal_()
    x = torch.rand(40, dims)
    y = enc(x)
    assert y.shape == (40, 12)
    torch.testing.assert_close(y.double(), _reference(enc, x), atol=1e-4, rtol=1e-4)


def test_layout_follows_tcnn():
    scales, res, sizes, offsets, dense = grid_layout(3, 16, 14, 16, 1.5)
    assert (sizes % 8 == 0).all() and (sizes <= 2**14).all()
    assert (offsets[1:] == (offsets[:-1] + sizes[:-1])).all()
    assert dense[0] and not dense[-1] and (dense[:-1] >= dense[1:]).all()  # dense levels are a prefix
    assert res[0] == 16 and scales[0] == 15.0  # tcnn: scale = base * s^l - 1, res = ceil(scale) + 1


@pytest.mark.parametrize(
    "kind,smooth,dim",
    [
        ("hashgrid", 0, 16 * 2),
        ("hashgrid", 3, 16 * 2 + 3 + 6 * 3),
        ("triplane", 0, 3 * 16 * 2),
        ("triplane", 2, 3 * 16 * 2 + 3 + 6 * 2),
        ("frequency", 3, 3 + 6 * 6),  # smooth_freqs only applies to grids
    ],
)
def test_spatial_encoding_shapes(kind, smooth, dim):
    enc = SpatialEncoding(kind, levels=16, features=2, log2_table=12, smooth_freqs=smooth)
    x = (torch.rand(100, 3) - 0.5) * 0.4  # partly outside the grid box: clamped, still finite
    y = enc(x)
    assert enc.out_dim == dim and y.shape == (100, dim) and torch.isfinite(y).all()
    assert enc(x[:0]).shape == (0, dim)


@pytest.mark.parametrize("kind", ["hashgrid", "triplane"])
def test_gradients_reach_the_tables_and_the_positions(kind):
    torch.manual_seed(1)
    enc = SpatialEncoding(kind, levels=8, log2_table=12, max_res=256)
    x = (torch.rand(500, 3) - 0.5) * 0.2
    (enc(x) * torch.randn(1, enc.out_dim)).sum().backward()
    tables = [p for p in enc.parameters()]
    assert tables and all(p.grad is not None and p.grad.abs().sum() > 0 for p in tables)
    for p in tables:  # every level gets gradient
        g = p.grad.view(-1, 2).abs().sum(1)
        grid = enc.grid if kind == "hashgrid" else enc.planes[0]
        for off, size in zip(grid.offsets.tolist(), grid.sizes.tolist()):
            assert g[off : off + size].sum() > 0


def test_lookup_input_gradient_matches_finite_differences():
    torch.manual_seed(6)
    enc = HashGridEncoding(3, levels=3, features=2, log2_table=8, base_res=3, max_res=40)
    assert 0 < enc.n_dense < enc.levels
    with torch.no_grad():
        enc.params.normal_()
    x = (torch.rand(10, 3, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    params = enc.params.detach().double().requires_grad_(True)

    def f(x, p):
        return E.hash_grid_lookup(x, p, 2, enc.scales.double(), enc.res, enc.sizes, enc.offsets, enc.n_dense)

    assert torch.autograd.gradcheck(f, (x, params), eps=1e-7, atol=1e-5, fast_mode=True)


def test_interpolation_is_continuous_across_cell_boundaries():
    torch.manual_seed(2)
    enc = HashGridEncoding(3, levels=8, features=2, log2_table=12, base_res=8, max_res=300)
    with torch.no_grad():
        enc.params.normal_()
    # boundaries of the finest level: pos = x * scale + 0.5 is an integer
    s = float(enc.scales[-1])
    k = torch.arange(50, 60, dtype=torch.float64)
    xb = ((k - 0.5) / s).float()
    base = torch.rand(10, 3) * 0.5 + 0.25
    eps = 1e-5
    lo, hi = base.clone(), base.clone()
    lo[:, 0], hi[:, 0] = xb - eps, xb + eps
    jump = (enc(hi) - enc(lo)).abs().max()
    # Lipschitz bound: |dF/dx| <= scale * 2 * max|param| per level
    assert jump < 2 * eps * s * 2 * enc.params.abs().max() * 4
    # and along a dense line the encoding has no jumps larger than that bound either
    t = torch.linspace(0.3, 0.31, 2001)
    line = torch.stack([t, torch.full_like(t, 0.4), torch.full_like(t, 0.6)], 1)
    step = (enc(line)[1:] - enc(line)[:-1]).abs().max()
    assert step < (t[1] - t[0]) * s * 2 * enc.params.abs().max() * 4


def test_determinism():
    torch.manual_seed(3)
    a = SpatialEncoding("hashgrid", levels=8, log2_table=12)
    torch.manual_seed(3)
    b = SpatialEncoding("hashgrid", levels=8, log2_table=12)
    assert torch.equal(a.grid.params, b.grid.params)
    x = (torch.rand(300, 3) - 0.5) * 0.3
    y1, y2 = a(x), a(x)
    assert torch.equal(y1, y2) and torch.equal(y1, b(x))
    # a point's features do not depend on the other points in the batch (up to FMA rounding)
    torch.testing.assert_close(a(x[:7]), y1[:7], rtol=0, atol=1e-6)


def test_tcnn_is_skipped_cleanly_without_it(monkeypatch):
    monkeypatch.setattr(E, "_tcnn", lambda: None)
    enc = HashGridEncoding(3, levels=4, log2_table=10, max_res=64)
    assert enc(torch.rand(5, 3)).shape == (5, 8)  # auto: falls back to PyTorch
    with pytest.raises(RuntimeError, match="tinycudann"):
        HashGridEncoding(3, levels=4, log2_table=10, max_res=64, use_tcnn="always")(torch.rand(5, 3))


@pytest.mark.skipif(not torch.cuda.is_available() or E._tcnn() is None, reason="needs CUDA and tinycudann")
def test_tcnn_matches_pytorch_lookup():
    torch.manual_seed(4)
    enc = HashGridEncoding(3, levels=16, log2_table=14, max_res=512).cuda()
    with torch.no_grad():
        enc.params.uniform_(-1, 1)
    x = torch.rand(1000, 3, device="cuda")
    ref = enc._torch_forward(x)
    out = enc(x)
    assert enc._tcnn_mod is not None
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------ the avatar
def _avatar(cfg: ModelConfig, n: int = 60) -> GaussianAvatar:
    torch.manual_seed(5)
    m = GaussianAvatar(cfg, n, n_mels=80, n_expr=4)
    with torch.no_grad():
        m.means.copy_((torch.rand(n, 3) - 0.5) * 0.2)
        m.group[: n // 4] = 1  # some mouth Gaussians
        for p in m.deform.head[-1].parameters():  # leave the zero init so the offsets are non-zero
            p.normal_(0, 0.1)
    return m


@pytest.mark.parametrize("kind", ["hashgrid", "triplane", "frequency"])
def test_avatar_poses_with_each_encoding(kind):
    m = _avatar(ModelConfig(encoding=kind, hidden=16, grid_levels=6, grid_log2_table=10))
    gs = m.posed(torch.randn(32), torch.tensor([0.3]))
    assert gs["means"].shape == (60, 3) and torch.isfinite(gs["means"]).all()
    assert gs["d_pos"].abs().sum() > 0
    gs["means"].sum().backward()
    assert any(p.grad is not None for n, p in m.named_parameters() if ".encoding." in n) == (
        kind != "frequency"
    )


def test_frequency_state_keys_are_the_pre_grid_ones():
    m = _avatar(ModelConfig(encoding="frequency", hidden=16))
    keys = set(m.state_dict())
    assert not any(".encoding." in k for k in keys)
    assert m.state_dict()["deform.spatial.0.weight"].shape == (16, 39)
    assert encoding_of_state(m.state_dict()) == "frequency"


def test_old_avatar_state_loads_into_a_grid_config():
    """An avatar saved before ``model.encoding`` existed: its config loads with today's default, and
    its weights rebuild the deformation with the encoding it was trained with."""
    old = _avatar(ModelConfig(encoding="frequency", hidden=16))
    saved = AvatarConfig.preset_config("fast").to_dict()
    del saved["model"]["encoding"]
    cfg = AvatarConfig.from_dict(saved)
    cfg.model.hidden = 16
    new = GaussianAvatar(cfg.model, 60, n_mels=80, n_expr=4)
    assert new.deform.encoding.kind != "frequency"
    new.load_state_dict(old.state_dict())
    assert cfg.model.encoding == "frequency" and new.deform.encoding.kind == "frequency"
    a, e = torch.randn(32), torch.tensor([0.2])
    torch.testing.assert_close(new.posed(a, e)["means"], old.posed(a, e)["means"])


def test_grid_avatar_round_trips():
    cfg = ModelConfig(hidden=16, grid_levels=6, grid_log2_table=10)
    m = _avatar(cfg)
    back = GaussianAvatar(ModelConfig(hidden=16, grid_levels=6, grid_log2_table=10), 60, n_mels=80, n_expr=4)
    back.load_state_dict(m.state_dict())
    a, e = torch.randn(32), torch.tensor([0.2])
    torch.testing.assert_close(back.posed(a, e)["means"], m.posed(a, e)["means"])


def test_bad_encoding_options_are_config_errors():
    with pytest.raises(ConfigError, match="encoding"):
        AvatarConfig.from_dict({"model": {"encoding": "voxels"}})
    with pytest.raises(ConfigError, match="grid_features"):
        AvatarConfig.from_dict({"model": {"grid_features": 3}})


def test_old_avatar_directory_loads_and_renders_the_same(tmp_path):
    """Through Avatar.save / Avatar.load: a directory whose config.yaml predates the encoding keys."""
    import numpy as np
    import yaml

    cfg = AvatarConfig.from_dict({"preset": "fast", "model": {"encoding": "frequency", "hidden": 16}})
    model = _avatar(cfg.model)
    meta = {
        "width": 32,
        "height": 32,
        "K": [[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]],
        "rest_viewmat": torch.eye(4).tolist(),
        "fps": 25.0,
        "n_mels": 80,
    }
    track = {"head_poses": torch.eye(4)[None], "blink": torch.zeros(1)}
    Avatar(model, cfg, meta, track, np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "old")
    text = yaml.safe_load((tmp_path / "old" / "config.yaml").read_text())
    for k in [k for k in text["model"] if k == "encoding" or k.startswith("grid_")]:
        del text["model"][k]
    (tmp_path / "old" / "config.yaml").write_text(yaml.safe_dump(text))
    back = Avatar.load(tmp_path / "old")
    assert back.config.model.encoding == "frequency" and back.model.deform.encoding.kind == "frequency"
    a, e = torch.randn(32), torch.tensor([0.4])
    torch.testing.assert_close(back.model.posed(a, e)["means"], model.posed(a, e)["means"])


def test_grid_field_is_keyed_by_the_canonical_position():
    """Expression offsets move the Gaussians but not where the grid field is read."""
    m = _avatar(ModelConfig(hidden=16, grid_levels=6, grid_log2_table=10))
    with torch.no_grad():
        m.expr_basis.normal_(0, 0.01)
    m.landmarks.copy_(m.means[:1].detach().expand(478, 3) + torch.randn(478, 3) * 0.05)
    a, e = torch.randn(32), torch.tensor([0.1])
    g1 = m.posed(a, e, expression=torch.zeros(4))
    g2 = m.posed(a, e, expression=torch.ones(4))
    assert not torch.allclose(g1["means"], g2["means"])  # the expression moved them
    torch.testing.assert_close(g1["d_pos"], g2["d_pos"])  # the field did not notice
