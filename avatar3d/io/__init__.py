"""File I/O: media through PyAV (the only code that opens video, audio and image files), atomic outputs,
and the on-disk formats (CaptureSet directories, avatar directories, PLY).

Public API::

    from avatar3d.io import iter_frames, probe_video, read_audio, write_video, atomic_file
    info = probe_video("talk.mp4")                # VideoInfo: size, fps, n_frames, audio
    for frame in iter_frames("talk.mp4"): ...      # (H, W, 3) uint8 RGB, constant frame rate
    write_video("out.mp4", frames, fps=25, audio=wave, audio_sr=16000)   # atomic

Modules: :mod:`.media` (read/probe/write video, audio, images), :mod:`.atomic` (temp-then-rename files
and directories), :mod:`.outputs` (the marker on directories avatar3d wrote), :mod:`.captureset`
(:class:`CaptureSet`, the capture stage's directory), :mod:`.avatar_dir` (the avatar's directory),
:mod:`.ply` (Gaussian PLY export), :mod:`.watermark` (the provenance mark on rendered video).
"""

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
