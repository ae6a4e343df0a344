"""A deterministic synthetic talking subject: the ``avatar3d demo`` input and the free-viewpoint
ground truth. Ships as code (the face comes from ``skimage.data.astronaut()``, a public-domain NASA
photo bundled with scikit-image); nothing is downloaded.

- :class:`SyntheticSubject` — 3D Gaussians with ``jaw_open``, ``blink`` and head-pose controls.
- :func:`synth_speech`, :func:`mouth_from_audio` — speech-like audio and the audio -> jaw map.
- :func:`make_talking_video` -> :class:`SyntheticTruth`; :func:`render_truth_view`.
- :mod:`.capture_truth`: how far a capture of the subject is from its ground truth (not imported
  here: it needs the capture package).
- :mod:`.flame_file`: a FLAME-layout head model of the subject for the capture's FLAME path.
"""

from .speech import VOICES, Voice, mouth_from_audio, synth_speech
from .subject import (
    DEFAULT_BACKGROUND,
    DEFAULT_N_GAUSSIANS,
    LABEL_HEAD,
    LABEL_TORSO,
    PART_NAMES,
    SyntheticSubject,
    render_gaussians,
)
from .video import (
    SyntheticTruth,
    blink_track,
    get_subject,
    head_motion_track,
    make_talking_video,
    render_truth_view,
)

__all__ = [
    "DEFAULT_BACKGROUND",
    "DEFAULT_N_GAUSSIANS",
    "LABEL_HEAD",
    "LABEL_TORSO",
    "PART_NAMES",
    "VOICES",
    "SyntheticSubject",
    "SyntheticTruth",
    "Voice",
    "blink_track",
    "get_subject",
    "head_motion_track",
    "make_talking_video",
    "mouth_from_audio",
    "render_gaussians",
    "render_truth_view",
    "synth_speech",
]
