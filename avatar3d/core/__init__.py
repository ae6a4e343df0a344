"""The bottom layer: value types and helpers that every other package may import.

- :mod:`.camera`: :class:`Camera` (OpenCV convention), :class:`StereoPair`, :func:`stack_cameras`.
- :mod:`.topology`: index sets and loops of MediaPipe's face mesh, :func:`face_triangles`.
- :mod:`.groups`: Gaussian group ids (``HEAD``, ``MOUTH``, ``TORSO``).
- :mod:`.geometry`: rotations (wxyz quaternions) and similarity fits, on roma.
- :mod:`.lpips`: the LPIPS network, loaded from a user-supplied weights file.
- :mod:`.constants`: ``SAMPLE_RATE``.

Nothing here imports another avatar3d package except :mod:`avatar3d.errors`.
"""

from .camera import Camera, StereoPair, stack_cameras
from .constants import SAMPLE_RATE
from .groups import HEAD, MOUTH, TORSO

__all__ = ["HEAD", "MOUTH", "SAMPLE_RATE", "TORSO", "Camera", "StereoPair", "stack_cameras"]
