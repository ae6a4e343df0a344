"""Speech with known content from the ``espeak-ng`` synthesiser (Debian package ``espeak-ng``).

Used by the front-end tests and ``benchmarks/bench_frontend.py``: words separated by silences of
known length (so each word's span is known to the sample), and sentences with a known transcript
(phone timing from forced alignment). Callers skip when :func:`have_espeak` is false.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

SR = 16000


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def say(text: str, voice: str = "en-us", speed: int = 150) -> np.ndarray:
    """``text`` spoken by espeak-ng -> (T,) float32 at 16 kHz."""
    from avatar3d.audio import load_audio

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "say.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return load_audio(path)


def trim(x: np.ndarray, thresh: float = 0.01) -> np.ndarray:
    """Cut leading and trailing samples below ``thresh``."""
    on = np.abs(x) > thresh
    if not on.any():
        return x[:0]
    return x[int(np.argmax(on)) : x.size - int(np.argmax(on[::-1]))]


def words_with_gaps(
    words: list[str], voice: str = "en-us", gap: float = 0.5
) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Words spoken one by one, trimmed, joined by ``gap`` s of silence (also before the first and
    after the last) -> (wave (T,) float32 16 kHz, [(word, start s, end s)])."""
    z = np.zeros(int(gap * SR), np.float32)
    parts, spans, t = [z], [], gap
    for w in words:
        x = trim(say(w, voice))
        spans.append((w, t, t + x.size / SR))
        parts += [x, z]
        t += x.size / SR + gap
    return np.concatenate(parts), spans
