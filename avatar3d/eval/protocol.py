"""The field's self-driven reconstruction protocol: :func:`evaluate_avatar`.

The avatar was trained on the first 10/11 of a clip. Here a **held-out** clip supplies the audio
*and* the head pose of every test frame; the avatar is rendered with them and compared with the real
frame (ER-NeRF, TalkingGaussian, GaussianTalker, SyncTalk, InsTaG all use this protocol; see
``shared/notes/evaluation.md``). Design decisions: ``docs/design/evaluation-protocol.md``.

* ``video`` is either a different clip of the subject (all its frames are test frames), or the
  training clip / its capture directory with ``heldout_only=True`` (only the frames after the avatar's
  training split are used; passing the training clip itself turns this on automatically, so test
  frames never leak from training).
* Head pose, blinks and audio come from the capture stage run on that clip (or from the given capture
  directory). For the training clip the capture reproduces the avatar's head space exactly; for another
  clip of the subject both head spaces come from the same capture pipeline and landmark convention
  (centroid origin, symmetric-pair axes, fixed inter-pupillary distance) and are taken to coincide;
  the body frame is that clip's rest frame.
* Comparison region: ``crop="head"`` (default) — a square around the face from the capture's landmarks
  (:data:`HEAD_CROP_SCALE` × the landmark extent, fixed size per clip), the avatar rendered *directly*
  into that crop at ``size`` px (its intrinsics re-targeted; no resampling of the render) and the real
  frame cropped from the source video and resized; ``crop="full"`` — the whole frame resized to
  ``size`` on its longest side.
* Composites: **head** — the avatar's head and mouth Gaussians over the real frame (the field's
  "head-only" convention: real torso and background pasted in) — the primary numbers; **all rendered**
  — everything from the avatar (head, torso, its background plate): reported beside it as
  ``*_all_rendered``. ``head_coverage`` (mean head alpha inside the real face oval) guards the pasted
  composite against an avatar that renders too little.

Stages: :func:`_resolve_clip` (which frames, from which capture) -> :func:`_frame_geometry` (crop
boxes, output size) -> :func:`_drive_inputs` (codes, poses, blinks, audio) -> :func:`_score_frames`
(render, composite and measure every frame) -> :func:`_assemble` (the report dict), then SyncNet and
the view sweep.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch

from ..api import Avatar
from ..audio import audio_energy
from ..capture import run_capture
from ..capture.landmarks import FaceLandmarker
from ..core.camera import Camera
from ..core.lpips import load_lpips
from ..core.topology import N_LANDMARKS
from ..errors import Avatar3DError
from ..io.captureset import CaptureSet
from ..io.media import iter_frames, probe_video
from ..progress import track
from ..train.data import rest_frame
from . import metrics as M
from . import sync as S
from ._drive import HEAD_GROUPS, Layer, audio_codes, capture_features, render_layers
from .crops import CROPS, HEAD_CROP_SCALE, crop_boxes, crop_image, crop_intrinsics, out_size, warp_plate
from .views import view_consistency

SIZE_RANGE_PX = (64, 4096)  # allowed comparison sizes (longest side)
LMD_FRAME_PX = 512  # LMD is reported in pixels of a frame this size (the field's 512² crops)
SYNCNET_PX = 224  # side of the face crops SyncNet reads
VIEWS_MAX_PX = 512  # the view sweep renders at most this size
VIEW_SWEEP_DEG = 45  # the sweep's yaw range (± degrees), for the log line
REPORT_VERSION = 1


@dataclass(frozen=True)
class EvalOptions:
    """What :func:`evaluate_avatar` measures (its keyword arguments are these fields).

    max_frames: evaluate at most this many frames (the first ones of the held-out part).
    size: the comparison images' longest side in px (the field uses 512).
    heldout_only: ``video`` is the training clip: evaluate only its last (held-out) part.
    crop: "head" (face crop) or "full" (whole frame).
    lpips_weights, syncnet_weights: local weights files; "not computed" without them.
    views: also run the ±45° view-consistency sweep of ``view_count`` views (``truth``: a
        SyntheticTruth to compare with).
    workdir: where the clip's capture is written (a temporary directory when None).
    keep_samples: keep this many evenly spaced (real, avatar) frame pairs under ``"samples"``
        (numpy arrays; :func:`avatar3d.eval.report.write_report` plots them and leaves them out of the
        JSON).
    progress: show a progress bar; log: a callable receiving one-line progress messages.
    """

    max_frames: int | None = None
    size: int = 512
    heldout_only: bool = False
    crop: str = "head"
    lpips_weights: str | Path | None = None
    syncnet_weights: str | Path | None = None
    views: bool = True
    truth: Any = None
    view_count: int = 31
    workdir: str | Path | None = None
    keep_samples: int = 0
    progress: bool = False
    log: Callable[[str], None] | None = None

    def validate(self) -> None:
        """Raise :class:`Avatar3DError` on an unusable option."""
        if self.crop not in CROPS:
            raise Avatar3DError(f"crop must be one of {', '.join(CROPS)}, got {self.crop!r}")
        lo, hi = SIZE_RANGE_PX
        if not lo <= int(self.size) <= hi:
            raise Avatar3DError(f"comparison size {self.size} must be within {lo}..{hi} px")
        if self.max_frames is not None and int(self.max_frames) < 1:
            raise Avatar3DError(f"max_frames must be positive, got {self.max_frames}")

    def say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)


# ------------------------------------------------------------------------------------ the clip
@dataclass
class _Clip:
    cs: CaptureSet
    idx: np.ndarray  # (n,) capture frame indices evaluated
    source: Path | None  # video the real frames are read from (None: the capture's stored images)
    heldout_only: bool
    same_capture: bool  # the avatar's own head space (training clip)
    notes: list[str] = field(default_factory=list)


def _same_file(a, b) -> bool:
    try:
        return bool(a) and bool(b) and Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _capture_clip(
    avatar: Avatar, video: Path, opts: EvalOptions, workdir: Path
) -> tuple[CaptureSet, Path | None, bool]:
    """The clip's capture (loaded, or run on the video) -> (capture, source video or None, is the
    avatar's training clip)."""
    src_train = avatar.meta.source
    if video.is_dir():
        cs = CaptureSet.load(video)
        same = _same_file(video, src_train) or _same_file(cs.source, src_train)
        return cs, (Path(cs.source) if cs.source and Path(cs.source).is_file() else None), same
    same = _same_file(video, src_train)
    # the training capture's settings (the training clip: exactly its capture, so the same head space),
    # without the parts the eval does not use (speech features, a morphable fit)
    c = avatar.config.capture
    max_frames = c.max_frames if same or opts.heldout_only else opts.max_frames
    cfg = dataclasses.replace(c, max_frames=max_frames, speech_model=None, morphable="none")
    opts.say(f"capturing {video} (head pose, landmarks, audio)")
    return run_capture(video, workdir / "capture", cfg, progress=opts.progress), video, same


