"""avatar3d: one monocular talking video -> a personal 3D avatar that speaks any audio, from any camera.

Public API::

    from avatar3d import Avatar, Camera
    avatar = Avatar.fit("talk.mp4", preset="fast")
    avatar.render("speech.wav", camera=Camera.orbit(20)).save("out.mp4")
"""

from ._version import __version__
from .api import Avatar, RenderResult
from .config import AvatarConfig
from .core.camera import Camera
from .errors import Avatar3DError, CameraError, ConfigError, FormatError, MediaError, NoFaceError

__all__ = [
    "Avatar",
    "AvatarConfig",
    "Avatar3DError",
    "Camera",
    "CameraError",
    "ConfigError",
    "FormatError",
    "MediaError",
    "NoFaceError",
    "RenderResult",
    "__version__",
]
