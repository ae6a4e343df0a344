"""File I/O: media (video, audio, images) through PyAV and atomic outputs."""

from avatar3d.io.atomic import atomic_dir, atomic_file
from avatar3d.io.media import (
    VideoInfo,
    iter_frames,
    probe_video,
    read_audio,
    read_image,
    write_audio,
    write_image,
    write_video,
)

__all__ = [
    "VideoInfo",
    "atomic_dir",
    "atomic_file",
    "iter_frames",
    "probe_video",
    "read_audio",
    "read_image",
    "write_audio",
    "write_image",
    "write_video",
]
