"""Capture benchmark on the real clips of ../shared/data.

For each clip: the full ``run_capture`` (decode, landmarks, segmentation, masks, background plate,
rigid tracking, signals, audio, writing) with per-stage times from the capture's own clock; throughput
in frames/s (wall clock) and CPU time per frame (all threads; robust to other load on the machine);
frames/s of landmarks + segmentation + optical flow + tracking; median rigid-landmark reprojection
error in pixels of the frame scaled to 512 px and of the evaluation's 512-px face crop (the issue's
scale: a square of 1.7 × the landmarks' extent, as ``avatar3d eval`` cuts it); the estimated focal
(× longest side) and distance; pose jitter = median and 95th percentile of the frame-to-frame
acceleration of rotation (degrees) and translation (mm), for the smoothed poses and, for reference,
for a landmark-only refit with smoothing switched off.

    python benchmarks/bench_capture.py [--clips talk_a talk_b] [--max-frames N] [--keep DIR]
        [--overlay talk_a] [--set feature_tracks=false ...]

Prints a Markdown table (BENCHMARKS.md, "Capture on the real clips") and writes the raw figures to
``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar3d.capture import CaptureConfig, run_capture
from avatar3d.capture.geometry import rotation_angle_deg
from avatar3d.capture.pipeline import motion_breaks
from avatar3d.capture.tracking import build_canonical, fit_rigid

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CLIPS = ("talk_a", "talk_b", "talk_c", "talk_de", "talk_long_en")


def jitter_stats(R: np.ndarray, t: np.ndarray, breaks: np.ndarray | None = None) -> tuple[float, ...]:
    """(median, p95) rotation acceleration in degrees and (median, p95) translation acceleration in mm,
    skipping accelerations that span a motion break (cut). R: (T, 3, 3), t: (T, 3)."""
    if len(R) < 3:
        return (0.0,) * 4
    d = R[1:] @ np.swapaxes(R[:-1], -1, -2)
    acc_r = rotation_angle_deg(d[1:] @ np.swapaxes(d[:-1], -1, -2))
    acc_t = np.linalg.norm(t[2:] - 2 * t[1:-1] + t[:-2], axis=-1) * 1000.0
    keep = np.ones(len(acc_r), bool)
    if breaks is not None:
        keep = ~(breaks[1:-1] | breaks[2:])
    acc_r, acc_t = acc_r[keep], acc_t[keep]
    return (
        float(np.median(acc_r)),
        float(np.percentile(acc_r, 95)),
        float(np.median(acc_t)),
        float(np.percentile(acc_t, 95)),
    )


def unsmoothed_jitter(cs) -> tuple[float, ...]:
    """Refit the rigid poses from the stored detections with smoothing off (same focal)."""
    from safetensors.numpy import load_file

    tr = load_file(str(cs.root / "tracking.safetensors"))
    valid = tr["valid"].astype(bool)
    # Rebuild MediaPipe-like 3D points: 2D detections + head-space depth of the pose-free landmarks.
    lm3 = tr["landmarks3d"].astype(np.float64)
    Xc = np.einsum("tij,tnj->tni", tr["rotation"].astype(np.float64), lm3) + tr["translation"][:, None]
    z = (Xc[..., 2] - Xc[..., 2].mean(1, keepdims=True)) * cs.focal / Xc[..., 2].mean(1, keepdims=True)
    pts = np.concatenate([tr["landmarks2d"].astype(np.float64), z[..., None]], -1)
    fit = build_canonical(pts, valid)
    cfg = CaptureConfig(focal=cs.focal, smooth_rotation=0.0, smooth_translation=0.0)
    breaks = motion_breaks(pts[..., :2], valid)
    rig = fit_rigid(fit, pts[..., :2], valid, cs.width, cs.height, cfg, breaks=breaks)
    return jitter_stats(rig.rotation, rig.translation, breaks)


def face_crop_side(cs) -> float:
    """Side (stored pixels) of the evaluation's 512-px head crop: ``HEAD_CROP_SCALE`` × the median
    landmark extent, as :func:`avatar3d.eval.protocol.crop_boxes` cuts it."""
    from avatar3d.eval.protocol import HEAD_CROP_SCALE

    lm = np.asarray(cs.landmarks2d, np.float64)[np.asarray(cs.valid, bool)]
    extent = (lm.max(1) - lm.min(1)).max(1)
    return min(HEAD_CROP_SCALE * float(np.median(extent)), float(min(cs.width, cs.height)))


def bench_clip(name: str, out_root: Path, max_frames: int | None, overrides: dict | None = None) -> dict:
    video = DATA / f"{name}.mp4"
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = CaptureConfig(max_frames=max_frames, **(overrides or {}))
        cs = run_capture(video, out_root / name, cfg, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    meta = cs.transforms["avatar3d"]
    tm = meta["timings_s"]
    T = cs.n_frames
    core = sum(tm.get(k, 0) for k in ("landmarks", "segmentation", "feature tracks", "tracking"))
    crop = 512 / face_crop_side(cs)
    breaks = np.zeros(T, bool)
    breaks[meta["motion_breaks"]] = True
    R, t = cs.rotation.astype(np.float64), cs.translation.astype(np.float64)
    return {
        "clip": name,
        "frames": T,
        "size": f"{cs.width}x{cs.height}",
        "fps_src": meta["source_fps"],
        "valid": float(cs.valid.mean()),
        "wall_s": wall,
        "cpu_ms": 1000 * cpu / T,
        "fps_total": T / wall,
        "fps_core": T / max(core, 1e-9),
        "fps_landmarks": T / max(tm.get("landmarks", 0), 1e-9),
        "fps_seg": T / max(tm.get("segmentation", 0), 1e-9),
        "tracking_s": tm.get("tracking", 0.0),
        "err512": float(np.nanmedian(cs.reprojection_error)) * 512 / max(cs.width, cs.height),
        "err512_p95": float(np.nanpercentile(cs.reprojection_error, 95)) * 512 / max(cs.width, cs.height),
        "err_crop": float(np.nanmedian(cs.reprojection_error)) * crop,
        "err_crop_p95": float(np.nanpercentile(cs.reprojection_error, 95)) * crop,
        "focal_rel": cs.focal / max(cs.width, cs.height),
        "distance_m": float(np.median(t[:, 2])),
        "jitter": jitter_stats(R, t, breaks),
        "jitter_raw": unsmoothed_jitter(cs),
        "breaks": meta["motion_breaks"],
        "timings": tm,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", nargs="*", default=list(CLIPS))
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="keep the capture directories here")
    ap.add_argument(
        "--overlay", nargs="*", default=[], help="clips to write overlay videos for (needs --keep)"
    )
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="CaptureConfig overrides, e.g. feature_tracks=false (values parsed as YAML)",
    )
    a = ap.parse_args()
    from _common import config_overrides, write_results  # benchmarks/ is first on sys.path

    overrides = config_overrides(a.set)
    if not DATA.is_dir():
        sys.exit(f"{DATA} is absent: nothing to benchmark")
    os.environ.setdefault("AVATAR3D_QUIET", "1")
    tmp = None
    root = a.keep
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-capture-")
        root = Path(tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in a.clips:
        if not (DATA / f"{name}.mp4").is_file():
            print(f"skip {name}: absent")
            continue
        r = bench_clip(name, root, a.max_frames, overrides)
        rows.append(r)
        print(f"{name}: {r['frames']} frames in {r['wall_s']:.1f} s, timings {r['timings']}", flush=True)
        if name in a.overlay:
            from avatar3d.capture.overlay import write_overlay

            print("overlay:", write_overlay(root / name, root / f"{name}_overlay.mp4"))
    load = os.getloadavg()
    print(
        f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {load[0]:.1f}/{load[1]:.1f}, python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}\n"
    )
    print(
        "| clip | frames | stored | valid | total fps | CPU ms/frame | core fps (lmk+seg+flow+track) | landmarks fps "
        "| segmentation fps | tracking s | reproj. err. median / p95 (px @512 frame) "
        "| reproj. err. median / p95 (px @512 face crop) | focal / size "
        "| distance m | rot. jitter median / p95 (°) | trans. jitter median / p95 (mm) "
        "| unsmoothed rot. / trans. median |"
    )
    print("|" + "---|" * 17)
    for r in rows:
        j, jr = r["jitter"], r["jitter_raw"]
        print(
            f"| {r['clip']} | {r['frames']} | {r['size']} | {r['valid']:.0%} | {r['fps_total']:.1f} | {r['cpu_ms']:.0f} "
            f"| {r['fps_core']:.1f} | {r['fps_landmarks']:.1f} | {r['fps_seg']:.1f} | {r['tracking_s']:.1f} "
            f"| {r['err512']:.2f} / {r['err512_p95']:.2f} | {r['err_crop']:.2f} / {r['err_crop_p95']:.2f} "
            f"| {r['focal_rel']:.2f} | {r['distance_m']:.2f} "
            f"| {j[0]:.3f} / {j[1]:.3f} | {j[2]:.2f} / {j[3]:.2f} | {jr[0]:.3f} / {jr[2]:.2f} |"
        )
    write_results("bench_capture", {"overrides": overrides, "clips": rows})
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
