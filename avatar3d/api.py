"""The public facade: :class:`Avatar` (fit / render / save / load) and :class:`RenderResult`."""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from .config import AvatarConfig, load_config
from .core.camera import Camera
from .errors import Avatar3DError, CameraError, ConfigError, FormatError
from .models.deform import gather_windows
from .models.gaussian_avatar import GaussianAvatar

AUDIO_SR = 16000
MIN_FRAMES = 10  # the fewest frames a capture may have to fit an avatar on
CODE_CHUNK = 256  # frames of audio features computed at a time while rendering


@dataclass
class RenderResult:
    """Rendered frames and the audio that drives them.

    frames: (T, H, W, 3) uint8; fps: frames per second; audio: (S,) float32 mono at ``sample_rate``.
    """

    frames: np.ndarray
    fps: float
    audio: np.ndarray
    sample_rate: int
    alphas: np.ndarray | None = None  # (T, H, W) float32 avatar coverage
    avatar_id: int = 0  # 32-bit id of the avatar that made the frames (0 = unknown), for the watermark
    watermark: bool = True  # save() marks the video as made by avatar3d (docs/provenance.md)

    def __len__(self) -> int:
        return len(self.frames)

    def save(self, path: str | Path, *, watermark: bool | None = None) -> Path:
        """Write an H.264 mp4 with the driving audio muxed in sync.

        Unless ``watermark`` (default ``self.watermark``) is False, every frame carries the invisible
        provenance mark (avatar id, library version) that ``avatar3d verify`` reads.
        """
        from .io.media import write_video

        path = Path(path)
        frames = self.frames
        if self.watermark if watermark is None else watermark:
            from . import __version__
            from .io.watermark import Payload, embed_frames

            frames = embed_frames(self.frames, Payload(self.avatar_id, __version__))
        write_video(path, frames, self.fps, audio=self.audio, audio_sr=self.sample_rate)
        return path


