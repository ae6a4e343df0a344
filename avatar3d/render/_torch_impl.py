"""Pure-PyTorch reference of the tile-based Gaussian rasteriser.

Readable, differentiable through autograd, and the ground truth the ``cuda_ext`` kernels are
tested against. Stages (same names as the kernels):

1. :func:`quat_scale_to_covar` — 3D covariance from (quaternion, scale).
2. :func:`project_gaussians` — world -> camera -> pixels (EWA), conics, depths, radii.
3. :func:`isect_tiles` — (image, tile, depth)-sorted list of Gaussian/tile intersections (no grad).
4. :func:`rasterize_to_pixels` — front-to-back alpha compositing with early termination.

Conventions: cameras are OpenCV (x right, y down, z forward); ``viewmats`` map world to camera;
quaternions are ``wxyz`` and need not be normalised; scales are linear (not log); pixel centres sit
at ``(j + 0.5, i + 0.5)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ._constants import (
    ALPHA_THRESHOLD,
    EPS2D,
    FAR_PLANE,
    FOV_CLAMP,
    GAUSSIAN_EXTENT,
    MAX_ALPHA,
    NEAR_PLANE,
    TILE_SIZE,
    TRANSMITTANCE_THRESHOLD,
)
from ._types import RenderOutput


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices from quaternions.

    Args:
        quats: (..., 4) wxyz, any norm (normalised here).
    Returns:
        (..., 3, 3)
    """
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    # the rotation matrix row by row
    # fmt: off
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(quats.shape[:-1] + (3, 3))
    # fmt: on


