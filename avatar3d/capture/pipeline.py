"""``run_capture``: one talking video -> a CaptureSet directory (see avatar3d/io/captureset.py).

Stages (each a function below, passing small typed records):

1. :func:`_plan`: check the config, load the optional models, probe the video (:class:`_Plan`);
2. :func:`_first_pass`: stream the frames once (never the whole video in memory): store each frame,
   find the subject's 478 landmarks, segment the person, write the person (and region) masks,
   accumulate the background plate and the feature tracks (:class:`_Pass1`); or resume them;
3. :func:`_track_head`: the rigid head tracking (canonical shape, focal, smooth poses), pose-free
   landmarks and per-frame signals (:class:`_HeadTrack`);
4. :func:`_finish_masks`: region masks of frames whose face was lost (from interpolated landmarks)
   and the background plate; the optional morphable-model fit;
5. :func:`_capture_audio`: audio and its features (:class:`_Audio`);
6. :func:`_write_tracking` / :func:`_write_transforms`: the CaptureSet's files.

Everything is written into a temp sibling of ``out_dir`` renamed into place only on success; a capture
killed after the streaming pass is resumed from there by the next run (avatar3d/capture/resume.py).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import audio_energy, frame_features, load_audio
from ..audio.speech_model import cached_extractor
from ..config import CaptureConfig
from ..core.constants import SAMPLE_RATE
from ..core.topology import N_LANDMARKS, RIGID_INDICES
from ..errors import Avatar3DError, MediaError, NoFaceError
from ..io.atomic import atomic_dir
from ..io.captureset import CaptureSet, write_audio_features, write_tracking, write_transforms
from ..io.media import VideoInfo, iter_frames, probe_video, read_image, write_audio, write_image
from ..progress import progress_bar
from .canonical import CanonicalFit, build_canonical
from .face_model import fit_face_model, load_face_model, write_morphable
from .feature_tracks import FeatureTracker, FeatureTracks
from .landmarks import FaceLandmarker, SubjectSelector
from .resection import intrinsics
from .resume import drop_pass1, find_partial, load_pass1, pass1_key, save_pass1
from .segmentation import BackgroundPlate, PersonSegmenter, region_masks
from .signals import FaceSignals, compute_signals
from .tracking import RigidFit, fit_rigid, pose_free_landmarks

AUDIO_WINDOW = 16  # audio-feature frames per video frame's window
AUDIO_SHORT_FRACTION = 0.9  # warn when the audio covers less than this fraction of the frames
REGIONS = ("face", "head", "torso", "mouth")  # the region masks, each in masks_<name>/
BREAK_MOTION_FACTOR = 8.0  # a break moves the rigid landmarks this many times the clip's median ...
BREAK_MIN_FACE_FRACTION = 0.04  # ... and at least this fraction of the face size, in one frame
WRITE_WORKERS = 2  # image-encoding threads of the streaming pass
WRITE_MAX_PENDING = 24  # images queued for writing at most (bounded memory)


def stored_size(width: int, height: int, max_size: int) -> tuple[int, int]:
    """Stored (W, H): longest side <= max_size (never upscaled), both even, aspect kept."""
    s = min(1.0, max_size / max(width, height))

    def even(v: int) -> int:
        return max(2, int(v * s / 2 + 0.5) * 2)

    return even(width), even(height)


def motion_breaks(obs2d: np.ndarray, valid: np.ndarray, factor: float = BREAK_MOTION_FACTOR) -> np.ndarray:
    """Frames where the rigid landmarks jump (cuts, joined segments): (T,) bool, True at frame t
    when the motion from t-1 to t exceeds ``factor`` × the clip's median motion and
    ``BREAK_MIN_FACE_FRACTION`` of the face size. Pose smoothing is not applied across such breaks."""
    T = len(obs2d)
    out = np.zeros(T, bool)
    if T < 3:
        return out
    rig = np.array(RIGID_INDICES)
    both = valid[1:] & valid[:-1]
    d = np.full(T - 1, np.nan)
    d[both] = np.median(np.linalg.norm(obs2d[1:, rig][both] - obs2d[:-1, rig][both], axis=-1), axis=-1)
    if not both.any():
        return out
    size = np.median(np.ptp(obs2d[valid][:, rig], axis=1).max(-1))
    thresh = max(factor * np.nanmedian(d), BREAK_MIN_FACE_FRACTION * size)
    out[1:] = np.nan_to_num(d, nan=0.0) > thresh
    return out


@dataclass
class _Plan:
    """What the capture settles before decoding: the input, its probe, the stored size and the
    optional models (both loaded first, so that a bad file fails before any decoding)."""

    video: Path
    cfg: CaptureConfig
    info: VideoInfo
    width: int
    height: int
    n_est: int  # frames expected
    fps: float  # of the capture (source fps / stride)
    face_model: object
    speech: object
    key: dict  # the streaming pass's resume key
    t_start: float


@dataclass
class _Pass1:
    """What the streaming pass collects: points (T, 478, 3) pixels + relative depth, valid (T,),
    n_faces (T,), the background plate (H, W, 3) uint8 and the feature tracks (or None)."""

    points: np.ndarray
    valid: np.ndarray
    n_faces: np.ndarray
    plate: np.ndarray | None
    tracks: FeatureTracks | None


@dataclass
class _HeadTrack:
    fit: CanonicalFit
    rigid: RigidFit
    breaks: np.ndarray  # (T,) bool
    lm3d: np.ndarray  # (T, 478, 3) head space
    lm2d: np.ndarray  # (T, 478, 2) pixels
    signals: FaceSignals


@dataclass
class _Audio:
    arrays: dict[str, np.ndarray]  # audio.safetensors
    speech_meta: dict | None


def run_capture(
    video: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: CaptureConfig | None = None,
    progress: bool = True,
) -> CaptureSet:
    """Track a talking video into a CaptureSet directory and return the loaded :class:`CaptureSet`.

    Raises :class:`MediaError` (unreadable video, no audio track), :class:`NoFaceError` (no face in
    any frame, or fewer valid frames than ``config.min_valid_fraction``). Warns when several faces
    appear (one subject is tracked). ``out_dir`` is replaced only when everything succeeded.
    """
    plan = _plan(video, config)
    timings: dict[str, float] = {}  # seconds per stage, stored in transforms.json
    partial = find_partial(out_dir, plan.key)  # a killed capture of this video got past pass 1
    with atomic_dir(out_dir, kind="capture", adopt=partial) as tmp, progress_bar(progress) as bar:
        tmp = Path(tmp)
        for d in ["images", "masks"] + ([f"masks_{k}" for k in REGIONS] if plan.cfg.region_masks else []):
            (tmp / d).mkdir(exist_ok=True)
        p1 = _first_pass(plan, tmp, partial is not None, out_dir, bar, timings)
        task = bar.add_task("capture: head tracking", total=4)
        head = _track_head(plan, p1, bar, task, timings)
        morphable = _finish_masks(plan, tmp, p1, head, bar, task, timings)
        audio = _capture_audio(plan, tmp, len(p1.valid), bar, timings)
        _write_tracking(tmp, plan, p1, head)
        drop_pass1(tmp)  # the resume state is no part of the capture
        _write_transforms(tmp, plan, p1, head, timings, morphable, audio.speech_meta)
    return CaptureSet.load(out_dir)


def _plan(video: str | os.PathLike, config: CaptureConfig | None) -> _Plan:
    cfg = config or CaptureConfig()
    cfg.validate()
    video = Path(video)
    t_start = time.time()
    face_model = load_face_model(cfg)  # a wrong FLAME file fails here, before any decoding
    speech = load_speech_model(cfg)  # so does a missing or unreadable speech model
    info = probe_video(video)
    if not info.has_audio:
        raise MediaError(
            f"{video}: has no audio track (the avatar is driven by audio; a silent track is fine)"
        )
    W, H = stored_size(info.width, info.height, cfg.max_size)
    n_est = math.ceil(info.n_frames / cfg.stride)
    if cfg.max_frames is not None:
        n_est = min(n_est, int(cfg.max_frames))
    fps = info.fps / cfg.stride
    return _Plan(video, cfg, info, W, H, n_est, fps, face_model, speech, pass1_key(video, cfg), t_start)


def _first_pass(plan: _Plan, tmp: Path, adopted: bool, out_dir, bar, timings: dict[str, float]) -> _Pass1:
    """The streaming pass's results: resumed from an adopted temp directory, or streamed (and saved
    for a resume). Raises when no frame was decoded or too few frames show a face."""
    saved = load_pass1(tmp, plan.key) if adopted else None
    if saved is None:
        p1 = _stream_pass(plan, tmp, bar, timings)
        if len(p1.valid):
            save_pass1(tmp, plan.key, p1.points, p1.valid, p1.n_faces, p1.plate, p1.tracks, timings)
    else:
        points, valid, n_faces, plate, tracks, done = saved
        p1 = _Pass1(points, valid, n_faces, plate, tracks)
        timings.update(done)
        warnings.warn(
            f"{out_dir}: resuming a killed capture after its first pass ({len(valid)} frames)",
            RuntimeWarning,
            stacklevel=3,
        )
    T, video, cfg = len(p1.valid), plan.video, plan.cfg
    if T == 0:
        raise MediaError(f"{video}: no frames decoded")
    p1.points = p1.points.astype(np.float64)  # (T, 478, 3)
    if not p1.valid.any():
        raise NoFaceError(f"no face found in {video}")
    if p1.valid.mean() < cfg.min_valid_fraction:
        raise NoFaceError(
            f"a face was found in only {p1.valid.sum()} of {T} frames of {video} "
            f"(min_valid_fraction = {cfg.min_valid_fraction:g})"
        )
    return p1


def _track_head(plan: _Plan, p1: _Pass1, bar, task, timings: dict[str, float]) -> _HeadTrack:
    """Canonical shape, motion breaks, rigid fit (focal and poses), pose-free landmarks, signals."""
    cfg, W, H, valid = plan.cfg, plan.width, plan.height, p1.valid
    clock = time.perf_counter()
    obs2d = p1.points[..., :2]
    fit = build_canonical(p1.points, valid, cfg.canonical_iterations)
    bar.advance(task)
    breaks = motion_breaks(obs2d, valid)
    rigid = fit_rigid(fit, obs2d, valid, W, H, cfg, breaks=breaks, tracks=p1.tracks)
    bar.advance(task)
    lm3d, lm2d = pose_free_landmarks(fit, rigid, obs2d, valid, W, H)
    sig = compute_signals(lm3d, fit.canonical, valid, cfg.expression_dims)
    _tick(timings, "tracking", clock)
    bar.advance(task)
    return _HeadTrack(fit, rigid, breaks, lm3d, lm2d, sig)


def _finish_masks(plan: _Plan, tmp: Path, p1: _Pass1, head: _HeadTrack, bar, task, timings) -> dict | None:
    """Region masks of the frames without a face (from interpolated landmarks), the background
    plate, then the optional morphable-model fit; returns the fit's summary (or None)."""
    cfg, valid = plan.cfg, p1.valid
    clock = time.perf_counter()
    if cfg.region_masks and not valid.all():
        for i in np.flatnonzero(~valid):
            person = read_image(tmp / "masks" / f"{i:06d}.png", "L")
            _write_regions(tmp, int(i), region_masks(head.lm2d[i], person), write_image)
    write_image(tmp / "background.png", p1.plate)
    clock = _tick(timings, "masks+plate", clock)
    bar.advance(task)
    if cfg.morphable == "none":
        return None
    K = intrinsics(head.rigid.focal, plan.width / 2, plan.height / 2)
    mfit = fit_face_model(cfg, plan.face_model, head.lm2d, head.lm3d, valid, K)
    morphable = write_morphable(tmp, mfit)
    _tick(timings, "morphable", clock)
    return morphable


