"""``avatar3d demo``: the whole pipeline on the built-in synthetic subject, no files needed.

1. Generate a talking video of the synthetic subject (deterministic, shipped as code).
2. Fit an avatar on it with the ``fast`` preset (capture -> train).
3. Render the avatar speaking *different* synthetic speech from an orbiting camera (±30° yaw)
   to ``demo.mp4`` (H.264 + AAC).

The clip's ground truth (camera, head poses, jaw, blinks) is kept as ``synthetic_truth.npz``, so
``avatar3d eval OUT/avatar --video OUT/synthetic_subject.mp4 --truth OUT/synthetic_truth.npz``
scores the held-out frames and the unseen views against it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .api import Avatar
from .core.constants import SAMPLE_RATE
from .io.outputs import MARKER, OutputError, has_marker, write_marker
from .synthetic import make_talking_video, synth_speech

DEMO_FPS = 25
DEMO_SIZE = 320  # px, square
DEMO_SPEECH_S = 6.0  # seconds of new speech the avatar says in demo.mp4


def run_demo(
    out: Path, steps: int | None = None, seconds: float = 8.0, size: int = DEMO_SIZE, log=print
) -> dict:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not has_marker(out):
        raise OutputError(
            f"output {out} is a directory avatar3d did not write (no {MARKER} marker): "
            "the demo never writes into it; choose another output path"
        )
    out.mkdir(parents=True, exist_ok=True)
    if not has_marker(out):
        write_marker(out, "demo")  # a demo folder is ours: re-running the demo resumes in it
    t0 = time.time()
    video = out / "synthetic_subject.mp4"
    log(f"[1/3] generating the synthetic talking subject ({seconds:g} s, {size}x{size}) -> {video}")
    truth = make_talking_video(video, seconds=seconds, fps=DEMO_FPS, size=size, seed=0)
    truth_path = truth.save(out / "synthetic_truth.npz")
    t1 = time.time()
    log(f"[2/3] fitting an avatar (preset fast) -> {out / 'avatar'}")
    avatar = Avatar.fit(video, preset="fast", workdir=out / "work", steps=steps)
    avatar.save(out / "avatar")
    t2 = time.time()
    log(f"[3/3] rendering new speech from an orbiting camera -> {out / 'demo.mp4'}")
    wave = synth_speech(DEMO_SPEECH_S, sr=SAMPLE_RATE, seed=7, voice="high")
    res = avatar.stream((wave, SAMPLE_RATE), camera="orbit", size=(size, size), pose="static")
    res.save(out / "demo.mp4")
    t3 = time.time()
    summary = {
        "demo_mp4": str(out / "demo.mp4"),
        "truth": str(truth_path),
        "frames": len(res),
        "size": [size, size],
        "seconds_generate": round(t1 - t0, 1),
        "seconds_fit": round(t2 - t1, 1),
        "seconds_render": round(t3 - t2, 1),
        "seconds_total": round(t3 - t0, 1),
        "heldout": avatar.meta.heldout,
        "n_gaussians": avatar.model.n,
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    log(f"done in {t3 - t0:.0f} s: {out / 'demo.mp4'} ({len(res)} frames)")
    log(
        f"score it against the ground truth (held-out frames, unseen views): avatar3d eval {out / 'avatar'} "
        f"--video {video} --truth {truth_path} -o {out / 'eval.json'}"
    )
    return summary
