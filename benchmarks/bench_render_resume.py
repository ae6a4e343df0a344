"""What a resumable (segmented) render costs, and what a ``kill -9`` of ``avatar3d render`` loses.

``overhead``: renders the avatar speaking the audio once into memory (the render time), then encodes
those same frames both ways, alternately: today's single file (``save_video``: watermark, encode,
mux the audio) and the segmented path (``FrameStream.save``: watermark, one file per segment,
manifest, join without re-encoding). The difference is the overhead of segmenting, free of the
render's timing noise. Reported besides: the join (remux) time, the render key's time, the file
sizes, each file's PSNR against the watermarked frames and (``--verify``) the watermark detector's
verdict on each.

``kill``: runs ``avatar3d render`` once uninterrupted (D seconds), then per trial starts it afresh,
sends SIGKILL at a uniformly random t in [0.2 D, 0.9 D], and runs the same command again (R
seconds). Reported: the frames reused from the killed run, the seconds of rendering the kill threw
away (t minus the moment the last finished segment was recorded), and t + R - D.

    python benchmarks/bench_render_resume.py overhead --avatar AV --audio A.wav --size 256 --reps 3
    python benchmarks/bench_render_resume.py kill --avatar AV --audio A.wav --size 256 --trials 3 --out DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from avatar3d import Avatar
from avatar3d._version import __version__
from avatar3d.drive import frames as fr
from avatar3d.io import segments
from avatar3d.io.media import iter_frames
from avatar3d.io.watermark import Payload, detect, embed_frames

ROOT = Path(__file__).resolve().parents[1]


def _psnr(path: Path, ref: list[np.ndarray]) -> float:
    err = [np.mean((a.astype(np.float64) - b) ** 2) for a, b in zip(iter_frames(path), ref)]
    return float(10 * np.log10(255.0**2 / np.mean(err)))


def _verify(path: Path) -> dict:
    d = detect(path)
    return {"present": d.present, "score": round(d.score, 2), "payload": str(d.payload)}


def overhead(a: argparse.Namespace) -> dict:
    av = Avatar.load(a.avatar)
    s = av.stream(a.audio, size=(a.size, a.size), pose="generated", progress=False, max_seconds=a.seconds)
    t0 = time.perf_counter()
    raw = list(s)
    t_render = time.perf_counter() - t0
    marked = list(embed_frames(iter(raw), Payload(s.avatar_id, __version__)))
    t0 = time.perf_counter()
    s._key()
    t_key = time.perf_counter() - t0
    mem = dataclasses.replace(s, _frames=lambda i, j: ((f, None) for f in raw[i:j]))
    joins: list[float] = []
    real_join = segments.RenderParts.join

    def timed_join(self, *args):
        t = time.perf_counter()
        try:
            return real_join(self, *args)
        finally:
            joins.append(time.perf_counter() - t)

    segments.RenderParts.join = timed_join
    single, seg = [], []
    with tempfile.TemporaryDirectory() as d:
        p1, p2 = Path(d) / "single.mp4", Path(d) / "segmented.mp4"
        for _ in range(a.reps):
            for path, times in ((p1, single), (p2, seg)) if _ % 2 == 0 else ((p2, seg), (p1, single)):
                t0 = time.perf_counter()
                if path == p1:
                    fr.save_video(p1, raw, s.fps, s.audio, s.sample_rate, s.avatar_id, True)
                else:
                    mem.save(p2, log=None)
                times.append(time.perf_counter() - t0)
        sizes = {p.stem: p.stat().st_size for p in (p1, p2)}
        psnr = {p.stem: round(_psnr(p, marked), 2) for p in (p1, p2)}
        marks = {p.stem: _verify(p) for p in (p1, p2)} if a.verify else None
    return {
        "frames": len(s), "size": f"{s.width}x{s.height}", "segment_frames": fr.segment_frames(),
        "render_s": round(t_render, 1), "key_s": round(t_key, 3),
        "encode_single_s": [round(x, 2) for x in single], "encode_segmented_s": [round(x, 2) for x in seg],
        "join_s": [round(x, 2) for x in joins], "bytes": sizes, "psnr_db_vs_frames": psnr,
        "overhead_s_median": round(statistics.median(seg) - statistics.median(single), 2),
        "watermark": marks,
    }  # fmt: skip


def _env() -> dict:
    env = dict(os.environ, AVATAR3D_QUIET="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _manifest(out: Path) -> tuple[int, float]:
    """(parts recorded, mtime of the manifest) of a render in progress."""
    m = out.with_name(f".{out.name}.parts") / "manifest.json"
    try:
        return len(json.loads(m.read_text())["parts"]), m.stat().st_mtime
    except (OSError, ValueError, KeyError):
        return 0, 0.0


def kill(a: argparse.Namespace) -> list[dict]:
    out_dir = Path(a.out)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    out = out_dir / "o.mp4"
    cmd = [sys.executable, "-m", "avatar3d.cli", "render", a.avatar, "--audio", a.audio, "-o", str(out),
           "--size", f"{a.size}x{a.size}", "--pose", "generated"]  # fmt: skip
    t0 = time.time()
    subprocess.run(cmd, check=True, env=_env(), capture_output=True)
    d = time.time() - t0
    rows = [{"uninterrupted_s": round(d, 1)}]
    rng = random.Random(a.seed)
    for _ in range(a.trials):
        out.unlink()
        t_kill = rng.uniform(0.2, 0.9) * d
        p = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start = time.time()
        last = (0, 0.0)
        while time.time() - start < t_kill and p.poll() is None:
            last = _manifest(out)
            time.sleep(0.05)
        killed_at = time.time()
        p.send_signal(signal.SIGKILL)
        p.wait()
        parts, mtime = _manifest(out)
        t1 = time.time()
        r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, check=True)
        rr = time.time() - t1
        m = re.search(r"(\d+) of (\d+) frames were rendered", r.stdout)
        rows.append({
            "kill_at_s": round(killed_at - start, 1), "parts_at_kill": parts, "parts_seen": last[0],
            "reused_frames": int(m[1]) if m else 0,
            "render_lost_s": round(killed_at - mtime, 1) if parts else None,
            "rerun_s": round(rr, 1), "lost_s": round(killed_at - start + rr - d, 1),
        })  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["overhead", "kill"])
    ap.add_argument("--avatar", required=True)
    ap.add_argument("--audio", required=True)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=None, help="use only the first SECONDS of the audio")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--verify", action="store_true", help="overhead: run the watermark detector on both files"
    )
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/bench_render_resume")
    a = ap.parse_args()
    res = overhead(a) if a.what == "overhead" else kill(a)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
