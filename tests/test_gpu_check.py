"""benchmarks/gpu_check.sh: fails early and in one line without CUDA, and its Python runs on CPU
(``--dry-run``: the same stages at toy sizes), so the GPU check is not dead code between GPU runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _run(*args: str, python: str = sys.executable, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": python, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _one_error_line(res: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, (res.returncode, res.stdout[-500:], res.stderr[-500:])
    assert len(lines) == 1 and lines[0].startswith("gpu_check: error: "), res.stderr
    return lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_without_cuda_exits_2_in_one_line_before_any_work(tmp_path) -> None:
    out = tmp_path / "gpu_check.json"
    line = _one_error_line(_run("--out", str(out)))
    assert "CUDA" in line and "--dry-run" in line
    assert not out.exists()


def test_without_a_usable_python_says_how_to_set_up(tmp_path) -> None:
    line = _one_error_line(_run(python=str(tmp_path / "no-python")))
    assert 'pip install -e ".[cuda,test]"' in line


def test_unknown_stage_is_one_line(tmp_path) -> None:
    _one_error_line(_run("--dry-run", "--stages", "build,nonsense", "--out", str(tmp_path / "x.json")))


@pytest.mark.slow  # ~30 s: a subprocess that imports torch, loads the kernels and times the reference
def test_dry_run_builds_and_times_the_rasteriser_on_cpu(tmp_path) -> None:
    out = tmp_path / "gpu_check.json"
    res = _run("--dry-run", "--stages", "build,raster", "--out", str(out))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    payload = json.loads(out.read_text())
    result = payload["results"]
    assert payload["benchmark"] == "gpu_check" and payload["git"]["commit"]
    assert result["dry_run"] and result["ok"] and set(result["stages"]) == {"build", "raster"}
    rows = result["stages"]["raster"]["rows"]
    assert [r["cameras"] for r in rows] == [1, 2]  # mono and a stereo pair
    for r in rows:
        assert r["ours_fwd_ms"] > 0 and r["ours_fwd_bwd_ms"] > 0 and r["torch_fwd_ms"] > 0
        assert r["colors_mean_abs"] < 1e-4  # CPU kernels against the reference
    assert "| raster | yes |" in res.stdout and "| 2k | 64² | 2 |" in res.stdout


@pytest.mark.slow
def test_dry_run_of_every_stage(tmp_path) -> None:
    out = tmp_path / "gpu_check.json"
    res = _run("--dry-run", "--out", str(out), timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    stages = json.loads(out.read_text())["results"]["stages"]
    assert all(stages[s]["ok"] for s in ("build", "tests", "raster", "fit"))
    assert stages["tests"]["passed"] >= 2 and stages["tests"]["failed"] == 0
    assert "psnr" in stages["fit"]["metrics"]
