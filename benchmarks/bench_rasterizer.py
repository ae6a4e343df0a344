"""Rasteriser benchmark on a head-like scene.

CPU (default): our C++/OpenMP kernels vs the PyTorch reference, forward and forward+backward,
20k and 100k Gaussians at 256^2 and 512^2. ``--gpu``: our CUDA kernels vs gsplat, forward and
forward+backward, 100k-500k Gaussians at 512^2 and 1024^2, mono and stereo (C=2) cameras.

Method: fixed seed; one warm-up call each (kernels compiled, caches hot); then the two contenders
are timed alternately (so both see the same machine load) and the median of ``--repeats`` /
``--ref-repeats`` calls is reported; CUDA timings synchronise the device. ``--clock process``
measures this process's CPU time instead of wall time (robust on a shared machine, with
``--threads 1``). The table prints both times and their ratio side by side, after the machine
metadata (CPU, torch threads, load average, GPU).

    python benchmarks/bench_rasterizer.py [--repeats 5] [--threads N] [--clock wall|process] [--quick] [--gpu]
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar3d.render import _cuda_ext
from avatar3d.render._gsplat import gsplat_available, rasterize_gsplat
from avatar3d.render.rasterize import RenderOutput, rasterize_torch

HEAD_AXES = (0.075, 0.105, 0.095)  # ellipsoid semi-axes in metres (x: width, y: height, z: depth)
DISTANCE = 0.75  # camera to head centre, metres
FOV_DEG = 18.0
IPD = 0.064  # stereo baseline, metres


def _rotmat_to_quat(R: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) rotation matrices -> (N, 4) wxyz quaternions (robust branch per row)."""
    m = R
    t = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    cands = torch.stack(
        [
            torch.stack(
                [1 + t, m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], -1
            ),
            torch.stack(
                [
                    m[:, 2, 1] - m[:, 1, 2],
                    1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2],
                    m[:, 0, 1] + m[:, 1, 0],
                    m[:, 0, 2] + m[:, 2, 0],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[:, 0, 2] - m[:, 2, 0],
                    m[:, 0, 1] + m[:, 1, 0],
                    1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2],
                    m[:, 1, 2] + m[:, 2, 1],
                ],
                -1,
            ),
            torch.stack(
                [
                    m[:, 1, 0] - m[:, 0, 1],
                    m[:, 0, 2] + m[:, 2, 0],
                    m[:, 1, 2] + m[:, 2, 1],
                    1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2],
                ],
                -1,
            ),
        ],
        1,
    )  # (N, 4 candidates, 4)
    best = torch.stack(
        [
            1 + t,
            1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2],
            1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2],
            1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2],
        ],
        -1,
    )
    q = cands[torch.arange(len(m)), best.argmax(-1)]
    return torch.nn.functional.normalize(q, dim=-1)


