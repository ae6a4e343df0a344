"""CaptureSet: the documented directory the capture stage writes and the trainer reads.

Layout (docs/INTERNALS.md; T frames, E expression coefficients)::

    transforms.json       nerfstudio: fl_x, fl_y, cx, cy, w, h, camera_model "OPENCV", k1..p2 = 0,
                          frames[{file_path, mask_path, transform_matrix (c2w, OpenGL), frame_index,
                          time (s), valid}], "avatar3d": {version, fps, source, n_frames, train_split,
                          ...}
    images/000000.jpg     frames at the stored size
    masks/000000.png      person mask, uint8 0/255
    masks_face|masks_head|masks_torso|masks_mouth/000000.png   optional region masks
    background.png        clean background plate
    tracking.safetensors  see TRACKING_SPEC
    audio.wav             16 kHz mono PCM of the clip's audio
    audio.safetensors     features (T, 16, 80); energy (T,); optional speech_features (T, 16, D) of a
                          local speech model, described by "avatar3d": {"speech_model": {path, dim,
                          window, hop, receptive_field, sample_rate}} in transforms.json

``train_split`` is ``{"train": [0, n_train], "test": [n_train, T]}`` (half-open frame ranges).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from ..core.camera import Camera
from ..core.topology import N_LANDMARKS
from ..errors import FormatError
from .media import read_audio, read_image

FORMAT_VERSION = 1
REGION_MASKS = ("face", "head", "torso", "mouth")

# name -> (shape with symbolic dims, dtype kind, required). "L" = 478 landmarks.
TRACKING_SPEC: dict[str, tuple[tuple, str, bool]] = {
    "rotation": (("T", 3, 3), "f", True),  # head -> camera
    "translation": (("T", 3), "f", True),  # metres
    "landmarks2d": (("T", "L", 2), "f", True),  # pixels of the stored images
    "landmarks3d": (("T", "L", 3), "f", True),  # head space, metres, pose-free
    "canonical_landmarks": (("L", 3), "f", True),
    "valid": (("T",), "b", True),  # face detected in this frame
    "mouth_open": (("T",), "f", True),  # [0, 1] over the clip
    "jaw_open": (("T",), "f", True),  # radians relative to the most-closed frames
    "blink": (("T",), "f", True),  # [0, 1], 1 = closed, mean of both eyes
    "expression": (("T", "E"), "f", True),  # PCA coefficients, unit variance
    # additions beyond INTERNALS.md
    "blink_per_eye": (("T", 2), "f", False),  # [subject's right (image left), left]
    "mouth_open_raw": (("T",), "f", False),  # inner-lip gap / face height
    "eye_open_raw": (("T", 2), "f", False),  # eyelid gap / eye width
    "expression_basis": (("E", "L", 3), "f", False),  # landmarks3d ≈ canonical + mean + expr @ basis
    "expression_mean": (("L", 3), "f", False),
    "reprojection_error": (("T",), "f", False),  # median rigid-landmark error, px; NaN if invalid
    "frame_index": (("T",), "i", False),  # index in the source video
}
AUDIO_SPEC: dict[str, tuple[tuple, str, bool]] = {
    "features": (("T", 16, 80), "f", True),
    "energy": (("T",), "f", False),
    "speech_features": (("T", 16, "D"), "f", False),  # raw (unnormalised) speech-model features
}


def c2w_opengl(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Head->camera pose -> nerfstudio camera-to-world: ``inv([R|t]) @ diag(1, -1, -1, 1)``.

    R: (..., 3, 3), t: (..., 3) -> (..., 4, 4).
    """
    out = np.zeros(R.shape[:-2] + (4, 4))
    Rt = np.swapaxes(R, -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, t)
    out[..., 3, 3] = 1.0
    return out @ np.diag([1.0, -1.0, -1.0, 1.0])


MIN_SIDE, MAX_SIDE = 16, 8192  # pixels, the sides of a stored frame
MAX_FRAMES = 1_000_000
MAX_FPS = 240.0
MIN_SPLIT_FRAMES = 11  # shorter captures have no held-out part (the field holds out 1/11)
POSE_ATOL = 1e-4  # transforms.json's frame-0 pose vs the tracking pose (rounded to 9 digits)


