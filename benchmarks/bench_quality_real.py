"""Avatar quality on the real clips of ``../shared/data`` (and the synthetic subject): the field's protocol.

For each clip: ``Avatar.fit`` on the whole clip (the trainer keeps the last 1/11 of the frames out of
training), then :func:`avatar3d.eval.evaluate_avatar` on that held-out part — audio, head pose and blinks
from the held-out frames, 512-px head crops, PSNR/SSIM/LPIPS/LMD, our sync measure for the avatar, the
ground-truth video (ceiling) and shuffled audio (chance), identity consistency — and a **cross-speaker**
check: the avatar rendered frontally with another speaker's speech (``speech_b_16k_60s.wav``, a different
speaker and recording), scored with the same sync measure against a segment-shuffled baseline.

    python benchmarks/bench_quality_real.py [--clips talk_a talk_de ...] [--steps N] [--preset fast]
        [--out DIR] [--cross-seconds 20] [--lpips-weights FILE]

``--clips synthetic`` fits the synthetic subject (an 8 s, 384-px talking video made by
:func:`avatar3d.synthetic.make_talking_video`). **Mouth measures** (issue 15): the real person's lip-gap
std over the training frames of the capture (tracked landmarks), the mouth-motion ratio of the avatar
on the held-out frames and under cross-speaker driving (avatar's lip-gap std / that), the cross-speaker
sync above its shuffled baseline in units of the baseline's std, and the real video's own sync (whole
clip, tracked landmarks vs its own audio) that the cross-speaker sync is compared with. ``--crops DIR``
writes mouth crops (real vs avatar at the most open frames; the avatar under cross-speaker driving at
p/b/m, "aa" and "oo" moments) as PNGs.

Prints one Markdown table (BENCHMARKS.md, "Avatar quality") and writes every report to ``--out``.
Figures depend on the machine only through time; say which device ran it.
"""

from __future__ import annotations

import argparse
import dataclasses
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


def real_mouth(cs, n_train: int) -> dict:
    """The real person's lip gap (tracked landmarks of the capture): its std over the training frames,
    and the real video's own sync (whole clip, its own audio) with its shuffled baseline."""
    from avatar3d.audio import audio_energy
    from avatar3d.eval import sync as S

    mouth = S.mouth_opening(np.asarray(cs.landmarks2d, np.float64))
    wave, sr = cs.audio()
    env = audio_energy(wave, sr, cs.fps, cs.n_frames)
    rep = S.sync_report(mouth, None, env)
    return {
        "train_lip_gap_std": float(np.nanstd(mouth[:n_train])),
        "real_sync_confidence": rep["avatar"]["confidence"],
        "real_sync_offset_frames": rep["avatar"]["offset_frames"],
        "real_shuffled_confidence": rep["shuffled_audio"]["confidence"],
        "real_shuffled_confidence_std": rep["shuffled_audio"].get("confidence_std"),
    }


def cross_speaker_sync(
    avatar, wave: np.ndarray, sr: int, seconds: float, size: int = 384, keep: dict | None = None
) -> dict:
    """Render ``seconds`` of another speaker's speech frontally; score mouth/audio sync vs shuffled
    (``keep``: a dict that receives the rendered result and landmarks, for the crops)."""
    from avatar3d.audio import audio_energy
    from avatar3d.eval import metrics as M
    from avatar3d.eval import sync as S

    wave = wave[: int(seconds * sr)]
    res = avatar.render((wave, sr), camera="frontal", size=(size, size), pose="static", progress=False)
    lm = M.detect_landmarks(res.frames)
    mouth = S.mouth_opening(lm)
    env = audio_energy(res.audio, res.sample_rate, res.fps, len(res))
    rep = S.sync_report(mouth, None, env)
    out = {
        "seconds": round(len(res) / res.fps, 2),
        "frames": len(res),
        "confidence": rep["avatar"]["confidence"],
        "offset_frames": rep["avatar"]["offset_frames"],
        "shuffled_confidence": rep["shuffled_audio"]["confidence"],
        "shuffled_confidence_std": rep["shuffled_audio"].get("confidence_std"),
        "mouth_opening_std": float(np.nanstd(mouth)),
    }
    out.update(viseme_contrast(res, mouth))
    if keep is not None:
        keep.update(result=res, landmarks=lm, mouth=mouth)
    return out


