"""Capture: one talking video -> a CaptureSet directory (frames, masks, head poses, landmarks, audio).

- :func:`run_capture` (``pipeline.py``): the whole stage; :class:`CaptureConfig` its settings.
- Per frame: :class:`FaceLandmarker` / :class:`SubjectSelector` (``landmarks.py``, MediaPipe's 478
  points), :class:`PersonSegmenter` and :func:`region_masks` (``segmentation.py``),
  :class:`FeatureTracker` (``feature_tracks.py``, optical-flow tracks on the rigid face).
- Rigid head tracking (``tracking.py``): :func:`build_canonical` (``canonical.py``), the focal search
  (``focal.py``), starting poses (``resection.py``), bundle adjustment (``pose_fit.py``, ``bundle.py``),
  :func:`fit_rigid` and :func:`pose_free_landmarks`.
- :func:`compute_signals` (``signals.py``): mouth, jaw, blinks, expression from head-space landmarks.
- The optional morphable-model fit: :func:`load_fit` / :class:`FaceModelFit` (``face_model.py``).
- :func:`write_overlay` / :func:`draw_overlay` (``overlay.py``): the fit drawn on the frames.
- Resuming a killed capture: ``resume.py``.
"""

from ..config import CaptureConfig
from .canonical import CanonicalFit, build_canonical
from .face_model import FaceModelFit, load_fit
from .feature_tracks import FeatureTracker, FeatureTracks
from .landmarks import FaceLandmarker, SubjectSelector
from .overlay import draw_overlay, write_overlay
from .pipeline import load_speech_model, run_capture
from .segmentation import PersonSegmenter, region_masks
from .signals import FaceSignals, compute_signals
from .tracking import RigidFit, fit_rigid, pose_free_landmarks

__all__ = [
    "CanonicalFit",
    "CaptureConfig",
    "FaceLandmarker",
    "FaceModelFit",
    "FaceSignals",
    "FeatureTracker",
    "FeatureTracks",
    "PersonSegmenter",
    "RigidFit",
    "SubjectSelector",
    "build_canonical",
    "compute_signals",
    "draw_overlay",
    "fit_rigid",
    "load_fit",
    "load_speech_model",
    "pose_free_landmarks",
    "region_masks",
    "run_capture",
    "write_overlay",
]
