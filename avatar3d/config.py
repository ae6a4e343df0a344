"""Typed configuration: YAML files mapped onto dataclasses; an unknown key is an error.

Presets live in ``configs/`` (installed as package data ``avatar3d/presets``): ``fast`` (CPU demo),
``default`` and ``quality`` (GPU). A user file is layered over a preset::

    preset: fast          # optional, default "default"
    train:
      steps: 2000
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

PRESETS = ("fast", "default", "quality")


@dataclass
class CaptureConfig:
    """Settings of the capture stage (:func:`avatar3d.capture.run_capture`); every field has a working default.

    Frames and storage:
        max_size: longest side in pixels of the stored images (frames are downscaled, never
            upscaled; sizes are rounded to even numbers).
        stride: keep every ``stride``-th frame of the video (the stored fps is ``fps / stride``).
        max_frames: stop after this many stored frames (``None``: the whole video). Audio is cut to
            the same span.
        jpeg_quality: quality of the stored ``images/*.jpg``.
        train_fraction: fraction of frames (from the start) in the training split; the rest is the
            held-out test part (the field's protocol holds out the last 1/11).

    Detection:
        max_num_faces: faces the landmarker looks for per frame (extra faces trigger a warning and
            the subject is kept by proximity to its previous position).
        min_detection_confidence, min_tracking_confidence: MediaPipe FaceMesh thresholds.
        landmark_tracking: run FaceMesh in its video mode, where the previous frame's landmarks
            place the next crop. Off (default), every frame is detected on its own: the crop then
            does not lag a turning head (docs/design/feature-tracks.md).
        reacquire_after_s: after the subject has been lost this long (seconds), any face may be
            taken as the subject again (largest / most central first).
        min_valid_fraction: raise :class:`NoFaceError` when fewer frames than this fraction (and
            fewer than one frame) show the subject.

    Rigid tracking:
        focal: a fixed focal length in pixels of the stored images (``None``: estimate it).
        focal_search: (min, max) of the focal search range as a multiple of the longest side.
        focal_prior_weight: weight of a weak prior pulling log-focal towards ``focal_prior`` (×
            longest side); keeps the focal plausible when the clip has too little head rotation or
            perspective to fix it (0.1: it decides where the search's cost is flat over the focal,
            e.g. without feature tracks).
        focal_frames: number of frames (evenly spaced) used for the focal search.
        smooth_rotation: weight of the squared frame-to-frame rotation acceleration (degrees)
            relative to the mean squared robust landmark error (pixels at 512 px).
        smooth_translation: same for the translation acceleration (millimetres).
        robust_scale_px: scale (pixels at 512 px) of the pseudo-Huber landmark loss.
        fit_iterations: L-BFGS iterations of the joint pose refinement (the focal stays the search's).
        feature_tracks: also track corners on the rigid part of the face (forehead, brows, nose,
            upper cheeks) by optical flow and fit them with the landmarks (``avatar3d/capture/feature_tracks.py``):
            they follow the skull where MediaPipe's points slide and carry the camera's perspective
            (docs/design/feature-tracks.md).
        track_refine: refine each optical-flow step against the patch where the track was first seen
            (affine warp, normalised brightness; :class:`avatar3d.capture.feature_tracks.PatchTemplates`),
            so that a track does not drift off its surface point. Off by default: it did not help the
            rotation or the focal and doubles the optical flow's time (docs/design/feature-tracks.md).
        track_weight: weight of the tracks' mean robust reprojection error relative to the
            landmarks'.
        track_robust_scale_px: scale (pixels at 512 px) of their pseudo-Huber loss.
        focal_track_weight: ``track_weight`` of the focal search (default: the pose fit's 30).
            Fitted alone, MediaPipe's points favour the shortest focal; the tracks carry the
            perspective, but their errors follow the head's turn too (docs/design/feature-tracks.md).
        canonical_iterations: alternations of (align all frames, re-estimate canonical shape).
        expression_dims: number of PCA expression coefficients per frame.

    Morphable model (optional, after the rigid tracking; see ``avatar3d/capture/face_model.py``):
        morphable: ``"none"`` (default), ``"open"`` (the per-subject open model built from the clip)
            or ``"flame"`` (a user-supplied FLAME file); the fit goes to ``morphable.safetensors``.
        flame_path: the FLAME ``.pkl`` / ``.npz`` (``None``: ``$AVATAR3D_FLAME_PATH``).
        flame_landmarks: its MediaPipe landmark embedding (``None``: ``$AVATAR3D_FLAME_LANDMARKS``).

    Audio:
        speech_model: a local speech model (Hugging Face HuBERT / wav2vec2 directory, TorchScript
            file or ``.pt2``; never downloaded, see ``avatar3d/audio/speech_model.py``). When set, its
            frame-aligned features go to ``audio.safetensors`` as ``speech_features`` (T, 16, D)
            next to the log-mel ``features``, and the trainer uses them. ``None``: log-mel only.

    Masks and background:
        mask_threshold: person-probability threshold of the selfie segmenter.
        background_frames: at most this many frames (evenly spaced) feed the background plate.
        background_margin: pixels within this fraction of the image size of the person are never
            taken for the background plate.
        region_masks: also write face / head / torso / mouth-interior masks.
    """

    max_size: int = 512
    stride: int = 1
    max_frames: int | None = None
    jpeg_quality: int = 95
    train_fraction: float = 10 / 11

    max_num_faces: int = 4
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    landmark_tracking: bool = False
    reacquire_after_s: float = 1.0
    min_valid_fraction: float = 0.0

    focal: float | None = None
    focal_search: tuple[float, float] = (0.6, 8.0)
    focal_prior: float = 2.0
    focal_prior_weight: float = 0.1
    focal_frames: int = 48
    smooth_rotation: float = 0.5
    smooth_translation: float = 0.1
    robust_scale_px: float = 1.5
    fit_iterations: int = 150
    feature_tracks: bool = True
    track_refine: bool = False
    track_weight: float = 30.0
    track_robust_scale_px: float = 1.0
    focal_track_weight: float = 30.0
    canonical_iterations: int = 3
    expression_dims: int = 16

    morphable: str = "none"
    flame_path: str | None = None
    flame_landmarks: str | None = None

    speech_model: str | None = None

    mask_threshold: float = 0.5
    background_frames: int = 40
    background_margin: float = 0.02
    region_masks: bool = True

    def __post_init__(self) -> None:
        # 0 / "" meant "unset" in config files written before the two capture configs were merged
        for name in ("max_frames", "focal", "flame_path", "flame_landmarks", "speech_model"):
            if getattr(self, name) in (0, 0.0, ""):
                setattr(self, name, None)
        self.focal_search = tuple(self.focal_search)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""

        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"capture.{name} = {getattr(self, name)!r}: {why}")

        if not (16 <= int(self.max_size) <= 8192):
            raise bad("max_size", "must be within 16..8192")
        if int(self.stride) < 1:
            raise bad("stride", "must be >= 1")
        if self.max_frames is not None and int(self.max_frames) < 1:
            raise bad("max_frames", "must be >= 1 or None")
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise bad("jpeg_quality", "must be within 1..100")
        if not 0.0 < float(self.train_fraction) <= 1.0:
            raise bad("train_fraction", "must be within (0, 1]")
        if not 1 <= int(self.max_num_faces) <= 16:
            raise bad("max_num_faces", "must be within 1..16")
        for name in ("min_detection_confidence", "min_tracking_confidence", "mask_threshold"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise bad(name, "must be within [0, 1]")
        if not 0.0 <= float(self.min_valid_fraction) <= 1.0:
            raise bad("min_valid_fraction", "must be within [0, 1]")
        if self.focal is not None and not float(self.focal) > 0:
            raise bad("focal", "must be positive or None")
        lo, hi = self.focal_search
        if not 0 < lo < hi:
            raise bad("focal_search", "must be (min, max) with 0 < min < max")
        for name in ("focal_prior", "robust_scale_px", "track_robust_scale_px"):
            if not float(getattr(self, name)) > 0:
                raise bad(name, "must be positive")
        for name in (
            "focal_prior_weight",
            "smooth_rotation",
            "smooth_translation",
            "track_weight",
            "focal_track_weight",
            "reacquire_after_s",
            "background_margin",
        ):
            if not float(getattr(self, name)) >= 0:
                raise bad(name, "must be >= 0")
        for name in ("focal_frames", "background_frames", "canonical_iterations"):
            if int(getattr(self, name)) < 1:
                raise bad(name, "must be >= 1")
        if int(self.fit_iterations) < 0:
            raise bad("fit_iterations", "must be >= 0")
        if not 1 <= int(self.expression_dims) <= 64:
            raise bad("expression_dims", "must be within 1..64")
        if self.morphable not in ("none", "open", "flame"):
            raise bad("morphable", 'must be "none", "open" or "flame"')
        for name in ("flame_path", "flame_landmarks", "speech_model"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, (str, os.PathLike)):
                raise bad(name, "must be a file path or None")

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict, where: str = "capture") -> CaptureConfig:
        """Build from a mapping; unknown keys or bad values are a one-line :class:`ConfigError`."""
        return _build(cls, d, where)


@dataclass
class ModelConfig:
    """The Gaussian avatar and its audio-conditioned deformation field."""

    n_head: int = 20000  # initial head Gaussians (face mesh + head shell)
    n_mouth: int = 1500  # mouth-interior Gaussians (teeth, tongue, cavity)
    n_torso: int = 6000  # torso / neck Gaussians, in the body frame
    max_gaussians: int = 60000  # densification cap
    pe_freqs: int = 6  # positional-encoding octaves of the canonical position
    hidden: int = 64  # width of the deformation MLP
    audio_dim: int = 32  # audio code size
    audio_window: int = 16  # mel steps per video frame (must match the capture features)
    smooth_window: int = 8  # neighbouring frames mixed by the learned temporal attention
    max_offset: float = 0.02  # metres; bound of the predicted position offsets (tanh)
    # spatial encoding of the canonical position in the deformation field: "hashgrid" (multi-resolution
    # 3D hash grid), "triplane" (three 2D hash grids, ER-NeRF style) or "frequency" (sin/cos, pe_freqs
    # octaves; what avatars saved before this key existed were trained with, and load as). Defaults:
    # the grid that fitted best in the CPU budget (docs/design/cpu-preset.md)
    encoding: str = "hashgrid"
    grid_levels: int = 8  # hash grid levels, geometric from grid_base_res to grid_max_res
    grid_features: int = 2  # features per level (1, 2, 4 or 8)
    grid_log2_table: int = 14  # log2 of the entries per level (a coarse level that fits is dense)
    grid_base_res: int = 16  # cells across the grid box at the coarsest level
    grid_max_res: int = 128  # cells across the grid box at the finest level
    grid_bound: float = 0.18  # metres; the grid covers the head-space cube [-bound, bound]^3
    grid_pe_freqs: int = 3  # sin/cos octaves of the position appended to the grid features (0 = none)
    # the torso moves rigidly with a learned function of the head pose (leaning, swaying); False = static
    torso_motion: bool = True
    # speech front end (avatar3d.audio.visemes): per-frame viseme posteriors + voice activity + loudness
    # drive the expression through a per-subject viseme map, beside log-mel (or the speech model), which
    # only adds a bounded residual; False = log-mel / speech model alone (what older avatars used)
    visemes: bool = True
    # bound (tanh) of that residual per expression coefficient (unit-variance units); a residual
    # learned from one voice's log-mel fits that voice and blurs another's (docs/results/mouth.md)
    residual_scale: float = 0.1
    # mouth interior split along the slit (upper teeth with the skull, lower teeth and tongue with the jaw)
    # and no landmark binding across the slit; False = nearest landmarks (what older avatars used)
    mouth_split: bool = True

    def __post_init__(self) -> None:
        if self.encoding not in ("hashgrid", "triplane", "frequency"):
            raise ConfigError(
                f"model.encoding must be hashgrid, triplane or frequency, got {self.encoding!r}"
            )
        if self.grid_features not in (1, 2, 4, 8):
            raise ConfigError(f"model.grid_features must be 1, 2, 4 or 8, got {self.grid_features}")
        if self.grid_levels < 1 or self.grid_base_res < 2 or self.grid_max_res < self.grid_base_res:
            raise ConfigError("model.grid_levels must be >= 1 and 2 <= grid_base_res <= grid_max_res")
        if not 8 <= self.grid_log2_table <= 24:
            raise ConfigError(f"model.grid_log2_table must be in 8..24, got {self.grid_log2_table}")
        if self.grid_pe_freqs < 0:
            raise ConfigError(f"model.grid_pe_freqs must be >= 0, got {self.grid_pe_freqs}")
        if self.grid_levels * 2**self.grid_log2_table * self.grid_features > GRID_MAX_ENTRIES:
            raise ConfigError(
                f"model: a hash grid of {self.grid_levels} levels x 2^{self.grid_log2_table} entries x "
                f"{self.grid_features} features exceeds {GRID_MAX_ENTRIES} values"
            )


@dataclass
class TrainConfig:
    """Optimisation schedule and losses."""

    steps: int = 3000
    resolution: int = 512  # training image longest side, pixels
    static_fraction: float = 0.25  # first stage: appearance only, no audio deformation
    audio_fraction: float = 0.35  # second stage: deformation net only; the rest is joint
    holdout_fraction: float = 1.0 / 11.0  # last part of the clip never trained on
    lr_means: float = 1.6e-4  # times the scene extent
    lr_colors: float = 5e-3
    lr_opacity: float = 5e-2
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_net: float = 1e-3
    lambda_dssim: float = 0.2
    lip_weight: float = 4.0  # extra L1 weight inside the mouth box
    lambda_mask: float = 0.05  # alpha vs person-mask loss
    lambda_offset: float = 1e-3  # L1 on deformation offsets
    lambda_audio: float = 0.5  # auxiliary: the audio code must predict the tracked mouth opening
    audio_batch: int = 16  # frames per step for that auxiliary loss
    audio_pretrain_steps: int = (
        1500  # audio -> mouth/expression regression before any rendering (cheap); at most 2.5 x steps
    )
    audio_pretrain_batch: int = 64
    audio_augment: bool = (
        True  # re-voice mel windows (pitch/formant shift, tilt, gain, band mask) for any-speaker driving
    )
    # after the audio pre-training, keep the audio encoder and the audio -> expression head fixed: the
    # photometric loss of a few hundred frames otherwise erodes the mapping it learned; the deformation
    # field still learns on top of the fixed codes (docs/design/audio-branch.md)
    audio_freeze: bool = True
    mouth_sampling: float = (
        1.0  # frames sampled with weight 1 + this * mouth_open (wide-open mouths are rare)
    )
    densify_every: int = 100
    densify_until: float = (
        0.85  # fraction of steps (densification runs in the stages that train the Gaussians)
    )
    densify_fraction: float = 0.05  # share of Gaussians cloned at each densification
    prune_opacity: float = 0.01
    checkpoint_every: int = 500
    checkpoint_seconds: float = 60.0  # also checkpoint after this much wall time (0 = by steps only)
    seed: int = 0
    lpips_weights: str = (
        ""  # local LPIPS weights file (.pth/.safetensors, never downloaded); empty = no LPIPS term
    )
    lpips_weight: float = 0.05  # weight of the LPIPS term on the lower-face crop, joint stage onward
    lr_grid: float = 1e-2  # learning rate of the deformation field's hash-grid tables
    # viseme map (avatar3d.models.viseme_map): frames' worth of weight of each viseme's generic prior
    viseme_prior: float = 8.0
    viseme_gain: bool = True  # scale the viseme map so its lip gap varies as much as the subject's


@dataclass
class RenderConfig:
    """Defaults for ``Avatar.render``."""

    background: str = "plate"  # "plate", "white", "black", "green" or "#rrggbb"
    pose: str = "static"  # "static", "track" (training track, looped/mirrored) or "generated"
    blink: str = "auto"  # "auto" (natural blinks), "none", or "track"
    backend: str = "auto"  # rasteriser backend
    watermark: bool = True  # saved videos carry the invisible provenance mark (docs/provenance.md)
    # renders finer than training (a larger image, or closer) floor each Gaussian at this share of a
    # training pixel's footprint: 1 = the training render, resampled; 0 = unfiltered (sharper, with
    # cracks between Gaussians); why this default: docs/design/footprint-filter.md
    footprint: float = 0.5


@dataclass
class AvatarConfig:
    """Everything that defines how an avatar is captured, built and trained."""

    preset: str = "default"
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    render: RenderConfig = field(default_factory=RenderConfig)

    # -------------------------------------------------------------- building
    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "config") -> "AvatarConfig":
        data = dict(data or {})
        preset = data.pop("preset", None)
        base = preset_dict(preset) if preset else {}
        merged = _deep_merge(base, data)
        cfg = _build(cls, merged, where)
        cfg.preset = preset or cfg.preset
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> "AvatarConfig":
        return cls.from_dict(_read_yaml(Path(path)), where=str(path))

    @classmethod
    def preset_config(cls, name: str) -> "AvatarConfig":
        return cls.from_dict({"preset": name})

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text


def _plain(d: Any) -> Any:
    """A mapping of plain YAML types (tuples become lists)."""
    if isinstance(d, dict):
        return {k: _plain(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_plain(v) for v in d]
    return d


def _read_yaml(p: Path) -> dict[str, Any]:
    """A YAML file's top-level mapping, or a one-line ConfigError naming the file."""
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level")
    return data


def preset_dict(name: str) -> dict[str, Any]:
    """The raw mapping of a shipped preset (``fast``, ``default``, ``quality``)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    text = resources.files("avatar3d.presets").joinpath(f"{name}.yaml").read_text()
    data = yaml.safe_load(text) or {}
    data.pop("preset", None)
    return data


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


# Allowed ranges (inclusive) of numeric settings: a config from a stranger (an avatar directory's
# config.yaml) must not make the library allocate terabytes or loop for ever. Every float must also be
# finite. Sizes are checked here, before anything is allocated.
LIMITS: dict[str, dict[str, tuple[float, float]]] = {
    "CaptureConfig": {
        "max_size": (32, 8192), "stride": (1, 10_000), "max_frames": (0, 10_000_000), "focal": (0, 1e6),
    },
    "ModelConfig": {
        "n_head": (1, 1_000_000), "n_mouth": (0, 200_000), "n_torso": (0, 500_000),
        "max_gaussians": (1, 2_000_000), "pe_freqs": (0, 16), "hidden": (1, 1024), "audio_dim": (1, 512),
        "audio_window": (1, 256), "smooth_window": (1, 64), "max_offset": (0.0, 1.0), "grid_levels": (1, 32),
        "grid_base_res": (2, 8192), "grid_max_res": (2, 8192), "grid_bound": (1e-3, 10.0),
        "grid_pe_freqs": (0, 16),
    },
    "TrainConfig": {
        "steps": (1, 100_000_000), "resolution": (16, 8192), "static_fraction": (0.0, 1.0),
        "audio_fraction": (0.0, 1.0), "holdout_fraction": (0.0, 0.9), "lr_means": (0.0, 10.0),
        "lr_colors": (0.0, 10.0), "lr_opacity": (0.0, 10.0), "lr_scales": (0.0, 10.0), "lr_quats": (0.0, 10.0),
        "lr_net": (0.0, 10.0), "lr_grid": (0.0, 10.0), "lambda_dssim": (0.0, 1.0), "lip_weight": (0.0, 1e3),
        "lambda_mask": (0.0, 1e3), "lambda_offset": (0.0, 1e3), "lambda_audio": (0.0, 1e3),
        "audio_batch": (1, 65_536), "audio_pretrain_steps": (0, 100_000_000), "audio_pretrain_batch": (1, 65_536),
        "mouth_sampling": (0.0, 1e3), "densify_every": (0, 100_000_000), "densify_until": (0.0, 1.0),
        "densify_fraction": (0.0, 1.0), "prune_opacity": (0.0, 1.0), "checkpoint_every": (0, 100_000_000),
        "seed": (0, 2**32 - 1), "lpips_weight": (0.0, 1e3),
    },
    "RenderConfig": {"footprint": (0.0, 1.0)},
}  # fmt: skip
GRID_MAX_ENTRIES = 2**28  # levels x table entries x features of one hash grid (1 GiB of float32)


def _check_range(cls, name: str, value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number, got {value!r}")
    lo_hi = LIMITS.get(cls.__name__, {}).get(name)
    if lo_hi is not None and isinstance(value, (int, float)) and not lo_hi[0] <= value <= lo_hi[1]:
        raise ConfigError(f"{where}: {value!r} is outside the allowed range {lo_hi[0]:g}..{lo_hi[1]:g}")


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        kwargs[f.name] = _coerce(hints[f.name], data[f.name], f"{where}.{f.name}")
        _check_range(cls, f.name, kwargs[f.name], f"{where}.{f.name}")
    return cls(**kwargs)


def _coerce(tp, value, where: str):
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(arg, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not match {tp}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def load_config(config: "AvatarConfig | str | Path | dict | None", preset: str | None = None) -> AvatarConfig:
    """Resolve what users pass as ``config`` (object, YAML path, mapping or None) plus a preset."""
    if isinstance(config, AvatarConfig):
        return config
    if config is None:
        return AvatarConfig.preset_config(preset or "default")
    if isinstance(config, dict):
        data = dict(config)
    else:
        data = _read_yaml(Path(config))
    if preset is not None:
        data["preset"] = preset
    return AvatarConfig.from_dict(data)


def parse_overrides(items: list[str] | None, sections: tuple[str, ...]) -> dict[str, Any]:
    """``["train.steps=2000", "capture.focal=800"]`` -> a nested mapping to layer over a config.

    Values are read as YAML (``true``, ``12``, ``1e-3``, ``[0.5, 6]``, ``"#ff0000"``); keys must name a
    field of one of ``sections`` (checked when the mapping is built into a config)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name or "." in name:
            raise ConfigError(f"--set {item!r}: use SECTION.KEY=VALUE, e.g. train.steps=2000")
        if section not in sections:
            raise ConfigError(f"--set {item!r}: this command takes {', '.join(s + '.*' for s in sections)}")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        if value is None and text.strip() not in ("null", "~"):  # e.g. "#ff0000": a YAML comment
            value = text.strip()
        out.setdefault(section, {})[name] = value
    return out


def apply_overrides(cfg: AvatarConfig, overrides: dict[str, Any]) -> AvatarConfig:
    """``cfg`` with ``overrides`` (see :func:`parse_overrides`) layered over it, validated."""
    if not overrides:
        return cfg
    data = _deep_merge(cfg.to_dict(), overrides)
    data.pop("preset", None)
    out = _build(AvatarConfig, data, "--set")
    out.preset = cfg.preset
    return out
