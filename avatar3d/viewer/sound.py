"""Sound in the browser, kept in step with the server's playback clock.

The driving audio travels once, as a FLAC data URL inside a hidden ``<audio>`` element of the GUI
panel. The server then steers that element with tiny HTML snippets whose only script is an image
``onerror`` handler (viser renders GUI HTML as markup; ``<script>`` tags would not run): seek when
the element is far from the clock, speed it up or slow it down a little when it is near (a seek
stalls playback for a moment, so seeking to correct a small drift would never converge), then
play or pause. Browsers only let a page start sound after the user has clicked in it, which the
"Sound" checkbox click provides.
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

import numpy as np

AUDIO_ID = "avatar3d-audio"
MAX_DRIFT_S = 0.04  # closer than this to the clock: play at normal speed
NUDGE = 0.08  # otherwise play this much faster or slower until it is back (pitch is preserved)
SEEK_DRIFT_S = 0.5  # further than this: seek
MAX_SOUND_S = 900.0  # longer audio is not sent to the browser (the data URL would be too large)


def audio_data_url(wave: np.ndarray, sr: int) -> str:
    """``data:audio/flac;base64,...`` of a mono wave (T,) float in [-1, 1]."""
    from ..io.media import write_audio

    with tempfile.TemporaryDirectory(prefix="avatar3d-sound-") as d:
        path = write_audio(Path(d) / "sound.flac", np.asarray(wave, np.float32), int(sr))
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:audio/flac;base64,{data}"


def audio_element_html(url: str) -> str:
    """The hidden audio element (sent once)."""
    return f'<audio id="{AUDIO_ID}" preload="auto" src="{url}"></audio>'


def control_html(t: float, play: bool, nonce: int, seek: bool = False) -> str:
    """A snippet that, when the browser renders it, brings the audio element to ``t`` seconds (a seek
    when ``seek`` or when it is far off, else a nudge of its rate) and plays it, or pauses it at
    ``t``. ``nonce`` makes every snippet new, so each one runs."""
    t = float(max(0.0, t))
    far = "true" if seek else f"Math.abs(d)>{SEEK_DRIFT_S}"
    if play:
        act = (
            f"var d=a.currentTime-{t:.3f};"
            f"if({far}){{a.currentTime={t:.3f};a.playbackRate=1;}}"
            f"else a.playbackRate=Math.abs(d)<{MAX_DRIFT_S}?1:(d>0?{1 - NUDGE}:{1 + NUDGE});"
            "a.play().catch(function(){});"
        )
    else:
        act = f"a.pause();a.currentTime={t:.3f};"
    js = f"var a=document.getElementById('{AUDIO_ID}');if(a){{{act}}}"
    return f'<img alt="" src="data:," data-n="{int(nonce)}" style="display:none" onerror="{js}">'


__all__ = ["AUDIO_ID", "MAX_SOUND_S", "audio_data_url", "audio_element_html", "control_html"]
