"""Fingerprint seeded outputs of models/synthetic/train/render; write an npz to argv[1].

Run once on the old code and once on the new, then compare with compare.py.
The capture directory is made once (by the old code) in $FP_DIR/cap (default /tmp/modelsynth_fp) and reused.
"""

import os
import sys
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
OUT = {}
HERE = Path(os.environ.get("FP_DIR", "/tmp/modelsynth_fp"))
HERE.mkdir(parents=True, exist_ok=True)


def put(prefix, obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            put(f"{prefix}.{k}", v)
    elif isinstance(obj, (list, tuple)) and obj and not np.isscalar(obj[0]):
        for k, v in enumerate(obj):
            put(f"{prefix}.{k}", v)
    elif isinstance(obj, torch.Tensor):
        OUT[prefix] = obj.detach().cpu().numpy()
    elif obj is None:
        return
    else:
        try:
            OUT[prefix] = np.asarray(obj)
        except Exception:
            OUT[prefix] = np.asarray(str(obj))


# --- synthetic subject + face rig
from avatar3d.synthetic._face import build_face_rig, scan_photo  # noqa: E402

rig = build_face_rig(scan_photo())
put("rig", vars(rig))

from avatar3d.synthetic.subject import SyntheticSubject  # noqa: E402

subj = SyntheticSubject(seed=3, n_gaussians=3000)
for k in (
    "head_weight",
    "labels",
    "part",
    "_colors",
    "_m_tri",
    "_m_bary",
    "_m_sigma",
    "_f_means",
    "_f_normals",
    "_f_sigma",
    "_f_jaw",
    "n",
    "skin_color",
    "hair_color",
    "suit_color",
):
    put(f"subj.{k}", getattr(subj, k))
from avatar3d.synthetic._geometry import euler_matrix  # noqa: E402

R = euler_matrix(0.3, -0.2, 0.1)
put("euler", R)
g, nrm = subj.posed(0.6, 0.3, R, np.array([0.01, -0.02, 0.005]))
put("posed", g)
put("posed_normals", nrm)
cam = subj.portrait_camera(64)
put("render", subj.render(cam, 0.5, 0.2, R, np.zeros(3), backend="torch"))
put("landmarks", subj.landmarks(0.4, 0.5, R, np.array([0.0, 0.01, 0.0])))

# --- flame file
from avatar3d.synthetic.flame_file import make_synthetic_flame  # noqa: E402

arrays, emb = make_synthetic_flame(subj.canonical_landmarks, seed=1)
put("flame", arrays)
put("flame_emb", emb)

# --- initial gaussians
from avatar3d.models.init import InitInputs, initial_gaussians  # noqa: E402

subj0 = SyntheticSubject(seed=0)
cam = subj0.portrait_camera(96)
black = subj0.render(cam, background=(0.0, 0.0, 0.0), backend="torch")[0].numpy()
white = subj0.render(cam, background=(1.0, 1.0, 1.0), backend="torch")[0].numpy()
alpha = 1.0 - (white - black).mean(-1)
inp = InitInputs(
    np.asarray(subj0.canonical_landmarks, float),
    black,
    (alpha > 0.5).astype(np.float32),
    cam.world_to_camera,
    cam.K,
)
put("init", initial_gaussians(inp, 3000, 200, 800, seed=5))
put("init0", initial_gaussians(inp, 3000, 200, 0, seed=1))

# --- talking video + truth
from avatar3d.synthetic import make_talking_video  # noqa: E402

vid = HERE / "video.mp4"
truth = make_talking_video(vid, seconds=2.0, fps=25, size=96, seed=2, backend="torch")
put("truth", {k: getattr(truth, k) for k in ("head_R", "head_t", "jaw_open", "blink", "wave", "sr", "fps")})
put("truth.meta", {k: v for k, v in truth.meta.items() if k != "render_seconds"})
from avatar3d.io.media import iter_frames  # noqa: E402

put("video_frames", np.stack([np.asarray(f) for f in iter_frames(vid)]))

# --- render reference with grads
from avatar3d.render._torch_impl import rasterize_torch  # noqa: E402

gen = torch.Generator().manual_seed(0)
N = 500
means = (torch.randn(N, 3, generator=gen) * 0.3 + torch.tensor([0, 0, 2.0])).requires_grad_()
quats = torch.randn(N, 4, generator=gen).requires_grad_()
scales = (torch.rand(N, 3, generator=gen) * 0.05 + 0.01).requires_grad_()
ops = torch.rand(N, generator=gen).requires_grad_()
cols = torch.rand(N, 3, generator=gen).requires_grad_()
vm = torch.eye(4).repeat(2, 1, 1)
vm[1, 0, 3] = 0.1
K = torch.tensor([[60.0, 0, 40], [0, 60, 30], [0, 0, 1]]).repeat(2, 1, 1)
out = rasterize_torch(means, quats, scales, ops, cols, vm, K, 80, 60, torch.rand(2, 3, generator=gen))
(out.colors.sum() + out.alphas.sum() * 0.3 + out.depths.sum() * 0.1).backward()
put("raster", vars(out))
put(
    "raster_grad",
    {"means": means.grad, "quats": quats.grad, "scales": scales.grad, "ops": ops.grad, "cols": cols.grad},
)
out2 = rasterize_torch(means, quats, scales, ops, cols, vm[:1], K[:1], 80, 60, None)
put("raster_nobg", vars(out2))

# --- capture (made once by the old code) -> train data -> a short train
from avatar3d.io.captureset import CaptureSet  # noqa: E402

capdir = HERE / "cap"
if not capdir.is_dir():
    from avatar3d.capture import run_capture

    run_capture(HERE / "video.mp4", capdir, progress=False)
cs = CaptureSet.load(capdir)
from avatar3d.train.data import TrainData  # noqa: E402

td = TrainData.from_capture(cs, 64, 0.2, None, visemes=True)
put("td", {k: v for k, v in vars(td).items()})

from avatar3d.config import AvatarConfig  # noqa: E402
from avatar3d.train.trainer import train  # noqa: E402

cfg = AvatarConfig.preset_config("fast")
cfg.train.steps = 12
cfg.train.resolution = 64
cfg.train.audio_pretrain_steps = 20
cfg.train.densify_every = 5
cfg.train.densify_until = 0.9
cfg.model.n_head, cfg.model.n_mouth, cfg.model.n_torso = 1500, 100, 300
cfg.model.visemes = True
work = HERE / ("work_" + os.path.basename(sys.argv[1]))
import shutil  # noqa: E402

shutil.rmtree(work, ignore_errors=True)
res = train(cs, cfg, workdir=work, log=lambda *a: None)
put("train.state", res.model.state_dict())
put("train.history", [{k: v for k, v in h.items() if k != "seconds"} for h in res.history])
put("train.heldout", res.heldout)
put("train.audio", res.audio)

np.savez(sys.argv[1], **OUT)
print("wrote", len(OUT), "arrays")
