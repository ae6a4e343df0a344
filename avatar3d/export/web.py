"""``avatar3d export --web``: a self-contained static folder that plays the talking avatar in a
browser or a VR headset (WebXR), rendered on the viewer's GPU from the linear bake.

Folder contents: ``index.html``; ``avatar3d-web.js`` (three.js + Spark + the player, built from
``web/src/app.js``, see ``web/README.md``); ``avatar.ply`` (the bake's canonical Gaussians, the
moving ones first, standard 3DGS layout); ``basis.bin`` (the K bases as half-float RGBA texels);
``weights.bin`` ((T, K) float32, one row per video frame); ``audio.wav``; ``scene.json`` (sizes,
frame rate, the capture camera); ``bake.safetensors`` (the bake, for Python) and the marker file
``.avatar3d-output``. It needs no network: serve it with any static file server.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch

from ..audio import load_audio
from ..core.constants import SAMPLE_RATE
from ..drive.motion import blinks
from ..errors import Avatar3DError
from ..io.atomic import atomic_dir
from ..io.media import write_audio
from ..io.outputs import check_output
from ..synthetic.speech import synth_speech
from .bake import BakedAvatar, LinearBake, fit_bake

WEB_ASSETS = Path(__file__).with_name("web")
BUNDLE = "avatar3d-web.js"
TEXTURE_WIDTH = 2048  # texels per row of the basis texture
SH_C0 = 0.28209479177387814  # degree-0 spherical harmonic: colour = 0.5 + SH_C0 * f_dc
IDLE_SECONDS = 5.0  # length of the idle (silent, blinking) clip exported without audio
BAKE_FIT_SAMPLES = 500  # frames a bake for export is fitted on


def check_output_dir(path: Path, overwrite: bool) -> None:
    """Refuse an existing output unless ``overwrite`` and it carries our marker file."""
    check_output(path, kind="dir", overwrite=overwrite)


def _ply_bytes(
    means: np.ndarray, quats: np.ndarray, scales: np.ndarray, opac: np.ndarray, colors: np.ndarray
) -> bytes:
    """A compact 3DGS PLY (degree-0 colour only): x y z f_dc_0..2 opacity scale_0..2 rot_0..3 (wxyz)."""
    fields = [
        "x",
        "y",
        "z",
        "f_dc_0",
        "f_dc_1",
        "f_dc_2",
        "opacity",
        "scale_0",
        "scale_1",
        "scale_2",
        "rot_0",
        "rot_1",
        "rot_2",
        "rot_3",
    ]
    op = np.clip(opac.astype(np.float64), 1e-6, 1 - 1e-6)
    q = quats / np.linalg.norm(quats, axis=1, keepdims=True)
    data = np.concatenate(
        [means, (colors - 0.5) / SH_C0, np.log(op / (1 - op))[:, None], np.log(np.maximum(scales, 1e-10)), q],
        axis=1,
    ).astype("<f4")
    head = f"ply\nformat binary_little_endian 1.0\nelement vertex {len(data)}\n"
    head += "".join(f"property float {f}\n" for f in fields) + "end_header\n"
    return head.encode("ascii") + data.tobytes()


def _basis_texels(bake: LinearBake, rotation: bool) -> tuple[np.ndarray, int, int, int]:
    """The bases as RGBA half-float texels: per moving Gaussian i, per basis k, texel
    (i*K + k)*S + j holds [dpos, dlogscale_x], [dquat xyzw / |q|], [dlogscale_yz, 0, 0] (S = 3) or
    [dpos, 0] (S = 1). Returns (H*W*4 float16 array, S, W, H)."""
    b = bake.basis.permute(1, 0, 2).numpy()  # (Nm, K, 10)
    nm, k, _ = b.shape
    s = 3 if rotation else 1
    tex = np.zeros((nm, k, s, 4), np.float32)
    tex[:, :, 0, :3] = b[:, :, :3]
    if rotation:
        qn = bake.canonical["quats"][bake.moving].norm(dim=1).numpy()[:, None, None]
        tex[:, :, 0, 3] = b[:, :, 7]
        tex[:, :, 1] = b[:, :, [4, 5, 6, 3]] / qn[..., 0][..., None]  # wxyz -> xyzw, per unit quaternion
        tex[:, :, 2, :2] = b[:, :, 8:10]
    flat = tex.reshape(-1, 4)
    h = max(1, math.ceil(len(flat) / TEXTURE_WIDTH))
    out = np.zeros((h * TEXTURE_WIDTH, 4), np.float16)
    out[: len(flat)] = flat
    return out.reshape(-1), s, TEXTURE_WIDTH, h


def _index_html(title: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><link rel="icon" href="data:,">
<style>html,body{{margin:0;height:100%;background:#111;color:#ddd;font:14px sans-serif;overflow:hidden}}
#view{{position:fixed;inset:0}}#ui{{position:fixed;left:8px;bottom:8px;display:flex;gap:8px;align-items:center}}
button{{font-size:16px;padding:6px 14px}}</style></head>
<body><div id="view"></div>
<div id="ui"><audio id="audio" controls preload="auto"></audio><button id="vr">Enter VR</button><span id="status">loading…</span></div>
<script type="module" src="./{BUNDLE}"></script>
</body></html>
"""


