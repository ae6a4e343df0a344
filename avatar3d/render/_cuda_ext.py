"""Build, load and wrap avatar3d's own compiled rasteriser (the package's ``_kernels/`` sources).

One source, two builds: ``_kernels/cpu/raster_cpu.cpp`` (g++ ``-O3 -fopenmp``) for CPU tensors and
``_kernels/cuda/raster_cuda.cu`` (nvcc) for CUDA tensors, both defining the ops of
``_kernels/include/ops.h`` with the per-element functions of ``_kernels/include/raster.h``. The
sources ship inside the package (package data), so an installed wheel builds them too.

Each build is JIT-compiled with :func:`torch.utils.cpp_extension.load` on first use (never at import)
into ``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/avatar3d/torch_extensions``, in a folder named after a
hash of the sources, the flags, torch (its version and where it is installed: the build files name
its headers by path), the compiler and ninja (:func:`build_key`): one build per machine, version and
environment, shared by every checkout and process using it. The sources are copied into that folder
and built from there, and the build always runs the ``ninja`` of the ``ninja`` package (a dependency)
whatever ``ninja`` comes first on ``PATH``, so no two tools rebuild each other's output. If a build
fails, one warning is issued and callers fall back to the PyTorch reference; nothing raises for lack
of a compiler.

Stages mirror :mod:`._torch_impl` (same names, arguments and outputs), each backed by an autograd
Function, so gradients flow to means, quats, scales, opacities, colours and backgrounds:
:func:`project_gaussians` (fused with ``quat_scale_to_covar``; one covariance per Gaussian shared by
all C cameras), :func:`isect_tiles` (no grad), :func:`rasterize_to_pixels` (depth rides along as one
more colour channel, so it is differentiable). :func:`rasterize_kernels` chains them like
:func:`.rasterize.rasterize_torch`. Cameras (viewmats, Ks) are not differentiable here.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from ._constants import EPS2D, FAR_PLANE, NEAR_PLANE, TILE_SIZE
from ._types import RenderOutput

KERNELS = Path(__file__).resolve().parents[1] / "_kernels"
_SOURCES = {
    "cpu": ["cpu/raster_cpu.cpp"],
    "cuda": ["cuda/bindings.cpp", "cuda/raster_cuda.cu"],
}
_HEADERS = ["include/ops.h", "include/raster.h", "include/constants.h"]
_FLAGS: dict[str, dict[str, tuple[str, ...]]] = {  # tuples: torch's load() appends to the lists it gets
    "cpu": {"extra_cflags": ("-O3", "-fopenmp", "-ffp-contract=off"), "extra_ldflags": ("-fopenmp",)},
    # --fmad=false: no FMA contraction, so the forward and backward kernels (and the CPU build)
    # reach the same alpha/transmittance threshold decisions.
    "cuda": {"extra_cflags": ("-O3",), "extra_cuda_cflags": ("-O3", "--fmad=false")},
}

log = logging.getLogger(__name__)
_modules: dict[str, ModuleType | None] = {}
_lock = threading.Lock()
_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """``warnings.warn`` the first time ``key`` is seen in this process, silently afterwards."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def build_root() -> Path:
    """Where the JIT builds live: ``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/avatar3d/torch_extensions``,
    one sub-folder per Python and torch version (builds are not ABI-compatible across them)."""
    base = os.environ.get("TORCH_EXTENSIONS_DIR") or str(
        Path.home() / ".cache" / "avatar3d" / "torch_extensions"
    )
    tag = f"py{sys.version_info.major}{sys.version_info.minor}_torch{torch.__version__}"
    return Path(base) / tag.replace("+", "_")


def ninja_dir() -> str | None:
    """The folder of the ``ninja`` every build runs: the ``ninja`` package's, else the first on PATH."""
    try:
        import ninja

        if (Path(ninja.BIN_DIR) / "ninja").is_file():
            return str(ninja.BIN_DIR)
    except (ImportError, AttributeError):
        pass
    found = shutil.which("ninja")
    return str(Path(found).parent) if found else None


