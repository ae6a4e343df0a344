"""Every format migration of the avatar directory, in one place.

An avatar directory saved by an older version still loads: :func:`migrate` brings its avatar.json
mapping and its config.yaml mapping up to :data:`avatar3d.io.meta.FORMAT_VERSION`, step by step.
Add a step here (and bump the version) whenever a saved key changes meaning or appears.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .meta import FORMAT_VERSION
from .watermark import avatar_id_from_file

SUPPORTED_VERSIONS = (1, 2)


def _v1_to_v2(meta: dict[str, Any], config: dict[str, Any], root: Path) -> None:
    """Version 1 made three keys optional; version 2 always writes them."""
    model = config.get("model") if isinstance(config.get("model"), dict) else None
    if "audio_front_end" not in meta:
        # saved before the speech front end: log-mel (or speech-model) features only, old mouth binding
        meta["audio_front_end"] = {
            "name": "mel" if not meta.get("speech_model") else "speech_model",
            "version": 1,
            "viseme_channels": 0,
        }
        if model is not None:
            model["visemes"], model["mouth_split"] = False, False
    if not isinstance(meta.get("avatar_id"), int) or not 0 <= meta["avatar_id"] < 2**32:
        meta["avatar_id"] = avatar_id_from_file(root / "model.safetensors")  # saved before ids existed
    meta.setdefault("source_size", None)


def _grid_octaves(config: dict[str, Any]) -> None:
    """Grids saved before sin/cos octaves were appended to the hash-grid encoding had none (a missing
    ``encoding`` key is handled by GaussianAvatar.load_state_dict, which reads it from the weights)."""
    model = config.get("model")
    if isinstance(model, dict) and model.get("encoding", "frequency") != "frequency":
        model.setdefault("grid_pe_freqs", 0)


def migrate(
    meta: dict[str, Any], config: dict[str, Any], root: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(avatar.json mapping, config.yaml mapping) of the directory ``root`` at the current version.
    Both mappings are updated in place and returned."""
    _grid_octaves(config)
    if meta.get("version", 1) < 2:
        _v1_to_v2(meta, config, root)
    meta["version"] = FORMAT_VERSION
    return meta, config


__all__ = ["SUPPORTED_VERSIONS", "migrate"]
