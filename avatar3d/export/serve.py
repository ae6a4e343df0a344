"""``avatar3d serve``: bake weights computed live from audio arriving in chunks, streamed over a
WebSocket to the web player (``index.html?live=ws://…``).

:class:`StreamingWeights` turns 16 kHz chunks into one (K,) weight vector per video frame. Frame f
needs audio up to ``f / fps + lookahead`` (the model's audio window and temporal smoother look a
little ahead). Both halves of the audio features are computed incrementally with bounded memory:

* the speech front end (visemes, voice, loudness, for avatars trained with it) runs as
  :class:`avatar3d.audio.visemes.StreamingVisemes`: one phone decoder fed once per sample, as
  offline, with a bounded history;
* the log-mel (or speech-model) windows are computed over a bounded window of recent audio
  (``context``), normalised over that window (offline, over the whole clip).

The latency from a frame's instant of audio arriving to its weights going out is the lookahead
(plus at most one 32 ms VAD block of buffering in the front end) plus the compute time. The
model's features reach about 0.3 s past a frame (its audio window and temporal smoother): a
shorter lookahead trades fidelity to the offline weights for latency (docs/design/live-weights.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import http.server
import math
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import torch

from ..audio import load_audio
from ..audio.visemes import MIN_LIVE_LOOKAHEAD, StreamingVisemes
from ..core.constants import SAMPLE_RATE
from ..drive.audio import AudioDriver
from ..drive.motion import blink_schedule
from ..errors import Avatar3DError
from ..models.deform import gather_windows
from .bake import LinearBake

SR = SAMPLE_RATE
DEFAULT_LOOKAHEAD_S = 0.2  # audio after a frame's instant waited for: covers the audio window and smoother
DEFAULT_CONTEXT_S = 4.0  # past audio the log-mel features are normalised over
BLINK_BLOCK_S = 600.0  # the blink schedule is extended this many seconds at a time
CHUNK_S = 0.02  # audio chunk fed per step when a file is played in real time
FUTURE_PAD_S = 0.1  # the not-yet-heard audio after the newest sample is taken as the newest audio mirrored


class StreamingWeights:
    """Chunks of 16 kHz mono audio in, (frame index, (K,) float32 weights) out.

    ``lookahead``: seconds of audio after a frame's instant to wait for (0.2 covers the model's audio
    window and smoother; less lowers latency at some cost in fidelity; the front end needs at least
    :data:`~avatar3d.audio.visemes.MIN_LIVE_LOOKAHEAD`, and below
    :data:`~avatar3d.audio.visemes.MIN_LOOKAHEAD` its voice gate looks less far ahead); ``context``: seconds of past audio kept for the
    log-mel features, normalised over it (offline, over the whole clip), so streamed weights
    approximate the offline ones. Blinks follow the natural schedule of :meth:`Avatar.render`
    (``blink``). Memory is bounded whatever the stream's length.
    """

    def __init__(
        self,
        avatar,
        bake: LinearBake,
        lookahead: float = DEFAULT_LOOKAHEAD_S,
        context: float = DEFAULT_CONTEXT_S,
        blink: bool = True,
    ):
        self.avatar, self.bake = avatar, bake
        if bake._probe_model is None:
            bake.attach(avatar.model)
        meta = avatar.meta
        self.fps = float(meta.fps)
        self.spf = SR / self.fps
        self.lookahead, self.ctx = float(lookahead), max(1, math.ceil(context * self.fps))
        self.buf = np.zeros(0, np.float32)
        self.start = 0  # absolute sample index of buf[0]
        self.next = 0  # next frame to emit
        self.blink = blink
        self._blinks = np.zeros(0, np.float32)
        # the log-mel (or speech-model) half of the features, without the front end's channels
        plain = dataclasses.replace(meta, front_end=dataclasses.replace(meta.front_end, viseme_channels=0))
        self._plain = AudioDriver(avatar.model, plain, avatar.audio.speech_model_path)
        self.visemes = (
            StreamingVisemes(self.fps, max(MIN_LIVE_LOOKAHEAD, self.lookahead)) if meta.n_visemes else None
        )
        self._vis = np.zeros((0, meta.n_visemes), np.float32)  # front-end rows of frames vis0 ..
        self._vis0 = 0

    @property
    def received(self) -> int:
        return self.start + len(self.buf)

    @property
    def latency(self) -> float:
        """Worst-case delay (s) from a sound to its frame being computable, processing excluded."""
        return self.lookahead if self.visemes is None else max(self.lookahead, self.visemes.latency)

    def _blink(self, f: int) -> float:
        if not self.blink:
            return 0.0
        if f >= len(self._blinks):  # the same schedule as Avatar.render's, extended block by block
            self._blinks = blink_schedule(f + int(BLINK_BLOCK_S * self.fps), self.fps)
        return float(self._blinks[f])

    def _push_visemes(self, chunk: np.ndarray) -> float:
        """Feed the front end; returns the number of frames whose rows exist (all, without one)."""
        if self.visemes is None:
            return math.inf
        rows = self.visemes.push(chunk)
        if len(rows):
            self._vis = np.concatenate([self._vis, rows]) if len(self._vis) else rows
        return self._vis0 + len(self._vis)

    def _ready(self, n_vis: float) -> list[int]:
        ready = []
        while (self.next / self.fps + self.lookahead) * SR <= self.received and self.next < n_vis:
            ready.append(self.next)
            self.next += 1
        return ready

    def _features(self, j0: int, n_vis: float) -> tuple[torch.Tensor, int]:
        """(n, W, M) features of frames j0 .. j0 + n - 1: every frame whose instant has arrived.
        Windows reaching past the newest sample see the newest :data:`FUTURE_PAD_S` mirrored (a
        sound goes on, rather than silence); past the newest front-end row (the front end waits for
        its own lookahead), that row is repeated."""
        s0 = int(round(j0 * self.spf)) - self.start
        wave = self.buf[max(0, s0) :]
        n = int(math.floor(len(wave) / self.spf))
        future = wave[len(wave) - min(len(wave), int(FUTURE_PAD_S * SR)) :][::-1]
        feats = self._plain.features(np.concatenate([wave, future]), self.fps, n)
        if self.visemes is not None:
            vis = self._vis[j0 - self._vis0 : min(n_vis, j0 + n) - self._vis0]
            vis = np.pad(vis, ((0, n - len(vis)), (0, 0)), mode="edge")
            feats = np.concatenate([feats, np.repeat(vis[:, None, :], feats.shape[1], 1)], -1)
        return torch.as_tensor(feats, dtype=torch.float32), n

    def _trim(self) -> None:
        """Drop audio and front-end rows no later frame needs."""
        first = max(0, self.next - self.ctx - 1)
        keep = int(round(first * self.spf)) - self.start
        if keep > 0:
            self.buf, self.start = self.buf[keep:], self.start + keep
        cut = first - self._vis0
        if cut > 0:
            self._vis, self._vis0 = self._vis[cut:], self._vis0 + cut

    @torch.no_grad()
    def push(self, chunk: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Add a chunk; returns the frames now complete, in order."""
        chunk = np.asarray(chunk, np.float32).reshape(-1)
        self.buf = np.concatenate([self.buf, chunk])
        n_vis = self._push_visemes(chunk)
        ready = self._ready(n_vis)
        if not ready:
            return []
        j0 = max(0, ready[0] - self.ctx)
        feats, n = self._features(j0, n_vis)
        idx = torch.as_tensor([f - j0 for f in ready])
        model = self.avatar.model
        codes = model.audio(gather_windows(feats, idx.clamp(max=n - 1), model.cfg.smooth_window))
        blinks = torch.tensor([self._blink(f) for f in ready])
        w = self.bake.solve_weights(codes, blinks).numpy()
        self._trim()
        return list(zip(ready, w))