def _tool_version(exe: str) -> str:
    """First line of ``exe --version`` ("absent" when it cannot run)."""
    try:
        res = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return "absent"
    lines = (res.stdout or res.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def _compilers(kind: str) -> list[str]:
    tools = [os.environ.get("CXX", "c++")]
    if kind == "cuda":
        from torch.utils.cpp_extension import CUDA_HOME  # imported lazily: it is slow to import

        tools.append(str(Path(CUDA_HOME) / "bin" / "nvcc") if CUDA_HOME else "nvcc")
    return tools


def build_key(kind: str, ninja_bin_dir: str | None = None) -> str:
    """Hex digest naming one build: the kernel sources, flags, Python and torch (versions and install
    locations: two environments sharing a folder would rewrite each other's build files, each naming
    its own headers, and rebuild in turn), compilers and ninja."""
    h = hashlib.sha256()
    for rel in sorted(_SOURCES[kind] + _HEADERS):
        h.update(rel.encode() + b"\0" + (KERNELS / rel).read_bytes() + b"\0")
    ninja_exe = str(Path(ninja_bin_dir) / "ninja") if ninja_bin_dir else "ninja"
    tools = [_tool_version(t) for t in _compilers(kind)] + [_tool_version(ninja_exe)]
    places = (sys.prefix, str(Path(torch.__file__).resolve().parent))
    for part in (
        sys.version,
        torch.__version__,
        str(torch.version.cuda),
        *places,
        repr(_FLAGS[kind]),
        *tools,
    ):
        h.update(part.encode() + b"\0")
    return h.hexdigest()


def _stage_sources(kind: str, dest: Path) -> None:
    """Copy the build's sources under ``dest`` (unchanged files are left alone, so their mtimes hold)."""
    for rel in _SOURCES[kind] + _HEADERS:
        data = (KERNELS / rel).read_bytes()
        target = dest / rel
        if target.is_file() and target.read_bytes() == data:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)


@contextlib.contextmanager
def _ninja_first_on_path(folder: str | None) -> Iterator[None]:
    """torch runs ``ninja`` by name: put the pinned one first on PATH for the build's duration."""
    old = os.environ.get("PATH", "")
    if folder:
        os.environ["PATH"] = folder + os.pathsep + old
    try:
        yield
    finally:
        os.environ["PATH"] = old


def build_dir(kind: str) -> Path:
    """The folder of this machine's build of ``kind`` ("cpu" or "cuda") for these sources."""
    return build_root() / f"avatar3d_raster_{kind}-{build_key(kind, ninja_dir())[:16]}"


def _compile(kind: str) -> ModuleType:
    from torch.utils.cpp_extension import load  # imported lazily: it is slow to import

    missing = [r for r in _SOURCES[kind] + _HEADERS if not (KERNELS / r).is_file()]
    if missing:
        raise FileNotFoundError(f"kernel sources not found in {KERNELS}: {', '.join(missing)}")
    where = build_dir(kind)
    src = where / "src"
    _stage_sources(kind, src)
    log.info("loading the %s rasteriser kernels from %s (the first build takes about a minute)", kind, where)
    with _ninja_first_on_path(ninja_dir()):
        return load(
            name=f"avatar3d_raster_{kind}",
            sources=[str(src / s) for s in _SOURCES[kind]],
            extra_include_paths=[str(src / "include")],
            build_directory=str(where),
            verbose=False,
            **{key: list(flags) for key, flags in _FLAGS[kind].items()},
        )


def _module(kind: str) -> ModuleType | None:
    with _lock:
        if kind not in _modules:
            try:
                _modules[kind] = _compile(kind)
            except Exception as exc:  # noqa: BLE001 - any build failure means "fall back"
                reason = _short_reason(exc)
                warn_once(
                    f"build-{kind}",
                    f"avatar3d: could not build the {kind} rasteriser kernels ({reason}); "
                    "falling back to the PyTorch reference rasteriser",
                )
                _modules[kind] = None
        return _modules[kind]


