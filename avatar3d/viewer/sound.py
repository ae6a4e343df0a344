"""Sound in the browser, kept in step with the server's playback clock.

The driving audio is a 16-bit WAV (:func:`avatar3d.viewer.make_drive` writes it for a short clip, and
makes it as it is read for long audio: :class:`WavSource`) that a small
HTTP server (:class:`SoundServer`, a thread beside viser's, on the same host) hands to the page with
byte ranges, so the browser streams and seeks it and nothing the size of the audio is held in
memory on either side. A hidden ``<audio>`` element of the GUI panel plays it. The server then steers
that element with tiny HTML snippets whose only script is an image ``onerror`` handler (viser renders
GUI HTML as markup; ``<script>`` tags would not run): seek when the element is far from the clock,
speed it up or slow it down a little when it is near (a seek stalls playback for a moment, so
seeking to correct a small drift would never converge), then play or pause. Browsers only let a
page start sound after the user has clicked in it, which the "Sound" checkbox click provides.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import math
import re
import secrets
import socket
import threading
import wave
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

AUDIO_ID = "avatar3d-audio"
MAX_DRIFT_S = 0.04  # closer than this to the clock: play at normal speed
NUDGE = 0.08  # otherwise play this much faster or slower until it is back (pitch is preserved)
SEEK_DRIFT_S = 0.5  # further than this: seek
COPY_BLOCK = 1 << 16  # bytes per write of a response body
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) bytes a ``Range`` header asks of a ``size``-byte file; None for the
    whole file (no header, or a form this server does not serve: multiple ranges); a ValueError when
    the range lies outside the file (416)."""
    m = _RANGE.match((header or "").strip())
    if m is None or not (m.group(1) or m.group(2)):
        return None
    if m.group(1):
        first = int(m.group(1))
        last = min(size - 1, int(m.group(2))) if m.group(2) else size - 1
    else:  # a suffix: the last n bytes
        first, last = max(0, size - int(m.group(2))), size - 1
    if first >= size or first > last:
        raise ValueError(f"range {header!r} outside a {size}-byte file")
    return first, last


class WavSource:
    """A 16-bit mono WAV made as it is read, from ``chunks(a, b)``: an iterable of float32 samples
    a..b-1 at ``sr`` (``n_samples`` in all). :class:`SoundServer` serves it like a file, so long
    audio is neither written out nor held: each byte range is decoded when the browser asks."""

    def __init__(self, chunks: Callable[[int, int], Iterable[np.ndarray]], n_samples: int, sr: int):
        self._chunks, self.n_samples, self.sr, self.name = chunks, int(n_samples), int(sr), "sound.wav"
        buf = io.BytesIO()
        w = wave.open(buf, "wb")  # noqa: SIM115  (only its header is taken)
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(self.sr)
        w.setnframes(self.n_samples)
        w.writeframesraw(b"")
        self.header = buf.getvalue()
        self.size = len(self.header) + 2 * self.n_samples

    def iter_bytes(self, first: int, count: int) -> Iterator[bytes]:
        """Bytes first .. first + count - 1 of the file, in blocks."""
        h = len(self.header)
        if first < h:
            yield self.header[first : min(h, first + count)]
        d0, d1 = max(first, h) - h, min(first + count, self.size) - h  # data bytes wanted
        if d1 <= d0:
            return
        skip, left = d0 % 2, d1 - d0
        chunks = iter(self._chunks(d0 // 2, math.ceil(d1 / 2)))
        with contextlib.closing(chunks) if hasattr(chunks, "close") else contextlib.nullcontext():
            yield from self._data(chunks, skip, left)

    @staticmethod
    def _data(chunks: Iterator[np.ndarray], skip: int, left: int) -> Iterator[bytes]:
        for x in chunks:
            block = (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()[skip : left + skip]
            skip, left = 0, left - len(block)
            if block:
                yield block
            if left <= 0:
                return


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _SoundHTTPServer

    def log_message(self, *args) -> None:  # quiet: the CLI prints its own lines
        pass

    def do_HEAD(self) -> None:
        self._reply(body=False)

    def do_GET(self) -> None:
        self._reply(body=True)

    def _reply(self, body: bool) -> None:
        path = self.server.sound
        if self.path.split("?", 1)[0] != self.server.url_path:
            self.send_error(404)
            return
        size = path.size if isinstance(path, WavSource) else path.stat().st_size
        try:
            rng = byte_range(self.headers.get("Range"), size)
        except ValueError:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.end_headers()
            return
        first, last = rng if rng is not None else (0, size - 1)
        self.send_response(206 if rng is not None else 200)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(last - first + 1))
        if rng is not None:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        if body:
            self._send_bytes(path, first, last - first + 1)

    def _send_bytes(self, path: Path | WavSource, first: int, count: int) -> None:
        blocks = (
            path.iter_bytes(first, count) if isinstance(path, WavSource) else _file_blocks(path, first, count)
        )
        try:
            for block in blocks:
                self.wfile.write(block)
        except (BrokenPipeError, ConnectionResetError):  # the browser stopped reading: fine
            pass
        finally:
            blocks.close()


def _file_blocks(path: Path, first: int, count: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(first)
        while count > 0:
            block = f.read(min(COPY_BLOCK, count))
            if not block:
                break
            yield block
            count -= len(block)


class _SoundHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    sound: Path | WavSource
    url_path: str


class SoundServer:
    """Serve one audio file (or a :class:`WavSource`) over HTTP (GET / HEAD with byte ranges) on
    ``host``, any free port, at a random path (:attr:`url_path`), from a daemon thread, until :meth:`close`."""

    def __init__(self, sound: str | Path | WavSource, host: str = "127.0.0.1"):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("_Bound", (_SoundHTTPServer,), {"address_family": family})
        self._httpd = server_class((host, 0), _Handler)
        self._httpd.sound = sound if isinstance(sound, WavSource) else Path(sound)
        self._httpd.url_path = f"/{secrets.token_urlsafe(12)}/{self._httpd.sound.name}"
        self.port = int(self._httpd.server_address[1])
        self.url_path = self._httpd.url_path
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="avatar3d-sound", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5.0)


def audio_element_html(port: int, url_path: str) -> str:
    """The hidden audio element (sent once), whose source is set to ``url_path`` on ``port`` of the
    host the page came from (so it works on localhost and across the network alike)."""
    js = (
        f"var a=document.getElementById('{AUDIO_ID}');"
        f"if(a&&!a.src){{a.src=location.protocol+'//'+location.hostname+':{int(port)}{url_path}';a.load();}}"
    )
    return (
        f'<audio id="{AUDIO_ID}" preload="auto"></audio>'
        f'<img alt="" src="data:," style="display:none" onerror="{js}">'
    )


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


__all__ = ["AUDIO_ID", "SoundServer", "WavSource", "audio_element_html", "byte_range", "control_html"]