def viseme_contrast(res, mouth: np.ndarray) -> dict:
    """Mean lip gap (/ inter-ocular distance) over the driving audio's open-vowel frames (aa, E, oh
    weight > 0.5) minus that over its bilabial frames (PP > 0.5), from the speech front end's phones;
    strongly positive for real speech. Empty when the front end is not importable."""
    try:
        from avatar3d.audio.visemes import VISEMES, viseme_track
    except ImportError:
        return {}
    W = np.asarray(viseme_track(res.audio, res.sample_rate, res.fps, len(res)).weights)
    opened = W[:, [VISEMES.index(v) for v in ("aa", "E", "oh")]].sum(1) > 0.5
    closed = W[:, VISEMES.index("PP")] > 0.5
    ok = np.isfinite(mouth)
    if not (opened & ok).any() or not (closed & ok).any():
        return {}
    return {
        "viseme_contrast": float(np.mean(mouth[opened & ok]) - np.mean(mouth[closed & ok])),
        "open_frames": int((opened & ok).sum()),
        "bilabial_frames": int((closed & ok).sum()),
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


def synthetic_clip(out: Path, seconds: float = 8.0, size: int = 384) -> Path:
    """The synthetic subject's talking video (made once under ``out``)."""
    from avatar3d.synthetic import make_talking_video

    path = out / "synthetic.mp4"
    if not path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        make_talking_video(path, seconds=seconds, fps=25, size=size, seed=0)
    return path


def mouth_figures(row: dict, real: dict) -> dict:
    """The issue-15 figures of one clip from its row and :func:`real_mouth`."""
    out = dict(real)
    cs = row.get("cross_speaker")
    if cs:
        std = real["train_lip_gap_std"]
        out["cross_mouth_motion_ratio"] = cs["mouth_opening_std"] / std if std > 0 else None
        sd = cs.get("shuffled_confidence_std") or float("nan")
        out["cross_sync_above_shuffled_std"] = (
            (cs["confidence"] - cs["shuffled_confidence"]) / sd if sd > 0 else None
        )
        rc = real["real_sync_confidence"]
        out["cross_sync_vs_real"] = cs["confidence"] / rc if rc and rc > 0 else None
        if "viseme_contrast" in cs and std > 0:
            out["cross_viseme_contrast_std"] = cs["viseme_contrast"] / std  # in units of the real lip-gap std
    out["heldout_mouth_motion_ratio"] = row.get("mouth_motion_ratio")
    return out


def run_clip(
    path: Path,
    out: Path,
    preset: str,
    steps: int | None,
    cross,
    lpips_weights,
    config: dict | None = None,
    crops: Path | None = None,
    reuse: bool = False,
) -> dict:
    from avatar3d import Avatar
    from avatar3d.eval import evaluate_avatar
    from avatar3d.io.captureset import CaptureSet

    name = path.stem
    t0 = time.time()
    if reuse and (out / name / "avatar").is_dir():
        av = Avatar.load(out / name / "avatar")
    else:
        av = Avatar.fit(
            path,
            config or None,
            preset=preset,
            steps=steps,
            workdir=out / name / "work",
            progress=False,
            log=None,
        )
        av.save(out / name / "avatar")
    t_fit = time.time() - t0
    rep = evaluate_avatar(
        av,
        path,
        heldout_only=True,
        size=512,
        views=False,
        lpips_weights=lpips_weights,
        workdir=out / name / "eval",
    )
    t_eval = time.time() - t0 - t_fit
    row = {
        "clip": name,
        "train_frames": rep["protocol"]["avatar"]["train_frames"],
        "test_frames": rep["protocol"]["avatar"]["test_frames"],
        "steps": av.config.train.steps,
        "fit_s": round(av.meta.train_seconds if reuse else t_fit, 1),
        "eval_s": round(t_eval, 1),
        "metrics": rep["metrics"],
        "sync": {k: rep["sync"][k] for k in ("avatar", "shuffled_audio", "ground_truth") if k in rep["sync"]},
        "mouth_motion_ratio": rep["sync"].get("mouth_motion_ratio"),
        "identity": rep["identity"],
        "heldout_at_fit": av.meta.heldout,
        "heldout_psnr_over_steps": [
            (h["step"], round(h["heldout_psnr"], 2)) for h in av.meta.history if "heldout_psnr" in h
        ],
    }
    row["front_end"] = dataclasses.asdict(av.meta.front_end)
    keep: dict = {}
    if cross is not None:
        row["cross_speaker"] = cross_speaker_sync(av, *cross, keep=keep)
    cs = CaptureSet.load(out / name / "work" / "capture")
    row["mouth"] = mouth_figures(row, real_mouth(cs, row["train_frames"]))
    if crops is not None:
        row["crops"] = save_crops(av, cs, keep, crops, name, row["train_frames"])
    (out / name / "row.json").write_text(json.dumps(row, indent=2, default=str))
    return row


def _mouth_box(lm: np.ndarray, w: int, h: int, pad: float = 0.7) -> tuple[int, int, int, int]:
    """Square box (x0, y0, x1, y1) around the outer lips of (478, 2) landmarks, ``pad`` x its width around."""
    from avatar3d.core.topology import outer_lip_loop

    m = lm[outer_lip_loop()]
    c = 0.5 * (m.min(0) + m.max(0))
    side = max(16.0, (1 + 2 * pad) * float(np.ptp(m[:, 0])))
    x0, y0 = round(c[0] - side / 2), round(c[1] - side / 2)
    x0, y0 = min(max(x0, 0), max(0, w - int(side))), min(max(y0, 0), max(0, h - int(side)))
    return x0, y0, min(w, x0 + int(side)), min(h, y0 + int(side))


def _crop(img: np.ndarray, lm: np.ndarray, label: str, px: int = 128) -> np.ndarray:
    import cv2

    x0, y0, x1, y1 = _mouth_box(lm, img.shape[1], img.shape[0])
    c = cv2.resize(np.ascontiguousarray(img[y0:y1, x0:x1]), (px, px), interpolation=cv2.INTER_AREA)
    cv2.putText(c, label, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 0), 1, cv2.LINE_AA)
    return c


