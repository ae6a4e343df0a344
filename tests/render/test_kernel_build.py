"""The kernels' JIT build: one build per machine and version, whatever ``ninja`` is on PATH.

The build folder is named by a hash of the sources, flags, torch, compiler and ninja
(:func:`avatar3d.render._cuda_ext.build_key`), not by the checkout's path, and the build always runs
the ``ninja`` package's binary. A second process that loads the kernels, with some other ``ninja``
first on PATH, must find the build and leave it untouched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from avatar3d.render import _cuda_ext

ROOT = Path(__file__).resolve().parents[2]


def test_kernel_sources_ship_inside_the_package() -> None:
    assert _cuda_ext.KERNELS == ROOT / "avatar3d" / "_kernels"
    for rel in _cuda_ext._SOURCES["cpu"] + _cuda_ext._SOURCES["cuda"] + _cuda_ext._HEADERS:
        assert (_cuda_ext.KERNELS / rel).is_file(), rel
    for src in ("cpu/raster_cpu.cpp", "cuda/raster_cuda.cu", "cuda/bindings.cpp"):  # one op header for both
        assert '#include "../include/ops.h"' in (_cuda_ext.KERNELS / src).read_text(), src


def test_build_key_follows_the_sources_not_the_checkout(tmp_path, monkeypatch) -> None:
    key = _cuda_ext.build_key("cpu", _cuda_ext.ninja_dir())
    copy = tmp_path / "elsewhere" / "_kernels"
    shutil.copytree(_cuda_ext.KERNELS, copy)
    monkeypatch.setattr(_cuda_ext, "KERNELS", copy)
    assert _cuda_ext.build_key("cpu", _cuda_ext.ninja_dir()) == key  # another checkout, same build
    header = copy / "include" / "raster.h"
    header.write_text(header.read_text() + "\n// changed\n")
    assert _cuda_ext.build_key("cpu", _cuda_ext.ninja_dir()) != key  # a header change is a new build


def test_build_key_follows_the_environment(monkeypatch) -> None:
    """Two virtual environments (same torch version, other install paths) never share a build folder:
    torch writes its header paths into the build files, so they would rebuild each other's build."""
    key = _cuda_ext.build_key("cpu", _cuda_ext.ninja_dir())
    monkeypatch.setattr(_cuda_ext.sys, "prefix", "/elsewhere/venv")
    assert _cuda_ext.build_key("cpu", _cuda_ext.ninja_dir()) != key


def test_build_key_follows_ninja(tmp_path) -> None:
    fake = tmp_path / "ninja"
    fake.write_text("#!/bin/sh\necho 0.0.1-other\n")
    fake.chmod(0o755)
    assert _cuda_ext.build_key("cpu", str(tmp_path)) != _cuda_ext.build_key("cpu", _cuda_ext.ninja_dir())


@pytest.mark.skipif(shutil.which("c++") is None, reason="needs a C++ compiler")
def test_second_load_does_not_rebuild_whatever_ninja_is_on_path(tmp_path) -> None:
    pytest.importorskip("ninja")  # the pinned ninja is the ninja package's (a declared dependency)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _cuda_ext.cpu_module() is not None, "the CPU rasteriser kernels did not build"
    where = _cuda_ext.build_dir("cpu")
    before = {p: p.stat().st_mtime_ns for p in where.rglob("*") if p.is_file() and p.name != "lock"}
    assert any(p.suffix == ".so" for p in before), f"no built module in {where}"

    decoy = tmp_path / "bin"  # another ninja, first on PATH: it must never run
    decoy.mkdir()
    marker = tmp_path / "decoy-ran"
    (decoy / "ninja").write_text(f"#!/bin/sh\ntouch {marker}\necho 1.0.0\nexit 1\n")
    (decoy / "ninja").chmod(0o755)
    env = {**os.environ, "PATH": f"{decoy}{os.pathsep}{os.environ.get('PATH', '')}"}
    code = (
        "import warnings; warnings.simplefilter('error'); "
        "from avatar3d.render import _cuda_ext as e; m = e.cpu_module(); "
        "print(e.build_dir('cpu')); print(m.__file__)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr[-2000:]
    folder, module = res.stdout.split()
    assert Path(folder) == where and Path(module).parent == where
    assert not marker.exists(), "the build ran the ninja found on PATH instead of the pinned one"
    after = {p: p.stat().st_mtime_ns for p in where.rglob("*") if p.is_file() and p.name != "lock"}
    changed = sorted(str(p.relative_to(where)) for p in before if after.get(p) != before[p])
    assert not changed, f"the second load rebuilt or rewrote: {changed}"
