"""Peak memory of `avatar3d render` and of the viewer's drive against the audio's length.

Each measurement runs in a fresh process (so the peak resident set is that run's alone):

* render: ``avatar3d render AVATAR --audio speech.wav -o out.mp4 --size 512x512`` for 10 s, 60 s
  and 10 min of speech (frames are encoded as they are rendered; features are computed in chunks);
* view: the viewer's per-frame drive (:func:`avatar3d.viewer.frames.make_drive`) for 60 s and 1 h.

    python benchmarks/bench_render_memory.py --avatar DIR [--durations 10 60 600] [--view-durations 60 3600]
        [--size 512]

The speech is the synthetic subject's formant speech (``avatar3d.synthetic.synth_speech``), looped to
length. Prints a Markdown table with the ratio of each peak to the 60 s one and writes JSON to
benchmarks/results/render_memory.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

_RENDER = """
import resource, sys
from avatar3d.cli import main
code = main(sys.argv[1:])
print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "CODE", code)
"""

_VIEW = """
import resource, sys
from avatar3d import Avatar
from avatar3d.viewer.frames import make_drive
av = Avatar.load(sys.argv[1])
d = make_drive(av, sys.argv[2])
print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "CODE", d.n_frames)
"""


def _speech(path: Path, seconds: float) -> Path:
    from avatar3d.io.media import write_audio
    from avatar3d.synthetic import synth_speech

    base = synth_speech(20.0, sr=16000, seed=3, voice="low")
    reps = int(np.ceil(seconds / 20.0))
    wave = np.tile(base, reps)[: int(seconds * 16000)]
    return write_audio(path, wave, 16000)


def _run(script: str, args: list[str]) -> tuple[float, float]:
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=False)
    line = [x for x in out.stdout.splitlines() if x.startswith("PEAK_KB")]
    if not line:
        raise SystemExit(f"run failed: {out.stderr.strip().splitlines()[-1:]}")
    return int(line[-1].split()[1]) / 1024.0, time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--avatar", required=True)
    ap.add_argument("--durations", type=float, nargs="+", default=[10.0, 60.0, 600.0])
    ap.add_argument("--view-durations", type=float, nargs="+", default=[60.0, 3600.0])
    ap.add_argument("--size", type=int, default=512)
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for s in a.durations:
            wav = _speech(tmp / f"speech_{int(s)}.wav", s)
            peak, secs = _run(
                _RENDER,
                [
                    "render",
                    a.avatar,
                    "--audio",
                    str(wav),
                    "-o",
                    str(tmp / f"o{int(s)}.mp4"),
                    "--size",
                    f"{a.size}x{a.size}",
                    "--overwrite",
                ],
            )
            rows.append(
                {"what": "render", "seconds_of_audio": s, "peak_mb": round(peak, 1), "wall_s": round(secs, 1)}
            )
            print(rows[-1], flush=True)
        for s in a.view_durations:
            wav = _speech(tmp / f"view_{int(s)}.wav", s)
            peak, secs = _run(_VIEW, [a.avatar, str(wav)])
            rows.append(
                {
                    "what": "view drive",
                    "seconds_of_audio": s,
                    "peak_mb": round(peak, 1),
                    "wall_s": round(secs, 1),
                }
            )
            print(rows[-1], flush=True)
    ref = {r["what"]: r["peak_mb"] for r in rows if r["seconds_of_audio"] == 60.0}
    print("\n| what | audio | peak RSS (MB) | ratio to 60 s | wall (s) |\n|---|---|---|---|---|")
    for r in rows:
        ratio = r["peak_mb"] / ref[r["what"]] if r["what"] in ref else float("nan")
        r["ratio_to_60s"] = round(ratio, 3)
        print(
            f"| {r['what']} | {r['seconds_of_audio']:g} s | {r['peak_mb']:.0f} | {ratio:.2f} | {r['wall_s']:.0f} |"
        )
    out = ROOT / "benchmarks" / "results" / "render_memory.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "avatar": a.avatar,
                "size": a.size,
                "rows": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
