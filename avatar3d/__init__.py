"""avatar3d: one monocular talking video -> a personal 3D avatar that speaks any audio, from any camera.

Public API::

    from avatar3d import Avatar, Camera
    avatar = Avatar.fit("talk.mp4", preset="fast")
    avatar.render("speech.wav", camera=Camera.orbit(20)).save("out.mp4")
"""

from .api import Avatar, RenderResult
from .config import AvatarConfig
from .core.camera import Camera
from .errors import Avatar3DError, CameraError, ConfigError, FormatError, MediaError, NoFaceError

__version__ = "0.1.0"

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
