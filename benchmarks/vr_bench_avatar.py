"""The avatar and bake the delivery figures use: the synthetic subject fitted as the tests fit it
(6 s, 256 px, fast preset, 400 steps) and a K = 16 bake on 12 s of synthetic speech.

    python benchmarks/vr_bench_avatar.py OUT_DIR    # writes OUT_DIR/av and OUT_DIR/bake16.safetensors
"""

import sys
from pathlib import Path

from avatar3d import Avatar
from avatar3d.export.bake import fit_bake
from avatar3d.synthetic import make_talking_video
from avatar3d.synthetic.speech import synth_speech

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
make_talking_video(out / "subject.mp4", seconds=6.0, fps=25, size=256, seed=0)
av = Avatar.fit(out / "subject.mp4", preset="fast", workdir=out / "work", steps=400, progress=False, log=None)
av.save(out / "av")
waves = [synth_speech(4.0, 16000, seed=10 + i, voice=v) for i, v in enumerate(("default", "low", "high"))]
fit_bake(av, waves, k=16, n_probes=256, max_samples=240).save(out / "bake16.safetensors")
print("gaussians", av.model.n, "viseme channels", av.meta.n_visemes)
