"""``run_capture``: one talking video -> a CaptureSet directory (see avatar3d/io/captureset.py).

Pass 1 streams the frames once (never the whole video in memory): store each frame, find the subject's
478 landmarks, segment the person, write the person (and region) masks, accumulate the background
plate. Then the rigid head tracking (canonical shape, focal, smooth poses), the per-frame signals, the
region masks of frames whose face was lost (from interpolated landmarks), audio and its features.
Everything is written into a temp sibling of ``out_dir`` renamed into place only on success; a capture
killed after the streaming pass is resumed from there by the next run (avatar3d/capture/resume.py).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import CaptureConfig
from ..core.topology import N_LANDMARKS, RIGID_INDICES
from ..errors import Avatar3DError, MediaError, NoFaceError
from .face_model import fit_face_model, load_face_model, write_morphable
from .feature_tracks import FeatureTracker
from .landmarks import FaceLandmarker, SubjectSelector
from .segmentation import BackgroundPlate, PersonSegmenter, region_masks
from .signals import compute_signals
from .tracking import build_canonical, fit_rigid, pose_free_landmarks

AUDIO_SR = 16000
AUDIO_WINDOW = 16


def stored_size(width: int, height: int, max_size: int) -> tuple[int, int]:
    """Stored (W, H): longest side <= max_size (never upscaled), both even, aspect kept."""
    s = min(1.0, max_size / max(width, height))
    even = lambda v: max(2, int(v * s / 2 + 0.5) * 2)
    return even(width), even(height)


def motion_breaks(obs2d: np.ndarray, valid: np.ndarray, factor: float = 8.0) -> np.ndarray:
    """Frames where the rigid landmarks jump (cuts, joined segments): (T,) bool, True at frame t
    when the motion from t-1 to t exceeds ``factor`` × the clip's median motion and 4 % of the face
    size. Pose smoothing is not applied across such breaks."""
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
    thresh = max(factor * np.nanmedian(d), 0.04 * size)
    out[1:] = np.nan_to_num(d, nan=0.0) > thresh
    return out


@dataclass
class _Pass1:
    """What the streaming pass collects (landmarks are small: T × 478 × 3 floats)."""

    points: list = field(default_factory=list)  # per frame (478, 3) pixels + relative depth
    valid: list = field(default_factory=list)
    n_faces: list = field(default_factory=list)


@contextlib.contextmanager
def _progress(enabled: bool):
    """A rich Progress (or a no-op stand-in) with add_task/advance/update."""
    if not enabled or os.environ.get("AVATAR3D_QUIET"):

        class _Null:
            def add_task(self, *a, **k):
                return 0

            def advance(self, *a, **k):
                pass

            def update(self, *a, **k):
                pass

        yield _Null()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ) as p:
        yield p


def run_capture(
    video: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: CaptureConfig | None = None,
    progress: bool = True,
):
    """Track a talking video into a CaptureSet directory and return the loaded :class:`CaptureSet`.

    Raises :class:`MediaError` (unreadable video, no audio track), :class:`NoFaceError` (no face in
    any frame, or fewer valid frames than ``config.min_valid_fraction``). Warns when several faces
    appear (one subject is tracked). ``out_dir`` is replaced only when everything succeeded.
    """
    from ..audio import audio_energy, frame_features, load_audio
    from ..io.atomic import atomic_dir
    from ..io.captureset import CaptureSet, write_audio_features, write_tracking, write_transforms
    from ..io.media import probe_video, write_audio, write_image
    from .resume import drop_pass1, find_partial, load_pass1, pass1_key, save_pass1

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
    timings: dict[str, float] = {}  # seconds per stage, stored in transforms.json

    key = pass1_key(video, cfg)
    partial = find_partial(out_dir, key)  # a killed capture of this video got past pass 1
    with atomic_dir(out_dir, kind="capture", adopt=partial) as tmp, _progress(progress) as bar:
        tmp = Path(tmp)
        dirs = ["images", "masks"] + (
            [f"masks_{k}" for k in ("face", "head", "torso", "mouth")] if cfg.region_masks else []
        )
        for d in dirs:
            (tmp / d).mkdir(exist_ok=True)
        saved = load_pass1(tmp, key) if partial is not None else None
        if saved is None:
            p1, plate_img, tracks = _stream_pass(video, tmp, cfg, W, H, n_est, fps, bar, timings)
            p1v, p1p, p1n = np.array(p1.valid, bool), _stack(p1.points), np.array(p1.n_faces, np.int64)
            if len(p1v):
                save_pass1(tmp, key, p1p, p1v, p1n, plate_img, tracks, timings)
        else:
            p1p, p1v, p1n, plate_img, tracks, done = saved
            timings.update(done)
            warnings.warn(f"{out_dir}: resuming a killed capture after its first pass ({len(p1v)} frames)",
                          RuntimeWarning, stacklevel=2)
        T = len(p1v)
        if T == 0:
            raise MediaError(f"{video}: no frames decoded")
        valid = p1v
        points = p1p.astype(np.float64)  # (T, 478, 3)
        if not valid.any():
            raise NoFaceError(f"no face found in {video}")
        if valid.mean() < cfg.min_valid_fraction:
            raise NoFaceError(
                f"a face was found in only {valid.sum()} of {T} frames of {video} "
                f"(min_valid_fraction = {cfg.min_valid_fraction:g})"
            )

        task2 = bar.add_task("capture: head tracking", total=4)
        clock = time.perf_counter()
        obs2d = points[..., :2]
        fit = build_canonical(points, valid, cfg.canonical_iterations)
        bar.advance(task2)
        breaks = motion_breaks(obs2d, valid)
        rigid = fit_rigid(fit, obs2d, valid, W, H, cfg, breaks=breaks, tracks=tracks)
        bar.advance(task2)
        lm3d, lm2d = pose_free_landmarks(fit, rigid, obs2d, valid, W, H)
        sig = compute_signals(lm3d, fit.canonical, valid, cfg.expression_dims)
        clock = _tick(timings, "tracking", clock)
        bar.advance(task2)
        if cfg.region_masks and not valid.all():
            from ..io.media import read_image

            for i in np.flatnonzero(~valid):  # region masks from interpolated landmarks
                person = read_image(tmp / "masks" / f"{i:06d}.png", "L")
                _write_regions(tmp, int(i), region_masks(lm2d[i], person), write_image)
        write_image(tmp / "background.png", plate_img)
        clock = _tick(timings, "masks+plate", clock)
        bar.advance(task2)
        morphable = None
        if cfg.morphable != "none":
            K = np.array([[rigid.focal, 0, W / 2], [0, rigid.focal, H / 2], [0, 0, 1.0]])
            mfit = fit_face_model(cfg, face_model, lm2d, lm3d, valid, K)
            morphable = write_morphable(tmp, mfit)
            clock = _tick(timings, "morphable", clock)

        task3 = bar.add_task("capture: audio", total=1)
        wave = load_audio(video, AUDIO_SR)  # (N,) float32 mono at 16 kHz
        n_keep = math.ceil(T / fps * AUDIO_SR)
        wave = wave[:n_keep]
        if len(wave) < 0.9 * n_keep:
            warnings.warn(
                f"{video}: the audio track covers {len(wave) / AUDIO_SR:.2f} s of the "
                f"{T / fps:.2f} s captured; later frames get edge-padded audio features",
                stacklevel=2,
            )
        write_audio(tmp / "audio.wav", wave, AUDIO_SR)
        feats = frame_features(wave, AUDIO_SR, fps, n_frames=T, window=AUDIO_WINDOW)
        energy = audio_energy(wave, AUDIO_SR, fps, n_frames=T)
        arrays = {"features": feats.astype(np.float32), "energy": energy.astype(np.float32)}
        speech_meta = None
        if speech is not None:
            sf = speech(wave, AUDIO_SR, fps, n_frames=T, window=AUDIO_WINDOW)  # (T, 16, D)
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
        clock = _tick(timings, "audio", clock)
        bar.advance(task3)

        frame_idx = np.arange(T, dtype=np.int64) * cfg.stride
        f32 = lambda a: np.asarray(a, np.float32)
        write_tracking(
            tmp / "tracking.safetensors",
            {
                "rotation": f32(rigid.rotation),
                "translation": f32(rigid.translation),
                "landmarks2d": f32(lm2d),
                "landmarks3d": f32(lm3d),
                "canonical_landmarks": f32(fit.canonical),
                "valid": valid,
                "mouth_open": sig.mouth_open,
                "jaw_open": sig.jaw_open,
                "blink": sig.blink,
                "expression": sig.expression,
                "blink_per_eye": sig.blink_per_eye,
                "mouth_open_raw": sig.mouth_open_raw,
                "eye_open_raw": sig.eye_open_raw,
                "expression_basis": sig.expression_basis,
                "expression_mean": sig.expression_mean,
                "reprojection_error": f32(rigid.errors),
                "frame_index": frame_idx,
            },
        )
        extra = {
            "source_fps": float(info.fps),
            "stride": int(cfg.stride),
            "source_size": [int(info.width), int(info.height)],
            "masks": ["face", "head", "torso", "mouth"] if cfg.region_masks else [],
            "faces_max": int(p1n.max()),
            "valid_frames": int(valid.sum()),
            "motion_breaks": np.flatnonzero(breaks).tolist(),
            "reprojection_error_px_median": float(np.nanmedian(rigid.errors)),
            "feature_tracks": None
            if tracks is None
            else {"tracks": tracks.n_tracks, "observations": len(tracks)},
            "capture_seconds": round(time.time() - t_start, 2),
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
            "morphable": morphable,
            "speech_model": speech_meta,
            "config": cfg.to_dict(),
        }
        drop_pass1(tmp)  # the resume state is no part of the capture
        write_transforms(
            tmp / "transforms.json",
            width=W,
            height=H,
            focal=rigid.focal,
            rotation=rigid.rotation,
            translation=rigid.translation,
            frame_indices=frame_idx,
            times=frame_idx / info.fps,
            valid=valid,
            fps=fps,
            source=str(video),
            train_fraction=cfg.train_fraction,
            extra=extra,
        )
    return CaptureSet.load(out_dir)


def _stream_pass(video: Path, tmp: Path, cfg: CaptureConfig, W: int, H: int, n_est: int, fps: float, bar,
                 timings: dict[str, float]):
    """Pass 1 over the frames: store frames and masks in ``tmp``, collect landmarks, feature tracks
    and the background plate. Returns (_Pass1, plate (H, W, 3) uint8 or None when no frame was decoded,
    FeatureTracks or None)."""
    from ..io.media import iter_frames, write_image

    bg_every = max(1, n_est // int(cfg.background_frames))
    reacquire = max(1, round(cfg.reacquire_after_s * fps))
    q = int(cfg.jpeg_quality)
    p1 = _Pass1()
    plate = BackgroundPlate(W, H, cfg.background_margin)
    selector = SubjectSelector(W, H, reacquire, source=str(video))
    tracker = FeatureTracker(W, H, refine=cfg.track_refine) if cfg.feature_tracks else None
    task = bar.add_task("capture: landmarks + masks", total=n_est)
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
        frames = iter_frames(video, size=(W, H), stride=cfg.stride, max_frames=cfg.max_frames)
        clock = time.perf_counter()
        for i, frame in enumerate(frames):  # frame: (H, W, 3) uint8
            clock = _tick(timings, "decode", clock)
            writer.submit(tmp / "images" / f"{i:06d}.jpg", frame, quality=q)
            clock = _tick(timings, "write", clock)
            faces = lmk.detect(frame)
            subject = selector.select(faces, i)
            clock = _tick(timings, "landmarks", clock)
            person = seg.mask(frame)  # (H, W) uint8 0/255
            clock = _tick(timings, "segmentation", clock)
            writer.submit(tmp / "masks" / f"{i:06d}.png", person)
            if i % bg_every == 0:
                plate.update(frame, person)
            p1.n_faces.append(len(faces))
            p1.valid.append(subject is not None)
            p1.points.append(subject if subject is not None else np.zeros((N_LANDMARKS, 3), np.float32))
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
    bar.update(task, total=len(p1.valid), completed=len(p1.valid))
    return p1, plate.result() if p1.valid else None, tracker.result() if tracker is not None else None


def _stack(points: list) -> np.ndarray:
    return np.stack(points) if points else np.zeros((0, N_LANDMARKS, 3), np.float32)


def load_speech_model(cfg: CaptureConfig):
    """The capture's :class:`SpeechFeatureExtractor` (cached per process), None when
    ``cfg.speech_model`` is unset; a missing or unusable model is a one-line error naming it."""
    if not cfg.speech_model:
        return None
    from ..audio.speech_model import cached_extractor

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

    def __init__(self, write_image, workers: int = 2, max_pending: int = 24) -> None:
        from concurrent.futures import ThreadPoolExecutor

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