def _short_reason(exc: BaseException) -> str:
    """One line out of a (possibly very long) compiler log: the first error, else the last line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
    errors = [ln for ln in lines if "error" in ln.lower() and "subcommand failed" not in ln]
    return (errors or lines)[0 if errors else -1][:300]


def cpu_module() -> ModuleType | None:
    """The CPU (OpenMP) build, compiled on first call; None if it cannot be built."""
    return _module("cpu")


def cuda_module() -> ModuleType | None:
    """The CUDA build, compiled on first call; None without CUDA or if it cannot be built."""
    if not torch.cuda.is_available():
        return None
    return _module("cuda")


class _CudaOps:
    """The CUDA build's functions with the device made current and torch's current stream appended
    (the .cu file uses no c10/cuda headers, so it also compiles against a CPU-only torch)."""

    def __init__(self, mod: ModuleType, device: torch.device) -> None:
        self._mod, self._device = mod, device

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._mod, name)

        def call(*args: Any) -> Any:
            with torch.cuda.device(self._device):
                return fn(*args, torch.cuda.current_stream(self._device).cuda_stream)

        return call


def module_for(device: torch.device) -> Any:
    """The kernel functions for tensors on ``device``; RuntimeError if they are unavailable."""
    if device.type == "cuda":
        mod = cuda_module()
        if mod is not None:
            return _CudaOps(mod, device)
    elif device.type == "cpu":
        mod = cpu_module()
        if mod is not None:
            return mod
    raise RuntimeError(f"no compiled rasteriser kernels for device {device}")


# ---------------------------------------------------------------------------------- autograd


class _ProjectGaussians(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mod, means, quats, scales, viewmats, Ks, width, height, near, far, eps2d):
        means2d, conics, depths, radii = mod.project_fwd(
            means, quats, scales, viewmats, Ks, width, height, near, far, eps2d
        )
        ctx.mod = mod
        ctx.cfg = (width, height, near, far, eps2d)
        ctx.save_for_backward(means, quats, scales, viewmats, Ks)
        ctx.mark_non_differentiable(radii)
        return means2d, conics, depths, radii

    @staticmethod
    def backward(ctx, v_means2d, v_conics, v_depths, _v_radii):
        means, quats, scales, viewmats, Ks = ctx.saved_tensors
        C, N = viewmats.shape[0], means.shape[0]
        v_means2d = _grad_or_zeros(v_means2d, (C, N, 2), means)
        v_conics = _grad_or_zeros(v_conics, (C, N, 3), means)
        v_depths = _grad_or_zeros(v_depths, (C, N), means)
        v_means, v_quats, v_scales = ctx.mod.project_bwd(
            means, quats, scales, viewmats, Ks, *ctx.cfg, v_means2d, v_conics, v_depths
        )
        return None, v_means, v_quats, v_scales, None, None, None, None, None, None, None


class _RasterizeToPixels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mod, means2d, conics, colors, opacities, flatten_ids, offsets, width, height, tile):
        out, alphas, T_final, last_ids = mod.raster_fwd(
            means2d, conics, colors, opacities, flatten_ids, offsets, width, height, tile
        )
        ctx.mod = mod
        ctx.cfg = (width, height, tile)
        ctx.save_for_backward(means2d, conics, colors, opacities, flatten_ids, offsets, T_final, last_ids)
        return out, alphas

    @staticmethod
    def backward(ctx, v_out, v_alphas):
        means2d, conics, colors, opacities, flatten_ids, offsets, T_final, last_ids = ctx.saved_tensors
        v_out = _grad_or_zeros(v_out, T_final.shape + (colors.shape[-1],), colors)
        v_alphas = _grad_or_zeros(v_alphas, T_final.shape + (1,), colors)
        v_means2d, v_conics, v_colors, v_opacities = ctx.mod.raster_bwd(
            means2d,
            conics,
            colors,
            opacities,
            flatten_ids,
            offsets,
            *ctx.cfg,
            T_final,
            last_ids,
            v_out,
            v_alphas,
        )
        return None, v_means2d, v_conics, v_colors, v_opacities, None, None, None, None, None


def _grad_or_zeros(g: Tensor | None, shape: tuple[int, ...], like: Tensor) -> Tensor:
    return like.new_zeros(shape) if g is None else g.contiguous()


# ---------------------------------------------------------------------------------- stages


def project_gaussians(
    means: Tensor,  # (N, 3)
    quats: Tensor,  # (N, 4) wxyz
    scales: Tensor,  # (N, 3)
    viewmats: Tensor,  # (C, 4, 4)
    Ks: Tensor,  # (C, 3, 3)
    width: int,
    height: int,
    near_plane: float = NEAR_PLANE,
    far_plane: float = FAR_PLANE,
    eps2d: float = EPS2D,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Kernel twin of ``quat_scale_to_covar`` + ``project_gaussians`` of the reference.

    Returns means2d (C, N, 2), conics (C, N, 3), depths (C, N), radii (C, N, 2) int32. Where the
    depth is outside (near, far) or the 2D covariance is degenerate, means2d and conics are 0 and
    carry no gradient (the reference leaves placeholders there); depths are differentiable everywhere.
    """
    mod = module_for(means.device)
    dt = means.dtype
    return _ProjectGaussians.apply(
        mod,
        means.contiguous(),
        quats.to(dt).contiguous(),
        scales.to(dt).contiguous(),
        viewmats.detach().to(dt).contiguous(),
        Ks.detach().to(dt).contiguous(),
        int(width),
        int(height),
        float(near_plane),
        float(far_plane),
        float(eps2d),
    )