def _capture_audio(plan: _Plan, tmp: Path, T: int, bar, timings: dict[str, float]) -> _Audio:
    """The audio track at ``SAMPLE_RATE`` cut to the frames (``audio.wav``), its per-frame features,
    energy and (with a speech model) speech features (``audio.safetensors``)."""
    clock = time.perf_counter()
    task = bar.add_task("capture: audio", total=1)
    video, fps = plan.video, plan.fps
    wave = load_audio(video, SAMPLE_RATE)  # (N,) float32 mono
    n_keep = math.ceil(T / fps * SAMPLE_RATE)
    wave = wave[:n_keep]
    if len(wave) < AUDIO_SHORT_FRACTION * n_keep:
        warnings.warn(
            f"{video}: the audio track covers {len(wave) / SAMPLE_RATE:.2f} s of the "
            f"{T / fps:.2f} s captured; later frames get edge-padded audio features",
            stacklevel=3,
        )
    write_audio(tmp / "audio.wav", wave, SAMPLE_RATE)
    feats = frame_features(wave, SAMPLE_RATE, fps, n_frames=T, window=AUDIO_WINDOW)
    energy = audio_energy(wave, SAMPLE_RATE, fps, n_frames=T)
    arrays = {"features": feats.astype(np.float32), "energy": energy.astype(np.float32)}
    speech, speech_meta = plan.speech, None
    if speech is not None:
        sf = speech(wave, SAMPLE_RATE, fps, n_frames=T, window=AUDIO_WINDOW)  # (T, 16, D)
        arrays["speech_features"] = sf.astype(np.float32)
        speech_meta = {
            "path": speech.source,
            "dim": int(sf.shape[-1]),
            "window": AUDIO_WINDOW,
            "hop": speech.hop,
            "receptive_field": speech.receptive_field,
            "sample_rate": speech.sample_rate,
        }
    write_audio_features(tmp / "audio.safetensors", arrays)
    _tick(timings, "audio", clock)
    bar.advance(task)
    return _Audio(arrays, speech_meta)


