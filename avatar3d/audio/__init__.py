"""Audio: any source to mono at :data:`avatar3d.core.constants.SAMPLE_RATE`, frame-aligned features.

Public API::

    from avatar3d.audio import load_audio, frame_features, viseme_track
    wave = load_audio("speech.wav")                   # (T,) float32 mono at SAMPLE_RATE (= SR)
    feats = frame_features(wave, SR, fps=25.0)        # (n_frames, window, N_MELS) log-mel windows
    track = viseme_track(wave, SR, fps=25.0)          # visemes, voice activity, loudness per frame

Modules: :mod:`.features` (loading, log-mel, energy envelope), :mod:`.visemes` (the speech front end:
phones -> visemes, offline and streaming), :mod:`.phones` (pocketsphinx phone recognition and forced
alignment), :mod:`.vad` (silero voice activity), :mod:`.coarticulation` (viseme blending),
:mod:`.speech_model` (a local HuBERT / wav2vec2 / TorchScript model's features). Nothing is
downloaded. Design note: ``docs/design/speech-frontend.md``.
"""

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