@torch.no_grad()
def isect_tiles(
    means2d: Tensor,  # (C, N, 2)
    radii: Tensor,  # (C, N, 2) int32
    depths: Tensor,  # (C, N)
    width: int,
    height: int,
    tile_size: int = TILE_SIZE,
) -> tuple[Tensor, Tensor]:
    """Kernel twin of the reference ``isect_tiles``: same order (image, tile, depth, index).

    Returns flatten_ids (M,) and tile_offsets (C, tile_h, tile_w), both int32.
    """
    mod = module_for(means2d.device)
    return tuple(
        mod.isect_tiles(
            means2d.contiguous(),
            radii.to(torch.int32).contiguous(),
            depths.to(means2d.dtype).contiguous(),
            int(width),
            int(height),
            int(tile_size),
        )
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
) -> tuple[Tensor, Tensor, Tensor]:
    """Kernel twin of the reference ``rasterize_to_pixels``.

    Returns colors (C, H, W, D) (+ background), alphas (C, H, W, 1), accumulated depths (C, H, W, 1).
    """
    mod = module_for(means2d.device)
    dt = means2d.dtype
    D = colors.shape[-1]
    feats = torch.cat([colors.to(dt), depths.to(dt)[..., None]], dim=-1).contiguous()  # (C, N, D+1)
    out, alphas = _RasterizeToPixels.apply(
        mod,
        means2d.contiguous(),
        conics.to(dt).contiguous(),
        feats,
        opacities.to(dt).contiguous(),
        flatten_ids.to(torch.int32).contiguous(),
        tile_offsets.to(torch.int32).contiguous(),
        int(width),
        int(height),
        int(tile_size),
    )
    img, dep = out[..., :D], out[..., D:]
    if backgrounds is not None:
        img = img + (1.0 - alphas) * backgrounds.to(dt)[:, None, None, :]
    return img, alphas, dep


def rasterize_kernels(
    means: Tensor,  # (N, 3)
    quats: Tensor,  # (N, 4)
    scales: Tensor,  # (N, 3)
    opacities: Tensor,  # (N,)
    colors: Tensor,  # (N, D) or (C, N, D)
    viewmats: Tensor,  # (C, 4, 4)
    Ks: Tensor,  # (C, 3, 3)
    width: int,
    height: int,
    backgrounds: Tensor | None = None,  # (C, D)
    tile_size: int = TILE_SIZE,
) -> RenderOutput:
    """project -> intersect -> composite with the compiled kernels of the inputs' device.

    Same contract as :func:`.rasterize.rasterize_torch`; float32 and float64 run natively, other
    dtypes are computed in float32.
    """
    out_dt = means.dtype
    dt = out_dt if out_dt in (torch.float32, torch.float64) else torch.float32
    C = viewmats.shape[0]
    means2d, conics, depths, radii = project_gaussians(
        means.to(dt), quats.to(dt), scales.to(dt), viewmats, Ks, width, height
    )
    flatten_ids, offsets = isect_tiles(means2d.detach(), radii, depths.detach(), width, height, tile_size)
    cols = colors if colors.ndim == 3 else colors[None].expand(C, -1, -1)
    ops = opacities.to(dt)[None].expand(C, -1)
    img, alpha, dep = rasterize_to_pixels(
        means2d, conics, cols, ops, depths, width, height, flatten_ids, offsets, backgrounds, tile_size
    )
    res = RenderOutput(img, alpha, dep / alpha.clamp(min=1e-10))
    if dt != out_dt:
        res = RenderOutput(res.colors.to(out_dt), res.alphas.to(out_dt), res.depths.to(out_dt))
    return res