def _f32(a) -> np.ndarray:
    return np.asarray(a, np.float32)


def _write_tracking(tmp: Path, plan: _Plan, p1: _Pass1, head: _HeadTrack) -> None:
    """``tracking.safetensors``: poses, landmarks, canonical shape and per-frame signals."""
    rigid, sig = head.rigid, head.signals
    write_tracking(
        tmp / "tracking.safetensors",
        {
            "rotation": _f32(rigid.rotation),
            "translation": _f32(rigid.translation),
            "landmarks2d": _f32(head.lm2d),
            "landmarks3d": _f32(head.lm3d),
            "canonical_landmarks": _f32(head.fit.canonical),
            "valid": p1.valid,
            "mouth_open": sig.mouth_open,
            "jaw_open": sig.jaw_open,
            "blink": sig.blink,
            "expression": sig.expression,
            "blink_per_eye": sig.blink_per_eye,
            "mouth_open_raw": sig.mouth_open_raw,
            "eye_open_raw": sig.eye_open_raw,
            "expression_basis": sig.expression_basis,
            "expression_mean": sig.expression_mean,
            "reprojection_error": _f32(rigid.errors),
            "frame_index": np.arange(len(p1.valid), dtype=np.int64) * plan.cfg.stride,
        },
    )


def _write_transforms(
    tmp, plan: _Plan, p1: _Pass1, head: _HeadTrack, timings, morphable, speech_meta
) -> None:
    """``transforms.json``: the camera, per-frame poses and the capture's record."""
    cfg, info, rigid, tracks = plan.cfg, plan.info, head.rigid, p1.tracks
    frame_idx = np.arange(len(p1.valid), dtype=np.int64) * cfg.stride
    extra = {
        "source_fps": float(info.fps),
        "stride": int(cfg.stride),
        "source_size": [int(info.width), int(info.height)],
        "masks": list(REGIONS) if cfg.region_masks else [],
        "faces_max": int(p1.n_faces.max()),
        "valid_frames": int(p1.valid.sum()),
        "motion_breaks": np.flatnonzero(head.breaks).tolist(),
        "reprojection_error_px_median": float(np.nanmedian(rigid.errors)),
        "feature_tracks": None
        if tracks is None
        else {"tracks": tracks.n_tracks, "observations": len(tracks)},
        "capture_seconds": round(time.time() - plan.t_start, 2),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "morphable": morphable,
        "speech_model": speech_meta,
        "config": cfg.to_dict(),
    }
    write_transforms(
        tmp / "transforms.json",
        width=plan.width,
        height=plan.height,
        focal=rigid.focal,
        rotation=rigid.rotation,
        translation=rigid.translation,
        frame_indices=frame_idx,
        times=frame_idx / info.fps,
        valid=p1.valid,
        fps=plan.fps,
        source=str(plan.video),
        train_fraction=cfg.train_fraction,
        extra=extra,
    )