def _heldout_indices(avatar: Avatar, cs: CaptureSet, video: Path, notes: list[str]) -> np.ndarray:
    """Capture frames after the avatar's training split (the capture's own test split when the frame
    counts disagree)."""
    T = int(cs.n_frames)
    n_tr, n_te = int(avatar.meta.train_frames), int(avatar.meta.test_frames)
    if n_tr + n_te == T and n_te > 0:
        idx = np.arange(n_tr, T)
    else:
        idx = np.asarray(cs.test_idx)
        notes.append(f"capture has {T} frames, the avatar saw {n_tr}+{n_te}: using the capture's test split")
    if len(idx) == 0:
        raise Avatar3DError(f"{video} has no held-out frames (the avatar trained on all {T})")
    return idx


def _resolve_clip(avatar: Avatar, video, opts: EvalOptions, workdir: Path) -> _Clip:
    """Which frames of which capture are evaluated, and in whose head space."""
    video = Path(video)
    if not video.exists():
        raise Avatar3DError(f"held-out video not found: {video}")
    cs, source, same = _capture_clip(avatar, video, opts, workdir)
    notes: list[str] = []
    heldout_only = opts.heldout_only
    if same and not heldout_only:
        notes.append("the clip is the avatar's training clip: only its held-out frames are evaluated")
        heldout_only = True
    same = same or heldout_only  # the training clip, captured as for training: the avatar's head space
    idx = _heldout_indices(avatar, cs, video, notes) if heldout_only else np.arange(int(cs.n_frames))
    valid = np.asarray(cs.valid, bool)[idx]
    if not valid.any():
        raise Avatar3DError(f"no face was tracked in the evaluated frames of {video}")
    if not valid.all():
        notes.append(f"{int((~valid).sum())} frames without a tracked face were skipped")
        idx = idx[valid]
    if opts.max_frames is not None:
        idx = idx[: int(opts.max_frames)]
    if abs(float(cs.fps) - float(avatar.meta.fps)) > 0.01:
        notes.append(f"the clip runs at {cs.fps:g} fps, the avatar was trained at {avatar.meta.fps:g} fps")
    return _Clip(cs, idx, source, heldout_only, same, notes)


