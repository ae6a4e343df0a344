"""The capture's FLAME path against the open model on the synthetic subject's ground truth.

FLAME itself needs registration, so this builds a **synthetic FLAME file** with FLAME's exact keys
and layout (``v_template``, ``f``, ``shapedirs``, ``posedirs``, ``J_regressor``, ``weights``,
``kintree_table``, eyelid blendshapes, FLAME's frame: y up, z towards the viewer) over a generic
head of the right structure, plus a MediaPipe landmark embedding (:func:`make_synthetic_flame`):

- vertices: MediaPipe's 478-point face topology (the mean head), plus an eyeball (octahedron) behind
  each iris and a neck block, whose centroids the joint regressor returns;
- the mean head is the subject's rest landmarks moved by a random identity (``shapedirs @ beta0``,
  beta0 ~ N(0, 1)): the fit has to find the identity, it is not handed the subject;
- identity components: smooth polynomial displacement fields (3 mm RMS); expression components:
  localised brow / smile / pucker / cheek / lip patterns plus small smooth fields (1-2 mm);
- joints global, neck, jaw, eyes; the jaw hinge sits between the face-oval points at mouth height,
  and its skinning weights ramp from 0 above the mouth corners to 1 a centimetre and a half below
  (lower lip 1, upper lip 0) -- a generic rule, not the subject's rig; pose correctives on the jaw;
- the embedding covers lips, eyes, brows, face oval, nose ridge and irises (~150 points).

Then it renders :func:`avatar3d.synthetic.make_talking_video` and runs ``run_capture`` twice, with
``morphable="open"`` and with ``morphable="flame"`` (the synthetic file through ``flame_path``), and
compares each fit with the truth: landmark reprojection (px at 512, over each model's own landmarks
and over the landmarks both share), head rotation (the same three measures as
``bench_capture_synthetic.py``, with the model's neutral landmarks of the fitted identity defining
its head frame), and the correlation of each model's jaw opening with the truth's.

    python benchmarks/bench_capture_flame.py [--seconds 8] [--size 320] [--seed 0] [--keep DIR]

Prints a Markdown table (BENCHMARKS.md, "FLAME path against the open model") and writes the raw
figures to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avatar3d.synthetic.capture_truth import compare_face_fits as compare
from avatar3d.synthetic.flame_file import write_synthetic_flame


def run(seconds: float, size: int, seed: int, keep: Path | None = None) -> dict:
    from avatar3d.capture import CaptureConfig, run_capture
    from avatar3d.capture.face_model import load_fit
    from avatar3d.synthetic import make_talking_video

    work = keep or Path(tempfile.mkdtemp(prefix="bench_capflame_"))
    work.mkdir(parents=True, exist_ok=True)
    truth = make_talking_video(
        work / "synthetic.mp4", seconds=seconds, fps=25, size=size, seed=seed, head_motion=True
    )
    model_path, lmk_path = write_synthetic_flame(work / "flame", truth.subject.canonical_landmarks, seed=seed)
    out, fits, caps = {}, {}, {}
    for kind in ("open", "flame"):
        cfg = CaptureConfig(morphable=kind, flame_path=str(model_path), flame_landmarks=str(lmk_path))
        t0 = time.perf_counter()
        caps[kind] = run_capture(work / "synthetic.mp4", work / f"capture_{kind}", cfg, progress=False)
        out[f"{kind}_capture_s"] = time.perf_counter() - t0
        out[f"{kind}_fit_s"] = caps[kind].transforms["avatar3d"]["timings_s"]["morphable"]
        fits[kind] = load_fit(work / f"capture_{kind}")
    out.update(compare(fits, caps, truth))
    return out


def table(m: dict) -> str:
    rows = [
        ("landmarks fitted", "n_landmarks", "{:.0f}"),
        ("reprojection, own landmarks (median px @512)", "reproj_px512", "{:.2f}"),
        ("reprojection, shared landmarks (median px @512)", "reproj_common_px512", "{:.2f}"),
        ("head rotation, landmark-aligned (median °)", "rotation_deg", "{:.2f}"),
        ("head rotation, pose-fitted offset (median °)", "rotation_deg_posefit", "{:.2f}"),
        ("head rotation relative to frame 0 (median °)", "rotation_deg_rel0", "{:.2f}"),
        ("jaw opening correlation with truth", "jaw_corr", "{:.3f}"),
        ("model fit time (s)", "fit_s", "{:.1f}"),
    ]
    out = ["| figure | open model | FLAME (synthetic file) |", "|---|---|---|"]
    for name, key, fmt in rows:
        out.append(f"| {name} | {fmt.format(m['open_' + key])} | {fmt.format(m['flame_' + key])} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None)
    a = ap.parse_args()
    import torch
    from _common import write_results  # benchmarks/ is first on sys.path

    torch.set_num_threads(1)
    m = run(a.seconds, a.size, a.seed, a.keep)
    print(f"synthetic clip: {a.seconds:g} s, 25 fps, {a.size} px, seed {a.seed}, head_motion=True\n")
    print(table(m))
    print("\ndiagnostics:")
    for k, v in m.items():
        print(f"  {k}: {v:.5g}" if isinstance(v, float) else f"  {k}: {v}")
    write_results("bench_capture_flame", {"args": vars(a), "metrics": m})


if __name__ == "__main__":
    main()
