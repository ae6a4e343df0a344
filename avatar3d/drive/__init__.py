"""Driving an avatar: everything between "this audio, these cameras" and frames.

- :mod:`.audio`: :class:`AudioDriver`, the avatar's audio features and codes, chunk by chunk.
- :mod:`.motion`: head poses and blinks (``static``/``track``/``generated``, ``auto``/``none``/``track``).
- :mod:`.cameras`: the capture camera, orbits, camera specs.
- :mod:`.background`: the plate or a colour behind the avatar.
- :mod:`.frames`: :class:`RenderResult`, :class:`FrameStream` and the render loop.
- :mod:`.stereo`: both eyes for headset players.
- :mod:`.files`: reading and writing avatar directories.

``avatar3d.Avatar`` is a thin facade over these; the viewer, the exporters and the eval use them too.
"""

from .audio import CODE_CHUNK, AudioDriver
from .background import background_colour, background_image
from .cameras import check_size, orbit_camera, resolve_cameras, rest_camera
from .files import AvatarFiles, read_avatar, write_avatar
from .frames import Drive, FrameStream, RenderResult, frame_stream, plan_render, prepare_audio, save_video
from .motion import BLINK_MODES, POSE_MODES, blink_schedule, blinks, generated_motion, head_poses
from .stereo import StereoRenderResult, render_stereo

__all__ = [
    "BLINK_MODES", "CODE_CHUNK", "POSE_MODES", "AudioDriver", "AvatarFiles", "Drive", "FrameStream",
    "RenderResult", "StereoRenderResult", "background_colour", "background_image", "blink_schedule", "blinks",
    "check_size", "frame_stream", "generated_motion", "head_poses", "orbit_camera", "plan_render", "prepare_audio",
    "read_avatar", "render_stereo", "resolve_cameras", "rest_camera", "save_video", "write_avatar",
]  # fmt: skip