def _real_frames(clip: _Clip) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (capture index, (H, W, 3) uint8) for the evaluated frames, from the source video when
    available (full resolution), else from the capture's stored images."""
    if clip.source is None:
        for i in clip.idx:
            yield int(i), np.asarray(clip.cs.image(int(i)))
        return
    want = {int(clip.cs.frame_indices[i]): int(i) for i in clip.idx}
    last = max(want)
    for k, frame in enumerate(iter_frames(clip.source, max_frames=last + 1)):
        if k in want:
            yield want[k], frame


class _Geometry(NamedTuple):
    """Where each evaluated frame is compared: source frame size (W, H), source intrinsics K (3, 3),
    landmarks (n, 478, 2) in source pixels, crop boxes (n, 4) and the comparison size (out_w, out_h)."""

    W: int
    H: int
    K: np.ndarray
    landmarks: np.ndarray
    boxes: np.ndarray
    out_w: int
    out_h: int


def _frame_geometry(clip: _Clip, crop: str, size: int) -> _Geometry:
    cs = clip.cs
    if clip.source is not None:
        info = probe_video(clip.source)
        W, H = int(info.width), int(info.height)
    else:
        W, H = int(cs.width), int(cs.height)
    sx, sy = W / cs.width, H / cs.height
    K_src = np.diag([sx, sy, 1.0]) @ np.asarray(cs.K, float)
    lm_src = np.asarray(cs.landmarks2d, float)[clip.idx] * np.array([sx, sy])  # (n, 478, 2)
    boxes = crop_boxes(lm_src, W, H, crop)
    ow, oh = out_size(boxes[0], size)
    return _Geometry(W, H, K_src, lm_src, boxes, ow, oh)


# ------------------------------------------------------------------------------------ driving
@dataclass
class _Drive:
    """What drives the avatar: audio codes (n, A) of the evaluated frames, the body-frame camera
    (4, 4) world -> camera and its inverse, head -> camera poses (T, 4, 4) and blinks (T,) of every
    capture frame, the clip's audio (wave, sr) and its energy envelope (n,) at the evaluated frames."""

    codes: torch.Tensor
    camera: np.ndarray
    camera_inv: np.ndarray
    head_poses: np.ndarray
    blink: np.ndarray
    wave: np.ndarray
    sr: int
    envelope: np.ndarray
    pose_note: str

    def head_pose(self, i: int) -> np.ndarray:
        """(4, 4) head -> avatar world of capture frame ``i``."""
        return self.camera_inv @ self.head_poses[i]


def _drive_inputs(avatar: Avatar, clip: _Clip) -> _Drive:
    cs, idx = clip.cs, clip.idx
    V = np.tile(np.eye(4), (cs.n_frames, 1, 1))
    V[:, :3, :3], V[:, :3, 3] = cs.rotation, cs.translation
    codes = audio_codes(avatar, capture_features(avatar, cs), idx)
    if clip.same_capture:
        C = np.asarray(avatar.meta.rest_viewmat, float)
        pose_note = "the training capture's tracking (the avatar's own head space)"
    else:
        C = V[rest_frame(np.asarray(cs.rotation, float), np.asarray(cs.valid, bool))]
        pose_note = (
            "capture of the held-out clip; head spaces taken to coincide (same capture pipeline "
            "and landmark convention); body frame = that clip's rest frame"
        )
    blink = np.asarray(cs.blink, np.float32)
    blink = blink.mean(1) if blink.ndim == 2 else blink
    wave, sr = cs.audio()
    envelope = audio_energy(wave, sr, cs.fps, cs.n_frames)[idx]
    return _Drive(codes, C, np.linalg.inv(C), V, blink, wave, sr, envelope, pose_note)


def _lpips_net(weights) -> tuple[Any, str | None]:
    """(LPIPS network, None), or (None, why it is not computed)."""
    if not weights:
        return None, M.LPIPS_NOT_GIVEN
    net = load_lpips(weights)
    return (None, net) if isinstance(net, str) else (net, None)


