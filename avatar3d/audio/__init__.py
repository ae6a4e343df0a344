"""Audio: loading any source to 16 kHz mono, frame-aligned log-mel features, optional speech models."""

from avatar3d.audio.features import (
    HOP,
    N_FFT,
    N_MELS,
    SR,
    STEP_S,
    as_mono,
    audio_energy,
    frame_features,
    load_audio,
    log_mel,
)
from avatar3d.audio.phones import PhoneSegment, align_phones, recognise_phones
from avatar3d.audio.speech_model import SpeechFeatureExtractor
from avatar3d.audio.visemes import (
    FEATURE_DIM,
    VISEMES,
    StreamingVisemes,
    VisemeTrack,
    frontend_info,
    speech_features,
    viseme_track,
)

__all__ = [
    "FEATURE_DIM",
    "HOP",
    "N_FFT",
    "N_MELS",
    "SR",
    "STEP_S",
    "VISEMES",
    "PhoneSegment",
    "SpeechFeatureExtractor",
    "StreamingVisemes",
    "VisemeTrack",
    "align_phones",
    "as_mono",
    "audio_energy",
    "frame_features",
    "frontend_info",
    "load_audio",
    "log_mel",
    "recognise_phones",
    "speech_features",
    "viseme_track",
]
