"""Reading an avatar directory into its parts: validated, migrated, the model built from the weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from ..config import AvatarConfig
from ..errors import ConfigError, FormatError
from ..io.avatar_dir import read_avatar_dir, write_avatar_dir
from ..io.meta import AvatarMeta
from ..io.migrations import migrate
from ..models.gaussian_avatar import GaussianAvatar

DEFAULT_EXPRESSION_DIMS = 16  # expression basis size of avatars saved without one


@dataclass
class AvatarFiles:
    """An avatar directory's contents."""

    model: GaussianAvatar
    config: AvatarConfig
    meta: AvatarMeta
    track: dict[str, torch.Tensor]  # head_poses (T, 4, 4), blink (T,)
    background: np.ndarray  # (H, W, 3) uint8


def _parse_config(text: str, where: str) -> dict:
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise FormatError(f"{where} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise FormatError(f"{where} must hold a mapping")
    return raw


def read_avatar(path: str | Path) -> AvatarFiles:
    """Read an avatar directory (any supported format version); a one-line FormatError when it is
    not one. Nothing in it is executed (see :func:`avatar3d.io.avatar_dir.read_avatar_dir`)."""
    meta_d, cfg_text, state, track, bg = read_avatar_dir(path)
    raw = _parse_config(cfg_text, f"{path}/config.yaml")
    meta_d, raw = migrate(meta_d, raw, Path(path))
    try:
        cfg = AvatarConfig.from_dict(raw, where=f"{path}/config.yaml")
    except ConfigError as e:
        raise FormatError(str(e)) from None
    meta = AvatarMeta.from_dict(meta_d)
    n_expr = int(state["expr_basis"].shape[0]) if "expr_basis" in state else DEFAULT_EXPRESSION_DIMS
    model = GaussianAvatar(
        cfg.model,
        state["means"].shape[0],
        n_mels=meta.n_mels - meta.n_visemes,
        n_expr=n_expr,
        n_visemes=meta.n_visemes,
    )
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise FormatError(f"{path}: weights do not match its config ({str(e).splitlines()[0]})") from None
    return AvatarFiles(model, cfg, meta, track, bg)


def write_avatar(path: str | Path, parts: AvatarFiles) -> Path:
    """Write an avatar directory (atomically; safetensors, no pickle) at the current format version."""
    return write_avatar_dir(
        path,
        parts.meta.to_dict(),
        parts.config.to_yaml(),
        parts.model.state_dict(),
        parts.track,
        parts.background,
    )


__all__ = ["AvatarFiles", "read_avatar", "write_avatar"]