# ------------------------------------------------------------------------------------ scoring
@dataclass
class _Scores:
    """Per evaluated frame: image metrics (n,) by name, landmarks (n, 478, 2) and face colours (n, 3)
    of the avatar's and the real frames (NaN where no face was found), SyncNet crops, samples."""

    per: dict[str, np.ndarray]
    lm_pred: np.ndarray
    lm_gt: np.ndarray
    col_pred: np.ndarray
    col_gt: np.ndarray
    sync_pred: list[np.ndarray] = field(default_factory=list)
    sync_gt: list[np.ndarray] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)

    @classmethod
    def empty(cls, n: int) -> _Scores:
        per = {k: np.full(n, np.nan) for k in ("psnr", "ssim", "lpips", "psnr_all", "coverage")}
        lm, col = np.full((n, N_LANDMARKS, 2), np.nan), np.full((n, 3), np.nan)
        return cls(per, lm, lm.copy(), col, col.copy())


class _Frame(NamedTuple):
    """One compared frame: the real crop, the head composite over it, the all-rendered composite
    (uint8 (out_h, out_w, 3)) and the head layer."""

    gt: np.ndarray
    pred: np.ndarray
    pred_all: np.ndarray
    head: Layer


def _render_frame(avatar: Avatar, geo: _Geometry, drive: _Drive, k: int, i: int, real: np.ndarray) -> _Frame:
    """Evaluated frame ``k`` (capture frame ``i``) rendered into its crop and composited."""
    box, ow, oh = geo.boxes[k], geo.out_w, geo.out_h
    cam = Camera(crop_intrinsics(geo.K, box, ow, oh), drive.camera, ow, oh)
    head, full = render_layers(
        avatar, drive.codes[k], float(drive.blink[i]), drive.head_pose(i), cam, (HEAD_GROUPS, None)
    )
    gt = crop_image(real, box, ow, oh)
    pred_all = full.over(warp_plate(avatar.background, box, geo.W, geo.H, ow, oh))
    return _Frame(gt, head.over(gt), pred_all, head)


def _measure(scores: _Scores, k: int, f: _Frame, geo: _Geometry, lp_net, detectors) -> None:
    """Image metrics, head coverage, landmarks and face colours of frame ``k`` into ``scores``."""
    per = scores.per
    per["psnr"][k] = M.psnr(f.pred, f.gt)[0]
    per["ssim"][k] = M.ssim(f.pred, f.gt)[0]
    per["psnr_all"][k] = M.psnr(f.pred_all, f.gt)[0]
    if lp_net is not None:
        with torch.no_grad():
            a, b = M.as_float_images(f.pred).float(), M.as_float_images(f.gt).float()
            per["lpips"][k] = float(lp_net(a, b)[0])
    box = geo.boxes[k]
    lm_crop = (geo.landmarks[k] - box[:2]) * np.array([geo.out_w / box[2], geo.out_h / box[3]])
    fm = M.face_mask(lm_crop, geo.out_h, geo.out_w)
    per["coverage"][k] = float(f.head.alpha[fm].mean()) if fm.any() else np.nan
    det_p, det_g = detectors
    fp, fg = det_p.detect(f.pred), det_g.detect(f.gt)
    if fp:
        scores.lm_pred[k] = fp[0][:, :2]
        scores.col_pred[k] = M.face_colour(f.pred, scores.lm_pred[k])
    if fg:
        scores.lm_gt[k] = fg[0][:, :2]
        scores.col_gt[k] = M.face_colour(f.gt, scores.lm_gt[k])


def _syncnet_crop(img: np.ndarray) -> np.ndarray:
    return cv2.resize(img, (SYNCNET_PX, SYNCNET_PX), interpolation=cv2.INTER_AREA)


def _score_frames(
    avatar: Avatar, clip: _Clip, geo: _Geometry, drive: _Drive, lp_net, opts: EvalOptions
) -> _Scores:
    """Render, composite and measure every evaluated frame (a lazy stream of real frames)."""
    n = len(clip.idx)
    scores = _Scores.empty(n)
    keep = set()
    if opts.keep_samples:
        keep = set(np.linspace(0, n - 1, opts.keep_samples).round().astype(int).tolist())
    pos = {int(i): k for k, i in enumerate(clip.idx)}
    with contextlib.ExitStack() as stack:
        detectors = tuple(stack.enter_context(FaceLandmarker(max_num_faces=1)) for _ in range(2))
        frames_iter = _real_frames(clip)
        if opts.progress:  # a bar over a range: the frames stay a lazy stream
            frames_iter = (f for _, f in zip(track(range(n), "evaluating"), frames_iter))
        for i, real in frames_iter:
            k = pos[i]
            f = _render_frame(avatar, geo, drive, k, i, real)
            _measure(scores, k, f, geo, lp_net, detectors)
            if opts.syncnet_weights:
                scores.sync_pred.append(_syncnet_crop(f.pred))
                scores.sync_gt.append(_syncnet_crop(f.gt))
            if k in keep:
                scores.samples.append(
                    {"index": i, "real": f.gt, "avatar": f.pred, "avatar_all_rendered": f.pred_all}
                )
    return scores


