"""Memory and latency of `avatar3d view` on an audio file: start the viewer (drive, sound server,
viser), render the first frame, then seek to positions spread evenly through the clip and render a
few consecutive frames at each, as playback does. Prints one JSON line:

* ``start_s``: start_viewer's time; ``first_frame_s``: from its call to the first frame rendered;
* ``peak_rss_mb``: the process's peak resident memory (ru_maxrss), start-up included;
* ``rss_mb_at_minute``: resident memory after each position; ``seek_s``: the first frame after each
  seek (``--settle`` seconds after the previous one); ``seek_and_render_3_frames_s``: that frame and
  the next two.

It runs against whichever avatar3d is imported (run it with PYTHONPATH=/path/to/checkout to measure
another one) and uses only the API both old and new viewers share.

    python benchmarks/bench_view_memory.py AVATAR_DIR AUDIO [--bake DIR] [--size 128] [--positions 13] [--settle 2]
"""

import argparse
import json
import resource
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

import avatar3d
from avatar3d.export.bake import load_player
from avatar3d.viewer import start_viewer
from avatar3d.viewer.frames import look_at_wxyz, viewer_pose
from avatar3d.viewer.server import CameraState
from avatar3d.viewer.timeline import make_drive


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def code_version() -> str:
    """The commit of the imported avatar3d checkout (with '+' when it has uncommitted changes)."""
    root = Path(avatar3d.__file__).parents[1]
    try:
        rev = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "avatar3d"], capture_output=True, text=True
        )
        return f"{root}@{rev.stdout.strip()}{'+' if dirty.stdout.strip() else ''}"
    except OSError:
        return str(root)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("avatar", help="avatar directory")
    ap.add_argument("audio", help="audio file driving the viewer")
    ap.add_argument("--bake", help="play through this linear bake (an export --web folder)")
    ap.add_argument("--size", type=int, default=128, help="render size (default 128)")
    ap.add_argument("--positions", type=int, default=13, help="seek positions through the clip (default 13)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument(
        "--compare",
        action="store_true",
        help="afterwards, also decode the file whole and report how far the streamed codes are from it",
    )
    ap.add_argument(
        "--settle",
        type=float,
        default=2.0,
        help="seconds watched after each position before the next seek (default 2)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    player = None
    if args.bake:
        player = lambda av: load_player(av, args.bake)  # noqa: E731
    t0 = time.time()
    v = start_viewer(args.avatar, args.audio, port=0, size=args.size, log=None, bake=player)
    start_s = time.time() - t0
    v.clock.pause()
    p = viewer_pose(v.avatar.rest_camera)
    state = CameraState(tuple(look_at_wxyz(p.position, p.look_at, p.up)), tuple(p.position), p.fov, 1.0)
    v.render_view(state, 0.0)
    first_s = time.time() - t0
    rows = [("started", round(rss_mb(), 1))]
    n, fps = v.drive.n_frames, v.drive.fps
    seek, three = [], []
    for k in np.linspace(0, n - 4, args.positions).astype(int)[1:]:
        time.sleep(args.settle)  # a user watches a little before seeking again (work ahead may finish)
        t1 = time.time()
        v.render_view(state, k / fps)
        seek.append(time.time() - t1)
        for j in (1, 2):  # the next frames, as playback shows them
            v.render_view(state, (k + j) / fps)
        three.append(time.time() - t1)
        rows.append((round(k / fps / 60, 1), round(rss_mb(), 1)))
    v.stop()
    out = {
        "code": code_version(),
        "audio": str(args.audio),
        "audio_min": round(n / fps / 60, 2),
        "frames": n,
        "streamed": getattr(v.drive, "streamed", None) is not None,
        "start_s": round(start_s, 2),
        "first_frame_s": round(first_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_mb_at_minute": rows,
        "seek_s": [round(x, 2) for x in seek],
        "seek_and_render_3_frames_s": [round(x, 2) for x in three],
    }
    if args.compare:
        out["compare"] = compare_codes(v.avatar, args.audio, [int(x * 60 * fps) for x, _ in rows[1:]])
    print(json.dumps(out))


def compare_codes(avatar, audio: str, frames: list[int]) -> dict:
    """Streamed against decoded drive: the codes of 64 frames from each of ``frames`` (after a seek
    there), as the rms of the difference over the rms of the decoded codes."""
    streamed, decoded = make_drive(avatar, audio, stream=True), make_drive(avatar, audio, stream=False)
    try:
        rel = []
        for k in frames:
            ks = range(max(0, min(k, decoded.n_frames - 64)), max(0, min(k, decoded.n_frames - 64)) + 64)
            a = torch.stack([streamed.codes[j] for j in ks])
            b = torch.stack([decoded.codes[j] for j in ks])
            rel.append(round(float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt()), 4))
        return {"rel_rms_code_diff_after_seek": rel}
    finally:
        streamed.close()
        decoded.close()


if __name__ == "__main__":
    main()