@dataclass
class FrameStream:
    """Frames of a render, produced one at a time as the stream is iterated (see :meth:`Avatar.stream`).

    fps; audio: (S,) float32 mono at ``sample_rate``; n_frames; width, height of every frame.
    Iterating yields (H, W, 3) uint8 frames; :meth:`with_alphas` yields (frame, (H, W) float32 alpha).
    """

    fps: float
    audio: np.ndarray
    sample_rate: int
    n_frames: int
    width: int
    height: int
    _frames: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]
    avatar_id: int = 0  # 32-bit id of the avatar that made the frames (0 = unknown), for the watermark
    watermark: bool = True  # save() marks the video as made by avatar3d (docs/provenance.md)

    def __len__(self) -> int:
        return self.n_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        return (f for f, _ in self._frames())

    def with_alphas(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self._frames()

    def save(self, path: str | Path, *, watermark: bool | None = None) -> Path:
        """Render and encode frame by frame to an H.264 mp4 with the driving audio (atomically); the
        frames carry the provenance watermark unless ``watermark`` (default ``self.watermark``) is False."""
        from .io.media import write_video

        path = Path(path)
        frames: Iterator[np.ndarray] = iter(self)
        if self.watermark if watermark is None else watermark:
            from . import __version__
            from .io.watermark import Payload, embed_frames

            frames = embed_frames(frames, Payload(self.avatar_id, __version__))
        write_video(path, frames, self.fps, audio=self.audio, audio_sr=self.sample_rate)
        return path


def _check_speech_capture(cs, speech_model: str) -> None:
    """A capture made with another speech model (or none) than the config asks for is an error."""
    have = cs.speech_model["path"] if cs.speech_model else None
    if not speech_model:
        return
    want = str(Path(speech_model).expanduser().resolve())
    if have is None or str(Path(have).resolve()) != want:
        made = f"with the speech model {have}" if have else "without a speech model"
        raise ConfigError(
            f"the capture {cs.root} was made {made}, but capture.speech_model is {want}: "
            "capture again (a new --workdir, or remove its capture/ folder)"
        )


def _source_size(video: Path, cs) -> list[int]:
    """(width, height) of the source clip (upright), or of the capture's frames for a capture directory."""
    if Path(video).is_file():
        from .io.media import probe_video

        info = probe_video(video)
        return [int(info.width), int(info.height)]
    return [int(cs.width), int(cs.height)]


def _progress_factory(enabled: bool) -> Callable | None:
    if not enabled:
        return None
    from .progress import track

    return track


def _blink_schedule(n: int, fps: float, seed: int = 0) -> np.ndarray:
    """Natural blinks: one every 2.5-5 s, ~0.25 s long, smooth close/open."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n, np.float32)
    t = rng.uniform(1.0, 3.0)
    dur = 0.25
    while t < n / fps:
        c = t * fps
        for k in range(max(0, int(c - dur * fps)), min(n, int(c + dur * fps) + 1)):
            out[k] = max(out[k], math.cos(min(1.0, abs(k - c) / (dur * fps / 2)) * math.pi / 2) ** 2)
        t += rng.uniform(2.5, 5.0)
    return out


def _generated_motion(n: int, fps: float, seed: int = 0) -> np.ndarray:
    """(n, 4, 4) smooth, small head motion (yaw ±6°, pitch ±3°, roll ±2°) from sums of slow sines."""
    import roma

    rng = np.random.default_rng(seed)
    t = np.arange(n) / fps
    ang = np.zeros((n, 3))
    for axis, amp in zip(range(3), (3.0, 6.0, 2.0)):  # pitch (x), yaw (y), roll (z)
        for _ in range(3):
            f, ph = rng.uniform(0.05, 0.35), rng.uniform(0, 2 * np.pi)
            ang[:, axis] += amp / 3 * np.sin(2 * np.pi * f * t + ph)
    R = roma.rotvec_to_rotmat(torch.as_tensor(np.radians(ang))).numpy()
    P = np.tile(np.eye(4), (n, 1, 1))
    P[:, :3, :3] = R
    return P


class Avatar:
    """A personal, audio-driven 3D avatar.

    Build one with :meth:`fit` (from a talking video or a capture directory) or :meth:`load`; drive
    it with :meth:`render`.
    """

    def __init__(
        self,
        model: GaussianAvatar,
        config: AvatarConfig,
        meta: dict,
        track: dict,
        background: np.ndarray,
        speech_model: str | Path | None = None,
    ):
        self.model = model.eval()
        self.config = config
        self.meta = meta
        self.track = track
        self.background = background
        # the speech model file the USER named (never one named by an avatar directory's record)
        self.speech_model_path = Path(speech_model).expanduser() if speech_model else None

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        video: str | Path,
        config: AvatarConfig | str | Path | dict | None = None,
        workdir: str | Path | None = None,
        *,
        preset: str | None = None,
        steps: int | None = None,
        progress: bool = True,
        log: Callable[[str], None] | None = print,
    ) -> "Avatar":
        """Capture ``video`` (or use a capture directory) and train an avatar on it.

        Args:
            video: a video file with a face and an audio track, or a CaptureSet directory.
            config: an AvatarConfig, a YAML path or a mapping; ``preset`` picks the base preset.
            workdir: where the capture and checkpoints go (a temporary directory if None).
                A killed fit resumes from the checkpoint found there.
            steps: override ``config.train.steps``.
        """
        from .capture import run_capture
        from .capture.config import CaptureConfig
        from .io.captureset import CaptureSet
        from .io.watermark import new_avatar_id
        from .train.trainer import lpips_term, train

        cfg = load_config(config, preset)
        if steps is not None:
            if steps < 1:
                raise ConfigError(f"steps must be positive, got {steps}")
            cfg.train.steps = int(steps)
        lpips_term(cfg)  # an unusable train.lpips_weights file fails now, not after the capture
        if cfg.capture.speech_model:  # so does a missing or unreadable speech model (cached for the capture)
            from .capture.pipeline import load_speech_model

            load_speech_model(CaptureConfig(speech_model=cfg.capture.speech_model))
        say = log or (lambda s: None)
        video = Path(video)
        if not video.exists():
            raise Avatar3DError(f"input not found: {video}")
        tmp = None
        if workdir is None:
            tmp = tempfile.TemporaryDirectory(prefix="avatar3d-")
            workdir = tmp.name
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        lock = None
        try:
            if tmp is None:  # a user's workdir: made for this input and capture settings? (avatar3d/workdir.py)
                from dataclasses import asdict

                from .workdir import WorkdirLock, check_workdir

                lock = WorkdirLock(workdir)
                check_workdir(workdir, video, None if video.is_dir() else asdict(cfg.capture))
            if video.is_dir():
                cs = CaptureSet.load(video)
            else:
                cap_dir = workdir / "capture"
                c = cfg.capture
                ccfg = CaptureConfig(
                    max_size=c.max_size,
                    stride=c.stride,
                    max_frames=c.max_frames or None,
                    focal=c.focal or None,
                    landmark_tracking=c.landmark_tracking,
                    feature_tracks=c.feature_tracks,
                    morphable=c.morphable,
                    flame_path=c.flame_path or None,
                    flame_landmarks=c.flame_landmarks or None,
                    speech_model=c.speech_model or None,
                )
                if (cap_dir / "transforms.json").is_file():
                    say(f"reusing capture in {cap_dir}")
                    cs = CaptureSet.load(cap_dir)
                else:
                    t0 = time.time()
                    cs = run_capture(video, cap_dir, ccfg, progress=progress)
                    say(f"captured {cs.n_frames} frames in {time.time() - t0:.1f} s")
            _check_speech_capture(cs, cfg.capture.speech_model)
            if cs.n_frames < MIN_FRAMES:
                raise Avatar3DError(
                    f"the capture has {cs.n_frames} frame(s); an avatar needs at least {MIN_FRAMES} "
                    f"({MIN_FRAMES / cs.fps:.1f} s of video)"
                )
            result = train(cs, cfg, workdir, progress=_progress_factory(progress), log=say)
        finally:
            if lock is not None:
                lock.release()
            if tmp is not None:
                tmp.cleanup()
        d = result.data
        meta = {
            "width": d.width,
            "height": d.height,
            "K": d.K.tolist(),
            "rest_viewmat": d.rest_viewmat.tolist(),
            "fps": d.fps,
            "n_mels": int(d.features.shape[-1]),
            "audio_window": int(d.features.shape[1]),
            "n_gaussians": result.model.n,
            "train_frames": int(len(d.train_idx)),
            "test_frames": int(len(d.test_idx)),
            "train_seconds": round(result.seconds, 1),
            "heldout": result.heldout,
            "history": result.history,
            "audio_pretrain": result.audio,
            "source": str(video),
            "avatar_id": new_avatar_id(),  # random 32-bit id carried by the watermark of its renders
        }
        # the speech front end it was trained with (avatars without the key: log-mel / speech model only)
        meta["audio_front_end"] = {
            "name": ("visemes+" if d.n_visemes else "") + ("mel" if d.speech_model is None else "speech_model"),
            "version": 1,
            "viseme_channels": d.n_visemes,
        }
        meta["source_size"] = _source_size(video, cs)  # the capture camera renders at this size by default
        if d.speech_model is not None:  # render re-runs this model and applies the same normalisation
            meta["speech_model"] = {
                **d.speech_model,
                "mean": [float(x) for x in d.feature_mean],
                "std": [float(x) for x in d.feature_std],
            }
        track = {"head_poses": d.head_poses[d.train_idx], "blink": d.blink[d.train_idx]}
        bg = (d.plate.numpy() * 255).round().astype(np.uint8)
        if result.heldout:
            say(f"held-out PSNR {result.heldout['psnr']:.2f} dB, SSIM {result.heldout['ssim']:.3f} "
                f"over {result.heldout['frames']} frames")
        return cls(result.model, cfg, meta, track, bg, speech_model=cfg.capture.speech_model or None)

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write the avatar directory (atomically; safetensors, no pickle)."""
        from .io.avatar_dir import write_avatar_dir

        return write_avatar_dir(path, self.meta, self.config.to_yaml(), self.model.state_dict(), self.track, self.background)

    @classmethod
    def load(cls, path: str | Path, *, speech_model: str | Path | None = None) -> "Avatar":
        """Load an avatar directory written by :meth:`save`; raises FormatError when it is not one.

        An avatar directory is data: loading or rendering it never runs code from a file it names.
        An avatar trained on a local speech model only records which one; to render it, name the
        model file yourself with ``speech_model`` (the CLI's ``--speech-model PATH``)."""
        import yaml

        from .io.avatar_dir import read_avatar_dir

        meta, cfg_text, state, track, bg = read_avatar_dir(path)
        if not isinstance(meta.get("avatar_id"), int) or not 0 <= meta["avatar_id"] < 2**32:
            from .io.watermark import avatar_id_from_file  # saved before ids existed: from the weights

            meta["avatar_id"] = avatar_id_from_file(Path(path) / "model.safetensors")
        try:
            raw = yaml.safe_load(cfg_text) or {}
        except yaml.YAMLError as e:
            raise FormatError(f"{path}/config.yaml is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise FormatError(f"{path}/config.yaml must hold a mapping")
        model_sec = raw.get("model") if isinstance(raw, dict) else None
        if isinstance(model_sec, dict):
            # grids saved before sin/cos octaves were appended had none (a missing `encoding` is handled
            # by GaussianAvatar.load_state_dict, which reads the encoding from the weights)
            if model_sec.get("encoding", "frequency") != "frequency":
                model_sec.setdefault("grid_pe_freqs", 0)
        try:
            cfg = AvatarConfig.from_dict(raw, where=f"{path}/config.yaml")
        except ConfigError as e:
            raise FormatError(str(e)) from None
        n_expr = int(state["expr_basis"].shape[0]) if "expr_basis" in state else 16
        n_vis = int((meta.get("audio_front_end") or {}).get("viseme_channels", 0))
        if "audio_front_end" not in meta:  # saved before the speech front end: log-mel only, old mouth binding
            cfg.model.visemes, cfg.model.mouth_split = False, False
        model = GaussianAvatar(
            cfg.model, state["means"].shape[0], n_mels=int(meta["n_mels"]) - n_vis, n_expr=n_expr, n_visemes=n_vis
        )
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise FormatError(f"{path}: weights do not match its config ({str(e).splitlines()[0]})") from None
        return cls(model, cfg, meta, track, bg, speech_model=speech_model)

    # ------------------------------------------------------------------ export
    @torch.no_grad()
    def gaussians(self, audio_code: torch.Tensor | None = None, blink: float = 0.0, head_pose=None) -> dict:
        """World-space Gaussians (numpy) for one audio code (None = the silent, neutral face)."""
        code = audio_code if audio_code is not None else self._silence_code()
        pose = None if head_pose is None else torch.as_tensor(head_pose, dtype=torch.float32)
        gs = self.model.posed(code, torch.tensor([float(blink)]), pose)
        return {k: gs[k].numpy() for k in ("means", "quats", "scales", "opacities", "colors")}

    @property
    def avatar_id(self) -> int:
        """The avatar's 32-bit id, written into the watermark of its renders (0 if none is known)."""
        v = self.meta.get("avatar_id")
        return v if isinstance(v, int) and 0 <= v < 2**32 else 0

    @property
    def speech_model(self) -> str | None:
        """Path of the local speech model this avatar was trained with as recorded at fit time (for
        information only: it is never loaded from this record), None for log-mel."""
        sm = self.meta.get("speech_model")
        return str(sm["path"]) if isinstance(sm, dict) and sm.get("path") else None

    def _speech_model_file(self) -> Path:
        """The speech model file to run: the one the user named, never the recorded one."""
        if self.speech_model_path is None:
            raise FormatError(
                f"this avatar was trained with the speech model {self.speech_model or '(unrecorded)'}: "
                "name that model file with --speech-model PATH (Avatar.load(..., speech_model=PATH)); "
                "avatar3d never runs a model file named by an avatar directory"
            )
        return self.speech_model_path

    def audio_features(
        self,
        wave16k: np.ndarray,
        fps: float | None = None,
        n_frames: int | None = None,
        frames: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """The avatar's audio features (n_frames, W, M) float32 of a 16 kHz mono wave, computed as
        in training: normalised log-mel (:func:`avatar3d.audio.frame_features`) or, for an avatar
        trained with a speech model, that model's features (loaded from its recorded path once per
        process) normalised with the training statistics. ``fps`` defaults to the avatar's;
        ``n_frames`` to ``floor(duration * fps)``. Every renderer computes its features here.
        An avatar trained with a speech model needs the model file named by the user
        (:meth:`load`'s ``speech_model``). ``frames=(a, b)`` returns rows a..b-1 only (normalised over
        the whole wave), without computing the others."""
        fps = float(self.meta["fps"]) if fps is None else float(fps)
        window = int(self.meta.get("audio_window", 16))
        wave = np.asarray(wave16k, np.float32)
        if n_frames is None:
            n_frames = math.floor(len(wave) / AUDIO_SR * fps + 1e-6)
        sm = self.meta.get("speech_model")
        if not sm:
            from .audio import frame_features

            feats = frame_features(wave, AUDIO_SR, fps, n_frames=n_frames, window=window, frames=frames)
            return self._append_visemes(feats, wave, fps, n_frames, frames)
        from .audio.speech_model import cached_extractor

        path = self._speech_model_file()
        if not path.exists():
            raise FormatError(f"{path}: speech model not found")
        feats = cached_extractor(path)(wave, AUDIO_SR, fps, n_frames=n_frames, window=window)  # (n, W, D)
        mean = np.asarray(sm["mean"], np.float32)
        std = np.asarray(sm["std"], np.float32)
        if feats.shape[-1] != mean.shape[0]:
            raise FormatError(
                f"{path}: speech model gives {feats.shape[-1]} features, but this avatar was trained on "
                f"{mean.shape[0]} (the file changed since training)"
            )
        feats = ((feats - mean) / std).astype(np.float32)
        feats = feats if frames is None else feats[frames[0] : frames[1]]
        return self._append_visemes(feats, wave, fps, n_frames, frames)

    def _append_visemes(
        self, feats: np.ndarray, wave16k: np.ndarray, fps: float, n_frames: int, frames: tuple[int, int] | None
    ) -> np.ndarray:
        """(n, W, M) features + the speech front end's (n, 17) vectors on every window step, for an
        avatar trained with it (``meta["audio_front_end"]["viseme_channels"]``); else unchanged.
        ``frames``: the rows of ``feats`` within the wave's n_frames."""
        n_vis = int((self.meta.get("audio_front_end") or {}).get("viseme_channels", 0))
        if not n_vis:
            return feats
        vis = self._visemes(wave16k, fps, n_frames)
        if frames is not None:
            vis = vis[frames[0] : frames[1]]
        return np.concatenate([feats, np.repeat(vis[:, None, :], feats.shape[1], 1)], -1)

    def _visemes(self, wave16k: np.ndarray, fps: float, n_frames: int) -> np.ndarray:
        """The front end's (n_frames, 17) vectors of a wave, computed once per wave: a render asks
        for its features chunk by chunk, and the phone recogniser runs over the whole utterance."""
        from .audio.visemes import speech_features

        key = (id(wave16k), len(wave16k), float(fps), int(n_frames), float(np.abs(wave16k[::997]).sum()))
        cached = getattr(self, "_viseme_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, np.asarray(speech_features(wave16k, fps, n_frames), np.float32))
            self._viseme_cache = cached
        return cached[1]

    def _silence_code(self) -> torch.Tensor:
        wave = np.zeros(AUDIO_SR, np.float32)
        feats = torch.as_tensor(self.audio_features(wave))
        return self.model.audio(gather_windows(feats.float(), torch.tensor([len(feats) // 2]), self.model.cfg.smooth_window))[0]

    def export_ply(self, path: str | Path, audio=None, sample_rate: int | None = None) -> list[Path]:
        """Export standard 3DGS PLY: one file (neutral face) or, with ``audio``, one per frame into a directory."""
        from .audio import load_audio
        from .io.atomic import atomic_dir
        from .io.ply import write_gaussian_ply

        path = Path(path)
        if audio is None:
            return [write_gaussian_ply(path, **self.gaussians())]
        wave = load_audio(audio if sample_rate is None else (audio, sample_rate), sr=AUDIO_SR)
        fps = float(self.meta["fps"])
        n = int(len(wave) / AUDIO_SR * fps)
        if n < 1:
            raise Avatar3DError("the audio is too short for one frame")
        out = []
        with atomic_dir(path, kind="export") as tmp:
            k = 0
            for codes in self.audio_codes(wave, fps, n):
                for code in codes:
                    out.append(write_gaussian_ply(Path(tmp) / f"frame_{k:06d}.ply", **self.gaussians(code)))
                    k += 1
            (Path(tmp) / "sequence.json").write_text(__import__("json").dumps({"fps": fps, "frames": n}))
        return [path / p.name for p in out]

    # ------------------------------------------------------------------ cameras
    @property
    def rest_camera(self) -> Camera:
        """The capture camera (body frame) at the training resolution."""
        return Camera(np.array(self.meta["K"]), np.array(self.meta["rest_viewmat"]), self.meta["width"], self.meta["height"])

    def camera(self, yaw: float = 0.0, pitch: float = 0.0, size: tuple[int, int] | None = None, distance_scale: float = 1.0) -> Camera:
        """A camera orbiting the head at the capture's distance and focal length."""
        w, h = size or (self.meta["width"], self.meta["height"])
        K = np.array(self.meta["K"])
        dist = float(np.linalg.norm(np.array(self.meta["rest_viewmat"])[:3, 3])) * distance_scale
        focal = K[0, 0] * w / self.meta["width"]
        return Camera.orbit(yaw, pitch, distance=dist, width=w, height=h, focal=focal)

    def cameras(self, spec: str | Camera | Sequence[Camera] | None, n: int, size: tuple[int, int] | None = None) -> list[Camera]:
        """Resolve a camera spec: None/'capture', 'frontal', 'orbit' (±30° sweep), a Camera, a list, or a JSON path."""
        if spec is None or spec == "capture":
            cam = self.rest_camera
            if size is None and self.meta.get("source_size"):  # the clip's own resolution
                size = tuple(int(v) for v in self.meta["source_size"])
            return [cam.resized(*size) if size else cam] * n
        if isinstance(spec, Camera):
            return [spec.resized(*size) if size else spec] * n
        if isinstance(spec, (list, tuple)):
            cams = list(spec)
            if not cams or not all(isinstance(c, Camera) for c in cams):
                raise CameraError("a camera list must hold Camera objects")
            if len(cams) not in (1, n):
                raise CameraError(f"got {len(cams)} cameras for {n} frames")
            cams = cams * n if len(cams) == 1 else cams
            return [c.resized(*size) if size else c for c in cams]
        if spec == "frontal":
            return [self.camera(0, 0, size)] * n
        if spec == "orbit":
            return [self.camera(30.0 * math.sin(2 * math.pi * k / max(n, 1)), 0, size) for k in range(n)]
        if isinstance(spec, (str, Path)) and str(spec).endswith(".json"):
            cam = Camera.from_json(spec)
            return [cam.resized(*size) if size else cam] * n
        raise CameraError(f"unknown camera {spec!r}: use capture, frontal, orbit, a Camera or a JSON file")

    # ------------------------------------------------------------------ rendering
    def audio_codes(self, wave16k: np.ndarray, fps: float, n_frames: int, chunk: int = CODE_CHUNK) -> Iterator[torch.Tensor]:
        """Smoothed audio codes of frames 0..n_frames-1, yielded in order as (k, A) tensors of at most
        ``chunk`` frames. Features are computed one chunk at a time (with the smoother's context on
        both sides), so memory does not grow with the audio's length."""
        span = self.model.cfg.smooth_window
        for s in range(0, n_frames, chunk):
            e = min(n_frames, s + chunk)
            lo, hi = max(0, s - span), min(n_frames, e + span)
            feats = torch.as_tensor(self.audio_features(wave16k, fps, n_frames, frames=(lo, hi)), dtype=torch.float32)
            with torch.no_grad():
                yield self.model.audio(gather_windows(feats, torch.arange(s - lo, e - lo), span))

    def _prepare(self, audio, sample_rate, max_seconds) -> tuple[np.ndarray, float, int]:
        """(16 kHz mono wave, fps, number of frames) of a render's audio; one-line errors on bad input."""
        from .audio import load_audio

        if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and max_seconds > 0):
            raise ConfigError(f"max_seconds must be a positive number of seconds, got {max_seconds!r}")
        src = audio if sample_rate is None else (audio, sample_rate)
        wave = load_audio(src, sr=AUDIO_SR)
        if max_seconds is not None:
            wave = wave[: int(max_seconds * AUDIO_SR)]
        if not np.isfinite(wave).all():
            raise Avatar3DError("the audio contains NaN or infinite samples")
        fps = float(self.meta["fps"])
        n = int(math.floor(len(wave) / AUDIO_SR * fps))
        if n < 1:
            raise Avatar3DError(f"the audio is too short ({len(wave) / AUDIO_SR:.3f} s) for one frame at {fps:g} fps")
        return wave, fps, n

    def stream(
        self,
        audio,
        camera: str | Camera | Sequence[Camera] | None = None,
        *,
        sample_rate: int | None = None,
        size: tuple[int, int] | None = None,
        pose: str | None = None,
        blink: str | np.ndarray | None = None,
        background: str | tuple | None = None,
        progress: bool = True,
        max_seconds: float | None = None,
    ) -> "FrameStream":
        """Like :meth:`render`, but frames are rendered lazily as the returned stream is iterated
        (or saved), so memory stays flat whatever the audio's length. Every argument is checked
        here, before any frame is rendered."""
        wave, fps, n = self._prepare(audio, sample_rate, max_seconds)
        if size is not None:
            w, h = int(size[0]), int(size[1])
            if w < 16 or h < 16 or w > 8192 or h > 8192:
                raise CameraError(f"output size {w}x{h} must be within 16..8192 px")
            size = (w, h)
        cams = self.cameras(camera, n, size)
        if len({(c.width, c.height) for c in cams}) > 1:
            raise CameraError("all cameras of a render must have the same image size")
        poses = self._poses(pose or self.config.render.pose, n, fps)
        blinks = self._blinks(blink if blink is not None else self.config.render.blink, n, fps)
        bg_spec = background if background is not None else self.config.render.background
        self._background(bg_spec, cams[0])  # a bad colour fails now, not at the first frame

        def frames() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            bar = _progress_factory(progress)
            ticks = iter(bar(range(n), "rendering")) if bar is not None else None
            bgs: dict[tuple[int, int], torch.Tensor] = {}
            k = 0
            for codes in self.audio_codes(wave, fps, n):
                for code in codes:
                    cam = cams[k]
                    bg = bgs.get((cam.width, cam.height))
                    if bg is None:
                        bg = bgs.setdefault((cam.width, cam.height), self._background(bg_spec, cam))
                    vm, K = cam.to_torch()
                    with torch.no_grad():
                        gs = self.model.posed(code, torch.tensor([blinks[k]]), torch.as_tensor(poses[k], dtype=torch.float32))
                        out = self.model.render(gs, vm[None], K[None], cam.width, cam.height, bg, backend=self.config.render.backend)
                    frame = (out.colors[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
                    yield frame, out.alphas[0, ..., 0].numpy()
                    k += 1
                    if ticks is not None:
                        next(ticks, None)
            if ticks is not None:
                for _ in ticks:  # close the bar
                    pass

        return FrameStream(fps, wave, AUDIO_SR, n, cams[0].width, cams[0].height, frames,
                           avatar_id=self.avatar_id, watermark=self.config.render.watermark)

    def render(
        self,
        audio,
        camera: str | Camera | Sequence[Camera] | None = None,
        *,
        sample_rate: int | None = None,
        size: tuple[int, int] | None = None,
        pose: str | None = None,
        blink: str | np.ndarray | None = None,
        background: str | tuple | None = None,
        progress: bool = True,
        max_seconds: float | None = None,
    ) -> RenderResult:
        """Render the avatar speaking ``audio`` (a path, or an array with ``sample_rate``) into memory.

        For long audio use :meth:`stream` (``.save(path)`` encodes frame by frame); this method holds
        every frame.

        Args:
            camera: None/'capture' (the capture view), 'frontal', 'orbit' (±30° yaw sweep),
                a Camera, a list of Cameras (one per frame) or a camera JSON file; a StereoPair
                (``avatar.camera().stereo()``) renders both eyes into a StereoRenderResult.
            size: output (width, height); default the clip's own size for the capture camera (avatars
                fitted before that was recorded, and other cameras: the training resolution).
            pose: 'static', 'track' (training head motion, looped back and forth) or 'generated'.
            blink: 'auto' (natural blinks), 'none', 'track', or an array of per-frame amounts.
            background: 'plate', 'white', 'black', 'green', '#rrggbb' or an (r, g, b) in [0, 1].
            max_seconds: render at most this much of the audio.
        """
        from .core.camera import StereoPair

        if isinstance(camera, StereoPair):  # both eyes (a StereoRenderResult): avatar3d.export.stereo
            from .export.stereo import render_stereo

            return render_stereo(self, audio, camera, sample_rate=sample_rate, size=size, pose=pose, blink=blink,
                                 background=background, progress=progress, max_seconds=max_seconds)
        st = self.stream(audio, camera, sample_rate=sample_rate, size=size, pose=pose, blink=blink,
                         background=background, progress=progress, max_seconds=max_seconds)
        frames = np.zeros((st.n_frames, st.height, st.width, 3), np.uint8)
        alphas = np.zeros((st.n_frames, st.height, st.width), np.float32)
        for k, (f, a) in enumerate(st.with_alphas()):
            frames[k], alphas[k] = f, a
        return RenderResult(frames, st.fps, st.audio, st.sample_rate, alphas, avatar_id=self.avatar_id,
                            watermark=self.config.render.watermark)

    def _poses(self, mode: str, n: int, fps: float) -> np.ndarray:
        if mode == "static":
            return np.tile(np.eye(4), (n, 1, 1))
        if mode == "track":
            tr = self.track["head_poses"].numpy()
            cyc = np.concatenate([tr, tr[::-1]])  # mirrored loop: no jump at the seam
            return cyc[np.arange(n) % len(cyc)]
        if mode == "generated":
            return _generated_motion(n, fps)
        raise ConfigError(f"unknown pose mode {mode!r}: use static, track or generated")

    def _blinks(self, mode, n: int, fps: float) -> np.ndarray:
        if isinstance(mode, np.ndarray) or isinstance(mode, (list, tuple)):
            b = np.asarray(mode, np.float32).reshape(-1)
            if len(b) != n:
                raise ConfigError(f"blink array has {len(b)} values for {n} frames")
            return np.clip(b, 0, 1)
        if mode == "auto":
            return _blink_schedule(n, fps)
        if mode == "none":
            return np.zeros(n, np.float32)
        if mode == "track":
            tr = self.track["blink"].numpy()
            cyc = np.concatenate([tr, tr[::-1]])
            return cyc[np.arange(n) % len(cyc)]
        raise ConfigError(f"unknown blink mode {mode!r}: use auto, none, track or an array")

    def _background(self, spec, cam: Camera) -> torch.Tensor:
        spec = spec if spec is not None else self.config.render.background
        named = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0)}
        if isinstance(spec, str):
            if spec == "plate":
                import cv2

                img = cv2.resize(self.background, (cam.width, cam.height), interpolation=cv2.INTER_AREA)
                return torch.from_numpy(img).float()[None] / 255.0
            if spec in named:
                rgb = named[spec]
            elif spec.startswith("#") and len(spec) == 7:
                try:
                    rgb = tuple(int(spec[i : i + 2], 16) / 255.0 for i in (1, 3, 5))
                except ValueError:
                    raise ConfigError(f"bad colour {spec!r}") from None
            else:
                raise ConfigError(f"unknown background {spec!r}: use plate, white, black, green or #rrggbb")
        else:
            rgb = tuple(float(x) for x in spec)
            if len(rgb) != 3:
                raise ConfigError("a background colour needs three values")
        return torch.tensor([rgb], dtype=torch.float32)
