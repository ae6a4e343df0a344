"""Everything that needs a GPU, in one run of a few minutes (``bash benchmarks/gpu_check.sh``).

Stages, each timed and recorded even when an earlier one failed:

1. ``build``: the JIT build of our CUDA rasteriser (``avatar3d/_kernels``).
2. ``tests``: the ``gpu`` tests of ``tests/render/test_kernels.py`` (CUDA kernels against the PyTorch
   reference, forward and backward, float32 and float64; gsplat against the reference).
3. ``raster``: our CUDA kernels against gsplat (when importable), forward and forward+backward,
   100k and 500k Gaussians, 512² and 1024², mono and stereo pairs, with their agreement. The scene
   and timing method are those of ``benchmarks/bench_rasterizer.py``.
4. ``fit``: ``avatar3d fit`` of one shared clip (``../shared/data/talk_b.mp4``) with the ``quality``
   preset and a bounded number of steps, then ``avatar3d eval --heldout-only`` on it.

Writes one JSON (default ``benchmarks/results/gpu_check.json``) and prints a table. Without CUDA it
exits 2 with one line, before any work. ``--dry-run`` runs the same code on CPU at toy sizes
(the CPU kernels against the PyTorch reference, a 2-second synthetic clip with the ``fast``
preset), so this script can be checked on a machine without a GPU.

    python benchmarks/gpu_check.py [--dry-run] [--steps 2000] [--clip talk_b]
        [--stages build,tests,raster,fit] [--budget 470] [--out FILE]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(HERE))  # _common, bench_rasterizer

DATA = REPO.parent / "shared" / "data"
STAGES = ("build", "tests", "raster", "fit")
CLI = "import sys; from avatar3d.cli import main; sys.exit(main(sys.argv[1:]))"


def _tail(text: str, n: int = 1500) -> str:
    return text[-n:] if text else ""


def stage_build(device: str) -> dict[str, Any]:
    """Build (or load) the kernels for ``device``; the first build on a machine takes a minute or two."""
    from avatar3d.render import _cuda_ext

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mod = _cuda_ext.cuda_module() if device == "cuda" else _cuda_ext.cpu_module()
    return {
        "ok": mod is not None,
        "build_dir": str(_cuda_ext.build_dir(device)),
        "warnings": [str(w.message) for w in caught],
    }


def stage_tests(dry_run: bool, timeout: float) -> dict[str, Any]:
    """The kernel tests in a subprocess; counts from its JUnit XML."""
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        junit = Path(tmp) / "kernels.xml"
        select = ["-k", "constants_header or import_does_not_compile"] if dry_run else ["-m", "gpu"]
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/render/test_kernels.py",
            *select,
            f"--junitxml={junit}",
        ]
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        if junit.is_file():
            suite = ET.parse(junit).getroot()
            suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
            counts = {k: int(suite.get(k, 0)) for k in counts}
    bad = counts["failures"] + counts["errors"]
    out = {
        "ok": res.returncode == 0 and bad == 0,
        "passed": counts["tests"] - bad - counts["skipped"],
        "failed": bad,
        "skipped": counts["skipped"],
        "command": " ".join(cmd[2:]),
    }
    if not out["ok"]:
        out["output_tail"] = _tail(res.stdout + res.stderr)
    return out


def _agreement(a, b, scene, vm, K, size: int, device: str) -> dict[str, float]:
    """Mean and max absolute difference of colours and alphas between two rasterisers."""
    import torch

    args = [scene[k].to(device) for k in ("means", "quats", "scales", "opacities", "colors")]
    with torch.no_grad():
        ra = a(*args, vm.to(device), K.to(device), size, size)
        rb = b(*args, vm.to(device), K.to(device), size, size)
    dc, da = (ra.colors - rb.colors).abs(), (ra.alphas - rb.alphas).abs()
    return {
        "colors_mean_abs": dc.mean().item(),
        "colors_max_abs": dc.max().item(),
        "alphas_mean_abs": da.mean().item(),
    }


def stage_raster(device: str, dry_run: bool, repeats: int) -> dict[str, Any]:
    """Our kernels against gsplat (dry run: the CPU kernels against the PyTorch reference)."""
    import torch
    from bench_rasterizer import cameras, head_scene, make_calls, time_pair

    from avatar3d.render import _cuda_ext
    from avatar3d.render._gsplat import gsplat_available, rasterize_gsplat
    from avatar3d.render.rasterize import rasterize_torch

    ours = _cuda_ext.rasterize_kernels
    if dry_run:
        other, other_name = rasterize_torch, "torch"
        cases = [(2_000, 64, False), (2_000, 64, True)]
    else:
        other, other_name = (rasterize_gsplat, "gsplat") if gsplat_available() else (None, None)
        cases = [(n, s, st) for n in (100_000, 500_000) for s in (512, 1024) for st in (False, True)]
    rows = []
    for n, size, stereo in cases:
        scene = head_scene(n)
        vm, K = cameras(size, stereo)
        row: dict[str, Any] = {"n": n, "size": size, "cameras": int(vm.shape[0])}
        f_ours, fb_ours = make_calls(ours, scene, vm, K, size, device)
        if other is None:
            row["ours_fwd_ms"], row["ours_fwd_bwd_ms"] = time_pair(f_ours, fb_ours, device, repeats, repeats)
        else:
            f_o, fb_o = make_calls(other, scene, vm, K, size, device)
            row[f"{other_name}_fwd_ms"], row["ours_fwd_ms"] = time_pair(f_o, f_ours, device, repeats, repeats)
            row[f"{other_name}_fwd_bwd_ms"], row["ours_fwd_bwd_ms"] = time_pair(
                fb_o, fb_ours, device, repeats, repeats
            )
            row.update(_agreement(ours, other, scene, vm, K, size, device))
        rows.append(row)
        if device == "cuda":
            row["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.empty_cache()
    return {"ok": True, "against": other_name or "none (gsplat not importable)", "rows": rows}


def _cli(args: list[str], timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-c", CLI, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return res, time.perf_counter() - t0


def stage_fit(dry_run: bool, clip: str, steps: int, workdir: Path, deadline: float) -> dict[str, Any]:
    """``avatar3d fit`` (quality preset; dry run: fast preset on a tiny synthetic clip), then its eval,
    both killed at ``deadline`` (a ``time.perf_counter()`` value; the eval keeps the last minute)."""
    import json

    if dry_run:
        from avatar3d.synthetic import make_talking_video

        video = workdir / "synthetic.mp4"
        make_talking_video(video, seconds=2.0, fps=25, size=128, seed=0)
        preset, eval_extra = "fast", ["--no-views"]
    else:
        video = DATA / f"{clip}.mp4"
        if not video.is_file():
            return {"ok": False, "error": f"{video} is absent (the fit stage needs ../shared/data)"}
        preset, eval_extra = "quality", []
    out: dict[str, Any] = {"clip": str(video), "preset": preset, "steps": steps}
    fit, out["fit_s"] = _cli(
        [
            "fit",
            str(video),
            "-o",
            str(workdir / "avatar"),
            "--preset",
            preset,
            "--steps",
            str(steps),
            "--workdir",
            str(workdir / "work"),
        ],
        max(30.0, deadline - time.perf_counter() - 60),
    )
    if fit.returncode != 0:
        return {**out, "ok": False, "error": "fit failed", "output_tail": _tail(fit.stdout + fit.stderr)}
    report = workdir / "eval.json"
    ev, out["eval_s"] = _cli(
        [
            "eval",
            str(workdir / "avatar"),
            "--video",
            str(video),
            "--heldout-only",
            "-o",
            str(report),
            *eval_extra,
        ],
        max(30.0, deadline - time.perf_counter()),
    )
    if ev.returncode != 0 or not report.is_file():
        return {**out, "ok": False, "error": "eval failed", "output_tail": _tail(ev.stdout + ev.stderr)}
    rep = json.loads(report.read_text())
    out["metrics"] = rep.get("metrics", {})
    out["report"] = rep
    return {**out, "ok": True}


def _num(v: Any) -> str:
    if isinstance(v, dict):  # summarised per-frame figure
        v = v.get("mean", v.get("median"))
    return f"{v:.4g}" if isinstance(v, (int, float)) else str(v)


def table(result: dict[str, Any]) -> str:
    """The run as Markdown: one line per stage, then the rasteriser rows."""
    lines = ["| stage | ok | seconds | figures |", "|---|---|---|---|"]
    for name in STAGES:
        st = result["stages"].get(name)
        if st is None:
            continue
        figures = ""
        if name == "tests":
            figures = f"{st.get('passed')} passed, {st.get('failed')} failed, {st.get('skipped')} skipped"
        elif name == "fit" and st.get("metrics"):
            figures = ", ".join(f"{k} {_num(st['metrics'].get(k))}" for k in ("psnr", "ssim", "lpips", "lmd"))
        elif name == "build":
            figures = st.get("build_dir", "")
        elif name == "raster" and st.get("rows"):
            figures = f"{len(st['rows'])} cases against {st.get('against')}"
        figures = figures or st.get("error", "")
        lines.append(
            f"| {name} | {'yes' if st.get('ok') else 'NO'} | {st.get('seconds', 0):.1f} | {figures} |"
        )
    raster = result["stages"].get("raster", {})
    rows = raster.get("rows") or []
    if rows:
        keys = [k for k in rows[0] if k.endswith("_ms") or k.startswith("colors_mean")]
        lines += [
            "",
            f"Rasteriser against {raster.get('against')} (median ms):",
            "",
            "| N | image | cameras | " + " | ".join(keys) + " |",
            "|---|---|---|" + "---|" * len(keys),
        ]
        for r in rows:
            cells = " | ".join(_num(r.get(k)) for k in keys)
            lines.append(f"| {r['n'] // 1000}k | {r['size']}² | {r['cameras']} | {cells} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="run on CPU at toy sizes (checks this script)")
    ap.add_argument("--steps", type=int, default=None, help="fit steps (default 2000; dry run 4)")
    ap.add_argument("--clip", default="talk_b", help="shared clip for the fit stage (default talk_b)")
    ap.add_argument(
        "--stages", default=",".join(STAGES), help="comma-separated subset of " + ",".join(STAGES)
    )
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per rasteriser figure")
    ap.add_argument(
        "--budget",
        type=float,
        default=470.0,
        help="seconds for the whole run; the fit and eval are cut at its end (default 470)",
    )
    ap.add_argument(
        "--out", type=Path, default=None, help="JSON file (default benchmarks/results/gpu_check.json)"
    )
    a = ap.parse_args()
    stages = [s for s in a.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        print(
            f"gpu_check: error: unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}",
            file=sys.stderr,
        )
        return 2
    import torch

    if not a.dry_run and not torch.cuda.is_available():
        print(
            f"gpu_check: error: CUDA is not available to torch {torch.__version__} (a CUDA build of torch "
            "and a GPU are needed; --dry-run checks this script on CPU)",
            file=sys.stderr,
        )
        return 2
    device = "cpu" if a.dry_run else "cuda"
    steps = a.steps or (4 if a.dry_run else 2000)
    repeats = a.repeats or (2 if a.dry_run else 10)
    out = a.out or HERE / "results" / ("gpu_check-dry-run.json" if a.dry_run else "gpu_check.json")
    result: dict[str, Any] = {"dry_run": a.dry_run, "device": device, "stages": {}}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_fit_") as work:
        for name in stages:
            t0 = time.perf_counter()
            print(f"gpu_check: {name} ...", flush=True)
            try:
                if name == "build":
                    st = stage_build(device)
                elif name == "tests":
                    st = stage_tests(a.dry_run, timeout=300)
                elif name == "raster":
                    st = stage_raster(device, a.dry_run, repeats)
                else:
                    st = stage_fit(a.dry_run, a.clip, steps, Path(work), t_start + a.budget)
            except Exception as exc:  # noqa: BLE001 - record the failure, run the other stages
                st = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
            st["seconds"] = time.perf_counter() - t0
            result["stages"][name] = st
    result["total_seconds"] = time.perf_counter() - t_start
    result["ok"] = all(s.get("ok") for s in result["stages"].values())
    result["within_budget"] = result["total_seconds"] <= a.budget
    from _common import write_results

    write_results("gpu_check", result, path=out)
    print(table(result))
    print(
        f"\ngpu_check: {'all stages passed' if result['ok'] else 'FAILED'} in {result['total_seconds']:.0f} s"
    )
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
