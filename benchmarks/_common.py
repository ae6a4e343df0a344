"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<script>.py``)."""

from __future__ import annotations

import sys


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