def _stream_pass(plan: _Plan, tmp: Path, bar, timings: dict[str, float]) -> _Pass1:
    """Pass 1 over the frames: store frames and masks in ``tmp``, collect landmarks, feature tracks
    and the background plate (None when no frame was decoded)."""
    cfg, W, H = plan.cfg, plan.width, plan.height
    bg_every = max(1, plan.n_est // int(cfg.background_frames))
    points, valid, n_faces = [], [], []
    plate = BackgroundPlate(W, H, cfg.background_margin)
    selector = SubjectSelector(W, H, max(1, round(cfg.reacquire_after_s * plan.fps)), source=str(plan.video))
    tracker = FeatureTracker(W, H, refine=cfg.track_refine) if cfg.feature_tracks else None
    task = bar.add_task("capture: landmarks + masks", total=plan.n_est)
    with (
        FaceLandmarker(
            cfg.max_num_faces,
            cfg.min_detection_confidence,
            cfg.min_tracking_confidence,
            static_image_mode=not cfg.landmark_tracking,
        ) as lmk,
        PersonSegmenter(cfg.mask_threshold) as seg,
        _BackgroundWriter(write_image) as writer,
    ):
        frames = iter_frames(plan.video, size=(W, H), stride=cfg.stride, max_frames=cfg.max_frames)
        clock = time.perf_counter()
        for i, frame in enumerate(frames):  # frame: (H, W, 3) uint8
            clock = _tick(timings, "decode", clock)
            writer.submit(tmp / "images" / f"{i:06d}.jpg", frame, quality=int(cfg.jpeg_quality))
            clock = _tick(timings, "write", clock)
            faces = lmk.detect(frame)
            subject = selector.select(faces, i)
            clock = _tick(timings, "landmarks", clock)
            person = seg.mask(frame)  # (H, W) uint8 0/255
            clock = _tick(timings, "segmentation", clock)
            writer.submit(tmp / "masks" / f"{i:06d}.png", person)
            if i % bg_every == 0:
                plate.update(frame, person)
            n_faces.append(len(faces))
            valid.append(subject is not None)
            points.append(subject if subject is not None else np.zeros((N_LANDMARKS, 3), np.float32))
            regions = None
            if subject is not None and (cfg.region_masks or tracker is not None):
                regions = region_masks(subject[:, :2], person)
            if regions is not None and cfg.region_masks:
                _write_regions(tmp, i, regions, writer.submit)
            clock = _tick(timings, "masks+plate", clock)
            if tracker is not None:
                tracker.update(
                    frame,
                    None if subject is None else subject[:, :2],
                    None if regions is None else regions["head"],
                )
                clock = _tick(timings, "feature tracks", clock)
            bar.advance(task)
    bar.update(task, total=len(valid), completed=len(valid))
    return _Pass1(
        np.stack(points) if points else np.zeros((0, N_LANDMARKS, 3), np.float32),
        np.array(valid, bool),
        np.array(n_faces, np.int64),
        plate.result() if valid else None,
        tracker.result() if tracker is not None else None,
    )


def load_speech_model(cfg: CaptureConfig):
    """The capture's :class:`~avatar3d.audio.SpeechFeatureExtractor` (cached per process), None when
    ``cfg.speech_model`` is unset; a missing or unusable model is a one-line error naming it."""
    if not cfg.speech_model:
        return None
    try:
        ext = cached_extractor(cfg.speech_model)
    except Avatar3DError as e:
        raise type(e)(f"capture.speech_model: {e}") from None
    ext.source = str(Path(ext.source).resolve())  # recorded so rendering finds it from anywhere
    return ext


class _BackgroundWriter:
    """Encodes and writes images on worker threads (PNG/JPEG encoding releases the GIL), so file
    output overlaps with detection. At most ``max_pending`` writes are queued (bounded memory); the
    first write error is re-raised; leaving the context waits for every write."""

    def __init__(
        self, write_image, workers: int = WRITE_WORKERS, max_pending: int = WRITE_MAX_PENDING
    ) -> None:
        self._write = write_image
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="capture-write")
        self._pending: deque = deque()
        self._max = max_pending

    def submit(self, path: Path, array: np.ndarray, **kwargs) -> None:
        self._pending.append(self._pool.submit(self._write, path, array, **kwargs))
        while len(self._pending) > self._max:
            self._pending.popleft().result()  # raises the write's error, if any

    def __enter__(self) -> _BackgroundWriter:  # noqa: PYI034
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            while self._pending:
                fut = self._pending.popleft()
                if exc_type is None:
                    fut.result()
                else:
                    fut.exception()  # wait, but keep the original error
        finally:
            self._pool.shutdown(wait=True)


def _tick(timings: dict[str, float], name: str, since: float) -> float:
    now = time.perf_counter()
    timings[name] = timings.get(name, 0.0) + now - since
    return now


def _write_regions(root: Path, i: int, masks: dict[str, np.ndarray], write_image) -> None:
    for k, m in masks.items():
        write_image(root / f"masks_{k}" / f"{i:06d}.png", m)
