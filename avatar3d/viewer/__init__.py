"""``avatar3d view``: an interactive free-viewpoint viewer in the browser (optional extra ``view``).

:mod:`.frames` holds the viser-free core (browser camera -> Camera, time -> frame), :mod:`.timeline`
the per-frame inputs in time (computed chunk by chunk, so memory stays flat on long audio),
:mod:`.stream` long audio read from its file around the playhead, :mod:`.sound` the audio the
browser plays, and :mod:`.server` the viser server and its render thread.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from ..api import Avatar
from ..drive.background import background_colour
from ..errors import Avatar3DError
from . import server
from .frames import camera_from_viewer, check_size, render_frame, viewer_pose
from .timeline import Clock, Drive, make_drive


def check_listen(host: str, port: int) -> None:
    """Raise Avatar3DError (one line) unless ``host`` can be listened on and ``port`` is in 0..65535."""
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise Avatar3DError(f"port {port!r} must be within 0..65535")
    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)
        family, _, _, _, addr = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind(addr)
    except OSError as e:
        raise Avatar3DError(f"cannot listen on host {host!r}: {e.strerror or e}") from None


def port_is_free(host: str, port: int) -> bool:
    try:
        family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind(addr)
        return True
    except OSError:
        return False


def start_viewer(
    avatar_dir,
    audio=None,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    size: int = 384,
    pose: str = "static",
    blink: str = "auto",
    background: str = "plate",
    speech_model: str | None = None,
    bake: Callable[[Avatar], object] | None = None,
    log=print,
):
    """Load the avatar, compute its drive and start the server; returns the running AvatarViewer.

    ``bake``: a function of the loaded avatar giving the linear bake to play through instead of the
    full model (a :class:`~avatar3d.export.bake.BakedAvatar`, e.g. from
    :func:`avatar3d.export.bake.load_player`). Every bad input raises a one-line Avatar3DError before
    anything listens.
    """
    server.import_viser()
    check_size(size)
    check_listen(host, port)
    p = Path(avatar_dir)
    if not p.exists():
        raise Avatar3DError(f"avatar directory not found: {p}")
    if audio is not None and not Path(audio).exists():
        raise Avatar3DError(f"audio file not found: {audio}")
    avatar = Avatar.load(p, speech_model=speech_model)
    player = None if bake is None else bake(avatar)
    if background != "plate":
        background_colour(background)  # a one-line ConfigError if it is not a colour
    t0 = time.time()
    drive = make_drive(avatar, audio)
    if log:
        what = f"audio {Path(audio).name}" if audio is not None else "idle loop (silence, blinks)"
        what += f", linear bake K = {player.bake.k}" if player is not None else ""
        log(
            f"avatar3d view: {avatar.model.n} Gaussians, {what}: {drive.n_frames} frames "
            f"({drive.seconds:.1f} s) prepared in {time.time() - t0:.1f} s"
        )
    busy = port != 0 and not port_is_free(host, port)
    try:
        viewer = server.AvatarViewer(
            avatar,
            drive,
            host=host,
            port=port,
            size=size,
            pose=pose,
            blink=blink,
            background=background,
            bake=player,
        )
    except BaseException:
        drive.close()
        raise
    if log and busy and viewer.port != port:
        log(f"avatar3d view: port {port} is busy; using {viewer.port}")
    return viewer


def run_viewer(avatar_dir, audio=None, **kwargs) -> None:
    """Start the viewer, print its URL and serve until Ctrl+C (which ends it normally)."""
    viewer = None
    try:
        viewer = start_viewer(avatar_dir, audio, **kwargs)
        print(f"avatar3d view: open {viewer.url} in a browser (Ctrl+C to stop)", flush=True)
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        if viewer is None:
            raise  # interrupted while loading: the CLI reports it
        print("avatar3d view: stopped", flush=True)
    finally:
        if viewer is not None:
            viewer.stop()


__all__ = [
    "Clock",
    "Drive",
    "camera_from_viewer",
    "check_listen",
    "make_drive",
    "render_frame",
    "run_viewer",
    "start_viewer",
    "viewer_pose",
]
