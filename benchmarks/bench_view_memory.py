"""RSS of `avatar3d view` while playing across a clip: start the viewer (drive, sound server, viser),
then render 3 consecutive frames at 13 positions spread evenly through the clip.

    python benchmarks/bench_view_memory.py AVATAR_DIR AUDIO [BAKE]
"""

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
from avatar3d.viewer import start_viewer
from avatar3d.viewer.frames import look_at_wxyz, viewer_pose
from avatar3d.viewer.server import CameraState


def rss_mb():
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


avatar, wav, bake = sys.argv[1], sys.argv[2], (sys.argv[3] if len(sys.argv) > 3 else None)
player = None
if bake:
    from avatar3d.export.bake import load_player

    player = lambda av: load_player(av, bake)
t0 = time.time()
v = start_viewer(avatar, wav, port=0, size=128, log=None, bake=player)
start_s = time.time() - t0
v.clock.pause()
p = viewer_pose(v.avatar.rest_camera)
state = CameraState(tuple(look_at_wxyz(p.position, p.look_at, p.up)), tuple(p.position), p.fov, 1.0)
rows = [("started", round(rss_mb(), 1))]
n = v.drive.n_frames
ts = []
for k in np.linspace(0, n - 1, 13).astype(int):  # every 5 minutes of an hour
    t1 = time.time()
    for j in range(3):  # a few consecutive frames, as playback does
        v.render_view(state, (k + j) / v.drive.fps)
    ts.append(time.time() - t1)
    rows.append((round(k / v.drive.fps / 60, 1), round(rss_mb(), 1)))
v.stop()
print(
    json.dumps(
        {
            "audio_min": round(n / v.drive.fps / 60, 2),
            "frames": n,
            "start_s": round(start_s, 1),
            "rss_mb_at_minute": rows,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "seek_and_render_3_frames_s": [round(x, 2) for x in ts],
        }
    )
)
