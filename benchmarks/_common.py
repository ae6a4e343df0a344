"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<script>.py``).

Every script writes its raw figures with :func:`write_results`: one JSON file under
``benchmarks/results/`` holding the command, the machine, the date, the git commit and the results,
so a figure quoted in BENCHMARKS.md can be traced to the run that produced it.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def config_overrides(pairs: list[str]) -> dict:
    """``--set KEY=VALUE ...`` as a dict, each value parsed as YAML (``false``, ``30``, ``[1, 2]``)."""
    import yaml

    out = {}
    for p in pairs:
        k, sep, v = p.partition("=")
        if not sep or not k:
            sys.exit(f"--set wants KEY=VALUE, got {p!r}")
        out[k] = yaml.safe_load(v)
    return out


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, load, Python, torch, GPU."""
    cpu = cpu_name()
    info: dict[str, Any] = {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    torch = sys.modules.get("torch")  # only described when the benchmark imported it
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
            info["cuda"] = torch.version.cuda
    return info


def git_state() -> dict[str, Any]:
    """The checkout's commit and whether it had uncommitted changes (None outside a git checkout)."""

    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def _jsonable(x: Any) -> Any:
    """numpy scalars and arrays, paths, tuples and non-finite floats as plain JSON values."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "tolist"):  # numpy / torch scalars and arrays
        return _jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def _command() -> str:
    """This process's command line, the script relative to the repository when it lies inside it."""
    argv = list(sys.argv) or [""]
    script = Path(argv[0]).resolve() if argv[0] else None
    if script is not None and script.is_relative_to(REPO):
        argv[0] = str(script.relative_to(REPO))
    return shlex.join(["python", *argv])


def write_results(name: str, results: Any, path: Path | None = None) -> Path:
    """Write ``results`` with the run's metadata as JSON; returns the file.

    Default file: ``benchmarks/results/<name>-<UTC date and time>.json``. Written to a temporary
    file first and renamed, so a killed run leaves no half-written file.
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    payload = {
        "benchmark": name,
        "command": _command(),
        "date_utc": now.isoformat(timespec="seconds"),
        "git": git_state(),
        "machine": machine(),
        "results": _jsonable(results),
    }
    path = Path(path) if path is not None else RESULTS / f"{name}-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)
    print(f"raw results: {path}", flush=True)
    return path
