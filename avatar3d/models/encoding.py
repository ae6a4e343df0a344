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


def _corner_products(lo: list[Tensor], hi: list[Tensor], op) -> list[Tensor]:
    """The 2^D corner combinations of per-dimension (L, N) values: corner c takes ``hi[d]`` where bit d
    of c is set and ``lo[d]`` elsewhere, combined with ``op``. Returns 2^D tensors (L, N)."""
    out = [lo[0], hi[0]]
    for d in range(1, len(lo)):
        out = [op(o, lo[d]) for o in out] + [op(o, hi[d]) for o in out]
    return out


def _grid_indices(g: list[Tensor], res: Tensor, sizes: Tensor, offsets: Tensor, n_dense: int) -> Tensor:
    """Per-dimension (L, N) int64 lower grid corners -> (L, 2^D, N) int32 rows of the flat table
    (tcnn's ``grid_index``: dense row-major where the level fits, else the coherent prime hash)."""
    D = len(g)
    L, N = g[0].shape
    dev = g[0].device
    idx = torch.empty((L, 2**D, N), dtype=torch.int32, device=dev)
    if n_dense > 0:  # row-major index of the lower corner plus a per-level offset for each corner
        r = res[:n_dense]
        strides = [r**d for d in range(D)]
        base = sum(g[d][:n_dense] * strides[d][:, None] for d in range(D))
        bits = torch.tensor([[(c >> d) & 1 for d in range(D)] for c in range(2**D)], device=dev)
        corner = (bits[None] * torch.stack(strides, -1)[:, None, :]).sum(-1)  # (Ld, C)
        idx[:n_dense] = torch.remainder(base[:, None, :] + corner[:, :, None], sizes[:n_dense, None, None])
    if n_dense < L:  # hashed levels hold exactly 2^log2_table rows: masking commutes with the xor
        mask = int(sizes[-1]) - 1
        lo = [((g[d][n_dense:] * _PRIMES[d]) & mask).int() for d in range(D)]
        hi = [(((g[d][n_dense:] + 1) * _PRIMES[d]) & mask).int() for d in range(D)]
        pairs = _corner_products(lo[:-1], hi[:-1], torch.bitwise_xor)
        half = len(pairs)
        for c, pr in enumerate(pairs):
            torch.bitwise_xor(pr, lo[-1], out=idx[n_dense:, c])
            torch.bitwise_xor(pr, hi[-1], out=idx[n_dense:, c + half])
    return idx.add_(offsets.to(torch.int32)[:, None, None])