def export_web(
    avatar,
    out_dir: str | Path,
    audio=None,
    *,
    k: int = 16,
    bake: LinearBake | None = None,
    rotation: bool = True,
    background=(0.0, 0.0, 0.0),
    blink: str = "auto",
    overwrite: bool = False,
    log=print,
) -> Path:
    """Write the web player folder for ``avatar`` speaking ``audio`` (a path or (wave, sr); None:
    five seconds of idle, blinking face). ``bake``: a fitted bake to reuse (default: fit one with
    ``k`` bases on the training clip's audio, ``audio`` and synthetic speech)."""
    out = Path(out_dir)
    check_output_dir(out, overwrite)
    if not (WEB_ASSETS / BUNDLE).is_file():
        raise Avatar3DError(f"the web player bundle {WEB_ASSETS / BUNDLE} is missing from this installation")
    wave = (
        np.zeros(int(IDLE_SECONDS * SAMPLE_RATE), np.float32)
        if audio is None
        else load_audio(audio, sr=SAMPLE_RATE)
    )
    fps = float(avatar.meta.fps)
    n = int(math.floor(len(wave) / SAMPLE_RATE * fps))
    if n < 1:
        raise Avatar3DError("the audio is too short for one frame")
    if bake is None:
        log("fitting the linear bake…")
        bake = fit_for_export(avatar, wave, k)
    player = BakedAvatar(avatar, bake)
    blink_seq = blinks(blink, n, fps, avatar.track["blink"])
    weights = player.weights(wave, blink_seq)[:n].astype(np.float32)
    order = torch.cat([bake.moving, torch.nonzero(~torch.isin(torch.arange(bake.n), bake.moving)).squeeze(1)])
    c = {key: v[order].numpy() for key, v in bake.canonical.items()}
    texels, s, tw, th = _basis_texels(bake, rotation)
    cam = avatar.rest_camera
    scene = {
        "version": 1,
        "fps": fps,
        "frames": n,
        "k": bake.k,
        "n_splats": bake.n,
        "n_moving": len(bake.moving),
        "texels_per_basis": s,
        "basis_width": tw,
        "basis_height": th,
        "splats": "avatar.ply",
        "basis": "basis.bin",
        "weights": "weights.bin",
        "audio": "audio.wav",
        "capture": cam.to_dict(),
        "target": [float(x) for x in c["means"][: len(bake.moving)].mean(0)],
        "background": [float(x) for x in background],
        "blink": blink,
        "pose": "static",
    }
    scales = avatar.splat_scales(c["means"], np.exp(c["log_scales"])).numpy()
    with atomic_dir(out, kind="web") as tmp:  # writes the output marker
        (tmp / "avatar.ply").write_bytes(
            _ply_bytes(c["means"], c["quats"], scales, c["opacities"], c["colors"])
        )
        (tmp / "basis.bin").write_bytes(texels.tobytes())
        (tmp / "weights.bin").write_bytes(weights.tobytes())
        write_audio(tmp / "audio.wav", wave[: int(round(n / fps * SAMPLE_RATE))], SAMPLE_RATE)
        (tmp / "scene.json").write_text(json.dumps(scene, indent=1))
        (tmp / "index.html").write_text(_index_html("avatar3d"))
        shutil.copyfile(WEB_ASSETS / BUNDLE, tmp / BUNDLE)
        bake.save(tmp / "bake.safetensors")
    return out


def training_waves(avatar, seconds: float = 20.0) -> list[np.ndarray]:
    """Audio to fit a bake on: the training clip's (when its file is still there) and synthetic
    speech in three voices (``seconds`` in all)."""
    waves = []
    src = avatar.meta.source
    if src and Path(src).is_file():
        try:
            waves.append(load_audio(src, sr=SAMPLE_RATE))
        except Avatar3DError:  # a capture directory, or the file changed: synthetic speech only
            pass
    for i, voice in enumerate(("default", "low", "high")):
        waves.append(synth_speech(seconds / 3, SAMPLE_RATE, seed=100 + i, voice=voice))
    return waves


def fit_for_export(avatar, wave: np.ndarray, k: int) -> LinearBake:
    """Fit a bake on :func:`training_waves` plus the exported audio itself."""
    return fit_bake(avatar, training_waves(avatar) + [wave], k=k, max_samples=BAKE_FIT_SAMPLES)
