"""Drive headless Chromium over the DevTools protocol (tests and benchmarks of the web player).

:func:`find_chromium` locates the browser (None when absent); :func:`serve` serves a folder on a free
localhost port; :class:`Chromium` launches a headless browser with software WebGL (SwiftShader),
opens pages, evaluates JavaScript, takes screenshots and collects console errors.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Self

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary ($AVATAR3D_CHROMIUM first), or None."""
    env = os.environ.get("AVATAR3D_CHROMIUM")
    if env and Path(env).is_file():
        return env
    for name in CANDIDATES:
        p = shutil.which(name)
        if p:
            return p
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(folder: str | Path) -> Iterator[str]:
    """Serve ``folder`` with ``python -m http.server`` on 127.0.0.1; yields the base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(5)


class Chromium:
    """A headless Chromium with one page, driven over CDP. Use as a context manager."""

    def __init__(self, binary: str, width: int = 512, height: int = 512):
        self.binary, self.width, self.height = binary, width, height
        self.errors: list[str] = []
        self._ids = itertools.count(1)

    def __enter__(self) -> Self:
        from websockets.sync.client import connect

        self._profile = tempfile.TemporaryDirectory(prefix="avatar3d-chromium-")
        args = [
            self.binary,
            "--headless",
            "--no-sandbox",
            "--use-angle=swiftshader",
            "--enable-unsafe-swiftshader",
            "--ignore-gpu-blocklist",
            "--autoplay-policy=no-user-gesture-required",
            "--mute-audio",
            "--remote-debugging-port=0",
            f"--user-data-dir={self._profile.name}",
            f"--window-size={self.width},{self.height}",
            "--no-first-run",
            "about:blank",
        ]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self._profile.name) / "DevToolsActivePort"
        for _ in range(300):
            if port_file.is_file() and port_file.read_text().strip():
                break
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        page = next(t for t in targets if t.get("type") == "page")
        self._ws = connect(page["webSocketDebuggerUrl"], max_size=2**28, open_timeout=30)
        for m in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.call(m)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(Exception):
            self._ws.close()
        self._proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(10)
        if self._proc.poll() is None:
            self._proc.kill()
        self._profile.cleanup()

    def _event(self, msg: dict) -> None:
        m, p = msg.get("method"), msg.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") == "error":
            self.errors.append(
                " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            )
        elif m == "Runtime.exceptionThrown":
            self.errors.append(
                p.get("exceptionDetails", {}).get("exception", {}).get("description", "exception")
            )
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            self.errors.append(p["entry"].get("text", ""))

    def call(self, method: str, timeout: float = 60, **params) -> dict:
        i = next(self._ids)
        self._ws.send(json.dumps({"id": i, "method": method, "params": params}))
        end = time.time() + timeout
        while True:
            msg = json.loads(self._ws.recv(timeout=max(0.1, end - time.time())))
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def pump(self, seconds: float) -> None:
        """Process events for ``seconds``."""
        end = time.time() + seconds
        while time.time() < end:
            with contextlib.suppress(TimeoutError):
                self._event(json.loads(self._ws.recv(timeout=max(0.05, end - time.time()))))

    def evaluate(self, expr: str):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        return r.get("result", {}).get("value")

    def open(self, url: str, ready_prefix: str = "avatar3d ready", timeout: float = 180) -> str:
        """Navigate and wait until document.title starts with ``ready_prefix`` (or reports an error)."""
        self.call("Page.navigate", url=url)
        end = time.time() + timeout
        while time.time() < end:
            title = self.evaluate("document.title") or ""
            if title.startswith((ready_prefix, "avatar3d error")):
                return title
            self.pump(0.25)
        raise TimeoutError(f"{url}: page not ready after {timeout} s (title {title!r})")

    def screenshot(self, path: str | Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)
