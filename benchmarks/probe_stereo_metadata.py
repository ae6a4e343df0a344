"""Can PyAV write stereo metadata headset players read? Try: (1) the H.264 frame-packing SEI through
x264-params; (2) a `stereo_mode` stream tag in mp4 and in Matroska; read each back with PyAV."""

import tempfile
from pathlib import Path

import av
import numpy as np

OUT = Path(tempfile.mkdtemp(prefix="stereo-meta-"))
print("PyAV", av.__version__, "FFmpeg", av.library_versions.get("libavformat"))
W, H = 128, 64
frames = [np.full((H, W, 3), i * 8, np.uint8) for i in range(10)]


def write(path, fmt, opts=None, tag=None):
    c = av.open(path, "w", format=fmt)
    s = c.add_stream("libx264", rate=25)
    s.width, s.height, s.pix_fmt = W, H, "yuv420p"
    if opts:
        s.options = opts
    if tag:
        s.metadata["stereo_mode"] = tag
    for f in frames:
        for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()


def read(path):
    c = av.open(path)
    s = c.streams.video[0]
    sd = set()
    for fr in c.decode(s):
        sd |= {str(x.type) for x in fr.side_data}
    out = {"stream metadata": dict(s.metadata), "frame side data": sorted(sd)}
    c.close()
    return out


for name, fmt, opts, tag in [
    ("sei_sbs.mp4", "mp4", {"x264-params": "frame-packing=3"}, None),
    ("sei_tb.mp4", "mp4", {"x264-params": "frame-packing=4"}, None),
    ("tag.mp4", "mp4", None, "left_right"),
    ("tag.mkv", "matroska", None, "left_right"),
]:
    p = str(OUT / name)
    try:
        write(p, fmt, opts, tag)
        print(name, read(p))
    except Exception as e:
        print(name, "FAILED", type(e).__name__, e)
# does the mp4 carry an st3d box?
for name in ("sei_sbs.mp4", "tag.mp4"):
    print(name, "st3d box:", b"st3d" in open(str(OUT / name), "rb").read())
