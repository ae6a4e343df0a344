"""Spatial encodings of canonical position for the deformation field.

* ``hashgrid``: a multi-resolution hash grid (Instant-NGP) over the 3D head box.
* ``triplane``: three 2D multi-resolution hash grids on the xy / yz / xz planes, concatenated
  (ER-NeRF, TalkingGaussian): fewer collisions on a thin face.
* ``frequency``: the sin/cos positional encoding the first avatars were trained with.

The grid's parameters are one flat vector laid out exactly as tiny-cuda-nn's ``HashGrid`` encoding
lays out its ``params`` (levels one after the other, each ``min(2^log2_table, next_multiple(res^D, 8))``
entries of ``features`` values; dense indexing where a level fits, the coherent prime hash where it
does not). On CUDA with ``tinycudann`` importable the lookup is tcnn's kernel; otherwise it is the
vectorised pure-PyTorch lookup below (all levels and all 2^D corners at once, N-linear weights), so a
grid trained on a GPU loads and evaluates on a CPU.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor, nn

_PRIMES = (1, 2654435761, 805459861)
_MASK32 = 0xFFFFFFFF


def positional_encoding(x: Tensor, n_freqs: int, scale: float) -> Tensor:
    """(N, 3) -> (N, 3 + 6 * n_freqs) sin/cos features of ``x / scale``."""
    xs = x / scale
    freqs = (2.0 ** torch.arange(n_freqs, device=x.device, dtype=x.dtype)) * math.pi
    ang = xs[..., None] * freqs  # (N, 3, F)
    return torch.cat([xs, torch.sin(ang).flatten(1), torch.cos(ang).flatten(1)], dim=-1)


def grid_layout(n_dims: int, n_levels: int, log2_table: int, base_res: int, per_level_scale: float):
    """tcnn's level layout: (scales (L,) float32, resolutions (L,), sizes (L,), offsets (L,), dense (L,) bool).

    ``scale_l = base * per_level_scale^l - 1`` (float32, as tcnn computes it), ``res_l = ceil(scale_l) + 1``,
    a level holds ``min(2^log2_table, next_multiple(res_l^D, 8))`` entries and is indexed densely when
    ``res_l^D`` fits in it.
    """
    log2_pls = np.float32(math.log2(per_level_scale))
    scales, res, sizes, offsets, dense = [], [], [], [], []
    off = 0
    for lv in range(n_levels):
        s = np.float32(np.exp2(np.float32(lv) * log2_pls) * np.float32(base_res) - np.float32(1.0))
        r = math.ceil(float(s)) + 1
        full = r**n_dims
        size = min(((full + 7) // 8) * 8, 1 << log2_table)
        scales.append(float(s))
        res.append(r)
        sizes.append(size)
        offsets.append(off)
        dense.append(full <= size)
        off += size
    return (
        np.asarray(scales, np.float32),
        np.asarray(res, np.int64),
        np.asarray(sizes, np.int64),
        np.asarray(offsets, np.int64),
        np.asarray(dense, bool),
    )


def _corner_sum(parts: list[Tensor], op: str) -> Tensor:
    """Combine per-dimension (N, L, 2) candidates into (N, L, 2^D) corners (dim 0 = lowest bit)."""
    out = parts[0]
    for p in parts[1:]:
        a = p[..., :, None]  # new dim is the higher bit
        b = out[..., None, :]
        out = (a + b if op == "add" else torch.bitwise_xor(a, b) if op == "xor" else a * b).flatten(-2)
    return out


def hash_grid_lookup(
    x: Tensor,
    params: Tensor,
    features: int,
    scales: Tensor,
    res: Tensor,
    sizes: Tensor,
    offsets: Tensor,
    n_dense: int,
) -> Tensor:
    """Pure-PyTorch multi-resolution grid lookup with N-linear interpolation.

    Args:
        x: (N, D) positions in [0, 1].
        params: (P * features,) the flat table (tcnn layout).
        scales: (L,) float; res, sizes, offsets: (L,) int64 (see :func:`grid_layout`);
        n_dense: the first ``n_dense`` levels are indexed densely, the rest hashed.
    Returns:
        (N, L * features), level-major (as tcnn).
    """
    N, D = x.shape
    L = scales.shape[0]
    pos = x[:, None, :] * scales[None, :, None] + 0.5  # (N, L, D)
    g = torch.floor(pos)
    frac = pos - g  # grad flows to x through here
    gi = g.long()
    g2 = torch.stack([gi, gi + 1], dim=-1)  # (N, L, D, 2)
    w2 = torch.stack([1.0 - frac, frac], dim=-1)  # (N, L, D, 2)
    weights = _corner_sum([w2[:, :, d] for d in range(D)], "mul")  # (N, L, 2^D)
    idx_parts = []
    if n_dense > 0:
        r = res[:n_dense]
        strides = torch.stack([r**d for d in range(D)], dim=-1)  # (Ld, D)
        gd = g2[:, :n_dense] * strides[None, :, :, None]
        idx_parts.append(_corner_sum([gd[:, :, d] for d in range(D)], "add"))
    if n_dense < L:
        primes = torch.tensor(_PRIMES[:D], device=x.device, dtype=torch.int64)
        gh = (g2[:, n_dense:] * primes[None, None, :, None]) & _MASK32
        idx_parts.append(_corner_sum([gh[:, :, d] for d in range(D)], "xor"))
    idx = torch.cat(idx_parts, dim=1) if len(idx_parts) > 1 else idx_parts[0]  # (N, L, 2^D)
    idx = idx % sizes[None, :, None] + offsets[None, :, None]
    table = params.view(-1, features)
    vals = torch.index_select(table, 0, idx.reshape(-1)).view(N * L, -1, features)  # (N*L, 2^D, F)
    out = torch.bmm(weights.reshape(N * L, 1, -1).to(vals.dtype), vals)  # (N*L, 1, F)
    return out.view(N, L * features)


def _tcnn():
    try:
        import tinycudann as tcnn  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001  (absent, or present but built for another torch/CUDA)
        return None
    return tcnn


class HashGridEncoding(nn.Module):
    """Multi-resolution hash grid over [0, 1]^D: (N, D) -> (N, levels * features).

    ``use_tcnn``: "auto" (tcnn on CUDA inputs when importable), "never" or "always" (error if unusable).
    """

    def __init__(
        self,
        n_dims: int = 3,
        levels: int = 16,
        features: int = 2,
        log2_table: int = 14,
        base_res: int = 16,
        max_res: int = 512,
        use_tcnn: str = "auto",
    ):
        super().__init__()
        if n_dims not in (2, 3):
            raise ValueError(f"hash grid needs 2 or 3 input dims, got {n_dims}")
        if features not in (1, 2, 4, 8):
            raise ValueError(f"hash grid features per level must be 1, 2, 4 or 8, got {features}")
        if levels < 1 or base_res < 2 or max_res < base_res:
            raise ValueError(f"bad hash grid: levels={levels}, base_res={base_res}, max_res={max_res}")
        self.n_dims, self.levels, self.features = n_dims, levels, features
        self.log2_table, self.base_res, self.max_res = log2_table, base_res, max_res
        self.per_level_scale = float(np.exp(np.log(max_res / base_res) / max(1, levels - 1)))
        scales, res, sizes, offsets, dense = grid_layout(n_dims, levels, log2_table, base_res, self.per_level_scale)
        # dense levels are the coarse ones: a prefix, since resolution grows with the level
        self.n_dense = int(dense.sum())
        assert dense[: self.n_dense].all()
        self.register_buffer("scales", torch.from_numpy(scales), persistent=False)
        self.register_buffer("res", torch.from_numpy(res), persistent=False)
        self.register_buffer("sizes", torch.from_numpy(sizes), persistent=False)
        self.register_buffer("offsets", torch.from_numpy(offsets), persistent=False)
        n_params = int(offsets[-1] + sizes[-1]) * features
        self.params = nn.Parameter(torch.empty(n_params).uniform_(-1e-4, 1e-4))
        self.use_tcnn = use_tcnn
        self._tcnn_mod = None  # created lazily on the first CUDA call; not a registered submodule

    @property
    def out_dim(self) -> int:
        return self.levels * self.features

    def tcnn_config(self) -> dict:
        return {
            "otype": "HashGrid",
            "n_levels": self.levels,
            "n_features_per_level": self.features,
            "log2_hashmap_size": self.log2_table,
            "base_resolution": self.base_res,
            "per_level_scale": self.per_level_scale,
        }

    def _tcnn_usable(self, x: Tensor) -> bool:
        if self.use_tcnn == "never":
            return False
        ok = x.is_cuda and _tcnn() is not None
        if self.use_tcnn == "always" and not ok:
            raise RuntimeError("tinycudann is not importable or the input is not on CUDA")
        return ok

    def _tcnn_forward(self, x: Tensor) -> Tensor:
        if self._tcnn_mod is None:
            tcnn = _tcnn()
            mod = tcnn.Encoding(self.n_dims, self.tcnn_config(), dtype=torch.float32)
            if mod.params.numel() != self.params.numel():
                warnings.warn("tinycudann's hash grid layout differs from ours; using the PyTorch lookup")
                self.use_tcnn = "never"
                return self._torch_forward(x)
            object.__setattr__(self, "_tcnn_mod", mod)
        mod = self._tcnn_mod
        mod.params = self.params  # the table is ours (saved, optimised, moved with the module)
        return mod(x.contiguous()).float()

    def _torch_forward(self, x: Tensor) -> Tensor:
        return hash_grid_lookup(
            x, self.params, self.features, self.scales.to(x.dtype), self.res, self.sizes, self.offsets, self.n_dense
        )

    def forward(self, x: Tensor) -> Tensor:  # x: (N, D) in [0, 1]
        x = x.clamp(0.0, 1.0)
        if x.shape[0] == 0:
            return x.new_zeros(0, self.out_dim)
        if self._tcnn_usable(x):
            return self._tcnn_forward(x)
        return self._torch_forward(x)


class SpatialEncoding(nn.Module):
    """Canonical head-space position (N, 3) in metres -> features (N, out_dim).

    ``kind``: "hashgrid" (3D grid), "triplane" (three 2D grids) or "frequency". Grid encodings map the
    cube ``[-bound, bound]^3`` to [0, 1]^3 (outside it the features are those of the nearest face).
    """

    def __init__(
        self,
        kind: str = "hashgrid",
        bound: float = 0.15,
        levels: int = 16,
        features: int = 2,
        log2_table: int = 14,
        base_res: int = 16,
        max_res: int = 512,
        pe_freqs: int = 6,
        pe_scale: float = 0.12,
    ):
        super().__init__()
        if kind not in ("hashgrid", "triplane", "frequency"):
            raise ValueError(f"unknown spatial encoding {kind!r}; choose hashgrid, triplane or frequency")
        self.kind, self.bound = kind, bound
        self.pe_freqs, self.pe_scale = pe_freqs, pe_scale
        grid = {"levels": levels, "features": features, "log2_table": log2_table, "base_res": base_res}
        grid["max_res"] = max_res
        if kind == "hashgrid":
            self.grid = HashGridEncoding(3, **grid)
            self.out_dim = self.grid.out_dim
        elif kind == "triplane":
            self.planes = nn.ModuleList([HashGridEncoding(2, **grid) for _ in range(3)])
            self.out_dim = 3 * self.planes[0].out_dim
        else:
            self.out_dim = 3 + 6 * pe_freqs

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "frequency":
            return positional_encoding(x, self.pe_freqs, self.pe_scale)
        u = (x / (2 * self.bound) + 0.5).clamp(0.0, 1.0)
        if self.kind == "hashgrid":
            return self.grid(u)
        pairs = ((0, 1), (1, 2), (0, 2))  # xy, yz, xz
        return torch.cat([p(u[:, list(ij)]) for p, ij in zip(self.planes, pairs)], dim=-1)


__all__ = ["HashGridEncoding", "SpatialEncoding", "grid_layout", "hash_grid_lookup", "positional_encoding"]
