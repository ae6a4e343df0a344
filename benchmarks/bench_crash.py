"""Kill figures: what a ``kill -9`` at a random moment of ``capture``, ``fit`` and ``render`` costs.

For each stage the CLI command is first run once uninterrupted (D seconds). Each trial then starts
the same command afresh, sends SIGKILL after a uniformly random t in [0.1 D, 0.9 D], and runs the
same command again to completion (R seconds). Reported per trial: t, R, the seconds lost
``t + R - D`` (work redone plus restart overhead), and for ``fit`` the step it resumed from and the
seconds of training since the checkpoint it resumed from (what the kill threw away).

Stage ``pretrain`` kills the same fit inside its audio pre-training: the uninterrupted run is
watched (its audio pre-training checkpoints, ``checkpoint.audio.safetensors``, and the training
loop's first checkpoint, written when the pre-training ends) to place the pre-training on the
clock, and each kill falls at a uniform moment of it (``--window`` as fractions of it). Reported
besides: the pre-training step the rerun resumed from.

    python benchmarks/bench_crash.py --video ../shared/data/talk_b.mp4 --trials 3 --out /tmp/bench_crash
    python benchmarks/bench_crash.py --video ../shared/data/talk_b.mp4 --stages pretrain --window 0.05 0.98
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    env = dict(os.environ, AVATAR3D_QUIET="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "avatar3d.cli", *args]


def _run(args: list[str]) -> tuple[float, str]:
    t0 = time.time()
    p = subprocess.run(_cli(args), check=False, capture_output=True, text=True, env=_env())
    if p.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")
    return time.time() - t0, p.stdout + p.stderr


def _ckpt_step(path: Path) -> int | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return int((f.metadata() or {}).get("step", -1))
    except (OSError, SafetensorError, ValueError):
        return None


def _watched(args: list[str], work: Path) -> tuple[float, dict]:
    """Run once uninterrupted, polling ``work``: (seconds, where the audio pre-training lay on the
    clock: ``start_s``, ``end_s``, ``steps``, and the audio checkpoints seen as (s, step))."""
    p = subprocess.Popen(_cli(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    t0, seen, end = time.time(), [], None
    audio, main = work / "checkpoint.audio.safetensors", work / "checkpoint.safetensors"
    while p.poll() is None:
        k = _ckpt_step(audio)
        if k is not None and (not seen or seen[-1][1] != k):
            seen.append((round(time.time() - t0, 2), k))
        if end is None and main.is_file():
            end = time.time() - t0
        time.sleep(0.05)
    D = time.time() - t0
    if p.returncode != 0 or end is None or not seen:
        sys.exit(f"{' '.join(args)} failed or wrote no checkpoints:\n{p.stdout.read()}")
    (t1, k1), (t2, k2) = seen[0], seen[-1]
    rate = (k2 - k1) / (t2 - t1) if len(seen) > 1 and t2 > t1 else None
    if rate is None:
        sys.exit("one audio pre-training checkpoint only: lower --checkpoint-seconds to place the stage")
    return D, {
        "start_s": round(t2 - k2 / rate, 2),
        "end_s": round(end, 2),
        "steps": k2,
        "audio_checkpoints": seen,
    }


def _pretrain_trials(args: list[str], reset, work: Path, n: int, rng: random.Random, window) -> dict:
    """Kills inside the audio pre-training (``window``: fractions of it)."""
    reset()
    D, where = _watched(args, work)
    print("pretrain uninterrupted", round(D, 1), where, flush=True)
    P = where["end_s"] - where["start_s"]
    rows = []
    for _ in range(n):
        reset()
        after = where["start_s"] + rng.uniform(window[0] * P, window[1] * P)
        k = _killed(args, after, work)
        k["audio_checkpoint_step"] = _ckpt_step(work / "checkpoint.audio.safetensors")
        k["main_checkpoint_existed"] = (work / "checkpoint.safetensors").is_file()
        k["into_pretraining_s"] = round(k["kill_s"] - where["start_s"], 2)
        R, log = _run(args)
        m = re.search(r"resuming the audio pre-training from step (\d+)", log)
        row = {**k, "rerun_s": round(R, 1), "lost_s": round(k["kill_s"] + R - D, 1)}
        row["resumed_pretraining_step"] = int(m.group(1)) if m else None
        rows.append(row)
        print("pretrain", row, flush=True)
    return {"uninterrupted_s": round(D, 1), "pretraining": where, "trials": rows}


def _killed(args: list[str], after: float, work: Path | None) -> dict:
    """Start, SIGKILL after ``after`` s; what the checkpoint in ``work`` held at that moment."""
    p = subprocess.Popen(_cli(args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    t0 = time.time()
    while p.poll() is None and time.time() - t0 < after:
        time.sleep(0.02)
    at = time.time()
    done = p.poll() is not None
    p.send_signal(signal.SIGKILL)
    p.wait()
    out = {"kill_s": round(at - t0, 2), "finished_before_kill": done}
    ck = work / "checkpoint.safetensors" if work else None
    if ck is not None and ck.is_file():
        out["checkpoint_age_s"] = round(at - ck.stat().st_mtime, 2)
    return out


def _trials(
    name: str,
    args: list[str],
    reset,
    D: float,
    n: int,
    rng: random.Random,
    work: Path | None,
    window: tuple[float, float],
) -> list[dict]:
    rows = []
    for _ in range(n):
        reset()
        k = _killed(args, rng.uniform(window[0] * D, window[1] * D), work)
        R, log = _run(args)
        m = re.search(r"resuming from step (\d+)", log)
        row = {**k, "rerun_s": round(R, 1), "lost_s": round(k["kill_s"] + R - D, 1)}
        if m:
            row["resumed_step"] = int(m.group(1))
        if "resuming a killed capture" in log:
            row["capture_resumed_after_pass1"] = True
        rows.append(row)
        print(name, row, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", required=True)
    ap.add_argument("--out", default="/tmp/bench_crash")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--max-size", default="256")
    ap.add_argument("--steps", default="200")
    ap.add_argument("--checkpoint-seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--stages",
        default="capture,fit,render",
        help="comma-separated subset of capture,fit,pretrain,render (fit and pretrain need the "
        "capture, render the avatar: kept in --out from an earlier run)",
    )
    ap.add_argument(
        "--window",
        type=float,
        nargs=2,
        default=(0.1, 0.9),
        metavar=("LO", "HI"),
        help="kill at a uniform moment in [LO D, HI D] (default 0.1 0.9); for pretrain, LO and HI are "
        "fractions of the audio pre-training",
    )
    a = ap.parse_args()
    out = Path(a.out)
    stages = a.stages.split(",")
    if "capture" in stages:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(a.seed)
    cfg = out / "fit.yaml"
    cfg.write_text(f"preset: fast\ntrain: {{checkpoint_seconds: {a.checkpoint_seconds}}}\n")
    cap, work, av, mp4 = out / "cap", out / "work", out / "avatar", out / "talk.mp4"
    capture = ["capture", a.video, "-o", str(cap), "--max-size", a.max_size]
    fit = ["fit", str(cap), "-o", str(av), "--config", str(cfg), "--steps", a.steps, "--workdir", str(work)]
    render = ["render", str(av), "--audio", a.video, "-o", str(mp4)]
    res: dict = {"args": vars(a), "stages": {}}
    for name, args, reset, wd in (
        ("capture", capture, lambda: shutil.rmtree(cap, ignore_errors=True), None),
        ("fit", fit, lambda: [shutil.rmtree(p, ignore_errors=True) for p in (work, av)], work),
        ("render", render, lambda: mp4.unlink(missing_ok=True), None),
    ):
        if name == "fit" and "pretrain" in stages:
            res["stages"]["pretrain"] = _pretrain_trials(args, reset, work, a.trials, rng, tuple(a.window))
            (out / f"crash_{'_'.join(stages)}.json").write_text(json.dumps(res, indent=1))
        if name not in stages:
            continue
        reset()
        D, _ = _run(args)
        print(name, "uninterrupted", round(D, 1), flush=True)
        rows = _trials(name, args, reset, D, a.trials, rng, wd, tuple(a.window))
        res["stages"][name] = {"uninterrupted_s": round(D, 1), "trials": rows}
        (out / f"crash_{'_'.join(stages)}.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