def _check_arrays(arrays: dict, spec: dict, where: str, dims: dict) -> None:
    """Check presence, dtype kind and shape of ``arrays`` against ``spec``; fills ``dims``."""
    for name, (shape, kind, required) in spec.items():
        if name not in arrays:
            if required:
                raise FormatError(f"{where}: missing key '{name}'")
            continue
        a = arrays[name]
        ok_kind = {"f": a.dtype.kind == "f", "b": a.dtype.kind in "bui", "i": a.dtype.kind in "iu"}[kind]
        if not ok_kind:
            raise FormatError(f"{where}: '{name}' has dtype {a.dtype}, expected kind '{kind}'")
        if a.ndim != len(shape):
            raise FormatError(f"{where}: '{name}' has shape {a.shape}, expected {len(shape)} dims {shape}")
        for d, s in zip(a.shape, shape):
            if isinstance(s, int):
                if d != s:
                    raise FormatError(f"{where}: '{name}' has shape {a.shape}, expected {shape}")
            elif dims.setdefault(s, d) != d:
                raise FormatError(f"{where}: '{name}' has shape {a.shape}, but {s} = {dims[s]} elsewhere")
        if kind == "f" and name not in ("reprojection_error",) and not np.isfinite(a).all():
            raise FormatError(f"{where}: '{name}' contains NaN or infinity")


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FormatError(f"capture set is missing {path.name} ({path})")
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 (safetensors raises several types on corrupt files)
        raise FormatError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None


