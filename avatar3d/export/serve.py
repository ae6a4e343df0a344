"""``avatar3d serve``: bake weights computed live from audio arriving in chunks, streamed over a
WebSocket to the web player (``index.html?live=ws://…``).

:class:`StreamingWeights` turns 16 kHz chunks into one (K,) weight vector per video frame. Frame f
needs audio up to ``f / fps + lookahead`` (the model's audio window and temporal smoother look a
little ahead); the audio features are recomputed over a bounded window of recent audio, so memory
stays flat however long the stream runs. The latency from a frame's instant of audio arriving to its
weights going out is the lookahead plus the compute time.
"""

from __future__ import annotations

import asyncio
import math
import struct
import threading
import time
from pathlib import Path

import numpy as np
import torch

from ..core.constants import SAMPLE_RATE
from ..drive.motion import blink_schedule
from ..errors import Avatar3DError
from .bake import LinearBake

SR = SAMPLE_RATE


class StreamingWeights:
    """Chunks of 16 kHz mono audio in, (frame index, (K,) float32 weights) out.

    ``lookahead``: seconds of audio after a frame's instant to wait for (0.2 covers the model's audio
    window and smoother; less lowers latency at some cost in fidelity); ``context``: seconds of past
    audio kept: the log-mel features are normalised over it (offline, over the whole clip), so
    streamed weights approximate the offline ones. Blinks follow the natural schedule of :meth:`Avatar.render` (``blink``).
    """

    def __init__(self, avatar, bake: LinearBake, lookahead: float = 0.2, context: float = 4.0, blink: bool = True):
        self.avatar, self.bake = avatar, bake
        if bake._probe_model is None:
            bake.attach(avatar.model)
        self.fps = float(avatar.meta.fps)
        self.spf = SR / self.fps
        self.lookahead, self.ctx = float(lookahead), max(1, math.ceil(context * self.fps))
        self.buf = np.zeros(0, np.float32)
        self.start = 0  # absolute sample index of buf[0]
        self.next = 0  # next frame to emit
        self.blink = blink
        self._blinks = np.zeros(0, np.float32)

    @property
    def received(self) -> int:
        return self.start + len(self.buf)

    def _blink(self, f: int) -> float:
        if not self.blink:
            return 0.0
        if f >= len(self._blinks):  # the same schedule as Avatar.render's, extended in 10-minute blocks
            self._blinks = blink_schedule(f + int(600 * self.fps), self.fps)
        return float(self._blinks[f])

    @torch.no_grad()
    def push(self, chunk: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Add a chunk; returns the frames now complete, in order."""
        from ..models.deform import gather_windows

        self.buf = np.concatenate([self.buf, np.asarray(chunk, np.float32).reshape(-1)])
        ready = []
        while (self.next / self.fps + self.lookahead) * SR <= self.received:
            ready.append(self.next)
            self.next += 1
        if not ready:
            return []
        j0 = max(0, ready[0] - self.ctx)
        s0 = int(round(j0 * self.spf)) - self.start
        wave = self.buf[max(0, s0):]
        n = int(math.floor(len(wave) / self.spf))
        feats = torch.as_tensor(self.avatar.audio_features(wave, self.fps, n), dtype=torch.float32)
        idx = torch.as_tensor([f - j0 for f in ready])
        codes = self.avatar.model.audio(gather_windows(feats, idx.clamp(max=n - 1), self.avatar.model.cfg.smooth_window))
        blinks = torch.tensor([self._blink(f) for f in ready])
        w = self.bake.solve_weights(codes, blinks).numpy()
        keep = int(round(max(0, self.next - self.ctx - 1) * self.spf)) - self.start  # drop audio no frame needs
        if keep > 0:
            self.buf, self.start = self.buf[keep:], self.start + keep
        return list(zip(ready, w))


def frame_message(frame: int, weights: np.ndarray) -> bytes:
    """The WebSocket message for one frame: uint32 frame index, then K float32 weights (little endian)."""
    return struct.pack("<I", frame) + np.asarray(weights, "<f4").tobytes()


def check_port_free(host: str, port: int) -> None:
    import socket

    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            raise Avatar3DError(f"port {port} on {host} is in use (pick another with --port)") from None


def run_server(avatar, page_dir: Path, audio, host: str = "127.0.0.1", port: int = 8765, lookahead: float = 0.2,
               loop: bool = True, log=print) -> None:
    """Serve ``page_dir`` over HTTP on ``port`` and the live weights of ``audio`` (played in real
    time, looped with ``loop``) over a WebSocket on ``port + 1``, until interrupted."""
    import functools
    import http.server

    try:
        from websockets.asyncio.server import broadcast, serve
    except ImportError:
        raise Avatar3DError("avatar3d serve needs the websockets package: pip install \"avatar3d[serve]\"") from None

    from ..audio import load_audio

    for p in (port, port + 1):
        check_port_free(host, p)
    wave = load_audio(audio, sr=SR)
    bake = LinearBake.load(page_dir / "bake.safetensors")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(page_dir))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    log(f"open http://{host}:{port}/index.html?live=ws://{host}:{port + 1} (Ctrl-C stops)")

    async def feed(server) -> None:
        chunk = SR // 50  # 20 ms
        while True:
            stream = StreamingWeights(avatar, bake, lookahead=lookahead)
            t0 = time.perf_counter()
            for s in range(0, len(wave), chunk):
                await asyncio.sleep(max(0.0, t0 + s / SR - time.perf_counter()))
                for f, w in stream.push(wave[s:s + chunk]):
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
