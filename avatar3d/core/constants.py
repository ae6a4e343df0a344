"""Constants every layer shares."""

SAMPLE_RATE = 16000  # Hz: the rate every audio path (features, phones, VAD, speech models) works at

__all__ = ["SAMPLE_RATE"]
