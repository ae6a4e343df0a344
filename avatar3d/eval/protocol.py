"""The field's self-driven reconstruction protocol: :func:`evaluate_avatar`.

The avatar was trained on the first 10/11 of a clip. Here a **held-out** clip supplies the audio
*and* the head pose of every test frame; the avatar is rendered with them and compared with the real
frame (ER-NeRF, TalkingGaussian, GaussianTalker, SyncTalk, InsTaG all use this protocol; see
``shared/notes/evaluation.md``).

* ``video`` is either a different clip of the subject (all its frames are test frames), or the
  training clip / its capture directory with ``heldout_only=True`` (only the frames after the avatar's
  training split are used; passing the training clip itself turns this on automatically, so test
  frames never leak from training).
* Head pose, blinks and audio come from the capture stage run on that clip (or from the given capture
  directory). For the training clip the capture reproduces the avatar's head space exactly; for another
  clip of the subject both head spaces come from the same capture pipeline and landmark convention
  (centroid origin, symmetric-pair axes, 0.063 m inter-pupillary distance) and are taken to coincide
  (an explicit similarity fit to the avatar's own triangulated landmarks was tried and scored ~1 dB
  worse: its landmark noise exceeds the convention's); the body frame is that clip's rest frame.
* Comparison region: ``crop="head"`` (default) — a square around the face from the capture's landmarks
  (1.7 × the landmark extent, fixed size per clip), the avatar rendered *directly* into that crop at
  ``size`` px (its intrinsics re-targeted; no resampling of the render) and the real frame cropped
  from the source video and resized; ``crop="full"`` — the whole frame resized to ``size`` on its
  longest side.
* Composites: **head** — the avatar's head and mouth Gaussians over the real frame (the field's
  "head-only" convention: real torso and background pasted in) — the primary numbers; **all rendered**
  — everything from the avatar (head, torso, its background plate): reported beside it as
  ``*_all_rendered``. ``head_coverage`` (mean head alpha inside the real face oval) guards the pasted
  composite against an avatar that renders too little.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import Avatar3DError
from . import metrics as M
from . import sync as S
from ._drive import HEAD_GROUPS, audio_codes, capture_features, render_layers

CROPS = ("head", "full")
HEAD_CROP_SCALE = 1.7  # head crop side / landmark extent
REPORT_VERSION = 1


@dataclass
class _Clip:
    cs: object  # CaptureSet
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


def _resolve_clip(
    avatar, video, heldout_only: bool, max_frames: int | None, workdir: Path, progress: bool, log
) -> _Clip:
    from ..capture import run_capture
    from ..config import CaptureConfig
    from ..io.captureset import CaptureSet

    video = Path(video)
    if not video.exists():
        raise Avatar3DError(f"held-out video not found: {video}")
    src_train = avatar.meta.source
    notes: list[str] = []
    if video.is_dir():
        cs = CaptureSet.load(video)
        same = _same_file(video, src_train) or _same_file(cs.source, src_train)
        source = Path(cs.source) if cs.source and Path(cs.source).is_file() else None
    else:
        same = _same_file(video, src_train)
        source = video
        c = avatar.config.capture
        if same or heldout_only:  # reproduce the training capture exactly (same head space)
            cfg = CaptureConfig(max_size=c.max_size, stride=c.stride, max_frames=c.max_frames or None)
        else:
            cfg = CaptureConfig(max_size=c.max_size, stride=c.stride, max_frames=max_frames)
        log(f"capturing {video} (head pose, landmarks, audio)")
        cs = run_capture(video, workdir / "capture", cfg, progress=progress)
    if same and not heldout_only:
        notes.append("the clip is the avatar's training clip: only its held-out frames are evaluated")
        heldout_only = True
    same = same or heldout_only  # the training clip, captured as for training: the avatar's head space
    T = int(cs.n_frames)
    if heldout_only:
        n_tr, n_te = int(avatar.meta.train_frames), int(avatar.meta.test_frames)
        if n_tr + n_te == T and n_te > 0:
            idx = np.arange(n_tr, T)
        else:
            idx = np.asarray(cs.test_idx)
            notes.append(
                f"capture has {T} frames, the avatar saw {n_tr}+{n_te}: using the capture's test split"
            )
        if len(idx) == 0:
            raise Avatar3DError(f"{video} has no held-out frames (the avatar trained on all {T})")
    else:
        idx = np.arange(T)
    valid = np.asarray(cs.valid, bool)[idx]
    if not valid.any():
        raise Avatar3DError(f"no face was tracked in the evaluated frames of {video}")
    if not valid.all():
        notes.append(f"{int((~valid).sum())} frames without a tracked face were skipped")
        idx = idx[valid]
    if max_frames is not None:
        idx = idx[: int(max_frames)]
    if abs(float(cs.fps) - float(avatar.meta.fps)) > 0.01:
        notes.append(f"the clip runs at {cs.fps:g} fps, the avatar was trained at {avatar.meta.fps:g} fps")
    return _Clip(cs, idx, source, heldout_only, same, notes)


# ------------------------------------------------------------------------------------ crops
def crop_boxes(lm_src: np.ndarray, width: int, height: int, mode: str = "head") -> np.ndarray:
    """(n, 478, 2) landmarks in source pixels -> (n, 4) int boxes (x0, y0, w, h) inside the frame.

    head: a square of side 1.7 × the median landmark extent (fixed per clip), centred on each frame's
    landmark box; full: the whole frame.
    """
    n = len(lm_src)
    if mode == "full":
        return np.tile([0, 0, width, height], (n, 1))
    if mode != "head":
        raise ValueError(f"crop must be one of {CROPS}, got {mode!r}")
    lo, hi = lm_src.min(1), lm_src.max(1)  # (n, 2)
    side = round(HEAD_CROP_SCALE * float(np.median((hi - lo).max(1))))
    side = max(16, min(side, width, height))
    c = (lo + hi) / 2
    x0 = np.clip(np.round(c[:, 0] - side / 2), 0, width - side).astype(int)
    y0 = np.clip(np.round(c[:, 1] - side / 2), 0, height - side).astype(int)
    return np.stack([x0, y0, np.full(n, side), np.full(n, side)], 1)


def out_size(box: np.ndarray, size: int) -> tuple[int, int]:
    """(out_w, out_h) for a crop box: longest side = size."""
    bw, bh = int(box[2]), int(box[3])
    s = size / max(bw, bh)
    return max(16, round(bw * s)), max(16, round(bh * s))


def crop_intrinsics(K: np.ndarray, box: np.ndarray, ow: int, oh: int) -> np.ndarray:
    """Intrinsics (3, 3) of the crop ``box`` of an image with intrinsics ``K``, resampled to (ow, oh)."""
    x0, y0, bw, bh = (float(v) for v in box)
    sx, sy = ow / bw, oh / bh
    return np.array(
        [[K[0, 0] * sx, 0, (K[0, 2] - x0) * sx], [0, K[1, 1] * sy, (K[1, 2] - y0) * sy], [0, 0, 1.0]]
    )


def crop_image(img: np.ndarray, box: np.ndarray, ow: int, oh: int) -> np.ndarray:
    """Crop (x0, y0, w, h) and resize to (ow, oh) (area filter when shrinking)."""
    import cv2

    x0, y0, bw, bh = (int(v) for v in box)
    c = img[y0 : y0 + bh, x0 : x0 + bw]
    interp = cv2.INTER_AREA if ow < bw else cv2.INTER_LINEAR
    return cv2.resize(c, (ow, oh), interpolation=interp) if (c.shape[1], c.shape[0]) != (ow, oh) else c.copy()


def _warp_plate(plate: np.ndarray, box: np.ndarray, W: int, H: int, ow: int, oh: int) -> np.ndarray:
    """The avatar's background plate (covering a W x H source frame) seen through a crop -> (oh, ow, 3)."""
    import cv2

    sx, sy = plate.shape[1] / W, plate.shape[0] / H
    x0, y0, bw, bh = (float(v) for v in box)
    ax, ay = ow / (bw * sx), oh / (bh * sy)  # plate px -> crop px
    Mx = np.array([[ax, 0, ax * (0.5 - x0 * sx) - 0.5], [0, ay, ay * (0.5 - y0 * sy) - 0.5]])
    return cv2.warpAffine(plate, Mx, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _real_frames(clip: _Clip):
    """Yield (capture index, (H, W, 3) uint8) for the evaluated frames, from the source video when
    available (full resolution), else from the capture's stored images."""
    from ..io.media import iter_frames

    if clip.source is None:
        for i in clip.idx:
            yield int(i), np.asarray(clip.cs.image(int(i)))
        return
    want = {int(clip.cs.frame_indices[i]): int(i) for i in clip.idx}
    last = max(want)
    for k, frame in enumerate(iter_frames(clip.source, max_frames=last + 1)):
        if k in want:
            yield want[k], frame


# ------------------------------------------------------------------------------------ protocol
def evaluate_avatar(
    avatar,
    video,
    *,
    max_frames: int | None = None,
    size: int = 512,
    heldout_only: bool = False,
    crop: str = "head",
    lpips_weights=None,
    syncnet_weights=None,
    views: bool = True,
    truth=None,
    view_count: int = 31,
    workdir=None,
    keep_samples: int = 0,
    progress: bool = False,
    log=None,
) -> dict:
    """Evaluate ``avatar`` (an :class:`~avatar3d.Avatar` or its directory) on a held-out clip.

    Args:
        video: held-out video file or CaptureSet directory (see the module docs).
        max_frames: evaluate at most this many frames (the first ones of the held-out part).
        size: the comparison images' longest side (the field uses 512).
        heldout_only: ``video`` is the training clip: evaluate only its last (held-out) part.
        crop: "head" (face crop) or "full" (whole frame).
        lpips_weights, syncnet_weights: local weights files; "not computed" without them.
        views: also run the ±45° view-consistency sweep (``truth``: a SyntheticTruth to compare with).
        keep_samples: keep this many evenly spaced (real, avatar) frame pairs under ``"samples"``
            (numpy arrays; :func:`avatar3d.eval.report.write_report` plots them and leaves them out of
            the JSON).
    Returns:
        the report dict (JSON-ready apart from ``"samples"``).
    """
    from ..api import Avatar
    from ..audio import audio_energy
    from ..core.camera import Camera
    from ..io.media import probe_video
    from ..train.data import rest_frame

    say = log or (lambda s: None)
    if crop not in CROPS:
        raise Avatar3DError(f"crop must be one of {', '.join(CROPS)}, got {crop!r}")
    if not 64 <= int(size) <= 4096:
        raise Avatar3DError(f"comparison size {size} must be within 64..4096 px")
    if max_frames is not None and int(max_frames) < 1:
        raise Avatar3DError(f"max_frames must be positive, got {max_frames}")
    if not isinstance(avatar, Avatar):
        avatar = Avatar.load(avatar)
    t0 = time.time()
    tmp = tempfile.TemporaryDirectory(prefix="avatar3d-eval-") if workdir is None else None
    work = Path(tmp.name if tmp else workdir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        clip = _resolve_clip(avatar, video, heldout_only, max_frames, work, progress, say)
        t_capture = time.time() - t0
        cs, idx = clip.cs, clip.idx
        if clip.source is not None:
            info = probe_video(clip.source)
            W, H = int(info.width), int(info.height)
        else:
            W, H = int(cs.width), int(cs.height)
        sx, sy = W / cs.width, H / cs.height
        K_src = np.diag([sx, sy, 1.0]) @ np.asarray(cs.K, float)
        lm_src = np.asarray(cs.landmarks2d, float)[idx] * np.array([sx, sy])  # (n, 478, 2)
        boxes = crop_boxes(lm_src, W, H, crop)
        ow, oh = out_size(boxes[0], size)
        # body-frame camera and per-frame head poses in the avatar's world
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
        C_inv = np.linalg.inv(C)
        blink = np.asarray(cs.blink, np.float32)
        blink = blink.mean(1) if blink.ndim == 2 else blink
        wave, sr = cs.audio()
        envelope = audio_energy(wave, sr, cs.fps, cs.n_frames)[idx]
        lp_net = None
        lp_reason = "not computed: no LPIPS weights file given (--lpips-weights)"
        if lpips_weights:
            from ..core.lpips import load_lpips

            lp_net = load_lpips(lpips_weights)
            if isinstance(lp_net, str):
                lp_reason, lp_net = lp_net, None
        plate = avatar.background
        n = len(idx)
        per = {k: np.full(n, np.nan) for k in ("psnr", "ssim", "lpips", "psnr_all", "coverage")}
        lm_pred = np.full((n, 478, 2), np.nan)
        lm_gt = np.full((n, 478, 2), np.nan)
        col_pred = np.full((n, 3), np.nan)
        col_gt = np.full((n, 3), np.nan)
        sync_pred, sync_gt = [], []
        keep = (
            set(np.linspace(0, n - 1, keep_samples).round().astype(int).tolist()) if keep_samples else set()
        )
        samples = []
        pos = {int(i): k for k, i in enumerate(idx)}
        t1 = time.time()
        say(f"rendering and scoring {n} frames at {ow}x{oh} ({crop} crop)")
        from ..capture.landmarks import FaceLandmarker

        with contextlib.ExitStack() as stack:
            det_p = stack.enter_context(FaceLandmarker(max_num_faces=1))
            det_g = stack.enter_context(FaceLandmarker(max_num_faces=1))
            frames_iter = _real_frames(clip)
            if progress:  # a bar over a range: the frames stay a lazy stream
                from ..progress import track

                frames_iter = (f for _, f in zip(track(range(n), "evaluating"), frames_iter))
            for i, real in frames_iter:
                k = pos[i]
                box = boxes[k]
                cam = Camera(crop_intrinsics(K_src, box, ow, oh), C, ow, oh)
                pose = C_inv @ V[i]
                head, full = render_layers(avatar, codes[k], float(blink[i]), pose, cam, (HEAD_GROUPS, None))
                gt = crop_image(real, box, ow, oh)
                pred = head.over(gt)
                pred_all = full.over(_warp_plate(plate, box, W, H, ow, oh))
                per["psnr"][k] = M.psnr(pred, gt)[0]
                per["ssim"][k] = M.ssim(pred, gt)[0]
                per["psnr_all"][k] = M.psnr(pred_all, gt)[0]
                if lp_net is not None:
                    import torch

                    with torch.no_grad():
                        a, b = M.as_float_images(pred).float(), M.as_float_images(gt).float()
                        per["lpips"][k] = float(lp_net(a, b)[0])
                lm_crop = (lm_src[k] - box[:2]) * np.array([ow / box[2], oh / box[3]])
                fm = M.face_mask(lm_crop, oh, ow)
                per["coverage"][k] = float(head.alpha[fm].mean()) if fm.any() else np.nan
                fp, fg = det_p.detect(pred), det_g.detect(gt)
                if fp:
                    lm_pred[k] = fp[0][:, :2]
                    col_pred[k] = M.face_colour(pred, lm_pred[k])
                if fg:
                    lm_gt[k] = fg[0][:, :2]
                    col_gt[k] = M.face_colour(gt, lm_gt[k])
                if syncnet_weights:
                    import cv2

                    sync_pred.append(cv2.resize(pred, (224, 224), interpolation=cv2.INTER_AREA))
                    sync_gt.append(cv2.resize(gt, (224, 224), interpolation=cv2.INTER_AREA))
                if k in keep:
                    samples.append({"index": i, "real": gt, "avatar": pred, "avatar_all_rendered": pred_all})
        t_eval = time.time() - t1
        lmd_scale = 512.0 / max(ow, oh)
        lmd = M.lmd(lm_pred, lm_gt) * lmd_scale
        report = _assemble(
            avatar,
            video,
            clip,
            per,
            lmd,
            lm_pred,
            lm_gt,
            col_pred,
            col_gt,
            envelope,
            crop,
            ow,
            oh,
            lp_reason if lp_net is None else None,
            pose_note,
        )
        sync = report["sync"]
        if syncnet_weights:
            sync["syncnet"] = {"avatar": S.syncnet_scores(np.array(sync_pred), wave, cs.fps, syncnet_weights)}
            if isinstance(sync["syncnet"]["avatar"], dict):
                sync["syncnet"]["ground_truth"] = S.syncnet_scores(
                    np.array(sync_gt), wave, cs.fps, syncnet_weights
                )
        else:
            sync["syncnet"] = "not computed: no SyncNet weights file given (--syncnet-weights)"
        t2 = time.time()
        if views:
            from .views import view_consistency

            say(f"view consistency: {view_count} views over ±45° yaw")
            cap = cs if clip.same_capture else None
            report["views"] = view_consistency(
                avatar,
                n_views=view_count,
                size=min(size, 512),
                truth=truth,
                capture=cap,
                audio=(wave, sr) if truth is None else None,
            )
        report["timing_seconds"] = {
            "capture": round(t_capture, 1),
            "render_and_score": round(t_eval, 1),
            "per_frame": round(t_eval / max(n, 1), 3),
            "views": round(time.time() - t2, 1),
            "total": round(time.time() - t0, 1),
        }
        if keep_samples:
            report["samples"] = samples
        return report
    finally:
        if tmp is not None:
            tmp.cleanup()


def _r(v, nd: int = 5):
    return None if v is None or not np.isfinite(v) else round(float(v), nd)


def _assemble(
    avatar,
    video,
    clip: _Clip,
    per: dict,
    lmd: np.ndarray,
    lm_pred,
    lm_gt,
    col_pred,
    col_gt,
    envelope,
    crop: str,
    ow: int,
    oh: int,
    lpips_reason: str | None,
    pose_note: str,
) -> dict:
    cs, idx = clip.cs, clip.idx
    mouth_p, mouth_g = S.mouth_opening(lm_pred), S.mouth_opening(lm_gt)
    try:
        ref = M.identity_reference(lm_gt, col_gt)
        ident = {
            "avatar": M.identity_consistency(lm_pred, col_pred, ref).to_dict(),
            "ground_truth": M.identity_consistency(lm_gt, col_gt, ref).to_dict(),
        }
    except ValueError as e:
        ident = {"avatar": f"not computed: {e}"}
    ident["measure"] = (
        "landmark-shape and face-colour consistency with the real clip's mean (not a "
        "face-recognition embedding); ground_truth = the real frames' own spread"
    )
    metrics = {
        "psnr": _r(M.summarise(per["psnr"]), 4),
        "ssim": _r(M.summarise(per["ssim"])),
        "lpips": _r(M.summarise(per["lpips"])) if lpips_reason is None else lpips_reason,
        "lmd": _r(M.summarise(lmd), 4),
        "psnr_all_rendered": _r(M.summarise(per["psnr_all"]), 4),
        "head_coverage": _r(M.summarise(per["coverage"]), 4),
        "lmd_frames": int(np.isfinite(lmd).sum()),
    }
    region = "head crop" if crop == "head" else "full frame"
    return {
        "report_version": REPORT_VERSION,
        "protocol": {
            "name": "self-driven reconstruction (held-out audio and head pose)",
            "clip": str(video),
            "heldout_only": bool(clip.heldout_only),
            "frames": [int(idx[0]), int(idx[-1]) + 1],
            "n_frames": len(idx),
            "fps": float(cs.fps),
            "region": region,
            "size": [int(ow), int(oh)],
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
                + ", each set mean-removed, mean L2 in pixels of a 512-px frame"
            ),
            "psnr_cap_db": M.PSNR_CAP_DB,
            "avatar": {
                "train_frames": avatar.meta.train_frames,
                "test_frames": avatar.meta.test_frames,
                "n_gaussians": int(avatar.model.n),
                "source": avatar.meta.source,
            },
            "notes": clip.notes,
        },
        "metrics": metrics,
        "sync": S.sync_report(mouth_p, mouth_g, envelope),
        "identity": ident,
        "per_frame": {
            "index": [int(i) for i in idx],
            "psnr": [_r(v, 3) for v in per["psnr"]],
            "ssim": [_r(v, 4) for v in per["ssim"]],
            "psnr_all_rendered": [_r(v, 3) for v in per["psnr_all"]],
            "lmd": [_r(v, 3) for v in lmd],
            "mouth_opening_avatar": [_r(v, 4) for v in mouth_p],
            "mouth_opening_real": [_r(v, 4) for v in mouth_g],
            "audio_envelope": [_r(v, 4) for v in envelope],
        },
    }


__all__ = ["CROPS", "crop_boxes", "crop_image", "crop_intrinsics", "evaluate_avatar", "out_size"]
