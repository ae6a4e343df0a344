"""The avatar directory format (version 2; version 1 still loads, see :mod:`.migrations`).

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
import math
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..errors import FormatError
from .atomic import atomic_dir
from .meta import FORMAT_NAME, FORMAT_VERSION
from .migrations import SUPPORTED_VERSIONS

FILES = ("avatar.json", "config.yaml", "model.safetensors", "track.safetensors", "background.png")


def write_avatar_dir(
    path: str | Path,
    meta: dict[str, Any],
    config_yaml: str,
    state: dict[str, torch.Tensor],
    track: dict[str, torch.Tensor],
    background: np.ndarray,  # (H, W, 3) uint8
) -> Path:
    path = Path(path)
    with atomic_dir(path, kind="avatar") as tmp:
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
        _usual_permissions(tmp)
    return path


# Resource limits, checked before anything is read into memory: a small file from a stranger must
# not make the library allocate gigabytes.
MAX_JSON_BYTES = 16 << 20
MAX_CONFIG_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 2 << 30
MAX_GAUSSIANS = 2_000_000
MAX_TRACK_FRAMES = 1_000_000
MIN_IMAGE_SIDE, MAX_IMAGE_SIDE = 16, 8192  # pixels
MAX_FPS = 240
MAX_AUDIO_CHANNELS = 1024  # feature channels per audio step (n_mels)
MAX_AUDIO_WINDOW = 256  # audio steps per frame window
MAX_SPEECH_DIM = 8192  # length of a speech model's normalisation vectors
MAX_IMAGE_BYTES = 256 << 20


def _file(path: Path, name: str, limit: int) -> Path:
    """``path/name`` as a regular file inside the directory (no link leaving it), at most ``limit`` bytes."""
    f = path / name
    if f.is_symlink():
        target = f.resolve()
        if path.resolve() not in target.parents:
            raise FormatError(f"{f} is a link out of the avatar directory; refusing to follow it")
    if not f.is_file():
        raise FormatError(f"{path} is not a complete avatar directory: missing {name}")
    size = f.stat().st_size
    if size > limit:
        raise FormatError(f"{f} is {size} bytes, over the limit of {limit} for this file")
    return f


def _number(meta: dict, key: str, where: Path, lo: float, hi: float, integer: bool = False) -> None:
    v = meta.get(key)
    ok = isinstance(v, int if integer else (int, float)) and not isinstance(v, bool)
    if not ok or not math.isfinite(v) or not lo <= v <= hi:
        kind = "an integer" if integer else "a number"
        raise FormatError(f"{where}: '{key}' must be {kind} in {lo:g}..{hi:g}, got {v!r}")


def _matrix(meta: dict, key: str, where: Path, shape: tuple[int, int]) -> np.ndarray:
    try:
        m = np.asarray(meta.get(key), dtype=np.float64)
    except (TypeError, ValueError):
        m = np.zeros(0)
    if m.shape != shape or not np.isfinite(m).all():
        raise FormatError(f"{where}: '{key}' must be a finite {shape[0]}x{shape[1]} matrix")
    return m


def validate_meta(meta: Any, where: Path) -> dict:
    """Check avatar.json's types and ranges (raises a one-line FormatError); returns it."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise FormatError(
            f"{where.parent} is not an avatar3d avatar (avatar.json has no format '{FORMAT_NAME}')"
        )
    if meta.get("version") not in SUPPORTED_VERSIONS:
        raise FormatError(
            f"{where.parent}: avatar format version {meta.get('version')} is not supported "
            f"(this avatar3d reads {', '.join(map(str, SUPPORTED_VERSIONS))})"
        )
    for key in ("width", "height", "K", "rest_viewmat", "fps", "n_mels"):
        if key not in meta:
            raise FormatError(f"{where} lacks the key '{key}'")
    _number(meta, "width", where, MIN_IMAGE_SIDE, MAX_IMAGE_SIDE, integer=True)
    _number(meta, "height", where, MIN_IMAGE_SIDE, MAX_IMAGE_SIDE, integer=True)
    _number(meta, "fps", where, 1, MAX_FPS)
    _number(meta, "n_mels", where, 1, MAX_AUDIO_CHANNELS, integer=True)
    if "audio_window" in meta:
        _number(meta, "audio_window", where, 1, MAX_AUDIO_WINDOW, integer=True)
    K = _matrix(meta, "K", where, (3, 3))
    if not (K[0, 0] > 0 and K[1, 1] > 0):
        raise FormatError(f"{where}: 'K' must have positive focal lengths")
    _matrix(meta, "rest_viewmat", where, (4, 4))
    sm = meta.get("speech_model")
    if sm is not None:
        if not isinstance(sm, dict) or not all(isinstance(sm.get(k), list) for k in ("mean", "std")):
            raise FormatError(f"{where}: 'speech_model' must record the feature 'mean' and 'std' lists")
        for k in ("mean", "std"):
            v = np.asarray(sm[k], dtype=object)
            if (
                v.ndim != 1
                or not 1 <= len(v) <= MAX_SPEECH_DIM
                or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v
                )
            ):
                raise FormatError(f"{where}: 'speech_model.{k}' must be 1..8192 finite numbers")
    return meta


