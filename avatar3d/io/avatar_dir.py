"""The avatar directory format (version 1).

```
AVATAR_DIR/
  avatar.json          format name and version, image size, intrinsics, rest camera, fps, metrics
  config.yaml          the full AvatarConfig it was trained with
  model.safetensors    Gaussians + networks (state dict; no pickle anywhere)
  track.safetensors    head_poses (T, 4, 4) and blink (T,) of the training clip, for pose="track"
  background.png       the capture's background plate at the training resolution
```
Written atomically (temporary sibling, renamed at the end); loading validates everything and raises
:class:`~avatar3d.errors.FormatError` naming what is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import FormatError
from .atomic import atomic_dir

FORMAT_NAME = "avatar3d-avatar"
FORMAT_VERSION = 1
FILES = ("avatar.json", "config.yaml", "model.safetensors", "track.safetensors", "background.png")


def write_avatar_dir(
    path: str | Path,
    meta: dict[str, Any],
    config_yaml: str,
    state: dict[str, torch.Tensor],
    track: dict[str, torch.Tensor],
    background: np.ndarray,  # (H, W, 3) uint8
) -> Path:
    import cv2

    path = Path(path)
    with atomic_dir(path) as tmp:
        tmp = Path(tmp)
        m = dict(meta, format=FORMAT_NAME, version=FORMAT_VERSION)
        (tmp / "avatar.json").write_text(json.dumps(m, indent=2))
        (tmp / "config.yaml").write_text(config_yaml)
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp / "model.safetensors")
        )
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in track.items()}, str(tmp / "track.safetensors")
        )
        ok = cv2.imwrite(str(tmp / "background.png"), cv2.cvtColor(background, cv2.COLOR_RGB2BGR))
        if not ok:
            raise FormatError(f"could not write the background plate into {path}")
    return path


def read_avatar_dir(path: str | Path):
    """Returns (meta, config_yaml, state, track, background uint8 (H, W, 3))."""
    import cv2

    path = Path(path)
    if not path.exists():
        raise FormatError(f"avatar directory not found: {path}")
    if not path.is_dir():
        raise FormatError(f"{path} is not an avatar directory")
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise FormatError(f"{path} is not a complete avatar directory: missing {', '.join(missing)}")
    try:
        meta = json.loads((path / "avatar.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise FormatError(f"{path / 'avatar.json'} is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise FormatError(f"{path} is not an avatar3d avatar (avatar.json has no format '{FORMAT_NAME}')")
    if meta.get("version") != FORMAT_VERSION:
        raise FormatError(
            f"{path}: avatar format version {meta.get('version')} is not supported (expected {FORMAT_VERSION})"
        )
    for key in ("width", "height", "K", "rest_viewmat", "fps", "n_mels"):
        if key not in meta:
            raise FormatError(f"{path / 'avatar.json'} lacks the key '{key}'")
    try:
        state = load_file(str(path / "model.safetensors"))
        track = load_file(str(path / "track.safetensors"))
    except (SafetensorError, OSError, ValueError) as e:
        raise FormatError(f"{path}: corrupt weights file ({str(e).splitlines()[0]})") from None
    for key in ("means", "log_scales", "quats", "opacity_logits", "color_logits", "group"):
        if key not in state:
            raise FormatError(f"{path / 'model.safetensors'} lacks the tensor '{key}'")
    n = state["means"].shape[0]
    for key in ("log_scales", "quats", "opacity_logits", "color_logits", "group"):
        if state[key].shape[0] != n:
            raise FormatError(
                f"{path / 'model.safetensors'}: '{key}' has {state[key].shape[0]} rows, expected {n}"
            )
    for key in ("head_poses", "blink"):
        if key not in track:
            raise FormatError(f"{path / 'track.safetensors'} lacks the tensor '{key}'")
    bg = cv2.imread(str(path / "background.png"), cv2.IMREAD_COLOR)
    if bg is None:
        raise FormatError(f"{path / 'background.png'} is not a readable image")
    bg = cv2.cvtColor(bg, cv2.COLOR_BGR2RGB)
    return meta, (path / "config.yaml").read_text(), state, track, bg
