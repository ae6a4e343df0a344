"""Capture: one talking video -> a CaptureSet directory (frames, masks, head poses, landmarks, audio).

Public API: :func:`run_capture`, :class:`CaptureConfig`, :func:`write_overlay`.
"""

from ..config import CaptureConfig
from .pipeline import run_capture


def write_overlay(*args, **kwargs):
    """See :func:`avatar3d.capture.overlay.write_overlay` (imported lazily)."""
    from .overlay import write_overlay as _w

    return _w(*args, **kwargs)


__all__ = ["CaptureConfig", "run_capture", "write_overlay"]