def _tensor_shapes(f: Path, limit_rows: int) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a safetensors file, read from its header only (nothing allocated)."""
    if not os.access(f, os.R_OK):
        raise FormatError(f"{f}: permission denied (the file is not readable by this user)")
    try:
        with safe_open(str(f), "pt") as st:
            shapes = {k: tuple(st.get_slice(k).get_shape()) for k in st.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise FormatError(f"{f}: corrupt weights file ({str(e).splitlines()[0]})") from None
    for k, shp in shapes.items():
        if shp and shp[0] > limit_rows:
            raise FormatError(f"{f}: '{k}' has {shp[0]} rows, over the limit of {limit_rows}")
    return shapes


def _read_image_checked(f: Path) -> np.ndarray:
    """Decode a PNG after checking its declared size from the header (no decompression bomb)."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # only the header is read here
    try:
        with Image.open(f) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError):
        raise FormatError(f"{f} is not a readable image") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if not (1 <= w <= MAX_IMAGE_SIDE and 1 <= h <= MAX_IMAGE_SIDE):
        raise FormatError(f"{f} is {w}x{h} px, over the limit of {MAX_IMAGE_SIDE} px a side")
    bg = cv2.imread(str(f), cv2.IMREAD_COLOR)
    if bg is None:
        raise FormatError(f"{f} is not a readable image")
    return cv2.cvtColor(bg, cv2.COLOR_BGR2RGB)


def _usual_permissions(directory: Path) -> None:
    """safetensors writes owner-only files; give every file the permissions the user's umask gives
    new files, so an avatar can be shared like any other folder."""
    umask = os.umask(0)
    os.umask(umask)
    for f in directory.iterdir():
        if f.is_file():
            f.chmod(0o666 & ~umask)


def read_avatar_dir(path: str | Path):
    """Returns (meta, config_yaml, state, track, background uint8 (H, W, 3)).

    The directory is untrusted data: every file must be a regular file inside it (links that leave
    it are refused), sizes are checked against limits before anything is read, avatar.json's types
    and ranges are validated, and the weights' shapes are read from their headers before loading.
    Nothing in it is ever executed."""
    path = Path(path)
    if not path.exists():
        raise FormatError(f"avatar directory not found: {path}")
    if not path.is_dir():
        raise FormatError(f"{path} is not an avatar directory")
    meta_f = _file(path, "avatar.json", MAX_JSON_BYTES)
    try:
        meta = json.loads(meta_f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise FormatError(f"{meta_f} is not valid JSON") from None
    validate_meta(meta, meta_f)
    cfg_f = _file(path, "config.yaml", MAX_CONFIG_BYTES)
    model_f = _file(path, "model.safetensors", MAX_WEIGHTS_BYTES)
    track_f = _file(path, "track.safetensors", MAX_WEIGHTS_BYTES)
    bg_f = _file(path, "background.png", MAX_IMAGE_BYTES)
    shapes = _tensor_shapes(model_f, MAX_GAUSSIANS)
    for key in ("means", "log_scales", "quats", "opacity_logits", "color_logits", "group"):
        if key not in shapes:
            raise FormatError(f"{model_f} lacks the tensor '{key}'")
    n = shapes["means"][0]
    for key in ("log_scales", "quats", "opacity_logits", "color_logits", "group"):
        if shapes[key][0] != n:
            raise FormatError(f"{model_f}: '{key}' has {shapes[key][0]} rows, expected {n}")
    tshapes = _tensor_shapes(track_f, MAX_TRACK_FRAMES)
    for key in ("head_poses", "blink"):
        if key not in tshapes:
            raise FormatError(f"{track_f} lacks the tensor '{key}'")
    try:
        state = load_file(str(model_f))
        track = load_file(str(track_f))
    except (SafetensorError, OSError, ValueError) as e:
        raise FormatError(f"{path}: corrupt weights file ({str(e).splitlines()[0]})") from None
    for name, tensors in (("model", state), ("track", track)):
        for k, v in tensors.items():
            if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                raise FormatError(f"{path / (name + '.safetensors')}: '{k}' holds NaN or infinite values")
    bg = _read_image_checked(bg_f)
    try:
        cfg_text = cfg_f.read_text()
    except UnicodeDecodeError:
        raise FormatError(f"{cfg_f} is not a text file") from None
    return meta, cfg_text, state, track, bg
