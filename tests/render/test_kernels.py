"""Compiled rasteriser kernels (``avatar3d/_kernels``) against the PyTorch reference (``_torch_impl``).

float64 runs check that the kernels implement exactly the reference's math (culling, FOV clamp,
tile binning, sort order, early termination, every gradient) to ~1e-12. float32 runs check the
production precision: stages fed identical inputs, and the full pipeline with the stated tolerances
(forward max abs err <= 1e-4; gradients ||kernel - ref|| / ||ref|| <= 1e-3, never silently zero).
The CPU build is compiled on first use (about a minute, cached afterwards); a failed build fails
these tests. CUDA tests are marked ``gpu`` and skipped without CUDA.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from avatar3d.render import _constants, _cuda_ext, backends
from avatar3d.render import _torch_impl as ref
from avatar3d.render.rasterize import rasterize, rasterize_torch

ROOT = Path(__file__).resolve().parents[2]
LEAVES = ("means", "quats", "scales", "opacities", "colors")
GRAD_TOL = {torch.float32: 1e-3, torch.float64: 1e-7}
FWD_TOL = {torch.float32: 1e-4, torch.float64: 1e-9}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def cpu_mod():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a build failure must fail here, loudly
        mod = _cuda_ext.cpu_module()
    assert mod is not None, "the CPU rasteriser kernels did not build"
    return mod


# ------------------------------------------------------------------------------------ scenes


def _camera(c: int, W: int, H: int, f: float, dt: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    a = 0.15 * c  # camera c is yawed by 0.15 c rad about its own centre, 3 units from the origin
    R = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]], dtype=dt)
    vm = torch.eye(4, dtype=dt)
    vm[:3, :3] = R
    vm[:3, 3] = torch.tensor([0, 0, 3.0], dtype=dt)
    K = torch.tensor([[f, 0, W / 2 + 0.3], [0, f * 1.05, H / 2 - 0.2], [0, 0, 1]], dtype=dt)
    return vm, K


def make_scene(
    kind: str,
    N: int = 250,
    C: int = 1,
    W: int = 64,
    H: int = 48,
    D: int = 3,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    per_view: bool = False,
    background: bool = False,
) -> dict:
    """A small random scene in front of C cameras, shaped by ``kind`` to hit one edge case."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    f = 1.1 * max(W, H)
    z = 3.0 + (rnd(N) - 0.5) * 1.5  # world z; the camera sits at z = -3
    xy = (rnd(N, 2) - 0.5) * torch.tensor([W / f, H / f], dtype=torch.float64) * (z[:, None] + 3.0) * 1.2
    means = torch.cat([xy, z[:, None] - 3.0], -1)
    scales = 0.01 + 0.06 * rnd(N, 3)
    opac = 0.05 + 0.9 * rnd(N)
    if kind == "all_behind":
        means[:, 2] = -3.5 - rnd(N)  # camera z < 0
    elif kind == "some_behind":
        means[: N // 3, 2] = -3.0 - 2 * rnd(N // 3)  # behind
        means[N // 3 : N // 2, 2] = -3.0 + 0.01 * rnd(N // 2 - N // 3)  # around the near plane
    elif kind == "huge_tiny":
        scales[: N // 10] = 0.5 + rnd(N // 10, 3)  # cover the whole image
        scales[N // 10 : N // 2] = 1e-5 * (1 + rnd(N // 2 - N // 10, 3))  # sub-pixel: eps2d dominates
    elif kind == "tile_border":
        ix = torch.randint(1, max(2, W // 16), (N,), generator=g) * 16.0
        iy = torch.randint(1, max(2, H // 16), (N,), generator=g) * 16.0
        pix = torch.stack([ix, iy], -1) + (rnd(N, 2) - 0.5) * 0.2
        zc = means[:, 2] + 3.0
        means[:, :2] = (
            (pix - torch.tensor([W / 2 + 0.3, H / 2 - 0.2])) / torch.tensor([f, f * 1.05]) * zc[:, None]
        )
        scales = 0.002 + 0.01 * rnd(N, 3)
    elif kind == "elongated":  # needle-like splats: nearly singular conics, thin row spans
        scales = torch.cat([0.2 + 0.6 * rnd(N, 1), 1e-4 * (1 + rnd(N, 2))], -1)
    elif kind == "fov_clamp":
        means[: N // 2, 0] *= 3.0  # far outside the FOV: the Jacobian clamp is active
        scales[: N // 2] *= 4.0
    elif kind == "saturated":
        # stacks of 5 opaque Gaussians centred on pixel centres: alpha hits the MAX_ALPHA clamp and
        # the second layer drives T to (1 - 0.99)^2 ~ TRANSMITTANCE_THRESHOLD, so pixels stop early;
        # two layers per stack share a depth (ties are ordered by Gaussian index)
        opac = 0.9 + 0.1 * rnd(N)
        scales = 0.05 + 0.1 * rnd(N, 3)
        S = N // 10
        pix = torch.stack(
            [torch.randint(4, W - 4, (S,), generator=g), torch.randint(4, H - 4, (S,), generator=g)], -1
        )
        zs = torch.tensor([3.0, 3.2, 3.2, 3.4, 3.6], dtype=torch.float64)  # camera z of the layers
        centre = (pix.double() + 0.5 - torch.tensor([W / 2 + 0.3, H / 2 - 0.2])) / torch.tensor([f, f * 1.05])
        idx = torch.arange(5 * S)
        means[idx, :2] = centre.repeat_interleave(5, 0) * zs.repeat(S)[:, None]
        means[idx, 2] = zs.repeat(S) - 3.0
        scales[idx] = 0.1 + 0.05 * rnd(5 * S, 3)
        opac[idx] = 1.0
    quats = torch.randn(N, 4, generator=g, dtype=torch.float64)
    cols = rnd(C, N, D) if per_view else rnd(N, D)
    vms, Ks = zip(*(_camera(c, W, H, f, torch.float64) for c in range(C)))
    sc = {
        "means": means,
        "quats": quats,
        "scales": scales,
        "opacities": opac,
        "colors": cols,
        "viewmats": torch.stack(vms),
        "Ks": torch.stack(Ks),
        "backgrounds": rnd(C, D) if background else None,
    }
    sc = {k: (v.to(dtype) if v is not None else None) for k, v in sc.items()}
    sc.update(width=W, height=H)
    return sc


CASES = {
    "random": {"kind": "random"},
    "zero_gaussians": {"kind": "random", "N": 0},
    "all_behind": {"kind": "all_behind", "background": True},
    "some_behind": {"kind": "some_behind"},
    "huge_tiny": {"kind": "huge_tiny", "background": True},
    "tile_border": {"kind": "tile_border", "N": 150, "W": 80, "H": 64},
    "elongated": {"kind": "elongated", "N": 150},
    "fov_clamp": {"kind": "fov_clamp"},
    "saturated": {"kind": "saturated", "N": 200},
    "non_square": {"kind": "random", "W": 96, "H": 32, "D": 4, "background": True},
    "odd_37x53_D1": {"kind": "random", "W": 37, "H": 53, "D": 1},
    "batched_C3": {"kind": "random", "C": 3, "background": True},
    "batched_C3_per_view_D4": {"kind": "random", "C": 3, "D": 4, "per_view": True},
}


# ------------------------------------------------------------------------------------ helpers


def render_with_grads(fn, sc: dict, seed: int = 1) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """Forward outputs and gradients of a random linear loss over colours, alphas and depths."""
    leaves = {k: sc[k].detach().clone().requires_grad_(True) for k in LEAVES}
    bg = sc["backgrounds"]
    if bg is not None:
        bg = bg.detach().clone().requires_grad_(True)
    out = fn(*(leaves[k] for k in LEAVES), sc["viewmats"], sc["Ks"], sc["width"], sc["height"], bg)
    outs = [out.colors, out.alphas, out.depths]
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o)).sum() for o in outs)
    tensors = list(leaves.values()) + ([bg] if bg is not None else [])
    grads = (
        torch.autograd.grad(loss, tensors, allow_unused=True) if loss.requires_grad else [None] * len(tensors)
    )
    names = list(LEAVES) + (["backgrounds"] if bg is not None else [])
    return [o.detach() for o in outs], dict(zip(names, grads))


def assert_grads_close(got: dict, want: dict, tol: float) -> None:
    """||got - want|| / ||want|| <= tol per tensor, finite, and of the same overall magnitude.

    ``None`` (no gradient path) counts as zeros; a zero reference demands an exactly zero gradient.
    """
    for name, w in want.items():
        x = got[name]
        if x is None and w is None:
            continue
        x = torch.zeros_like(w) if x is None else x
        w = torch.zeros_like(x) if w is None else w
        assert torch.isfinite(x).all(), f"{name}: non-finite gradient"
        wn = w.norm().item()
        if wn == 0:
            assert x.norm().item() == 0, f"{name}: gradient should be zero"
            continue
        rel = (x - w).norm().item() / wn
        assert rel <= tol, f"{name}: relative gradient error {rel:.2e} > {tol:.0e}"
        # not silently zero: per-element magnitudes agree (catches a branch that drops grads)
        ratio = x.abs().sum().item() / w.abs().sum().item()
        assert 0.9 < ratio < 1.1, f"{name}: gradient magnitude ratio {ratio:.3f}"


def compare_end_to_end(sc: dict, fn, dtype: torch.dtype, depth_floor: float = 0.0) -> None:
    (c1, a1, d1), g1 = render_with_grads(fn, sc)
    (c0, a0, d0), g0 = render_with_grads(rasterize_torch, sc)
    tol = FWD_TOL[dtype]
    assert (c1 - c0).abs().max().item() <= tol
    assert (a1 - a0).abs().max().item() <= tol
    # expected depth = acc / alpha: compare where alpha is not vanishing (division amplifies rounding)
    m = a0 > depth_floor
    assert bool(((d1 - d0)[m].abs() <= tol).all())
    assert_grads_close(g1, g0, GRAD_TOL[dtype])


# ------------------------------------------------------------------------------------ tests


def test_constants_header_mirrors_python() -> None:
    text = re.sub(r"//.*", "", (ROOT / "avatar3d" / "_kernels" / "include" / "constants.h").read_text())
    found = {m[1]: m[2].strip(" ()") for m in re.finditer(r"#define A3D_(\w+)\s+(.+)", text)}
    names = [n for n in dir(_constants) if n.isupper()]
    assert sorted(found) == sorted(names)
    for n in names:
        num, _, den = found[n].partition("/")
        value = float(num) / (float(den) if den else 1.0)
        assert value == pytest.approx(float(getattr(_constants, n)), rel=1e-15), n


def test_import_does_not_compile() -> None:
    code = (
        "import avatar3d.render.backends, avatar3d.render._cuda_ext as e, sys; "
        "sys.exit(1 if e._modules or 'torch.utils.cpp_extension' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0


def test_check_nvcc_skips_without_nvcc(tmp_path) -> None:
    path = "/usr/bin:/bin"
    if shutil.which("nvcc", path=path):
        pytest.skip("nvcc is on the minimal PATH; the CI job runs the real check")
    script = ROOT / "avatar3d" / "_kernels" / "check_nvcc.sh"
    res = subprocess.run(
        ["bash", str(script)], env={"PATH": path}, capture_output=True, text=True, check=False
    )
    assert res.returncode == 0 and "SKIP" in res.stdout


@pytest.mark.parametrize("case", list(CASES))
def test_end_to_end_float64(cpu_mod, case: str) -> None:
    compare_end_to_end(make_scene(**CASES[case], dtype=torch.float64), backends.rasterize_cpu, torch.float64)


@pytest.mark.parametrize(
    "case",
    [
        "random",
        "some_behind",
        "huge_tiny",
        "elongated",
        "fov_clamp",
        "saturated",
        "odd_37x53_D1",
        "batched_C3_per_view_D4",
    ],
)
def test_end_to_end_float32(cpu_mod, case: str) -> None:
    compare_end_to_end(
        make_scene(**CASES[case], dtype=torch.float32),
        backends.rasterize_cpu,
        torch.float32,
        depth_floor=1e-2,
    )


@pytest.mark.parametrize(
    "case", ["random", "tile_border", "elongated", "saturated", "batched_C3_per_view_D4"]
)
def test_stages_float32(cpu_mod, case: str) -> None:
    """Each stage fed the same inputs as the reference stage."""
    sc = make_scene(**CASES[case], dtype=torch.float32)
    W, H, C = sc["width"], sc["height"], sc["viewmats"].shape[0]
    # projection: forward where defined, VJP with random cotangents masked to valid entries
    leaves = [sc[k].clone().requires_grad_(True) for k in ("means", "quats", "scales")]
    covars = ref.quat_scale_to_covar(leaves[1], leaves[2])
    p0 = ref.project_gaussians(leaves[0], covars, sc["viewmats"], sc["Ks"], W, H)
    p1 = _cuda_ext.project_gaussians(*leaves, sc["viewmats"], sc["Ks"], W, H)
    valid = (p0[3] > 0).all(-1)
    assert valid.any() and torch.equal(p0[3], p1[3])
    for a, b in zip(p0[:2], p1[:2]):
        torch.testing.assert_close(b[valid], a[valid], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(p1[2], p0[2], rtol=1e-6, atol=1e-6)
    g = torch.Generator().manual_seed(3)
    cot = [
        torch.randn(t.shape, generator=g) * valid.reshape(valid.shape + (1,) * (t.ndim - 2)) for t in p0[:3]
    ]
    grads = [torch.autograd.grad(sum((t * v).sum() for t, v in zip(p[:3], cot)), leaves) for p in (p0, p1)]
    assert_grads_close(dict(zip("mqs", grads[1])), dict(zip("mqs", grads[0])), 1e-3)
    # tile intersection: identical lists and offsets
    m2d, con, dep, radii = (t.detach() for t in p0)
    ids0, off0 = ref.isect_tiles(m2d, radii, dep, W, H)
    ids1, off1 = _cuda_ext.isect_tiles(m2d, radii, dep, W, H)
    assert ids0.numel() > 0 and torch.equal(ids0, ids1.long()) and torch.equal(off0, off1.long())
    # compositing: same projected inputs -> same images and gradients
    cols = sc["colors"] if sc["colors"].ndim == 3 else sc["colors"][None].expand(C, -1, -1)
    ins = [t.clone().requires_grad_(True) for t in (m2d, con, cols, sc["opacities"][None].expand(C, -1), dep)]
    r0 = ref.rasterize_to_pixels(*ins, W, H, ids0, off0)
    r1 = _cuda_ext.rasterize_to_pixels(*ins, W, H, ids1, off1)
    for a, b in zip(r0, r1):
        assert (a - b).abs().max().item() <= 1e-4
    cot = [torch.randn(t.shape, generator=g) for t in r0]
    grads = [torch.autograd.grad(sum((t * v).sum() for t, v in zip(r, cot)), ins) for r in (r0, r1)]
    names = ["means2d", "conics", "colors", "opacities", "depths"]
    assert_grads_close(dict(zip(names, grads[1])), dict(zip(names, grads[0])), 1e-3)


def test_culled_and_empty_give_background(cpu_mod) -> None:
    for case in ("all_behind", "zero_gaussians"):
        sc = make_scene(**{**CASES[case], "background": True})
        (c, a, d), grads = render_with_grads(backends.rasterize_cpu, sc)
        assert a.abs().max() == 0 and d.abs().max() == 0
        torch.testing.assert_close(c, sc["backgrounds"][:, None, None, :].expand_as(c))
        assert grads["backgrounds"] is not None and grads["backgrounds"].abs().sum() > 0
        for k in LEAVES:
            assert grads[k] is None or grads[k].abs().sum() == 0


def test_kernels_run_in_parallel_threads_deterministically(cpu_mod) -> None:
    sc = make_scene("random", N=400, C=2, dtype=torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        o1, g1 = render_with_grads(backends.rasterize_cpu, sc)
        torch.set_num_threads(max(2, threads))
        o2, g2 = render_with_grads(backends.rasterize_cpu, sc)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(o1, o2):
        assert torch.equal(a, b)  # forward is per pixel: bit-identical whatever the thread count
    assert_grads_close(g2, g1, 1e-5)  # backward sums per-thread buffers: order may differ


def test_backend_selection(cpu_mod, monkeypatch) -> None:
    monkeypatch.delenv("AVATAR3D_RASTER_BACKEND", raising=False)
    assert backends.available_backends("cpu") == ["cpu", "torch"]
    assert backends.select_backend("auto", "cpu") is backends.rasterize_cpu
    monkeypatch.setenv("AVATAR3D_RASTER_BACKEND", "torch")
    assert backends.select_backend("auto", "cpu") is rasterize_torch
    monkeypatch.setenv("AVATAR3D_RASTER_BACKEND", "nope")
    with pytest.raises(ValueError, match="unknown rasteriser backend"):
        backends.select_backend("auto", "cpu")
    monkeypatch.delenv("AVATAR3D_RASTER_BACKEND")
    sc = make_scene("random", N=100, dtype=torch.float32, background=True)
    args = [sc[k] for k in (*LEAVES, "viewmats", "Ks", "width", "height", "backgrounds")]
    a, b = rasterize(*args, backend="cpu"), rasterize(*args, backend="torch")
    assert (a.colors - b.colors).abs().max() <= 1e-4
    with pytest.raises(ValueError, match="needs cuda tensors"):
        backends.rasterize_cuda(*args)


def test_failed_build_warns_once_and_falls_back(monkeypatch) -> None:
    def broken(kind: str):
        raise RuntimeError("g++: error: simulated compiler failure\nninja: build stopped")

    monkeypatch.setattr(_cuda_ext, "_compile", broken)
    monkeypatch.setattr(_cuda_ext, "_modules", {})
    monkeypatch.setattr(_cuda_ext, "_warned", set())
    monkeypatch.delenv("AVATAR3D_RASTER_BACKEND", raising=False)
    sc = make_scene("random", N=60, dtype=torch.float32)
    args = [sc[k] for k in (*LEAVES, "viewmats", "Ks", "width", "height")]
    with pytest.warns(RuntimeWarning, match="simulated compiler failure"):
        assert backends.available_backends("cpu") == ["torch"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        out = backends.rasterize_cpu(*args)
        assert backends.select_backend("auto", "cpu") is rasterize_torch
    torch.testing.assert_close(out.colors, rasterize_torch(*args).colors)


def test_camera_gradients_fall_back_to_reference(cpu_mod, monkeypatch) -> None:
    monkeypatch.setattr(_cuda_ext, "_warned", set())
    sc = make_scene("random", N=80, dtype=torch.float64)
    vm = sc["viewmats"].clone().requires_grad_(True)
    with pytest.warns(RuntimeWarning, match="do not differentiate through cameras"):
        out = backends.rasterize_cpu(*(sc[k] for k in LEAVES), vm, sc["Ks"], sc["width"], sc["height"])
    (g,) = torch.autograd.grad(out.colors.sum(), vm)
    assert g.abs().sum() > 0


# ------------------------------------------------------------------------------------ GPU


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", list(CASES))
def test_cuda_end_to_end(case: str, dtype: torch.dtype) -> None:
    assert _cuda_ext.cuda_module() is not None, "the CUDA rasteriser kernels did not build"
    sc = {
        k: (v.cuda() if isinstance(v, torch.Tensor) else v)
        for k, v in make_scene(**CASES[case], dtype=dtype).items()
    }
    compare_end_to_end(
        sc, backends.rasterize_cuda, dtype, depth_floor=1e-2 if dtype == torch.float32 else 0.0
    )


@pytest.mark.gpu
@needs_cuda
def test_cuda_is_auto_backend_on_cuda() -> None:
    assert backends.available_backends("cuda")[0] == "cuda"


@pytest.mark.gpu
@needs_cuda
def test_gsplat_backend_close_to_reference() -> None:
    if not backends.gsplat_available():
        pytest.skip("gsplat not importable")
    sc = {
        k: (v.cuda() if isinstance(v, torch.Tensor) else v)
        for k, v in make_scene("random", N=400, dtype=torch.float32, background=True).items()
    }
    (c1, a1, _), _g = render_with_grads(backends.rasterize_gsplat, sc)
    (c0, a0, _), _g = render_with_grads(rasterize_torch, sc)
    # gsplat's own alpha clamp / opacity-aware bboxes differ slightly from ours: loose check
    assert (c1 - c0).abs().mean() < 1e-2 and (a1 - a0).abs().mean() < 1e-2