def _syncnet(scores: _Scores, drive: _Drive, fps: float, weights) -> dict | str:
    """SyncNet LSE-C / LSE-D of the avatar's and the real crops, or why not computed."""
    if not weights:
        return "not computed: no SyncNet weights file given (--syncnet-weights)"
    out = {"avatar": S.syncnet_scores(np.array(scores.sync_pred), drive.wave, fps, weights)}
    if isinstance(out["avatar"], dict):
        out["ground_truth"] = S.syncnet_scores(np.array(scores.sync_gt), drive.wave, fps, weights)
    return out


def _views(avatar: Avatar, clip: _Clip, drive: _Drive, opts: EvalOptions) -> dict:
    opts.say(f"view consistency: {opts.view_count} views over ±{VIEW_SWEEP_DEG}° yaw")
    return view_consistency(
        avatar,
        n_views=opts.view_count,
        size=min(opts.size, VIEWS_MAX_PX),
        truth=opts.truth,
        capture=clip.cs if clip.same_capture else None,
        audio=(drive.wave, drive.sr) if opts.truth is None else None,
    )


# ------------------------------------------------------------------------------------ protocol
@contextlib.contextmanager
def _work_directory(workdir) -> Iterator[Path]:
    """``workdir`` (created), or a temporary directory removed afterwards."""
    tmp = tempfile.TemporaryDirectory(prefix="avatar3d-eval-") if workdir is None else None
    try:
        work = Path(tmp.name if tmp else workdir)
        work.mkdir(parents=True, exist_ok=True)
        yield work
    finally:
        if tmp is not None:
            tmp.cleanup()


def evaluate_avatar(avatar, video, options: EvalOptions | None = None, **overrides) -> dict:
    """Evaluate ``avatar`` (an :class:`~avatar3d.Avatar` or its directory) on a held-out clip.

    Args:
        video: held-out video file or CaptureSet directory (see the module docs).
        options: an :class:`EvalOptions`; keyword arguments name its fields and override it
            (``evaluate_avatar(av, clip, size=256, views=False)``).
    Returns:
        the report dict (JSON-ready apart from ``"samples"``).
    """
    opts = dataclasses.replace(options or EvalOptions(), **overrides)
    opts.validate()
    if not isinstance(avatar, Avatar):
        avatar = Avatar.load(avatar)
    t0 = time.time()
    with _work_directory(opts.workdir) as work:
        clip = _resolve_clip(avatar, video, opts, work)
        t_capture = time.time() - t0
        geo = _frame_geometry(clip, opts.crop, opts.size)
        drive = _drive_inputs(avatar, clip)
        lp_net, lp_reason = _lpips_net(opts.lpips_weights)
        t1 = time.time()
        opts.say(
            f"rendering and scoring {len(clip.idx)} frames at {geo.out_w}x{geo.out_h} ({opts.crop} crop)"
        )
        scores = _score_frames(avatar, clip, geo, drive, lp_net, opts)
        t_eval = time.time() - t1
        lmd = M.lmd(scores.lm_pred, scores.lm_gt) * (LMD_FRAME_PX / max(geo.out_w, geo.out_h))
        report = _assemble(avatar, video, clip, geo, opts.crop, scores, lmd, drive, lp_reason)
        report["sync"]["syncnet"] = _syncnet(scores, drive, clip.cs.fps, opts.syncnet_weights)
        t2 = time.time()
        if opts.views:
            report["views"] = _views(avatar, clip, drive, opts)
        n = len(clip.idx)
        report["timing_seconds"] = {
            "capture": round(t_capture, 1),
            "render_and_score": round(t_eval, 1),
            "per_frame": round(t_eval / max(n, 1), 3),
            "views": round(time.time() - t2, 1),
            "total": round(time.time() - t0, 1),
        }
        if opts.keep_samples:
            report["samples"] = scores.samples
        return report


# ------------------------------------------------------------------------------------ report
def _r(v, nd: int = 5):
    return None if v is None or not np.isfinite(v) else round(float(v), nd)


