"""Configuration of the capture stage."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields

from ..errors import ConfigError


@dataclass
class CaptureConfig:
    """Settings of :func:`avatar3d.capture.run_capture`; every field has a working default.

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
            does not lag a turning head, which halves the yaw error on the synthetic subject
            (BENCHMARKS.md), at the same speed and a slightly higher reprojection error.
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
            they follow the skull where MediaPipe's points slide and carry the camera's perspective.
            On the synthetic subject, the rotation error falls from 0.9-1.8° to 0.6-1.1° and the
            focal error from 39-75 % to 3-29 % (BENCHMARKS.md).
        track_refine: refine each optical-flow step against the patch where the track was first seen
            (affine warp, normalised brightness; :class:`avatar3d.capture.feature_tracks.PatchTemplates`),
            so that a track does not drift off its surface point. Off by default: on the synthetic
            subject it made the rotation worse (0.46-0.86° → 0.72-1.73° tracking error) and the focal
            no better; it costs ~2× the optical flow's time (BENCHMARKS.md, session 7).
        track_weight: weight of the tracks' mean robust reprojection error relative to the
            landmarks'.
        track_robust_scale_px: scale (pixels at 512 px) of their pseudo-Huber loss.
        focal_track_weight: ``track_weight`` of the focal search (default: the pose fit's 30).
            Fitted alone, MediaPipe's points favour the shortest focal; the tracks carry the
            perspective, but their errors follow the head's turn too. Weighting them 1000 brought
            the synthetic subject's focal closer (mean error 15 % against 20 %) and drove two real
            clips to the search range's short end (a camera at 21 cm; BENCHMARKS.md).
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
        d = asdict(self)
        d["focal_search"] = list(self.focal_search)
        for name in ("flame_path", "flame_landmarks", "speech_model"):
            if d[name] is not None:
                d[name] = str(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CaptureConfig:
        """Build from a mapping; unknown keys are a :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown capture config key(s): {', '.join(unknown)}")
        d = dict(d)
        if "focal_search" in d:
            d["focal_search"] = tuple(d["focal_search"])
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"invalid capture config: {e}") from None