def _read_transforms(tpath: Path, root: Path) -> dict:
    """transforms.json parsed, with its required keys and a supported format version."""
    if not tpath.is_file():
        raise FormatError(f"capture set {root} has no transforms.json")
    try:
        t = json.loads(tpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(f"{tpath}: not valid JSON ({e})") from None
    if not isinstance(t, dict):
        raise FormatError(f"{tpath}: must hold a JSON object")
    for k in ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_model", "frames", "avatar3d"):
        if k not in t:
            raise FormatError(f"{tpath}: missing key '{k}'")
    meta = t["avatar3d"]
    if not isinstance(meta, dict):
        raise FormatError(f"{tpath}: 'avatar3d' must be an object")
    for k in ("version", "fps", "n_frames", "train_split"):
        if k not in meta:
            raise FormatError(f"{tpath}: missing key 'avatar3d.{k}'")
    if meta["version"] != FORMAT_VERSION:
        raise FormatError(
            f"{tpath}: unsupported capture format version {meta['version']!r} "
            f"(this library reads version {FORMAT_VERSION})"
        )
    return t


def _check_header(tpath: Path, t: dict) -> int:
    """Frame count, image size, intrinsics, fps and train/test split of transforms.json -> T."""
    meta = t["avatar3d"]
    try:
        T = int(meta["n_frames"])
        w, h = int(t["w"]), int(t["h"])
        split = meta["train_split"]
        a0, a1 = (int(x) for x in split["train"])
        b0, b1 = (int(x) for x in split["test"])
    except (TypeError, ValueError, KeyError) as e:
        raise FormatError(f"{tpath}: malformed header ({e!s})") from None
    if T < 1 or not isinstance(t["frames"], list) or len(t["frames"]) != T:
        raise FormatError(f"{tpath}: n_frames = {T} but {len(t['frames'])} frames are listed")
    try:
        intr = [float(t[k]) for k in ("fl_x", "fl_y", "cx", "cy")] + [float(meta["fps"])]
    except (TypeError, ValueError):
        raise FormatError(f"{tpath}: intrinsics and fps must be numbers") from None
    if not np.isfinite(intr).all() or not (intr[0] > 0 and intr[1] > 0) or not 0 < intr[4] <= MAX_FPS:
        raise FormatError(f"{tpath}: invalid focal, principal point or fps {intr}")
    if not (MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE) or T > MAX_FRAMES:
        raise FormatError(
            f"{tpath}: image size {w}x{h} or {T} frames outside {MIN_SIDE}..{MAX_SIDE} px, <= {MAX_FRAMES}"
        )
    if not (0 == a0 <= a1 == b0 <= b1 == T):
        raise FormatError(f"{tpath}: train_split {split} does not partition 0..{T}")
    return T


def _load_arrays(root: Path, tpath: Path, meta: dict, T: int) -> tuple[dict, dict]:
    """tracking.safetensors and audio.safetensors, checked against their specs -> (tracking, audio)."""
    dims = {"T": T, "L": N_LANDMARKS}
    tracking = _load_safetensors(root / "tracking.safetensors")
    _check_arrays(tracking, TRACKING_SPEC, "tracking.safetensors", dims)
    audio = _load_safetensors(root / "audio.safetensors")
    _check_arrays(audio, AUDIO_SPEC, "audio.safetensors", dims)
    if "speech_features" in audio:
        sm = meta.get("speech_model")
        if not isinstance(sm, dict) or not isinstance(sm.get("path"), str) or not sm["path"]:
            raise FormatError(
                f"{tpath}: audio.safetensors has speech_features but 'avatar3d.speech_model.path' "
                "does not name the model that made them"
            )
    return tracking, audio


def _check_poses_and_paths(root: Path, tpath: Path, t: dict, tracking: dict) -> None:
    """The plate and audio exist, the JSON poses are the tracking poses (frame 0), and every frame's
    paths stay inside the capture directory."""
    for name in ("background.png", "audio.wav"):
        if not (root / name).is_file():
            raise FormatError(f"capture set {root} is missing {name}")
    try:
        c2w = np.asarray(t["frames"][0]["transform_matrix"], float)
    except (KeyError, TypeError, ValueError):
        raise FormatError(f"{tpath}: frame 0 has no valid transform_matrix") from None
    expect = c2w_opengl(
        tracking["rotation"][0].astype(np.float64), tracking["translation"][0].astype(np.float64)
    )
    if c2w.shape != (4, 4) or not np.allclose(c2w, expect, atol=POSE_ATOL):
        raise FormatError(f"{tpath}: frame 0's transform_matrix disagrees with tracking.safetensors")
    inside = root.resolve()
    for i, f in enumerate(t["frames"]):
        for key in ("file_path", "mask_path"):
            if not isinstance(f, dict) or not isinstance(f.get(key), str):
                raise FormatError(f"{tpath}: frame {i} has no '{key}'")
            rel = Path(f[key])
            if rel.is_absolute() or inside not in (root / rel).resolve().parents:
                raise FormatError(f"{tpath}: frame {i}'s {key} {f[key]!r} points outside the capture set")


def _check_frame_files(root: Path, t: dict) -> None:
    """Every frame's image, mask and region masks exist."""
    kinds = [k for k in t["avatar3d"].get("masks", []) if k in REGION_MASKS]
    for i, f in enumerate(t["frames"]):
        for key in ("file_path", "mask_path"):
            if not (root / f[key]).is_file():
                raise FormatError(f"capture set {root} is missing {f[key]} (frame {i})")
        for k in kinds:
            p = root / f"masks_{k}" / Path(f["mask_path"]).name
            if not p.is_file():
                raise FormatError(f"capture set {root} is missing masks_{k}/{p.name} (frame {i})")


class CaptureSet:
    """A validated capture directory. Use :meth:`load`.

    Attributes: ``root``, ``transforms`` (the JSON dict), every tracking array by name (see
    ``TRACKING_SPEC``: ``rotation``, ``translation``, ``landmarks2d``, ...), ``features``
    (= ``audio_features``, (T, 16, 80)), ``energy`` (T,) or None, ``K`` (3, 3), ``width``,
    ``height``, ``fps``, ``n_frames``, ``focal``, ``frame_indices`` (T,), ``times`` (T,) seconds,
    ``train_idx``, ``test_idx``, ``mask_kinds``; ``speech_features`` (T, 16, D) and ``speech_model``
    (its record from transforms.json) or None for both when the capture has no speech-model features.
    """

    def __init__(self, root: Path, transforms: dict, tracking: dict, audio: dict) -> None:
        self.root = Path(root)
        self.transforms = transforms
        self.tracking = tracking
        for k, v in tracking.items():
            setattr(self, k, v)
        self.valid = np.asarray(tracking["valid"]).astype(bool)
        self.features = audio["features"]
        self.audio_features = self.features
        self.energy = audio.get("energy")
        self.speech_features = audio.get("speech_features")
        t = transforms
        self.speech_model = t["avatar3d"].get("speech_model") if self.speech_features is not None else None
        self.width, self.height = int(t["w"]), int(t["h"])
        self.K = np.array([[t["fl_x"], 0, t["cx"]], [0, t["fl_y"], t["cy"]], [0, 0, 1.0]])
        self.focal = float(t["fl_x"])
        meta = t["avatar3d"]
        self.fps = float(meta["fps"])
        self.n_frames = int(meta["n_frames"])
        self.source = meta.get("source", "")
        self.frames = t["frames"]
        self.frame_indices = np.array([int(f.get("frame_index", i)) for i, f in enumerate(self.frames)])
        self.times = np.array([float(f.get("time", i / self.fps)) for i, f in enumerate(self.frames)])
        split = meta["train_split"]
        self.train_idx = np.arange(int(split["train"][0]), int(split["train"][1]))
        self.test_idx = np.arange(int(split["test"][0]), int(split["test"][1]))
        self.mask_kinds = ["person"] + [k for k in meta.get("masks", []) if k in REGION_MASKS]

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, root: str | Path, check_files: bool = True) -> CaptureSet:
        """Read and validate a capture directory; raises :class:`FormatError` naming the problem.

        ``check_files`` also checks that every frame's image and mask file exists.
        """
        root = Path(root)
        if not root.is_dir():
            raise FormatError(f"capture set not found: {root} is not a directory")
        tpath = root / "transforms.json"
        t = _read_transforms(tpath, root)
        T = _check_header(tpath, t)
        tracking, audio = _load_arrays(root, tpath, t["avatar3d"], T)
        _check_poses_and_paths(root, tpath, t, tracking)
        if check_files:
            _check_frame_files(root, t)
        return cls(root, t, tracking, audio)

    # ------------------------------------------------------------------ per frame
    def _check_index(self, i: int) -> int:
        i = int(i)
        if not -self.n_frames <= i < self.n_frames:
            raise IndexError(f"frame {i} out of range 0..{self.n_frames - 1}")
        return i % self.n_frames

    def image(self, i: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB frame ``i``."""
        return read_image(self.root / self.frames[self._check_index(i)]["file_path"], "RGB")

    def mask(self, i: int, kind: str = "person") -> np.ndarray:
        """(H, W) uint8 0/255 mask of frame ``i``: ``person`` or a region (``face``, ``head``,
        ``torso``, ``mouth``) when the capture has region masks."""
        i = self._check_index(i)
        rel = Path(self.frames[i]["mask_path"])
        if kind == "person":
            return read_image(self.root / rel, "L")
        if kind not in self.mask_kinds:
            raise FormatError(f"capture set {self.root} has no '{kind}' masks (has {self.mask_kinds})")
        return read_image(self.root / f"masks_{kind}" / rel.name, "L")

    def background(self) -> np.ndarray:
        """(H, W, 3) uint8 clean background plate."""
        return read_image(self.root / "background.png", "RGB")

    def audio(self) -> tuple[np.ndarray, int]:
        """(wave (T,) float32 mono, 16000) of the clip."""
        return read_audio(self.root / "audio.wav")

    def world_to_camera(self, i: int) -> np.ndarray:
        """(4, 4) ``[R_i | t_i]``: head space -> OpenCV camera of frame ``i``."""
        i = self._check_index(i)
        m = np.eye(4)
        m[:3, :3] = self.rotation[i]
        m[:3, 3] = self.translation[i]
        return m

    def camera(self, i: int) -> Camera:
        """:class:`avatar3d.core.camera.Camera` of frame ``i`` (K, world_to_camera = [R_i | t_i])."""
        return Camera(self.K.copy(), self.world_to_camera(i), self.width, self.height)

    def __len__(self) -> int:
        return self.n_frames

    def __repr__(self) -> str:
        return (
            f"CaptureSet({str(self.root)!r}, {self.n_frames} frames, {self.width}x{self.height}, "
            f"{self.fps:g} fps, focal {self.focal:.1f} px)"
        )


def write_tracking(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Validate ``arrays`` against ``TRACKING_SPEC`` and save them as safetensors."""
    _check_arrays(arrays, TRACKING_SPEC, "tracking", {"L": N_LANDMARKS})
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))


