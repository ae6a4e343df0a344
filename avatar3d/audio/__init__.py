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
from avatar3d.audio.speech_model import SpeechFeatureExtractor

__all__ = [
    "HOP",
    "N_FFT",
    "N_MELS",
    "SR",
    "STEP_S",
    "SpeechFeatureExtractor",
    "as_mono",
    "audio_energy",
    "frame_features",
    "load_audio",
    "log_mel",
]
