"""The interactive viewer: a viser server that renders the avatar from each browser's camera.

One render thread serves every connected browser: it reads the browser's camera, renders the frame
of the playback clock (:func:`render_frame`) and sends it as the scene's background image. While
the camera moves it renders at half the size (fast feedback), and at full size once the camera has
been still for a moment. GUI callbacks only change settings; the thread notices and re-renders.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
import warnings
from dataclasses import dataclass

import numpy as np

from ..drive.background import background_colour
from ..errors import Avatar3DError, ConfigError
from .frames import (
    BLINK_MODES,
    POSE_MODES,
    Clock,
    Drive,
    FrameCache,
    camera_from_viewer,
    check_size,
    principal_offset,
    render_frame,
    viewer_pose,
)
from .sound import SoundServer, audio_element_html, control_html

INSTALL_HINT = 'avatar3d view needs the optional viewer: pip install "avatar3d[view]"'
MOVING_HOLD_S = 0.25  # a camera still for this long is "stopped": render at full size
MOVING_SCALE = 0.5  # render size while the camera moves
MIN_MOVING_SIZE = 32  # pixels: the smallest render while the camera moves
PREVIEW_SIZE = 64  # pixels: the frame rendered before the server starts
SIZE_SLIDER = (128, 1024, 32)  # render size slider: min, max, step (pixels)
JPEG_QUALITY = {True: 80, False: 92}  # frames sent while the camera moves / at rest
SOUND_SYNC_S = 0.5  # the browser's audio is told where the clock is this often while playing
SLIDER_SYNC_S = 0.25  # the time slider follows the clock this often while playing
STATUS_EVERY_S = 0.5  # the status line is refreshed this often
ORBIT_RANGE = (0.1, 10.0)  # nearest and farthest camera, times the capture camera's distance
IDLE_WAIT_S = 0.1  # render thread's wait for a change while paused
BACKGROUNDS = ("plate", "white", "black", "green", "custom")


def import_viser():
    """The viser module, or an Avatar3DError naming the extra to install."""
    try:
        import viser
    except ImportError:
        raise Avatar3DError(INSTALL_HINT) from None
    return viser


@dataclass
class CameraState:
    """A snapshot of one browser camera (viser's convention, see :mod:`.frames`)."""

    wxyz: tuple
    position: tuple
    fov: float
    aspect: float

    @classmethod
    def of(cls, cam) -> CameraState:
        return cls(
            tuple(np.round(cam.wxyz, 7)), tuple(np.round(cam.position, 7)), float(cam.fov), float(cam.aspect)
        )


@dataclass
class _ClientView:
    state: CameraState | None = None
    changed_at: float = 0.0
    last_key: tuple | None = None


class AvatarViewer:
    """A running viser server showing ``avatar`` driven by ``drive``.

    Args:
        host, port: where to listen (port 0: any free port; a busy port makes viser take the next
            free one; :attr:`port` is the one bound).
        size: render about size x size pixels at rest (half that while the camera moves).
        pose / blink / background: initial settings (see :func:`render_frame`).
        bake: a :class:`~avatar3d.export.bake.BakedAvatar` to play through (default: the full model).
    Call :meth:`stop` to close it (and the drive, whose temporary audio files go with it).
    """

    def __init__(
        self,
        avatar,
        drive: Drive,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        size: int = 384,
        pose: str = "static",
        blink: str = "auto",
        background="plate",
        verbose: bool = False,
        bake=None,
    ):
        viser = import_viser()
        # a browser that closes while its frame renders: the frame is dropped, nothing to warn about
        warnings.filterwarnings("ignore", message="Queued a BackgroundImageMessage on a closed connection")
        if pose not in POSE_MODES:
            raise ConfigError(f"unknown pose mode {pose!r}: use {', '.join(POSE_MODES)}")
        if blink not in BLINK_MODES:
            raise ConfigError(f"unknown blink mode {blink!r}: use {', '.join(BLINK_MODES)}")
        self.avatar, self.drive, self.bake = avatar, drive, bake
        self.size = check_size(size)
        self.pose, self.blink = pose, blink
        self.blink_amount = 0.0
        self.background = background
        if not (isinstance(background, str) and background == "plate"):
            background_colour(background)  # a ConfigError now rather than per frame
        self.clock = Clock(drive.seconds, playing=True)
        self.cache = FrameCache()
        self.frames_rendered = 0
        self.last_frame: np.ndarray | None = None
        self.fps = 0.0
        self._rest = avatar.rest_camera
        self._offset = principal_offset(self._rest)
        self._version = 0
        self._views: dict[int, _ClientView] = {}
        self._stop = threading.Event()
        self._render_s: float | None = None
        self._status_at = self._slider_at = 0.0
        self._last_error = ""
        self._sound_playing, self._sound_seek, self._sound_at, self._sound_nonce = False, False, 0.0, 0
        self._sound_t = 0.0
        self._wake = threading.Event()
        self._sound_server = None if drive.sound is None else SoundServer(drive.sound, host)

        # one small frame here, in the caller's thread: a first use may JIT-compile the CPU kernels, and
        # a compile killed with the daemon render thread (at exit) would leave its build lock behind
        render_frame(
            avatar,
            drive,
            self._rest.resized(PREVIEW_SIZE, PREVIEW_SIZE),
            0.0,
            pose=pose,
            blink=blink,
            background=background,
            bake=bake,
        )

        quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
        with quiet:  # viser prints a banner; the CLI prints the URL itself
            self.server = viser.ViserServer(host=host, port=port, label="avatar3d", verbose=verbose)
        self.host, self.port = host, int(self.server.get_port())
        self.server.scene.set_up_direction("-y")  # the avatar's world: OpenCV axes, y down
        rp = viewer_pose(self._rest)
        ic = self.server.initial_camera
        ic.fov, ic.position, ic.look_at, ic.up = rp.fov, rp.position, rp.look_at, rp.up
        self._build_gui()
        self.server.on_client_connect(self._on_connect)
        self._thread = threading.Thread(target=self._loop, name="avatar3d-view", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public
    @property
    def url(self) -> str:
        host = "localhost" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Stop rendering and close the server."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5.0)
        with contextlib.redirect_stdout(io.StringIO()):
            self.server.stop()
        if self._sound_server is not None:
            self._sound_server.close()
        self.drive.close()

    def render_view(self, state: CameraState, t: float, moving: bool = False) -> np.ndarray:
        """The frame at time ``t`` for a browser camera ``state`` with the current settings."""
        size = max(MIN_MOVING_SIZE, int(self.size * MOVING_SCALE)) if moving else self.size
        cam = camera_from_viewer(state.wxyz, state.position, state.fov, state.aspect, size, self._offset)
        blink = self.blink_amount if self.blink == "manual" else self.blink
        return render_frame(
            self.avatar,
            self.drive,
            cam,
            t,
            pose=self.pose,
            blink=blink,
            background=self.background,
            cache=self.cache,
            bake=self.bake,
        )

    def set_camera(self, client, camera) -> None:
        """Move a browser's camera to ``camera`` (a :class:`Camera`) and orbit around the head."""
        p = viewer_pose(camera)
        with client.atomic():
            client.camera.fov = p.fov
            client.camera.position = p.position
            client.camera.look_at = p.look_at
            client.camera.up_direction = p.up

    # ------------------------------------------------------------------ GUI
    def _changed(self, *_args) -> None:
        self._version += 1
        self._wake.set()

    def _build_gui(self) -> None:
        gui, d = self.server.gui, self.drive
        src = "idle (silence)" if d.sound is None else "audio"
        src += f", linear bake (K = {self.bake.bake.k})" if self.bake is not None else ""
        gui.add_markdown(
            f"**avatar3d** · {src}, {d.seconds:.1f} s loop at {d.fps:g} fps  \n"
            "Drag to orbit, scroll to zoom, right-drag to pan."
        )
        self._status = gui.add_markdown("")
        with gui.add_folder("Playback"):
            self._gui_playback(gui)
        with gui.add_folder("Avatar"):
            self._gui_avatar(gui)
        with gui.add_folder("View"):
            self._gui_view(gui)

    def _gui_playback(self, gui) -> None:
        d = self.drive
        self._play = gui.add_button("Pause")
        self._time = gui.add_slider(
            "Time (s)",
            min=0.0,
            max=round(max(d.seconds - 1.0 / d.fps, 1.0 / d.fps), 4),
            step=round(1.0 / d.fps, 6),
            initial_value=0.0,
        )
        self._sound = None
        if self._sound_server is not None:
            self._sound = gui.add_checkbox(
                "Sound", False, hint="play the audio in this browser, in step with the video"
            )
            self._sound.on_update(lambda _e: self._wake.set())
            gui.add_html(audio_element_html(self._sound_server.port, self._sound_server.url_path))
            self._sound_ctl = gui.add_html("")

        @self._play.on_click
        def _(_e) -> None:
            if self.clock.playing:
                self.clock.pause()
                self._play.label = "Play"
            else:
                self.clock.play()
                self._play.label = "Pause"
            self._changed()

        @self._time.on_update
        def _(e) -> None:
            if e.client is not None:  # the user moved it (our own updates come with no client)
                self.clock.seek(float(self._time.value))
                self._sound_seek = True  # re-sync the sound now
                self._changed()

    def _gui_avatar(self, gui) -> None:
        self._pose = gui.add_dropdown(
            "Pose",
            POSE_MODES,
            initial_value=self.pose,
            hint="static: rest pose; track: the training head motion; generated: small natural motion",
        )
        self._blink = gui.add_dropdown("Blink", BLINK_MODES + ("manual",), initial_value=self.blink)
        self._blink_amount = gui.add_slider(
            "Blink amount",
            min=0.0,
            max=1.0,
            step=0.05,
            initial_value=0.0,
            hint="eyelid closure when Blink is manual",
        )

        @self._pose.on_update
        def _(_e) -> None:
            self.pose = self._pose.value
            self._changed()

        @self._blink.on_update
        def _(_e) -> None:
            self.blink = self._blink.value
            self._changed()

        @self._blink_amount.on_update
        def _(e) -> None:
            self.blink_amount = float(self._blink_amount.value)
            if e.client is not None and self._blink.value != "manual":
                self._blink.value = "manual"
            self._changed()

    def _gui_view(self, gui) -> None:
        custom = not (isinstance(self.background, str) and self.background in BACKGROUNDS)
        self._bg = gui.add_dropdown(
            "Background", BACKGROUNDS, initial_value="custom" if custom else self.background
        )
        rgb0 = (
            tuple(round(float(v) * 255) for v in background_colour(self.background)) if custom else (128,) * 3
        )
        self._rgb = gui.add_rgb("Colour", initial_value=rgb0, visible=custom)
        lo, hi, step = SIZE_SLIDER
        self._size = gui.add_slider(
            "Render size",
            min=lo,
            max=hi,
            step=step,
            initial_value=int(np.clip(self.size, lo, hi)),
            hint="about size x size pixels; half while the camera moves",
        )
        rest_btn = gui.add_button("Capture camera")
        front_btn = gui.add_button("Frontal camera")

        def _set_bg(_e=None) -> None:
            v = self._bg.value
            self._rgb.visible = v == "custom"
            self.background = tuple(c / 255.0 for c in self._rgb.value) if v == "custom" else v
            self._changed()

        self._bg.on_update(_set_bg)
        self._rgb.on_update(_set_bg)

        @self._size.on_update
        def _(_e) -> None:
            self.size = int(self._size.value)
            self._changed()

        @rest_btn.on_click
        def _(e) -> None:
            if e.client is not None:
                self.set_camera(e.client, self._rest)

        @front_btn.on_click
        def _(e) -> None:
            if e.client is not None:
                self.set_camera(e.client, self.avatar.camera(0.0, 0.0, (self._rest.width, self._rest.height)))

    def _on_connect(self, client) -> None:
        # keep the dolly within the head's scale (a long scroll must not lose the avatar)
        dist = float(np.linalg.norm(viewer_pose(self._rest).look_at - viewer_pose(self._rest).position))
        client.camera.min_orbit_distance = ORBIT_RANGE[0] * dist
        client.camera.max_orbit_distance = ORBIT_RANGE[1] * dist
        client.camera.on_update(lambda _cam: self._wake.set())
        self._wake.set()

    # ------------------------------------------------------------------ rendering
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                rendered = self._tick()
            except Exception as e:  # noqa: BLE001  (keep serving; say what went wrong once per kind of error)
                rendered = False
                msg = f"avatar3d view: {type(e).__name__}: {e}"
                if msg != self._last_error:
                    print(msg, flush=True)
                    self._last_error = msg
            if not rendered:
                # nothing new: wait for a camera or GUI change, or the next frame while playing
                self._wake.wait(timeout=0.5 / self.drive.fps if self.clock.playing else IDLE_WAIT_S)
                self._wake.clear()

    def _tick(self) -> bool:
        """Render what changed for each browser; True when something was rendered."""
        clients = self.server.get_clients()
        for cid in [c for c in self._views if c not in clients]:
            del self._views[cid]
        rendered = False
        t = self.clock.time()
        k = self.drive.index(t)
        now = time.monotonic()
        for cid, client in clients.items():
            try:
                state = CameraState.of(client.camera)
            except (AssertionError, AttributeError):  # no camera message yet
                continue
            view = self._views.setdefault(cid, _ClientView())
            if state != view.state:
                view.state, view.changed_at = state, now
            moving = now - view.changed_at < MOVING_HOLD_S
            key = (state, k, self._version, moving)
            if key == view.last_key:
                continue
            view.last_key = key
            t0 = time.perf_counter()
            img = self.render_view(state, t, moving)
            dt = time.perf_counter() - t0
            client.scene.set_background_image(img, format="jpeg", jpeg_quality=JPEG_QUALITY[moving])
            self.last_frame = img
            self.frames_rendered += 1
            self._render_s = dt if self._render_s is None else 0.8 * self._render_s + 0.2 * dt
            self.fps = 1.0 / max(self._render_s, 1e-6)
            rendered = True
        if now - self._status_at > STATUS_EVERY_S and self.last_frame is not None:
            h, w = self.last_frame.shape[:2]
            self._status.content = (
                f"frame {k + 1}/{self.drive.n_frames} · {w}×{h} px · {self.fps:.1f} fps render"
            )
            self._status_at = now
        # the time slider follows the clock (4 times a second while playing, at once after a seek)
        if abs(float(self._time.value) - t) > 0.5 / self.drive.fps and (
            not self.clock.playing or now - self._slider_at > SLIDER_SYNC_S
        ):
            self._time.value = round(t, 4)
            self._slider_at = now
        self._sync_sound(t, now)
        return rendered

    def _sync_sound(self, t: float, now: float) -> None:
        """Steer the browsers' audio: while Sound is on and the clock plays, every 0.5 s (and at once
        after a seek) tell it where the clock is, minus the video's own lag: a frame shows the clock
        of its render's start, arrives one render time later and stays up for another, 1.5 render
        times on average (the transport delay is common to both)."""
        if self._sound is None:
            return
        play = bool(self._sound.value) and self.clock.playing
        if t + 1.0 < self._sound_t:  # the clock looped: start the sound over at once
            self._sound_seek = True
        self._sound_t = t
        if play and (not self._sound_playing or self._sound_seek or now - self._sound_at > SOUND_SYNC_S):
            self._sound_nonce += 1
            seek = self._sound_seek or not self._sound_playing
            target = self.clock.time() - 1.5 * (self._render_s or 0.0)  # now, not the tick's start
            self._sound_ctl.content = control_html(target, True, self._sound_nonce, seek=seek)
            self._sound_playing, self._sound_at, self._sound_seek = True, now, False
        elif not play and self._sound_playing:
            self._sound_nonce += 1
            self._sound_ctl.content = control_html(t, False, self._sound_nonce)
            self._sound_playing = False


__all__ = ["INSTALL_HINT", "AvatarViewer", "CameraState", "import_viser"]