def _open_frames(mouth: np.ndarray, k: int, gap: int = 6) -> list[int]:
    """Indices of the ``k`` most open frames, at least ``gap`` frames apart."""
    out: list[int] = []
    for i in np.argsort(-np.nan_to_num(mouth, nan=-1)):
        if all(abs(int(i) - j) >= gap for j in out):
            out.append(int(i))
        if len(out) == k:
            break
    return sorted(out)


def save_crops(avatar, cs, keep: dict, folder: Path, name: str, n_train: int, k: int = 5) -> str:
    """One PNG per clip: mouth crops of the ``k`` most open frames of the clip, real (top row) and the
    avatar driven by the clip's own audio at the tracked head pose (middle row; frames past the
    training split are held out), and the avatar driven by the cross-speaker audio at its most
    bilabial (PP), open (aa), rounded (oh / ou) and front (E / ih) moments (bottom row, when the
    speech front end is importable)."""
    from avatar3d.core.camera import Camera
    from avatar3d.eval import sync as S
    from avatar3d.eval._drive import audio_codes, capture_features, render_layers
    from avatar3d.io.media import write_image

    folder.mkdir(parents=True, exist_ok=True)
    lm = np.asarray(cs.landmarks2d, np.float64)
    idx = _open_frames(S.mouth_opening(lm), k)
    codes = audio_codes(avatar, capture_features(avatar, cs), np.array(idx))
    V = np.tile(np.eye(4), (cs.n_frames, 1, 1))
    V[:, :3, :3], V[:, :3, 3] = cs.rotation, cs.translation
    C = np.asarray(avatar.meta.rest_viewmat, np.float64)
    cam = Camera(np.asarray(cs.K, np.float64), C, int(cs.width), int(cs.height))
    plate = np.asarray(cs.background())
    blink = np.asarray(cs.blink, np.float32).reshape(cs.n_frames, -1).mean(1)
    real, ours = [], []
    for j, i in enumerate(idx):
        layer = render_layers(avatar, codes[j], float(blink[i]), np.linalg.inv(C) @ V[i], cam)[0]
        tag = f"{i}{' held-out' if i >= n_train else ''}"
        real.append(_crop(np.asarray(cs.image(i)), lm[i], f"real {tag}"))
        ours.append(_crop(layer.over(plate), lm[i], f"avatar {tag}"))
    rows = [np.concatenate(real, 1), np.concatenate(ours, 1)]
    res = keep.get("result")
    if res is not None:
        try:
            from avatar3d.audio.visemes import VISEMES, viseme_track
        except ImportError:
            VISEMES = None
        if VISEMES is not None:
            tr = viseme_track(res.audio, res.sample_rate, res.fps, len(res))
            W = np.asarray(tr.weights)
            cells = []
            for group in (("PP",), ("aa",), ("oh", "ou"), ("E", "ih"), ("FF",)):
                col = W[:, [VISEMES.index(v) for v in group]].sum(1)
                ok = np.isfinite(keep["landmarks"][:, 0, 0])
                f = int(np.argmax(np.where(ok, col, -1)))
                cells.append(_crop(res.frames[f], keep["landmarks"][f, :, :2], f"{'/'.join(group)} {f}"))
            rows.append(np.concatenate(cells, 1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    path = folder / f"mouth_{name}.png"
    write_image(path, np.concatenate(rows, 0))
    return str(path)


def _f(v, nd=2):
    return f"{v:.{nd}f}" if isinstance(v, (int, float)) and v is not None and np.isfinite(v) else "—"


def table(rows: list[dict]) -> str:
    head = (
        "| clip | train/test frames | steps | fit | PSNR | SSIM | LPIPS | LMD | sync conf. avatar / truth / shuffled "
        "| offset (frames) | identity ΔE | cross-speaker sync / shuffled | mouth ratio held-out / cross "
        "| cross sync − shuffled (× std) | cross sync / real |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        m, s = r["metrics"], r["sync"]
        lp = m.get("lpips")
        lp = _f(lp, 4) if isinstance(lp, float) else "n/a"
        cs = r.get("cross_speaker")
        mo = r.get("mouth", {})
        cross = f"{_f(cs['confidence'])} / {_f(cs['shuffled_confidence'])}" if cs else "—"
        lines.append(
            f"| {r['clip']} | {r['train_frames']}/{r['test_frames']} | {r['steps']} | {r['fit_s'] / 60:.1f} min "
            f"| {_f(m['psnr'])} | {_f(m['ssim'], 3)} | {lp} | {_f(m['lmd'])} "
            f"| {_f(s['avatar']['confidence'])} / {_f(s.get('ground_truth', {}).get('confidence'))} / "
            f"{_f(s['shuffled_audio']['confidence'])} | {s['avatar']['offset_frames']} "
            f"| {_f(r['identity']['avatar']['colour_delta_e'])} | {cross} "
            f"| {_f(mo.get('heldout_mouth_motion_ratio'))} / {_f(mo.get('cross_mouth_motion_ratio'))} "
            f"| {_f(mo.get('cross_sync_above_shuffled_std'), 1)} | {_f(mo.get('cross_sync_vs_real'))} |"
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
    ap.add_argument("--reuse", action="store_true", help="evaluate the avatar already fitted under --out")
    ap.add_argument("--crops", type=Path, default=None, help="write mouth-crop PNGs (real vs avatar) here")
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="config overrides on top of the preset, e.g. train.resolution=384",
    )
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
        p = synthetic_clip(a.out) if c == "synthetic" else DATA / f"{c}.mp4"
        t0 = time.time()
        rows.append(run_clip(p, a.out, a.preset, a.steps, cross, a.lpips_weights, config, a.crops, a.reuse))
        print(f"{c}: done in {time.time() - t0:.0f} s", flush=True)
        print(table(rows[-1:]), flush=True)
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, torch CPU; preset {a.preset}"
        + (f", overrides {' '.join(a.set)}" if a.set else "")
        + "\n"
    )
    print(table(rows))
    (a.out / "rows.json").write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
