"""Speaker-independent phone recognition: pocketsphinx "allphone" decoding gated by silero-vad.

The acoustic model (``en-us``) and the phone language model (``en-us-phone.lm.bin``) ship inside the
``pocketsphinx`` wheel (:func:`pocketsphinx.get_model_path`); the voice-activity model inside the
``silero-vad`` wheel. Nothing is downloaded.

Decoding is organised as a stream so that offline and streaming results agree:

* Audio is 16 kHz mono float. It is consumed in 512-sample blocks (32 ms); every block is scored by
  the VAD (:mod:`avatar3d.audio.vad`) and fed to the decoder, in that order, whatever the sizes of
  the chunks the caller pushes. The trailing partial block is zero-padded at the end of the stream.
* The decoder's utterances are cut inside pauses: when ``BREAK_BLOCKS`` consecutive blocks score
  below ``PAUSE_PROB`` the current utterance ends there (its phones are final) and a new one starts
  with the next block; an utterance is also cut after ``MAX_UTT_S`` seconds. The cuts depend only on
  the causal VAD, so a stream and a whole-file decode cut at the same samples.
* Phone segments are reported in seconds on the input's timeline: pocketsphinx frame ``f`` of an
  utterance starting at sample ``s0`` spans ``[s0 / SR + f / 100, s0 / SR + (f + 1) / 100)`` (``SR``: :data:`avatar3d.core.constants.SAMPLE_RATE`).

Phone labels are pocketsphinx's ARPAbet set (``AA`` ... ``ZH``) plus ``SIL`` and fillers such as
``+NSN+`` (noise) and ``+SPN+`` (spoken noise).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import numpy as np

from avatar3d.audio.features import SR, _to_16k
from avatar3d.audio.vad import BLOCK, Vad
from avatar3d.errors import Avatar3DError

__all__ = [
    "PhoneSegment",
    "PhoneStream",
    "align_phones",
    "phones_version",
    "recognise_phones",
]

BREAK_BLOCKS = 8  # 256 ms of pause ends an utterance
PAUSE_PROB = 0.3  # VAD probability below which a block counts as pause
MAX_UTT_S = 20.0  # longest utterance before a forced cut (bounds decoder memory and partial-result cost)
_FRATE = 100  # pocketsphinx frames per second
# Decoder settings: language weight 1 rather than the usual 2 (docs/design/speech-frontend.md); the phone
# insertion penalty.
_LW, _PIP = 1.0, 0.3


@dataclass(frozen=True)
class PhoneSegment:
    """One recognised phone: ARPAbet label (or ``SIL`` / a ``+FILLER+``), start and end in seconds."""

    phone: str
    start: float
    end: float


def phones_version() -> str:
    """``pocketsphinx <version> allphone en-us`` of the installed wheel."""
    try:
        v = version("pocketsphinx")
    except PackageNotFoundError:  # pragma: no cover
        v = "?"
    return f"pocketsphinx {v} allphone en-us"


@functools.lru_cache(maxsize=1)
def _model_dir() -> str:
    from pocketsphinx import get_model_path

    return os.path.join(get_model_path(), "en-us")


def _decoder():
    from pocketsphinx import Decoder

    d = _model_dir()
    return Decoder(
        hmm=os.path.join(d, "en-us"),
        allphone=os.path.join(d, "en-us-phone.lm.bin"),
        lw=_LW,
        pip=_PIP,
        loglevel="FATAL",
    )


def _to_pcm(x: np.ndarray) -> bytes:
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


class PhoneStream:
    """Incremental phone recogniser + VAD over a 16 kHz mono stream (see the module docstring).

    ``push(x)`` consumes samples; ``segments()`` returns the phones so far: final ones from ended
    utterances plus the current utterance's best partial path (whose tail may still change);
    ``vad`` holds one probability per consumed block. ``flush()`` ends the stream.
    """

    def __init__(self) -> None:
        self._dec = _decoder()
        self._vad = Vad()
        self._pending = np.zeros(0, np.float32)
        self.n_samples = 0  # samples pushed (excluding end padding)
        self.n_blocks = 0  # blocks consumed
        self._probs: list[np.ndarray] = []
        self._final: list[PhoneSegment] = []
        self._utt_start: int | None = None  # block index where the current utterance began
        self._pause_run = 0
        self.closed = False

    @property
    def vad(self) -> np.ndarray:
        """(n_blocks,) float32 voice probabilities, block i centred at (i + 0.5) * 32 ms."""
        if len(self._probs) > 1:
            self._probs = [np.concatenate(self._probs)]
        return self._probs[0] if self._probs else np.zeros(0, np.float32)

    def push(self, x: np.ndarray) -> None:
        """Consume 16 kHz mono float samples (any length)."""
        if self.closed:
            raise RuntimeError("PhoneStream: push() after flush()")
        x = np.asarray(x, np.float32).reshape(-1)
        self.n_samples += x.shape[0]
        buf = np.concatenate([self._pending, x]) if self._pending.size else x
        n = buf.shape[0] // BLOCK
        self._pending = buf[n * BLOCK :].copy()
        if n:
            self._blocks(buf[: n * BLOCK])

    def flush(self) -> None:
        """Zero-pad and consume the trailing partial block, end the last utterance."""
        if self.closed:
            return
        if self._pending.size:
            self._blocks(np.concatenate([self._pending, np.zeros(BLOCK - self._pending.size, np.float32)]))
            self._pending = np.zeros(0, np.float32)
        self._end_utt()
        self.closed = True

    def _blocks(self, buf: np.ndarray) -> None:
        probs = self._vad.blocks(buf)  # (n,)
        self._probs.append(probs)
        max_blocks = int(MAX_UTT_S * SR / BLOCK)
        first = 0  # first block of buf not yet fed to the decoder
        for i, p in enumerate(probs):
            if self._utt_start is None:
                self._dec.start_utt()
                self._utt_start = self.n_blocks
            self.n_blocks += 1
            self._pause_run = self._pause_run + 1 if p < PAUSE_PROB else 0
            length = self.n_blocks - self._utt_start
            if (self._pause_run == BREAK_BLOCKS and length > BREAK_BLOCKS) or length >= max_blocks:
                self._dec.process_raw(_to_pcm(buf[first * BLOCK : (i + 1) * BLOCK]), False, False)
                first = i + 1
                self._end_utt()
        if first < probs.size:
            self._dec.process_raw(_to_pcm(buf[first * BLOCK :]), False, False)

    def _utt_segments(self) -> list[PhoneSegment]:
        seg = self._dec.seg()
        if seg is None or self._utt_start is None:
            return []
        t0 = self._utt_start * BLOCK / SR
        return [
            PhoneSegment(s.word, t0 + s.start_frame / _FRATE, t0 + (s.end_frame + 1) / _FRATE) for s in seg
        ]

    def _end_utt(self) -> None:
        if self._utt_start is None:
            return
        self._dec.end_utt()
        self._final.extend(self._utt_segments())
        self._utt_start = None

    def segments(self) -> list[PhoneSegment]:
        """Final segments plus the current utterance's partial best path, in time order."""
        if self._utt_start is None:
            return list(self._final)
        return self._final + self._utt_segments()

    def drop_before(self, t: float) -> None:
        """Forget final segments that end before ``t`` seconds (bounds memory on long streams)."""
        i = 0
        while i < len(self._final) and self._final[i].end < t:
            i += 1
        if i:
            del self._final[:i]


