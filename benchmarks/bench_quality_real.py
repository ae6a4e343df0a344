"""Avatar quality on the real clips of ``../shared/data`` (and the synthetic subject): the field's protocol.

For each clip: ``Avatar.fit`` on the whole clip (the trainer keeps the last 1/11 of the frames out of
training), then :func:`avatar3d.eval.evaluate_avatar` on that held-out part — audio, head pose and blinks
from the held-out frames, 512-px head crops, PSNR/SSIM/LPIPS/LMD, our sync measure for the avatar, the
ground-truth video (ceiling) and shuffled audio (chance), identity consistency — and a **cross-speaker**
check: the avatar rendered frontally with another speaker's speech (``speech_b_16k_60s.wav``, a different
speaker and recording), scored with the same sync measure against a segment-shuffled baseline.

    python benchmarks/bench_quality_real.py [--clips talk_a talk_de ...] [--steps N] [--preset fast]
        [--out DIR] [--cross-seconds 20] [--lpips-weights FILE]

Prints one Markdown table (BENCHMARKS.md, "Avatar quality") and writes every report to ``--out``.
Figures depend on the machine only through time; say which device ran it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CLIPS = ("talk_a", "talk_b", "talk_c", "talk_de", "talk_long_en")


def cross_speaker_sync(avatar, wave: np.ndarray, sr: int, seconds: float, size: int = 384) -> dict:
    """Render ``seconds`` of another speaker's speech frontally; score mouth/audio sync vs shuffled."""
    from avatar3d.audio import audio_energy
    from avatar3d.eval import metrics as M
    from avatar3d.eval import sync as S

    wave = wave[: int(seconds * sr)]
    res = avatar.render((wave, sr), camera="frontal", size=(size, size), pose="static", progress=False)
    lm = M.detect_landmarks(res.frames)
    mouth = S.mouth_opening(lm)
    env = audio_energy(res.audio, res.sample_rate, res.fps, len(res))
    rep = S.sync_report(mouth, None, env)
    return {
        "seconds": round(len(res) / res.fps, 2),
        "frames": len(res),
        "confidence": rep["avatar"]["confidence"],
        "offset_frames": rep["avatar"]["offset_frames"],
        "shuffled_confidence": rep["shuffled_audio"]["confidence"],
        "shuffled_confidence_std": rep["shuffled_audio"].get("confidence_std"),
        "mouth_opening_std": float(np.nanstd(mouth)),
    }


def overrides(pairs: list[str]) -> dict:
    """``["train.resolution=384", ...]`` -> ``{"train": {"resolution": 384}}`` (values parsed as YAML)."""
    import yaml

    cfg: dict = {}
    for p in pairs:
        key, sep, val = p.partition("=")
        if not sep or "." not in key:
            sys.exit(f"--set wants SECTION.KEY=VALUE, got {p!r}")
        sec, k = key.split(".", 1)
        cfg.setdefault(sec, {})[k] = yaml.safe_load(val)
    return cfg


def run_clip(
    path: Path, out: Path, preset: str, steps: int | None, cross, lpips_weights, config: dict | None = None
) -> dict:
    from avatar3d import Avatar
    from avatar3d.eval import evaluate_avatar

    name = path.stem
    t0 = time.time()
    av = Avatar.fit(
        path, config or None, preset=preset, steps=steps, workdir=out / name / "work", progress=False, log=None
    )
    av.save(out / name / "avatar")
    t_fit = time.time() - t0
    rep = evaluate_avatar(
        av, path, heldout_only=True, size=512, views=False, lpips_weights=lpips_weights,
        workdir=out / name / "eval",
    )
    t_eval = time.time() - t0 - t_fit
    row = {
        "clip": name,
        "train_frames": rep["protocol"]["avatar"]["train_frames"],
        "test_frames": rep["protocol"]["avatar"]["test_frames"],
        "steps": av.config.train.steps,
        "fit_s": round(t_fit, 1),
        "eval_s": round(t_eval, 1),
        "metrics": rep["metrics"],
        "sync": {k: rep["sync"][k] for k in ("avatar", "shuffled_audio", "ground_truth") if k in rep["sync"]},
        "mouth_motion_ratio": rep["sync"].get("mouth_motion_ratio"),
        "identity": rep["identity"],
        "heldout_at_fit": av.meta.get("heldout", {}),
        "heldout_psnr_over_steps": [
            (h["step"], round(h["heldout_psnr"], 2)) for h in av.meta.get("history", []) if "heldout_psnr" in h
        ],
    }
    if cross is not None:
        row["cross_speaker"] = cross_speaker_sync(av, *cross)
    (out / name / "row.json").write_text(json.dumps(row, indent=2, default=str))
    return row


def _f(v, nd=2):
    return f"{v:.{nd}f}" if isinstance(v, (int, float)) and v is not None and np.isfinite(v) else "—"


def table(rows: list[dict]) -> str:
    head = (
        "| clip | train/test frames | steps | fit | PSNR | SSIM | LPIPS | LMD | sync conf. avatar / truth / shuffled "
        "| offset (frames) | identity ΔE | cross-speaker sync / shuffled |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        m, s = r["metrics"], r["sync"]
        lp = m.get("lpips")
        lp = _f(lp, 4) if isinstance(lp, float) else "n/a"
        cs = r.get("cross_speaker")
        cross = f"{_f(cs['confidence'])} / {_f(cs['shuffled_confidence'])}" if cs else "—"
        lines.append(
            f"| {r['clip']} | {r['train_frames']}/{r['test_frames']} | {r['steps']} | {r['fit_s'] / 60:.1f} min "
            f"| {_f(m['psnr'])} | {_f(m['ssim'], 3)} | {lp} | {_f(m['lmd'])} "
            f"| {_f(s['avatar']['confidence'])} / {_f(s.get('ground_truth', {}).get('confidence'))} / "
            f"{_f(s['shuffled_audio']['confidence'])} | {s['avatar']['offset_frames']} "
            f"| {_f(r['identity']['avatar']['colour_delta_e'])} | {cross} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", nargs="+", default=list(CLIPS))
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("bench_quality_out"))
    ap.add_argument("--cross-seconds", type=float, default=20.0)
    ap.add_argument("--lpips-weights", default=None)
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE",
                    help="config overrides on top of the preset, e.g. train.resolution=384")
    a = ap.parse_args()
    config = overrides(a.set)
    os.environ.setdefault("AVATAR3D_QUIET", "1")
    if not DATA.is_dir():
        sys.exit(f"no real data at {DATA}")
    from avatar3d.audio import load_audio

    cross = None
    if a.cross_seconds > 0 and (DATA / "speech_b_16k_60s.wav").exists():
        cross = (load_audio(DATA / "speech_b_16k_60s.wav"), 16000, a.cross_seconds)
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for c in a.clips:
        p = DATA / f"{c}.mp4"
        t0 = time.time()
        rows.append(run_clip(p, a.out, a.preset, a.steps, cross, a.lpips_weights, config))
        print(f"{c}: done in {time.time() - t0:.0f} s", flush=True)
        print(table(rows[-1:]), flush=True)
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, torch CPU; preset {a.preset}"
          + (f", overrides {' '.join(a.set)}" if a.set else "") + "\n")
    print(table(rows))
    (a.out / "rows.json").write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
