"""The public facade: :class:`Avatar` (fit / load / save / render / stream / export_ply).

Every method is a few lines over the public functions of :mod:`avatar3d.drive` (rendering) and
:mod:`avatar3d.train.fit` (fitting), which the viewer, the exporters and the eval use too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from .audio import load_audio
from .config import AvatarConfig
from .core.camera import Camera, StereoPair
from .core.constants import SAMPLE_RATE
from .drive import (
    AudioDriver,
    AvatarFiles,
    FrameStream,
    RenderResult,
    StereoRenderResult,
    frame_stream,
    orbit_camera,
    plan_render,
    read_avatar,
    render_stereo,
    resolve_cameras,
    rest_camera,
    write_avatar,
)
from .errors import Avatar3DError
from .io.atomic import atomic_dir
from .io.meta import AvatarMeta
from .io.ply import write_gaussian_ply
from .models.gaussian_avatar import GaussianAvatar
from .train.fit import fit_avatar

GAUSSIAN_KEYS = ("means", "quats", "scales", "opacities", "colors")


class Avatar:
    """A personal, audio-driven 3D avatar: build one with :meth:`fit` or :meth:`load`, drive it with
    :meth:`render` (or :meth:`stream` for long audio).

    ``speech_model``: the speech model file YOU name, for an avatar trained on one. An avatar directory
    is data: loading or rendering it never runs code from a file it names.
    """

    def __init__(
        self,
        model: GaussianAvatar,
        config: AvatarConfig,
        meta: AvatarMeta | dict,
        track: dict,
        background: np.ndarray,
        speech_model: str | Path | None = None,
    ):
        meta = meta if isinstance(meta, AvatarMeta) else AvatarMeta.from_dict(meta)
        self.model, self.meta = model.eval(), meta
        self.model.set_train_camera(meta.viewmat, meta.intrinsics)
        self.config, self.track, self.background = config, track, background
        self.audio = AudioDriver(self.model, meta, speech_model)

    @property
    def config(self) -> AvatarConfig:
        """The configuration; assigning one also applies its ``render.footprint`` to the model."""
        return self._config

    @config.setter
    def config(self, cfg: AvatarConfig) -> None:
        self._config = cfg
        self.model.footprint_share = float(cfg.render.footprint)

    @classmethod
    def fit(cls, video: str | Path, config=None, workdir: str | Path | None = None, **kw) -> Avatar:
        """Capture ``video`` (or use a capture directory) and train an avatar on it. ``config``: an
        AvatarConfig, a YAML path or a mapping; keywords: ``preset``, ``steps`` (overrides
        ``config.train.steps``), ``progress``, ``log``. A killed fit resumes from ``workdir``."""
        f = fit_avatar(video, config, workdir, **kw)
        return cls(f.model, f.config, f.meta, f.track, f.background, f.config.capture.speech_model)

    @classmethod
    def load(cls, path: str | Path, *, speech_model: str | Path | None = None) -> Avatar:
        """Load an avatar directory (any supported format version); FormatError when it is not one."""
        f = read_avatar(path)
        return cls(f.model, f.config, f.meta, f.track, f.background, speech_model)

    def save(self, path: str | Path) -> Path:
        """Write the avatar directory (atomically; safetensors, no pickle)."""
        return write_avatar(
            path, AvatarFiles(self.model, self.config, self.meta, self.track, self.background)
        )

    @property
    def avatar_id(self) -> int:
        """The 32-bit id written into the watermark of its renders (0 if none is known)."""
        return self.meta.avatar_id

    @property
    def speech_model(self) -> str | None:
        """The speech model recorded at fit time (information only: never loaded from here)."""
        sm = self.meta.speech_model
        return str(sm["path"]) if sm and sm.get("path") else None

    # ------------------------------------------------------------------ cameras
    @property
    def rest_camera(self) -> Camera:
        """The capture camera (body frame) at the training resolution."""
        return rest_camera(self.meta)

    def camera(self, yaw: float = 0.0, pitch: float = 0.0, size=None, distance_scale: float = 1.0) -> Camera:
        """A camera orbiting the head (degrees) at the capture's distance and focal length."""
        return orbit_camera(self.meta, yaw, pitch, size, distance_scale)

    def cameras(self, spec, n: int, size=None) -> list[Camera]:
        """n cameras of a spec (see :func:`avatar3d.drive.resolve_cameras`)."""
        return resolve_cameras(self.meta, spec, n, size)

    # ------------------------------------------------------------------ audio
    def audio_features(self, wave16k: np.ndarray, fps=None, n_frames=None, frames=None) -> np.ndarray:
        """(n_frames, W, M) features of a 16 kHz wave as in training (:meth:`AudioDriver.features`)."""
        return self.audio.features(wave16k, fps, n_frames, frames)

    def audio_codes(
        self, wave16k: np.ndarray, fps: float, n_frames: int, chunk: int = 256
    ) -> Iterator[torch.Tensor]:
        """Audio codes of frames 0..n_frames-1 in (k, A) chunks (:meth:`AudioDriver.codes`)."""
        return self.audio.codes(wave16k, fps, n_frames, chunk)

    # ------------------------------------------------------------------ rendering
    def stream(self, audio, camera=None, *, progress: bool = True, **kw) -> FrameStream:
        """Like :meth:`render` (same arguments), but frames are rendered lazily as the stream is iterated
        (or saved), so memory stays flat whatever the audio's length. Arguments are checked first."""
        r = self.config.render
        wave, drive = plan_render(self.meta, self.track, self.background, r, audio, camera, **kw)
        return frame_stream(self.model, self.audio, wave, self.meta.fps, drive, backend=r.backend,
                            progress=progress, avatar_id=self.avatar_id, watermark=r.watermark)  # fmt: skip

    def render(
        self, audio, camera: str | Camera | Sequence[Camera] | StereoPair | None = None, **kw
    ) -> RenderResult | StereoRenderResult:
        """Render the avatar speaking ``audio`` (a path, or an array with ``sample_rate``) into memory.

        camera: None/'capture' (the capture view at the clip's own size), 'frontal', 'orbit' (±30°
        yaw sweep), a Camera, one Camera per frame, a camera JSON file, or a StereoPair
        (``avatar.camera().stereo()``: both eyes). Keywords: sample_rate, size (width, height), pose
        ('static', 'track', 'generated'), blink ('auto', 'none', 'track' or per-frame amounts),
        background ('plate', 'white', 'black', 'green', '#rrggbb', (r, g, b)), progress, max_seconds.
        For long audio use :meth:`stream`: this method holds every frame.
        """
        if isinstance(camera, StereoPair):
            return render_stereo(self, audio, camera, **kw)
        return self.stream(audio, camera, **kw).collect()

    # ------------------------------------------------------------------ export
    @torch.no_grad()
    def gaussians(self, audio_code: torch.Tensor | None = None, blink: float = 0.0, head_pose=None) -> dict:
        """World-space Gaussians (numpy) for one audio code (None: the silent, neutral face)."""
        code = audio_code if audio_code is not None else self.audio.silence_code()
        pose = None if head_pose is None else torch.as_tensor(head_pose, dtype=torch.float32)
        gs = self.model.posed(code, torch.tensor([float(blink)]), pose)
        gs["scales"] = self.splat_scales(gs["means"], gs["scales"])
        return {k: gs[k].numpy() for k in GAUSSIAN_KEYS}

    def splat_scales(self, means, scales) -> torch.Tensor:
        """Scales for other splat renderers (PLY, the web player): with the footprint filter of the
        capture view at the clip's own size baked in, so a viewer rendering that finely, or finer
        (a headset), shows no cracks between the Gaussians fitted at the training size."""
        vm, K = self.cameras("capture", 1)[0].to_torch()
        gs = {"means": torch.as_tensor(means).float(), "scales": torch.as_tensor(scales).float()}
        return self.model.render_scales(gs, vm[None], K[None])

    def export_ply(self, path: str | Path, audio=None, sample_rate: int | None = None) -> list[Path]:
        """Standard 3DGS PLY: one file (the neutral face) or, with ``audio``, one per frame in a directory."""
        path = Path(path)
        if audio is None:
            return [write_gaussian_ply(path, **self.gaussians())]
        wave = load_audio(audio if sample_rate is None else (audio, sample_rate), sr=SAMPLE_RATE)
        n = int(len(wave) / SAMPLE_RATE * self.meta.fps)
        if n < 1:
            raise Avatar3DError("the audio is too short for one frame")
        codes = (c for chunk in self.audio.codes(wave, self.meta.fps, n) for c in chunk)
        with atomic_dir(path, kind="export") as tmp:
            out = [
                write_gaussian_ply(Path(tmp) / f"frame_{k:06d}.ply", **self.gaussians(c))
                for k, c in enumerate(codes)
            ]
            (Path(tmp) / "sequence.json").write_text(json.dumps({"fps": self.meta.fps, "frames": n}))
        return [path / p.name for p in out]


__all__ = ["Avatar", "RenderResult", "FrameStream", "StereoRenderResult"]
