"""Speech-like audio for the synthetic subject, and the subject's ground-truth audio -> mouth map.

:func:`synth_speech` is a tiny formant synthesiser: a glottal pulse train (pitch 100-220 Hz for the
default voice, falling over each phrase) through cascaded formant resonators whose targets change
per syllable, consonant noise bursts and fricatives at syllable edges, and silent pauses between
phrases. It is deterministic per seed; different seeds give different "utterances".

:func:`mouth_from_audio` defines how wide the synthetic subject opens its jaw for a waveform: a
smoothed loudness envelope of the voiced band (silence -> 0, the loudest vowels -> about 0.8).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

from ..core.constants import SAMPLE_RATE

__all__ = ["VOICES", "Voice", "mouth_from_audio", "synth_speech"]


@dataclass(frozen=True)
class Voice:
    """A speaker: ``pitch_scale`` multiplies the 100-220 Hz pitch range, ``formant_scale`` the
    formant frequencies (a shorter vocal tract has higher formants); ``breathiness`` is the level of
    aspiration noise mixed into the voiced source."""

    pitch_scale: float = 1.0
    formant_scale: float = 1.0
    breathiness: float = 0.04


VOICES: dict[str, Voice] = {
    "default": Voice(),
    "low": Voice(pitch_scale=0.62, formant_scale=0.88, breathiness=0.03),
    "high": Voice(pitch_scale=1.25, formant_scale=1.12, breathiness=0.06),
}

# (F1, F2, F3) in Hz for a handful of vowels (adult averages) and their relative loudness
_VOWELS = np.array(
    [
        [730, 1090, 2440],  # a
        [530, 1840, 2480],  # e
        [270, 2290, 3010],  # i
        [570, 840, 2410],  # o
        [300, 870, 2240],  # u
        [660, 1720, 2410],  # ae
        [520, 1190, 2390],  # schwa
    ],
    dtype=np.float64,
)
_VOWEL_GAIN = np.array([1.0, 0.9, 0.7, 0.95, 0.75, 0.95, 0.8])
_BANDWIDTHS = np.array([80.0, 100.0, 160.0, 220.0])
_BLOCK = 0.004  # seconds per formant-filter update
_RANGE_DB = 25.0  # mouth_from_audio: loudness range mapped onto the jaw
_GAMMA = 1.6


def _resolve_voice(voice: Voice | str | None) -> Voice:
    if voice is None:
        return VOICES["default"]
    if isinstance(voice, Voice):
        return voice
    if voice not in VOICES:
        raise ValueError(f"unknown voice {voice!r}; choose one of {sorted(VOICES)} or pass a Voice")
    return VOICES[voice]


@dataclass
class _Plan:
    """Per-sample control tracks of an utterance."""

    f0: np.ndarray  # Hz (0 where unvoiced)
    voiced: np.ndarray  # voiced amplitude envelope
    formants: np.ndarray  # (T, 3) targets in Hz
    noise: np.ndarray  # consonant noise envelope
    noise_band: np.ndarray  # (T,) index into the noise filter bank (-1 none)


def _ramp(n: int, attack: int, release: int) -> np.ndarray:
    env = np.ones(n)
    a, r = min(attack, n // 2), min(release, n // 2)
    if a > 0:
        env[:a] = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, a))
    if r > 0:
        env[n - r :] = 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, r))
    return env


def _plan(seconds: float, sr: int, rng: np.random.Generator, voice: Voice) -> _Plan:
    T = round(seconds * sr)
    f0 = np.zeros(T)
    voiced = np.zeros(T)
    formants = np.tile(_VOWELS[6], (T, 1))
    noise = np.zeros(T)
    band = np.full(T, -1, dtype=np.int64)
    t = rng.uniform(0.25, 0.45)  # leading silence
    end = seconds - rng.uniform(0.25, 0.4)  # trailing silence
    prev_vowel = 6
    while t < end - 0.3:
        n_syll = int(rng.integers(3, 10))
        rate = rng.uniform(3.0, 6.0)  # syllables per second
        p_start = rng.uniform(180, 220)
        p_end = rng.uniform(100, 135)
        phrase_len = n_syll / rate
        t0 = t
        for k in range(n_syll):
            dur = rng.uniform(0.75, 1.25) / rate
            if t + dur > end:
                break
            frac = (t - t0) / max(phrase_len, 1e-6)
            pitch = (p_start + (p_end - p_start) * frac) * (1 + 0.08 * rng.standard_normal())
            stress = rng.uniform(0.55, 1.0) if k else 1.0
            onset = rng.random()
            i0, i1 = int(t * sr), int((t + dur) * sr)
            cons = 0
            if onset < 0.35:  # fricative (s, sh, f): noise, then the vowel
                cons = int(rng.uniform(0.05, 0.1) * sr)
                noise[i0 : i0 + cons] = rng.uniform(0.12, 0.25) * _ramp(cons, cons // 4, cons // 3)
                band[i0 : i0 + cons] = int(rng.integers(0, 3))
            elif onset < 0.65:  # plosive (p, t, k): closure silence, then a short burst
                closure = int(rng.uniform(0.03, 0.05) * sr)
                burst = int(rng.uniform(0.012, 0.022) * sr)
                cons = closure + burst
                noise[i0 + closure : i0 + cons] = rng.uniform(0.25, 0.45) * _ramp(burst, 2, burst // 2)
                band[i0 + closure : i0 + cons] = 3
            v0 = min(i0 + cons, i1 - 8)
            nv = i1 - v0
            vowel = int(rng.integers(0, len(_VOWELS)))
            env = stress * _VOWEL_GAIN[vowel] * _ramp(nv, int(0.025 * sr), int(0.05 * sr))
            voiced[v0:i1] = np.maximum(voiced[v0:i1], env)
            # pitch: a small accent rise and fall within the syllable
            acc = 1 + 0.06 * stress * np.sin(np.linspace(0, np.pi, nv))
            f0[v0:i1] = pitch * acc
            # formants glide from the previous vowel's over the first 40 %
            glide = np.clip(np.linspace(0, 2.5, nv), 0, 1)[:, None]
            formants[v0:i1] = _VOWELS[prev_vowel] * (1 - glide) + _VOWELS[vowel] * glide
            prev_vowel = vowel
            t += dur
        t += rng.uniform(0.3, 0.75)  # pause between phrases
    f0 = np.where(f0 > 0, np.clip(f0, 100.0, 220.0), 0.0) * voice.pitch_scale
    formants *= voice.formant_scale
    return _Plan(f0, voiced, formants, noise, band)


def _glottal_source(f0: np.ndarray, sr: int, rng: np.random.Generator, breath: float) -> np.ndarray:
    """Differentiated glottal flow: pulses at the pitch period, low-passed (spectral tilt)."""
    phase = np.cumsum(np.where(f0 > 0, f0, 0.0) / sr)
    pulses = np.zeros_like(f0)
    idx = np.nonzero(np.diff(np.floor(phase)) > 0)[0] + 1
    pulses[idx] = 1.0 + 0.05 * rng.standard_normal(len(idx))  # shimmer
    flow = signal.lfilter([1.0], [1.0, -1.9, 0.9025], pulses)  # double pole at 0.95: glottal tilt
    src = np.diff(flow, prepend=0.0)  # lip radiation
    src /= max(np.abs(src).max(), 1e-9)
    return src + breath * rng.standard_normal(len(f0)) * (f0 > 0)


def _formant_filter(x: np.ndarray, formants: np.ndarray, sr: int, scale: float) -> np.ndarray:
    """Cascade of four 2-pole resonators updated every few ms (state carried across blocks)."""
    block = max(int(_BLOCK * sr), 16)
    f4 = min(3500.0 * scale, 0.45 * sr)
    y = np.zeros_like(x)
    zi = [np.zeros(2) for _ in range(4)]
    nyq_cap = 0.45 * sr
    for s in range(0, len(x), block):
        seg = x[s : s + block]
        fs = list(np.minimum(formants[s], nyq_cap)) + [f4]
        for j, (F, B) in enumerate(zip(fs, _BANDWIDTHS)):
            r = np.exp(-np.pi * B / sr)
            c = 2 * r * np.cos(2 * np.pi * F / sr)
            a = [1.0, -c, r * r]
            b = [1.0 - c + r * r]
            seg, zi[j] = signal.lfilter(b, a, seg, zi=zi[j])
        y[s : s + block] = seg
    return y


def _noise_bank(sr: int) -> list[np.ndarray]:
    """Band-pass filters (SOS) for s, sh, f and plosive bursts, clipped below Nyquist."""
    nyq = sr / 2
    bands = [(4000, 7500), (2000, 5000), (1200, 6500), (500, 4000)]
    out = []
    for lo, hi in bands:
        hi = min(hi, 0.95 * nyq)
        lo = min(lo, 0.5 * hi)
        out.append(signal.butter(4, [lo / nyq, hi / nyq], btype="bandpass", output="sos"))
    return out


def synth_speech(
    seconds: float, sr: int = SAMPLE_RATE, seed: int = 0, voice: Voice | str | None = "default"
) -> np.ndarray:
    """A deterministic speech-like waveform.

    Args:
        seconds: duration (the result has ``round(seconds * sr)`` samples).
        sr: sample rate in Hz (>= 8000).
        seed: which "utterance" (syllable timing, vowels, pitch contour, consonants, pauses).
        voice: a :class:`Voice` or a name in :data:`VOICES` (another speaker).
    Returns:
        (T,) float32 in [-1, 1], peak 0.8, exactly 0 in the pauses between phrases.
    """
    if not (np.isfinite(seconds) and seconds > 0):
        raise ValueError(f"seconds must be positive, got {seconds}")
    if sr < 8000:
        raise ValueError(f"sample rate must be at least 8000 Hz, got {sr}")
    v = _resolve_voice(voice)
    rng = np.random.default_rng(seed)
    plan = _plan(float(seconds), int(sr), rng, v)
    src = _glottal_source(plan.f0, sr, rng, v.breathiness)
    vowel = _formant_filter(src * plan.voiced, plan.formants, sr, v.formant_scale)
    vowel /= max(np.abs(vowel).max(), 1e-9)
    white = rng.standard_normal(len(src))
    cons = np.zeros_like(vowel)
    for k, sos in enumerate(_noise_bank(sr)):
        m = plan.noise_band == k
        if m.any():
            cons += signal.sosfilt(sos, white) * plan.noise * m
    out = vowel + cons
    # exact silence where nothing is planned (filters ring for a few ms; fade that out)
    active = (plan.voiced > 0) | (plan.noise > 0)
    gate = np.convolve(active.astype(float), np.ones(int(0.03 * sr)), mode="same") > 0
    taper = np.hanning(int(0.01 * sr))
    out = out * np.convolve(gate.astype(float), taper / taper.sum(), mode="same")
    out *= 0.8 / max(np.abs(out).max(), 1e-9)
    return out.astype(np.float32)


def mouth_from_audio(wave: np.ndarray, sr: int, fps: float, n_frames: int) -> np.ndarray:
    """The synthetic subject's ground-truth jaw opening for each video frame.

    Loudness of the voiced band (80-1000 Hz, where vowels carry their energy and fricatives do
    not), RMS over 30 ms, smoothed (Gaussian, sigma 25 ms), in dB relative to the utterance's 95th
    percentile, ``x = clip((dB - ref + 25) / 25, 0, 1.2)``, mapped to ``0.8 * x ** 1.6`` (25 dB below
    the reference or quieter -> 0, at it -> 0.8, syllable dips close the mouth visibly). Frame ``i``
    samples the envelope at its timestamp ``i / fps`` (the media timeline's convention).

    Returns:
        (n_frames,) float32 in [0, 1].
    """
    x = np.asarray(wave, dtype=np.float64).reshape(-1)
    if n_frames <= 0:
        return np.zeros(0, np.float32)
    if x.size == 0 or not np.isfinite(x).all():
        return np.zeros(n_frames, np.float32)
    nyq = sr / 2
    sos = signal.butter(4, [80 / nyq, min(1000.0, 0.9 * nyq) / nyq], btype="bandpass", output="sos")
    v = signal.sosfiltfilt(sos, x) if x.size > 30 else x
    hop = max(int(0.005 * sr), 1)
    win = max(int(0.03 * sr), hop)
    power = np.convolve(v * v, np.ones(win) / win, mode="same")[::hop]
    sig = 0.025 / 0.005
    k = np.exp(-0.5 * (np.arange(-int(4 * sig), int(4 * sig) + 1) / sig) ** 2)
    power = np.convolve(power, k / k.sum(), mode="same")
    rms = np.sqrt(np.maximum(power, 0.0))
    loud = rms > 1e-4
    if not loud.any():
        return np.zeros(n_frames, np.float32)
    db = 20 * np.log10(rms + 1e-12)
    ref = np.percentile(db[loud], 95)
    x = np.clip((db - (ref - _RANGE_DB)) / _RANGE_DB, 0.0, 1.2)
    jaw = 0.8 * x**_GAMMA
    jaw = np.where(loud, jaw, 0.0)
    t_env = (np.arange(len(jaw)) * hop) / sr
    t_frames = np.arange(n_frames) / float(fps)
    return np.clip(np.interp(t_frames, t_env, jaw, right=0.0), 0.0, 1.0).astype(np.float32)
