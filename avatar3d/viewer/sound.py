"""Sound in the browser, kept in step with the server's playback clock.

The driving audio is a 16-bit WAV file (:func:`avatar3d.viewer.make_drive` writes it) that a small
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

import http.server
import re
import secrets
import socket
import threading
from pathlib import Path

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
        size = path.stat().st_size
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

    def _send_bytes(self, path: Path, first: int, count: int) -> None:
        with open(path, "rb") as f:
            f.seek(first)
            try:
                while count > 0:
                    block = f.read(min(COPY_BLOCK, count))
                    if not block:
                        break
                    self.wfile.write(block)
                    count -= len(block)
            except (BrokenPipeError, ConnectionResetError):  # the browser stopped reading: fine
                pass


class _SoundHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    sound: Path
    url_path: str


class SoundServer:
    """Serve one audio file over HTTP (GET / HEAD with byte ranges) on ``host``, any free port, at
    a random path (:attr:`url_path`), from a daemon thread, until :meth:`close`."""

    def __init__(self, sound: str | Path, host: str = "127.0.0.1"):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("_Bound", (_SoundHTTPServer,), {"address_family": family})
        self._httpd = server_class((host, 0), _Handler)
        self._httpd.sound = Path(sound)
        self._httpd.url_path = f"/{secrets.token_urlsafe(12)}/{Path(sound).name}"
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


__all__ = ["AUDIO_ID", "SoundServer", "audio_element_html", "byte_range", "control_html"]