def frame_message(frame: int, weights: np.ndarray) -> bytes:
    """The WebSocket message for one frame: uint32 frame index, then K float32 weights (little endian)."""
    return struct.pack("<I", frame) + np.asarray(weights, "<f4").tobytes()


def check_port_free(host: str, port: int) -> None:
    """Raise Avatar3DError (one line) when ``port`` on ``host`` cannot be bound."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            raise Avatar3DError(f"port {port} on {host} is in use (pick another with --port)") from None


def _websockets():
    """The websockets server functions (an optional extra), or a one-line Avatar3DError."""
    try:
        from websockets.asyncio.server import broadcast, serve
    except ImportError:
        raise Avatar3DError(
            'avatar3d serve needs the websockets package: pip install "avatar3d[serve]"'
        ) from None
    return broadcast, serve


def _page_server(page_dir: Path, host: str, port: int) -> http.server.ThreadingHTTPServer:
    """A quiet static file server of ``page_dir``, running in a daemon thread."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(page_dir))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def run_server(
    avatar,
    page_dir: Path,
    audio,
    host: str = "127.0.0.1",
    port: int = 8765,
    lookahead: float = DEFAULT_LOOKAHEAD_S,
    loop: bool = True,
    log=print,
) -> None:
    """Serve ``page_dir`` over HTTP on ``port`` and the live weights of ``audio`` (played in real
    time, looped with ``loop``) over a WebSocket on ``port + 1``, until interrupted."""
    broadcast, serve = _websockets()
    for p in (port, port + 1):
        check_port_free(host, p)
    wave = load_audio(audio, sr=SR)
    bake = LinearBake.load(page_dir / "bake.safetensors")
    httpd = _page_server(page_dir, host, port)
    log(f"open http://{host}:{port}/index.html?live=ws://{host}:{port + 1} (Ctrl-C stops)")

    async def feed(server) -> None:
        chunk = int(CHUNK_S * SR)
        while True:
            stream = StreamingWeights(avatar, bake, lookahead=lookahead)
            t0 = time.perf_counter()
            for s in range(0, len(wave), chunk):
                await asyncio.sleep(max(0.0, t0 + s / SR - time.perf_counter()))
                for f, w in stream.push(wave[s : s + chunk]):
                    broadcast(server.connections, frame_message(f, w))
            if not loop:
                return

    async def main() -> None:
        async with serve(lambda ws: ws.wait_closed(), host, port + 1) as server:
            await feed(server)

    try:
        asyncio.run(main())
    finally:
        httpd.shutdown()


__all__ = ["StreamingWeights", "check_port_free", "frame_message", "run_server"]