def _identity(scores: _Scores) -> dict:
    try:
        ref = M.identity_reference(scores.lm_gt, scores.col_gt)
        ident = {
            "avatar": M.identity_consistency(scores.lm_pred, scores.col_pred, ref).to_dict(),
            "ground_truth": M.identity_consistency(scores.lm_gt, scores.col_gt, ref).to_dict(),
        }
    except ValueError as e:
        ident = {"avatar": f"not computed: {e}"}
    ident["measure"] = (
        "landmark-shape and face-colour consistency with the real clip's mean (not a "
        "face-recognition embedding); ground_truth = the real frames' own spread"
    )
    return ident


def _summary(per: dict, lmd: np.ndarray, lpips_reason: str | None) -> dict:
    return {
        "psnr": _r(M.summarise(per["psnr"]), 4),
        "ssim": _r(M.summarise(per["ssim"])),
        "lpips": _r(M.summarise(per["lpips"])) if lpips_reason is None else lpips_reason,
        "lmd": _r(M.summarise(lmd), 4),
        "psnr_all_rendered": _r(M.summarise(per["psnr_all"]), 4),
        "head_coverage": _r(M.summarise(per["coverage"]), 4),
        "lmd_frames": int(np.isfinite(lmd).sum()),
    }


def _protocol(avatar: Avatar, video, clip: _Clip, geo: _Geometry, crop: str, pose_note: str) -> dict:
    cs, idx = clip.cs, clip.idx
    return {
        "name": "self-driven reconstruction (held-out audio and head pose)",
        "clip": str(video),
        "heldout_only": bool(clip.heldout_only),
        "frames": [int(idx[0]), int(idx[-1]) + 1],
        "n_frames": len(idx),
        "fps": float(cs.fps),
        "region": "head crop" if crop == "head" else "full frame",
        "size": [int(geo.out_w), int(geo.out_h)],
        "composite": (
            "head: the avatar's head + mouth Gaussians over the real frame (real torso and "
            "background pasted in, the field's head-only convention); all_rendered: "
            "everything from the avatar incl. its background plate"
        ),
        "real_frames_from": str(clip.source) if clip.source else "capture images",
        "pose_source": pose_note,
        "blink_source": "the held-out clip's tracked blinks",
        "landmarker": M.LANDMARKER_NAME,
        "lmd": (
            "68-point mouth 48-67 as MediaPipe points "
            + str(list(M.MOUTH68_TO_MEDIAPIPE))
            + f", each set mean-removed, mean L2 in pixels of a {LMD_FRAME_PX}-px frame"
        ),
        "psnr_cap_db": M.PSNR_CAP_DB,
        "avatar": {
            "train_frames": avatar.meta.train_frames,
            "test_frames": avatar.meta.test_frames,
            "n_gaussians": int(avatar.model.n),
            "source": avatar.meta.source,
        },
        "notes": clip.notes,
    }


def _per_frame(idx, per: dict, lmd, mouth_p, mouth_g, envelope) -> dict:
    return {
        "index": [int(i) for i in idx],
        "psnr": [_r(v, 3) for v in per["psnr"]],
        "ssim": [_r(v, 4) for v in per["ssim"]],
        "psnr_all_rendered": [_r(v, 3) for v in per["psnr_all"]],
        "lmd": [_r(v, 3) for v in lmd],
        "mouth_opening_avatar": [_r(v, 4) for v in mouth_p],
        "mouth_opening_real": [_r(v, 4) for v in mouth_g],
        "audio_envelope": [_r(v, 4) for v in envelope],
    }


def _assemble(
    avatar: Avatar,
    video,
    clip: _Clip,
    geo: _Geometry,
    crop: str,
    scores: _Scores,
    lmd: np.ndarray,
    drive: _Drive,
    lpips_reason: str | None,
) -> dict:
    """The report dict (all but SyncNet, views and timing)."""
    mouth_p, mouth_g = S.mouth_opening(scores.lm_pred), S.mouth_opening(scores.lm_gt)
    return {
        "report_version": REPORT_VERSION,
        "protocol": _protocol(avatar, video, clip, geo, crop, drive.pose_note),
        "metrics": _summary(scores.per, lmd, lpips_reason),
        "sync": S.sync_report(mouth_p, mouth_g, drive.envelope),
        "identity": _identity(scores),
        "per_frame": _per_frame(clip.idx, scores.per, lmd, mouth_p, mouth_g, drive.envelope),
    }


__all__ = [
    "CROPS",
    "HEAD_CROP_SCALE",
    "EvalOptions",
    "crop_boxes",
    "crop_image",
    "crop_intrinsics",
    "evaluate_avatar",
    "out_size",
]
