"""Exceptions raised at the library's boundaries.

Every error a user can cause (bad file, no face, absurd camera) is an :class:`Avatar3DError`
subclass with a one-line message that names the problem; the CLI prints that line and exits 2.
"""

from __future__ import annotations


class Avatar3DError(Exception):
    """Base class of all errors avatar3d raises on bad input."""


class MediaError(Avatar3DError):
    """A video or audio file is missing, unreadable, truncated or lacks a needed stream."""


class NoFaceError(Avatar3DError):
    """No face was found where one is required."""


class ConfigError(Avatar3DError):
    """A configuration file or value is invalid (unknown key, wrong type, out of range)."""


class CameraError(Avatar3DError):
    """Camera parameters are absurd (non-positive focal, NaN, degenerate pose, zero size)."""


class FormatError(Avatar3DError):
    """An avatar, capture set or model file is missing, corrupt or of an unsupported version."""
