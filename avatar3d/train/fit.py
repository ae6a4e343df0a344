"""Fit orchestration: a video (or a capture directory) and a config -> the parts of an avatar.

Stages: :func:`prepare_config` (checks that fail fast), :func:`open_capture` (capture the clip into the
workdir, or reuse its capture), :func:`~avatar3d.train.trainer.train`, and :func:`avatar_record`
(what the avatar directory records). :func:`fit_avatar` runs them in a workdir it locks.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..capture import run_capture
from ..capture.pipeline import load_speech_model
from ..config import AvatarConfig, load_config
from ..errors import Avatar3DError, ConfigError
from ..io.captureset import CaptureSet
from ..io.media import probe_video
from ..io.meta import AvatarMeta, FrontEnd
from ..io.watermark import new_avatar_id
from ..models.gaussian_avatar import GaussianAvatar
from ..progress import track
from ..workdir import WorkdirLock, check_workdir
from .trainer import TrainResult, lpips_term, train

MIN_FRAMES = 10  # the fewest frames a capture may have to fit an avatar on
FRONT_END_VERSION = 1


@dataclass
class FittedAvatar:
    """The parts of a fitted avatar (what ``Avatar`` is built from)."""

    model: GaussianAvatar
    config: AvatarConfig
    meta: AvatarMeta
    track: dict[str, torch.Tensor]  # head_poses (T, 4, 4), blink (T,) of the training frames
    background: np.ndarray  # (H, W, 3) uint8 capture background plate


def prepare_config(config, preset: str | None, steps: int | None) -> AvatarConfig:
    """The fit's config, with every check that can fail before the capture done now: steps, the LPIPS
    weights file and the speech model file."""
    cfg = load_config(config, preset)
    if steps is not None:
        if steps < 1:
            raise ConfigError(f"steps must be positive, got {steps}")
        cfg.train.steps = int(steps)
    lpips_term(cfg)
    if cfg.capture.speech_model:
        load_speech_model(cfg.capture)  # cached for the capture
    return cfg


@contextlib.contextmanager
def fit_workdir(workdir: str | Path | None, video: Path, cfg: AvatarConfig) -> Iterator[Path]:
    """The workdir of a fit: a temporary one (removed after), or the user's, locked and checked to
    belong to this input and these capture settings (:mod:`avatar3d.workdir`)."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="avatar3d-") as tmp:
            yield Path(tmp)
        return
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    lock = WorkdirLock(work)
    try:
        check_workdir(work, video, None if video.is_dir() else asdict(cfg.capture))
        yield work
    finally:
        lock.release()


def _check_speech_capture(cs: CaptureSet, speech_model: str | None) -> None:
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


def open_capture(
    video: Path, work: Path, cfg: AvatarConfig, progress: bool, say: Callable[[str], None]
) -> CaptureSet:
    """The capture to train on: ``video`` itself when it is a capture directory, the workdir's
    capture when one is there, else a new capture of the clip into ``work/capture``."""
    if video.is_dir():
        cs = CaptureSet.load(video)
    elif (work / "capture" / "transforms.json").is_file():
        say(f"reusing capture in {work / 'capture'}")
        cs = CaptureSet.load(work / "capture")
    else:
        t0 = time.time()
        cs = run_capture(video, work / "capture", cfg.capture, progress=progress)
        say(f"captured {cs.n_frames} frames in {time.time() - t0:.1f} s")
    _check_speech_capture(cs, cfg.capture.speech_model)
    if cs.n_frames < MIN_FRAMES:
        raise Avatar3DError(
            f"the capture has {cs.n_frames} frame(s); an avatar needs at least {MIN_FRAMES} "
            f"({MIN_FRAMES / cs.fps:.1f} s of video)"
        )
    return cs


def _source_size(video: Path, cs: CaptureSet) -> tuple[int, int]:
    """(width, height) of the source clip (upright), or of the capture's frames for a capture directory."""
    if video.is_file():
        info = probe_video(video)
        return int(info.width), int(info.height)
    return int(cs.width), int(cs.height)


def avatar_record(result: TrainResult, video: Path, cs: CaptureSet) -> AvatarMeta:
    """What the avatar directory records of a fit: camera, audio layout, front end, provenance, metrics."""
    d = result.data
    speech = None
    if d.speech_model is not None:  # render re-runs this model and applies the same normalisation
        speech = {
            **d.speech_model,
            "mean": [float(x) for x in d.feature_mean],
            "std": [float(x) for x in d.feature_std],
        }
    front = ("visemes+" if d.n_visemes else "") + ("mel" if d.speech_model is None else "speech_model")
    return AvatarMeta(
        width=d.width,
        height=d.height,
        K=d.K.tolist(),
        rest_viewmat=d.rest_viewmat.tolist(),
        fps=d.fps,
        n_mels=int(d.features.shape[-1]),
        audio_window=int(d.features.shape[1]),
        front_end=FrontEnd(front, FRONT_END_VERSION, d.n_visemes),
        source_size=_source_size(video, cs),
        speech_model=speech,
        avatar_id=new_avatar_id(),
        source=str(video),
        n_gaussians=result.model.n,
        train_frames=int(len(d.train_idx)),
        test_frames=int(len(d.test_idx)),
        train_seconds=round(result.seconds, 1),
        heldout=result.heldout,
        history=result.history,
        audio_pretrain=result.audio,
    )


def fit_avatar(
    video: str | Path,
    config=None,
    workdir: str | Path | None = None,
    *,
    preset: str | None = None,
    steps: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> FittedAvatar:
    """Capture ``video`` (or use a capture directory) and train an avatar on it (see ``Avatar.fit``)."""
    cfg = prepare_config(config, preset, steps)
    say = log or (lambda s: None)
    video = Path(video)
    if not video.exists():
        raise Avatar3DError(f"input not found: {video}")
    with fit_workdir(workdir, video, cfg) as work:
        cs = open_capture(video, work, cfg, progress, say)
        result = train(cs, cfg, work, progress=track if progress else None, log=say)
    d = result.data
    if result.heldout:
        h = result.heldout
        say(f"held-out PSNR {h['psnr']:.2f} dB, SSIM {h['ssim']:.3f} over {h['frames']} frames")
    track_ = {"head_poses": d.head_poses[d.train_idx], "blink": d.blink[d.train_idx]}
    bg = (d.plate.numpy() * 255).round().astype(np.uint8)
    return FittedAvatar(result.model, cfg, avatar_record(result, video, cs), track_, bg)


__all__ = ["MIN_FRAMES", "FittedAvatar", "fit_avatar", "open_capture", "prepare_config"]