def head_scene(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """N surface Gaussians on a head-sized ellipsoid, flattened along the surface normal, with
    scales set by the surface area per Gaussian (log-normal jitter), opacities in [0.3, 1]."""
    g = torch.Generator().manual_seed(seed)
    ax = torch.tensor(HEAD_AXES)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    means = d * ax  # (N, 3) on the surface
    normal = torch.nn.functional.normalize(means / ax**2, dim=-1)
    tangent = torch.nn.functional.normalize(
        torch.linalg.cross(normal, torch.randn(n, 3, generator=g)), dim=-1
    )
    R = torch.stack([tangent, torch.linalg.cross(normal, tangent), normal], dim=-1)  # columns
    area = 4 * math.pi * (ax.prod() ** (2 / 3)).item()
    spacing = math.sqrt(area / n)
    s_t = spacing * 0.6 * torch.exp(0.3 * torch.randn(n, 2, generator=g))
    scales = torch.cat([s_t, 0.1 * s_t.mean(-1, keepdim=True)], -1)  # (N, 3)
    return {
        "means": means,
        "quats": _rotmat_to_quat(R),
        "scales": scales,
        "opacities": 0.3 + 0.7 * torch.rand(n, generator=g),
        "colors": torch.rand(n, 3, generator=g) * torch.tensor([0.5, 0.35, 0.3]) + 0.3,
    }


def cameras(size: int, stereo: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Frontal camera(s) at DISTANCE looking at the head centre; stereo: +-IPD/2 along x."""
    f = 0.5 * size / math.tan(math.radians(FOV_DEG) / 2)
    offs = [-IPD / 2, IPD / 2] if stereo else [0.0]
    vms = []
    for dx in offs:
        vm = torch.eye(4)
        vm[:3, 3] = torch.tensor([-dx, 0.0, DISTANCE])
        vms.append(vm)
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])
    return torch.stack(vms), K.expand(len(offs), 3, 3).contiguous()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "process": time.process_time}


def time_pair(
    fa: Callable[[], None], fb: Callable[[], None], device: str, ra: int, rb: int, clock: str = "wall"
) -> tuple[float, float]:
    """Median ms of ``ra`` calls of fa and ``rb`` calls of fb, interleaved (so both see the same
    machine load), after one warm-up call each. ``clock="process"`` counts this process's CPU time
    (robust to other processes on a shared machine; meaningful with one thread)."""
    now = CLOCKS[clock]
    fa(), fb()
    _sync(device)
    ta: list[float] = []
    tb: list[float] = []
    for i in range(max(ra, rb)):
        for fn, ts, r in ((fa, ta, ra), (fb, tb, rb)):
            if i < r:
                t0 = now()
                fn()
                _sync(device)
                ts.append(1e3 * (now() - t0))
    return statistics.median(ta), statistics.median(tb)


def make_calls(
    render: Callable[..., RenderOutput],
    scene: dict[str, torch.Tensor],
    vm: torch.Tensor,
    K: torch.Tensor,
    size: int,
    device: str,
) -> tuple[Callable[[], None], Callable[[], None]]:
    """(forward, forward+backward) closures; the backward uses a fixed random cotangent."""
    leaves = {k: v.to(device).requires_grad_(True) for k, v in scene.items()}
    vm, K = vm.to(device), K.to(device)
    C = vm.shape[0]
    gen = torch.Generator().manual_seed(1)
    w_col = torch.randn(C, size, size, 3, generator=gen).to(device)
    w_dep = torch.randn(C, size, size, 1, generator=gen).to(device)
    order = ("means", "quats", "scales", "opacities", "colors")

    def fwd() -> None:
        with torch.no_grad():
            render(*(leaves[k] for k in order), vm, K, size, size)

    def fwd_bwd() -> None:
        out = render(*(leaves[k] for k in order), vm, K, size, size)
        loss = (out.colors * w_col).sum() + (out.depths * w_dep).sum() + out.alphas.sum()
        loss.backward()
        for v in leaves.values():
            v.grad = None

    return fwd, fwd_bwd


def run_table(
    title: str,
    names: tuple[str, str],
    renders: tuple[Callable, Callable],
    cases: list[tuple[int, int, bool]],
    device: str,
    repeats: int,
    ref_repeats: int,
    clock: str = "wall",
    records: list[dict] | None = None,
) -> list[str]:
    a, b = names
    head = (
        f"| N | image | C | {a} fwd ms | {b} fwd ms | fwd ratio | {a} fwd+bwd ms | {b} fwd+bwd ms "
        "| fwd+bwd ratio |"
    )
    lines = [f"### {title} ({clock} clock, median)", "", head, "|" + "---|" * 9]
    print("\n".join(lines), flush=True)
    for n, size, stereo in cases:
        scene = head_scene(n)
        vm, K = cameras(size, stereo)
        fa, fba = make_calls(renders[0], scene, vm, K, size, device)
        fb, fbb = make_calls(renders[1], scene, vm, K, size, device)
        t_fa, t_fb = time_pair(fa, fb, device, ref_repeats, repeats, clock)
        t_fba, t_fbb = time_pair(fba, fbb, device, ref_repeats, repeats, clock)
        row = (
            f"| {n // 1000}k | {size}x{size} | {vm.shape[0]} | {t_fa:.1f} | {t_fb:.1f} | {t_fa / t_fb:.1f}x "
            f"| {t_fba:.1f} | {t_fbb:.1f} | {t_fba / t_fbb:.1f}x |"
        )
        print(row, flush=True)
        lines.append(row)
        if records is not None:  # raw figures for benchmarks/results/
            records.append(
                {
                    "table": title,
                    "device": device,
                    "clock": clock,
                    "n": n,
                    "size": size,
                    "cameras": vm.shape[0],
                    f"{a}_fwd_ms": t_fa,
                    f"{b}_fwd_ms": t_fb,
                    f"{a}_fwd_bwd_ms": t_fba,
                    f"{b}_fwd_bwd_ms": t_fbb,
                }
            )
    return lines


def metadata(device: str) -> str:
    from _common import cpu_name  # benchmarks/ is first on sys.path

    cpu = cpu_name()
    parts = [
        f"date {datetime.date.today().isoformat()}",
        f"cpu {cpu} ({os.cpu_count()} logical cores)",
        f"torch {torch.__version__}, torch threads {torch.get_num_threads()}",
        f"load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "",
    ]
    if device == "cuda":
        parts.append(f"gpu {torch.cuda.get_device_name()}")
    return "; ".join(p for p in parts if p)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="timed calls per kernel measurement")
    p.add_argument("--ref-repeats", type=int, default=3, help="timed calls per reference measurement")
    p.add_argument("--quick", action="store_true", help="only the smallest case (smoke test)")
    p.add_argument("--gpu", action="store_true", help="also CUDA kernels vs gsplat")
    p.add_argument("--threads", type=int, default=0, help="torch/OpenMP threads (default: torch's choice)")
    p.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall-clock time, or this process's CPU time (load-robust with --threads 1)",
    )
    args = p.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if _cuda_ext.cpu_module() is None:
        sys.exit("the CPU kernels could not be built; nothing to benchmark")
    print(metadata("cpu"), "\n")
    records: list[dict] = []
    cases = [(20_000, 256, False), (20_000, 512, False), (100_000, 256, False), (100_000, 512, False)]
    run_table(
        "CPU: C++/OpenMP kernels vs PyTorch reference",
        ("torch", "cpu"),
        (rasterize_torch, _cuda_ext.rasterize_kernels),
        cases[:1] if args.quick else cases,
        "cpu",
        args.repeats,
        args.ref_repeats,
        args.clock,
        records,
    )

    if args.gpu:
        if not torch.cuda.is_available():
            sys.exit("--gpu: CUDA is not available")
        if _cuda_ext.cuda_module() is None:
            sys.exit("--gpu: the CUDA kernels could not be built")
        ours: Callable = _cuda_ext.rasterize_kernels
        other: Callable = rasterize_gsplat if gsplat_available() else rasterize_torch
        print("\n" + metadata("cuda") + "\n")
        gcases = [(n, s, st) for n in (100_000, 500_000) for s in (512, 1024) for st in (False, True)]
        run_table(
            "GPU: our CUDA kernels vs " + ("gsplat" if other is rasterize_gsplat else "torch reference"),
            ("gsplat" if other is rasterize_gsplat else "torch", "cuda"),
            (other, ours),
            gcases[:1] if args.quick else gcases,
            "cuda",
            max(args.repeats, 10),
            max(args.repeats, 10),
            records=records,
        )
    from _common import write_results  # benchmarks/ is first on sys.path

    write_results("bench_rasterizer", {"args": vars(args), "rows": records})


if __name__ == "__main__":
    main()