def quat_scale_to_covar(quats: Tensor, scales: Tensor) -> Tensor:
    """Sigma = R S S^T R^T.

    Args:
        quats: (N, 4) wxyz.
        scales: (N, 3) linear standard deviations.
    Returns:
        covars: (N, 3, 3)
    """
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def project_gaussians(
    means: Tensor,  # (N, 3)
    covars: Tensor,  # (N, 3, 3)
    viewmats: Tensor,  # (C, 4, 4) world -> camera
    Ks: Tensor,  # (C, 3, 3)
    width: int,
    height: int,
    near_plane: float = NEAR_PLANE,
    far_plane: float = FAR_PLANE,
    eps2d: float = EPS2D,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EWA projection of 3D Gaussians into C pinhole cameras.

    Returns:
        means2d: (C, N, 2) pixel coordinates of the centres.
        conics: (C, N, 3) inverse of the dilated 2D covariance, (a, b, c) = (inv00, inv01, inv11).
        depths: (C, N) camera-space z.
        radii: (C, N, 2) int32 per-axis bounding-box half sizes in pixels; 0 means culled.
    """
    R = viewmats[:, :3, :3]
    t = viewmats[:, :3, 3]
    mc = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # (C, N, 3)
    covc = torch.einsum("cij,njk,clk->cnil", R, covars, R)  # (C, N, 3, 3)
    x, y, z = mc.unbind(-1)
    valid_z = (z > near_plane) & (z < far_plane)
    zs = torch.where(valid_z, z, torch.ones_like(z))  # safe denominator for culled entries

    fx = Ks[:, 0, 0, None]
    fy = Ks[:, 1, 1, None]
    cx = Ks[:, 0, 2, None]
    cy = Ks[:, 1, 2, None]
    tan_x = 0.5 * width / fx
    tan_y = 0.5 * height / fy
    lim_xp = (width - cx) / fx + (FOV_CLAMP - 1.0) * tan_x
    lim_xn = cx / fx + (FOV_CLAMP - 1.0) * tan_x
    lim_yp = (height - cy) / fy + (FOV_CLAMP - 1.0) * tan_y
    lim_yn = cy / fy + (FOV_CLAMP - 1.0) * tan_y
    tx = zs * torch.minimum(torch.maximum(x / zs, -lim_xn), lim_xp)
    ty = zs * torch.minimum(torch.maximum(y / zs, -lim_yn), lim_yp)

    zero = torch.zeros_like(zs)
    J = torch.stack(
        [fx / zs, zero, -fx * tx / (zs * zs), zero, fy / zs, -fy * ty / (zs * zs)], dim=-1
    ).reshape(zs.shape + (2, 3))
    cov2d = J @ covc @ J.transpose(-1, -2)  # (C, N, 2, 2)
    a = cov2d[..., 0, 0] + eps2d
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    valid = valid_z & (det > 0)
    det_s = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det_s, -b / det_s, a / det_s], dim=-1)

    means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], dim=-1)

    with torch.no_grad():
        rx = torch.ceil(GAUSSIAN_EXTENT * torch.sqrt(a.clamp(min=0)))
        ry = torch.ceil(GAUSSIAN_EXTENT * torch.sqrt(c.clamp(min=0)))
        u, v = means2d[..., 0], means2d[..., 1]
        inside = (u + rx > 0) & (u - rx < width) & (v + ry > 0) & (v - ry < height)
        keep = valid & inside & torch.isfinite(u) & torch.isfinite(v)
        radii = torch.stack([rx, ry], dim=-1)
        radii = torch.where(keep[..., None], radii, torch.zeros_like(radii)).to(torch.int32)
    return means2d, conics, z, radii


@torch.no_grad()
def isect_tiles(
    means2d: Tensor,  # (C, N, 2)
    radii: Tensor,  # (C, N, 2) int32
    depths: Tensor,  # (C, N)
    width: int,
    height: int,
    tile_size: int = TILE_SIZE,
) -> tuple[Tensor, Tensor]:
    """Sorted Gaussian/tile intersections.

    Returns:
        flatten_ids: (M,) int64 index into the flattened (C*N) projected Gaussians, sorted by
            image, then tile (row-major), then depth front to back.
        tile_offsets: (C, tile_h, tile_w) int64 start of each tile's run in ``flatten_ids``; the
            run ends at the next tile's start (or M).
    """
    C, N = depths.shape
    tw = math.ceil(width / tile_size)
    th = math.ceil(height / tile_size)
    dev = means2d.device
    r = radii.to(torch.float32)
    valid = (radii[..., 0] > 0) & (radii[..., 1] > 0)
    x0 = torch.floor((means2d[..., 0] - r[..., 0]) / tile_size).clamp(0, tw).long()
    x1 = torch.ceil((means2d[..., 0] + r[..., 0]) / tile_size).clamp(0, tw).long()
    y0 = torch.floor((means2d[..., 1] - r[..., 1]) / tile_size).clamp(0, th).long()
    y1 = torch.ceil((means2d[..., 1] + r[..., 1]) / tile_size).clamp(0, th).long()
    nx = (x1 - x0).clamp(min=0)
    ny = (y1 - y0).clamp(min=0)
    counts = torch.where(valid, nx * ny, torch.zeros_like(nx)).reshape(-1)  # (C*N,)
    total = int(counts.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.long, device=dev), torch.zeros(
            (C, th, tw), dtype=torch.long, device=dev
        )
    gid = torch.repeat_interleave(torch.arange(C * N, device=dev), counts)
    start = torch.cumsum(counts, 0) - counts
    local = torch.arange(total, device=dev) - start[gid]
    nxf = nx.reshape(-1)[gid]
    tx = x0.reshape(-1)[gid] + local % nxf
    ty = y0.reshape(-1)[gid] + local // nxf
    cam = gid // N
    tile_key = (cam * th + ty) * tw + tx  # global tile index
    dep = depths.reshape(-1)[gid]
    order = torch.argsort(dep, stable=True)
    order = order[torch.argsort(tile_key[order], stable=True)]
    flatten_ids = gid[order]
    sorted_keys = tile_key[order]
    n_tiles = C * th * tw
    tile_offsets = torch.searchsorted(sorted_keys, torch.arange(n_tiles, device=dev))
    return flatten_ids, tile_offsets.reshape(C, th, tw)


class _Splats(NamedTuple):
    """The projected Gaussians of all C cameras, flattened to C*N rows: means2d (C*N, 2), conics
    (C*N, 3), colors (C*N, D), opacities (C*N,), depths (C*N,)."""

    means2d: Tensor
    conics: Tensor
    colors: Tensor
    opacities: Tensor
    depths: Tensor


class _TileChunk(NamedTuple):
    """Composited pixels of a chunk of T tiles (P = tile_size² pixels each): colour (T, P, D), depth
    (T, P), final transmittance (T, P), flat pixel index (T, P) into C*H*W, and whether the pixel lies
    inside the image (T, P) (edge tiles overhang it)."""

    colors: Tensor
    depths: Tensor
    transmittance: Tensor
    pixels: Tensor
    inside: Tensor


def _tile_chunks(counts: Tensor, tile_pixels: int, chunk_elems: int) -> Iterator[Tensor]:
    """Non-empty tile ids in chunks: tiles sorted by intersection count, a chunk grown while its padded
    size (tiles x pixels x the chunk's largest count) stays within ``chunk_elems``."""
    busy = torch.nonzero(counts > 0).squeeze(1)
    if busy.numel() == 0:
        return
    order = busy[torch.argsort(counts[busy])]
    cnt_sorted = counts[order].tolist()
    i = 0
    while i < len(order):
        j = i + 1
        # grow the chunk while the padded size stays in budget (counts are ascending)
        while j < len(order) and (j + 1 - i) * tile_pixels * cnt_sorted[j] <= chunk_elems:
            j += 1
        yield order[i:j]
        i = j


def _composite_tiles(
    tiles: Tensor,  # (T,) global tile ids (camera-major, then row-major)
    offs: Tensor,  # (C*th*tw,) each tile's start in flatten_ids
    counts: Tensor,  # (C*th*tw,) each tile's number of intersections
    flatten_ids: Tensor,  # (M,)
    splats: _Splats,
    grid: tuple[int, int, int, int, int],  # (th, tw, tile_size, width, height)
) -> _TileChunk:
    """Front-to-back compositing of every pixel of ``tiles``, padded to the chunk's largest count."""
    th, tw, tile_size, width, height = grid
    dev, dt = splats.means2d.device, splats.means2d.dtype
    ly, lx = torch.meshgrid(
        torch.arange(tile_size, device=dev), torch.arange(tile_size, device=dev), indexing="ij"
    )
    ly, lx = ly.reshape(-1), lx.reshape(-1)
    kmax = int(counts[tiles].max())
    k_ar = torch.arange(kmax, device=dev)
    idx = offs[tiles, None] + k_ar[None, :]
    pad = k_ar[None, :] >= counts[tiles, None]
    idx = torch.where(pad, torch.zeros_like(idx), idx)
    g = flatten_ids[idx]  # (T, K) into C*N
    cam = tiles // (th * tw)
    t_in = tiles % (th * tw)
    px = (t_in % tw)[:, None] * tile_size + lx[None, :]  # (T, P)
    py = (t_in // tw)[:, None] * tile_size + ly[None, :]
    m2d = splats.means2d[g]  # (T, K, 2)
    con = splats.conics[g]
    dx = m2d[:, None, :, 0] - (px[:, :, None].to(dt) + 0.5)  # (T, P, K)
    dy = m2d[:, None, :, 1] - (py[:, :, None].to(dt) + 0.5)
    sigma = 0.5 * (con[:, None, :, 0] * dx * dx + con[:, None, :, 2] * dy * dy) + con[:, None, :, 1] * dx * dy
    alpha = torch.clamp(splats.opacities[g][:, None, :] * torch.exp(-sigma), max=MAX_ALPHA)
    ok = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD) & ~pad[:, None, :]
    alpha = torch.where(ok, alpha, torch.zeros_like(alpha))
    one_m = 1.0 - alpha
    T_incl = torch.cumprod(one_m, dim=-1)
    contrib = (T_incl > TRANSMITTANCE_THRESHOLD).detach()
    T_excl = torch.cat([torch.ones_like(T_incl[..., :1]), T_incl[..., :-1]], dim=-1)
    w = torch.where(contrib, alpha * T_excl, torch.zeros_like(alpha))  # (T, P, K)
    return _TileChunk(
        colors=torch.einsum("tpk,tkd->tpd", w, splats.colors[g]),
        depths=torch.einsum("tpk,tk->tp", w, splats.depths[g]),
        transmittance=torch.prod(torch.where(contrib, one_m, torch.ones_like(one_m)), dim=-1),
        pixels=(cam[:, None] * height + py) * width + px,
        inside=(px < width) & (py < height),
    )


def rasterize_to_pixels(
    means2d: Tensor,  # (C, N, 2)
    conics: Tensor,  # (C, N, 3)
    colors: Tensor,  # (C, N, D)
    opacities: Tensor,  # (C, N)
    depths: Tensor,  # (C, N)
    width: int,
    height: int,
    flatten_ids: Tensor,  # (M,)
    tile_offsets: Tensor,  # (C, th, tw)
    backgrounds: Tensor | None = None,  # (C, D)
    tile_size: int = TILE_SIZE,
    chunk_elems: int = 1 << 22,
) -> tuple[Tensor, Tensor, Tensor]:
    """Front-to-back compositing of the sorted intersections.

    Tiles are composited in chunks of similar intersection counts (:func:`_tile_chunks`,
    :func:`_composite_tiles`), then every pixel inside the image is scattered into the output.

    Returns:
        colors: (C, H, W, D) sum_i c_i a_i T_i + T_final * background
        alphas: (C, H, W, 1) 1 - T_final
        depths: (C, H, W, 1) accumulated depth sum_i z_i a_i T_i (divide by alpha for expected depth)
    """
    C, N, D = colors.shape
    dev, dt = means2d.device, means2d.dtype
    th, tw = tile_offsets.shape[1:]
    M = flatten_ids.numel()
    offs = tile_offsets.reshape(-1)
    ends = torch.cat([offs[1:], torch.tensor([M], device=dev, dtype=offs.dtype)])
    counts = ends - offs
    splats = _Splats(
        means2d.reshape(-1, 2),
        conics.reshape(-1, 3),
        colors.reshape(-1, D),
        opacities.reshape(-1),
        depths.reshape(-1),
    )
    grid = (th, tw, tile_size, width, height)
    chunks = [
        _composite_tiles(tiles, offs, counts, flatten_ids, splats, grid)
        for tiles in _tile_chunks(counts, tile_size * tile_size, chunk_elems)
    ]

    img_col = torch.zeros(C * height * width, D, device=dev, dtype=dt)
    img_T = torch.ones(C * height * width, device=dev, dtype=dt)
    img_dep = torch.zeros(C * height * width, device=dev, dtype=dt)
    if chunks:
        inb = torch.cat([c.inside.reshape(-1) for c in chunks])
        pix = torch.cat([c.pixels.reshape(-1) for c in chunks])[inb]
        img_col = img_col.index_copy(0, pix, torch.cat([c.colors.reshape(-1, D) for c in chunks])[inb])
        img_T = img_T.index_copy(0, pix, torch.cat([c.transmittance.reshape(-1) for c in chunks])[inb])
        img_dep = img_dep.index_copy(0, pix, torch.cat([c.depths.reshape(-1) for c in chunks])[inb])
    img_col = img_col.reshape(C, height, width, D)
    img_T = img_T.reshape(C, height, width, 1)
    img_dep = img_dep.reshape(C, height, width, 1)
    if backgrounds is not None:
        img_col = img_col + img_T * backgrounds[:, None, None, :]
    return img_col, 1.0 - img_T, img_dep


def rasterize_torch(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    backgrounds: Tensor | None = None,
    tile_size: int = TILE_SIZE,
) -> RenderOutput:
    """The reference pipeline: project -> intersect -> composite, all in PyTorch."""
    C = viewmats.shape[0]
    covars = quat_scale_to_covar(quats, scales)
    means2d, conics, depths, radii = project_gaussians(means, covars, viewmats, Ks, width, height)
    flatten_ids, offsets = isect_tiles(means2d, radii, depths, width, height, tile_size)
    cols = colors if colors.ndim == 3 else colors[None].expand(C, -1, -1)
    ops = opacities[None].expand(C, -1)
    img, alpha, dep = rasterize_to_pixels(
        means2d, conics, cols, ops, depths, width, height, flatten_ids, offsets, backgrounds, tile_size
    )
    return RenderOutput(img, alpha, dep / alpha.clamp(min=1e-10))