def align_phones(wave: np.ndarray, sr: int, text: str) -> list[PhoneSegment]:
    """Forced alignment of a known English transcript: phone segments (``SIL`` in pauses), in seconds.

    Two pocketsphinx passes with the wheel's dictionary: words, then phones within them. Words
    must be in the CMU dictionary (letters and apostrophes; case and punctuation are ignored).
    Raises :class:`avatar3d.errors.Avatar3DError` on an unknown word or when no alignment is found.
    For measuring, e.g. viseme contrast against a transcript; the live front end never needs text.
    """
    from pocketsphinx import Decoder

    words = ["".join(c for c in w.lower() if c.isalpha() or c == "'") for w in text.split()]
    words = [w for w in words if w]
    d = _model_dir()
    dec = Decoder(
        hmm=os.path.join(d, "en-us"),
        dict=os.path.join(d, "cmudict-en-us.dict"),
        beam=1e-80,
        wbeam=1e-60,
        pbeam=1e-80,
        loglevel="FATAL",
    )
    missing = [w for w in words if dec.lookup_word(w) is None]
    if missing or not words:
        raise Avatar3DError(
            f"align_phones: words not in the dictionary: {' '.join(missing) or '(none given)'}"
        )
    x = _to_16k(wave, sr)
    for pad in (0.0, 0.2, 0.5):  # the phone pass sometimes fails at the audio's edges; silence helps
        z = np.zeros(int(pad * SR), np.float32)
        al = _align_pass(dec, _to_pcm(np.concatenate([z, x, z])), " ".join(words))
        if al is not None:
            return [
                PhoneSegment(p.name, p.start / _FRATE - pad, (p.start + p.duration) / _FRATE - pad)
                for w in al
                for p in w
            ]
    raise Avatar3DError("align_phones: no alignment found")


def _align_pass(dec, pcm: bytes, text: str):
    try:
        dec.set_align_text(text)
        for second in (False, True):
            if second:
                dec.set_alignment()
            dec.start_utt()
            dec.process_raw(pcm, full_utt=True)
            dec.end_utt()
        return dec.get_alignment()
    except RuntimeError:
        return None


def recognise_phones(wave: np.ndarray, sr: int = SR) -> list[PhoneSegment]:
    """Phone segments of ``wave`` ((T,), (T, C) or (C, T) at ``sr``), in time order, in seconds.

    Covers the whole input (``SIL`` and fillers included); pocketsphinx allphone decoding with the
    English model inside its wheel, utterances cut at VAD pauses (see the module docstring).
    """
    stream = PhoneStream()
    stream.push(_to_16k(wave, sr))
    stream.flush()
    return stream.segments()