def write_audio_features(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Validate ``arrays`` against ``AUDIO_SPEC`` and save them as safetensors."""
    _check_arrays(arrays, AUDIO_SPEC, "audio features", {})
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))


def write_transforms(
    path: Path,
    *,
    width: int,
    height: int,
    focal: float,
    rotation: np.ndarray,
    translation: np.ndarray,
    frame_indices: np.ndarray,
    times: np.ndarray,
    valid: np.ndarray,
    fps: float,
    source: str,
    train_fraction: float,
    extra: dict | None = None,
    image_ext: str = ".jpg",
) -> dict:
    """Write ``transforms.json`` (nerfstudio convention, see the module docstring); returns it."""
    T = len(rotation)
    c2w = c2w_opengl(rotation.astype(np.float64), translation.astype(np.float64))
    n_train = T if T < MIN_SPLIT_FRAMES else int(np.clip(round(T * train_fraction), 1, T))
    frames = [
        {
            "file_path": f"images/{i:06d}{image_ext}",
            "mask_path": f"masks/{i:06d}.png",
            "transform_matrix": np.round(c2w[i], 9).tolist(),
            "frame_index": int(frame_indices[i]),
            "time": round(float(times[i]), 6),
            "valid": bool(valid[i]),
        }
        for i in range(T)
    ]
    meta = {
        "version": FORMAT_VERSION,
        "fps": float(fps),
        "source": str(source),
        "n_frames": T,
        "train_split": {"train": [0, n_train], "test": [n_train, T]},
    }
    meta.update(extra or {})
    doc = {
        "camera_model": "OPENCV",
        "fl_x": float(focal),
        "fl_y": float(focal),
        "cx": width / 2,
        "cy": height / 2,
        "w": int(width),
        "h": int(height),
        "k1": 0.0,
        "k2": 0.0,
        "p1": 0.0,
        "p2": 0.0,
        "frames": frames,
        "avatar3d": meta,
    }
    Path(path).write_text(json.dumps(doc, indent=1))
    return doc