class _GridLookup(torch.autograd.Function):
    """N-linear grid interpolation with a hand-written backward.

    Indices and weights are built as (level, corner, point) so every pass is a long contiguous
    row; the forward is then one fused gather + weighted sum (``embedding_bag`` with per-corner
    weights, one bag per level and point), the backward scatters ``weight * grad`` per feature plane
    with ``index_add_`` (embedding_bag's own backward sorts the indices, which is slow on CPU;
    docs/design/cpu-preset.md).
    """

    @staticmethod
    def forward(ctx, x, params, features, scales, res, sizes, offsets, n_dense):
        N, D = x.shape
        L = scales.shape[0]
        half = torch.full((L, N), 0.5, dtype=x.dtype, device=x.device)
        pos = [torch.addcmul(half, scales[:, None], x[None, :, d]) for d in range(D)]  # (L, N) each
        g = [torch.floor(p) for p in pos]
        frac = [p - q for p, q in zip(pos, g)]
        idx = _grid_indices([q.long() for q in g], res, sizes, offsets, n_dense)  # (L, C, N) int32
        w = torch.stack(_corner_products([1.0 - f for f in frac], frac, torch.mul), dim=1)  # (L, C, N)
        C = w.shape[1]
        out = torch.nn.functional.embedding_bag(
            idx.transpose(1, 2).reshape(L * N, C),
            params.view(-1, features),
            per_sample_weights=w.transpose(1, 2).reshape(L * N, C),
            mode="sum",
        )  # (L*N, F)
        need_x = ctx.needs_input_grad[0]
        ctx.save_for_backward(
            idx, w, torch.stack(frac) if need_x else None, params if need_x else None, scales
        )
        ctx.features, ctx.n_params = features, params.shape[0]
        return out.view(L, N, features).transpose(0, 1).reshape(N, L * features)

    @staticmethod
    def backward(ctx, grad_out):
        idx, w, frac, params, scales = ctx.saved_tensors
        L, C, N = idx.shape
        F = ctx.features
        go = grad_out.reshape(N, L, F).permute(2, 1, 0).contiguous()  # (F, L, N)
        flat = idx.view(-1).long()  # int64: index_add_'s fast scatter-add path
        g_params = g_x = None
        if ctx.needs_input_grad[1]:
            n_rows = ctx.n_params // F
            g_table = torch.zeros(F, n_rows, dtype=grad_out.dtype, device=grad_out.device)
            for f in range(F):
                g_table[f].index_add_(0, flat, (w * go[f][:, None, :]).view(-1))
            g_params = g_table.t().reshape(-1)
        if ctx.needs_input_grad[0]:
            D = frac.shape[0]
            vals = params.view(-1, F)[flat].view(L, C, N, F)
            dv = sum(vals[..., f] * go[f][:, None, :] for f in range(F))  # (L, C, N): dL/d(corner weight)
            lo, hi = [1.0 - f for f in frac], list(frac)
            cols = []
            for d in range(D):  # d(weight)/d(frac_d): the other dimensions' factors, signed
                lo_d = [(-torch.ones_like(f) if k == d else lo[k]) for k, f in enumerate(frac)]
                hi_d = [(torch.ones_like(f) if k == d else hi[k]) for k, f in enumerate(frac)]
                dw = torch.stack(_corner_products(lo_d, hi_d, torch.mul), dim=1)
                cols.append(((dw * dv).sum(1) * scales[:, None]).sum(0))  # (N,)
            g_x = torch.stack(cols, dim=-1)
        return g_x, g_params, None, None, None, None, None, None


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

    Vectorised over levels, points and the 2^D cell corners at once, level-major so that each
    level's table is read (and, backward, accumulated) while it is in cache.

    Args:
        x: (N, D) positions in [0, 1].
        params: (P * features,) the flat table (tcnn layout).
        scales: (L,) float; res, sizes, offsets: (L,) int64 (see :func:`grid_layout`);
        n_dense: the first ``n_dense`` levels are indexed densely, the rest hashed.
    Returns:
        (N, L * features), level-major (as tcnn).
    """
    return _GridLookup.apply(x, params, features, scales, res, sizes, offsets, n_dense)


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
        scales, res, sizes, offsets, dense = grid_layout(
            n_dims, levels, log2_table, base_res, self.per_level_scale
        )
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
            x,
            self.params,
            self.features,
            self.scales.to(x.dtype),
            self.res,
            self.sizes,
            self.offsets,
            self.n_dense,
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
    cube ``[-bound, bound]^3`` to [0, 1]^3 (outside it the features are those of the nearest face) and
    append ``smooth_freqs`` octaves of the sin/cos encoding: a smooth description of where a point is
    from the first step on (a fresh table is ~0 everywhere), which the grid then sharpens. Why the
    hybrid: docs/design/cpu-preset.md.
    """

    def __init__(
        self,
        kind: str = "hashgrid",
        bound: float = 0.18,
        levels: int = 16,
        features: int = 2,
        log2_table: int = 14,
        base_res: int = 16,
        max_res: int = 512,
        pe_freqs: int = 6,
        pe_scale: float = 0.12,
        smooth_freqs: int = 0,
    ):
        super().__init__()
        if kind not in ("hashgrid", "triplane", "frequency"):
            raise ValueError(f"unknown spatial encoding {kind!r}; choose hashgrid, triplane or frequency")
        self.kind, self.bound = kind, bound
        self.pe_freqs, self.pe_scale = pe_freqs, pe_scale
        grid = {"levels": levels, "features": features, "log2_table": log2_table, "base_res": base_res}
        grid["max_res"] = max_res
        self.smooth_freqs = smooth_freqs if kind != "frequency" else 0
        smooth_dim = 3 + 6 * smooth_freqs if self.smooth_freqs > 0 else 0
        if kind == "hashgrid":
            self.grid = HashGridEncoding(3, **grid)
            self.out_dim = self.grid.out_dim + smooth_dim
        elif kind == "triplane":
            self.planes = nn.ModuleList([HashGridEncoding(2, **grid) for _ in range(3)])
            self.out_dim = 3 * self.planes[0].out_dim + smooth_dim
        else:
            self.out_dim = 3 + 6 * pe_freqs

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "frequency":
            return positional_encoding(x, self.pe_freqs, self.pe_scale)
        # the grid is a lookup keyed by the canonical position, not a path for position gradients:
        # those through piecewise-linear cells are noisy and the input backward is the costly part
        u = (x.detach() / (2 * self.bound) + 0.5).clamp(0.0, 1.0)
        if self.kind == "hashgrid":
            feats = [self.grid(u)]
        else:
            pairs = ((0, 1), (1, 2), (0, 2))  # xy, yz, xz
            feats = [p(u[:, list(ij)]) for p, ij in zip(self.planes, pairs)]
        if self.smooth_freqs > 0:
            feats.append(positional_encoding(x.detach(), self.smooth_freqs, self.pe_scale))
        return torch.cat(feats, dim=-1) if len(feats) > 1 else feats[0]


__all__ = ["HashGridEncoding", "SpatialEncoding", "grid_layout", "hash_grid_lookup", "positional_encoding"]
