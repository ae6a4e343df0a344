"""View consistency: orbit sweeps with a fixed audio frame, depth-based reprojection error between
views, and (for the synthetic subject) error against ground-truth novel views.

* **Reprojection warp** (:func:`reproject`): every pixel of the target view is lifted to 3D with the
  target's rendered depth (expected camera-space z) and intrinsics, moved into the source camera with
  both extrinsics and sampled there (bilinear). A pixel counts as *seen in both* when its alpha is
  > 0.5 in the target, the sampled source alpha is > 0.5, it projects inside the source image, and the
  source's rendered depth there agrees with the point's depth in the source camera within
  ``depth_tol`` (relative): occluded and disoccluded pixels are excluded.
* **Flicker** (:func:`sweep_flicker`): mean absolute difference (RGB in [0, 1]) between consecutive
  views after warping one onto the other, over pixels seen in both, both directions averaged. A
  perfectly 3D-consistent, view-independent surface scores ~0 (interpolation error only).
* **Frontal consistency**: the frontal (0°) view warped into every other angle, same error.
* **Ground truth** (:func:`truth_sweep`): the synthetic subject rendered from the same physical
  viewpoints. The avatar's head space is mapped onto the truth's by a least-squares similarity
  (Umeyama) between landmark sets: the training capture's 478 canonical landmarks when the capture is
  given, else the avatar's own landmarks triangulated from three renders (rigid points only). The
  truth is posed at the capture's rest frame so its torso matches the avatar's body frame. Per angle:
  PSNR over the whole image and over the truth's head region (alpha of the head Gaussians > 0.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..audio import audio_energy, load_audio
from ..core.camera import Camera, stack_cameras
from ..core.constants import SAMPLE_RATE
from ..core.geometry import similarity_fit
from ..core.topology import RIGID_INDICES
from ..render.rasterize import rasterize
from ..train.data import rest_frame
from ._drive import Layer, audio_codes, features_for, render_layer
from .metrics import detect_landmarks, psnr, ssim, summarise

DEFAULT_ZOOM = 1.5  # orbit focal relative to the capture's (scaled to the output size): a head crop
DRIVE_PERCENTILE = 75  # the default driving frame: jaw opening / audio envelope at this percentile
SILENCE_S = 2.0  # seconds of silence that drive a sweep without audio
ALPHA_MIN = 0.5  # accumulated alpha above which a pixel is foreground (seen)
DEPTH_TOL = 0.01  # relative depth agreement for a reprojected pixel to count as the same surface
MIN_DEPTH = 1e-6  # camera-space depth (m) below which a point is behind the camera
DROP_ANGLE_DEG = 30.0  # psnr_drop_30: frontal PSNR minus the mean at ±this angle
DROP_ANGLE_SLACK_DEG = 1.0  # the sweep must reach within this of ±DROP_ANGLE_DEG
TRIANGULATION_YAWS = (-20.0, 0.0, 20.0)  # degrees: renders the avatar's own landmarks come from


# ------------------------------------------------------------------------------ reprojection
def backproject(depth: np.ndarray, camera: Camera) -> np.ndarray:
    """(H, W) camera-space depth -> (H, W, 3) world points (pixel centres at j + 0.5)."""
    H, W = depth.shape
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    K = camera.K
    x = (u - K[0, 2]) / K[0, 0] * depth
    y = (v - K[1, 2]) / K[1, 1] * depth
    pc = np.stack([x, y, depth], -1)  # (H, W, 3) camera space
    c2w = camera.camera_to_world
    return pc @ c2w[:3, :3].T + c2w[:3, 3]


def _sample(img: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear sample (H, W, C) at continuous pixel coords uv (..., 2) -> (..., C); 0 outside."""
    H, W = img.shape[:2]
    t = torch.as_tensor(np.ascontiguousarray(img), dtype=torch.float64).permute(2, 0, 1)[None]
    g = torch.as_tensor(uv, dtype=torch.float64).clone()
    g[..., 0] = g[..., 0] / W * 2 - 1
    g[..., 1] = g[..., 1] / H * 2 - 1
    out = F.grid_sample(t, g.reshape(1, -1, 1, 2), mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0, :, :, 0].T.reshape(uv.shape[:-1] + (img.shape[2],)).numpy()


def reproject(
    src_rgb: np.ndarray,
    src_depth: np.ndarray,
    src_alpha: np.ndarray,
    src_cam: Camera,
    dst_depth: np.ndarray,
    dst_alpha: np.ndarray,
    dst_cam: Camera,
    *,
    alpha_min: float = ALPHA_MIN,
    depth_tol: float = DEPTH_TOL,
) -> tuple[np.ndarray, np.ndarray]:
    """Warp the source view into the target view with the target's depth.

    src_rgb: (H, W, 3) float; src_depth, src_alpha, dst_depth, dst_alpha: (H, W).
    Returns (warped (H', W', 3) source colours at the target's pixels, valid (H', W') bool: seen in both).
    """
    X = backproject(dst_depth.astype(np.float64), dst_cam)  # (H', W', 3)
    w2c = src_cam.world_to_camera
    pc = X @ w2c[:3, :3].T + w2c[:3, 3]
    z = pc[..., 2]
    zs = np.where(z > MIN_DEPTH, z, 1.0)
    K = src_cam.K
    uv = np.stack([K[0, 0] * pc[..., 0] / zs + K[0, 2], K[1, 1] * pc[..., 1] / zs + K[1, 2]], -1)
    stack = np.concatenate([src_rgb, src_depth[..., None], src_alpha[..., None]], -1)
    s = _sample(stack, uv)  # (H', W', 5)
    H, W = src_depth.shape
    inside = (uv[..., 0] >= 0.5) & (uv[..., 0] <= W - 0.5) & (uv[..., 1] >= 0.5) & (uv[..., 1] <= H - 0.5)
    valid = (
        (dst_alpha > alpha_min)
        & (dst_depth > 0)
        & (z > MIN_DEPTH)
        & inside
        & (s[..., 4] > alpha_min)
        & (np.abs(s[..., 3] - z) < depth_tol * z)
    )
    return s[..., :3], valid


def warp_error(
    a_rgb, a_depth, a_alpha, a_cam: Camera, b_rgb, b_depth, b_alpha, b_cam: Camera, **kw
) -> tuple[float, float]:
    """Symmetric reprojection error between two rendered views -> (mean |diff| over pixels seen in
    both, fraction of the target's foreground seen in both). Images: (H, W, 3) float in [0, 1]."""
    errs, fracs = [], []
    for (s_rgb, s_d, s_a, s_c), (t_rgb, t_d, t_a, t_c) in (
        ((a_rgb, a_depth, a_alpha, a_cam), (b_rgb, b_depth, b_alpha, b_cam)),
        ((b_rgb, b_depth, b_alpha, b_cam), (a_rgb, a_depth, a_alpha, a_cam)),
    ):
        warped, valid = reproject(s_rgb, s_d, s_a, s_c, t_d, t_a, t_c, **kw)
        fg = max(int((t_a > kw.get("alpha_min", ALPHA_MIN)).sum()), 1)
        fracs.append(valid.sum() / fg)
        if valid.any():
            errs.append(float(np.abs(warped[valid] - t_rgb[valid]).mean()))
    return (float(np.mean(errs)) if errs else float("nan")), float(np.mean(fracs))


# ------------------------------------------------------------------------------ sweeps
@dataclass
class ViewSweep:
    """angles (V,) degrees along ``axis``; frames (V, H, W, 3) uint8; alphas/depths (V, H, W);
    cameras (V,); truth (V, H, W, 3) uint8 and truth_head (V, H, W) bool when compared."""

    axis: str
    angles: np.ndarray
    frames: np.ndarray
    alphas: np.ndarray
    depths: np.ndarray
    cameras: list[Camera]
    truth: np.ndarray | None = None
    truth_head: np.ndarray | None = None
    notes: dict = field(default_factory=dict)


def sweep_angles(n_views: int = 31, max_angle: float = 45.0) -> np.ndarray:
    """(n_views,) evenly spaced angles over ±max_angle degrees (0 included when n_views is odd)."""
    return np.linspace(-max_angle, max_angle, int(n_views))


def orbit_cameras(
    avatar,
    angles: np.ndarray,
    axis: str = "yaw",
    size: int = 512,
    zoom: float = DEFAULT_ZOOM,
    other: float = 0.0,
) -> list[Camera]:
    """Cameras orbiting the avatar's head origin at the capture's distance; ``other`` is the fixed
    pitch (axis yaw) or yaw (axis pitch) in degrees."""
    K = np.asarray(avatar.meta.K, float)
    dist = float(np.linalg.norm(np.asarray(avatar.meta.rest_viewmat)[:3, 3]))
    focal = K[0, 0] * size / max(avatar.meta.width, avatar.meta.height) * zoom
    return [
        Camera.orbit(
            a if axis == "yaw" else other,
            a if axis == "pitch" else other,
            distance=dist,
            width=size,
            height=size,
            focal=focal,
        )
        for a in angles
    ]


def render_sweep(
    avatar,
    cameras: list[Camera],
    code: torch.Tensor,
    angles: np.ndarray,
    axis: str = "yaw",
    blink: float = 0.0,
    background=(1.0, 1.0, 1.0),
) -> ViewSweep:
    """Render the avatar at its rest pose with one audio code (A,) from every camera."""
    layers: list[Layer] = [render_layer(avatar, code, blink, None, c) for c in cameras]
    bg = np.asarray(background, np.float32)
    return ViewSweep(
        axis,
        np.asarray(angles, float),
        np.stack([lay.over(bg) for lay in layers]),
        np.stack([lay.alpha for lay in layers]),
        np.stack([lay.depth for lay in layers]),
        list(cameras),
    )


def sweep_flicker(sw: ViewSweep, depth_tol: float = DEPTH_TOL) -> dict:
    """Consecutive-view reprojection error (flicker) and frontal-view reprojection error per angle."""
    f = sw.frames.astype(np.float64) / 255.0
    pairs, cover = [], []
    for i in range(len(sw.angles) - 1):
        e, c = warp_error(
            f[i],
            sw.depths[i],
            sw.alphas[i],
            sw.cameras[i],
            f[i + 1],
            sw.depths[i + 1],
            sw.alphas[i + 1],
            sw.cameras[i + 1],
            depth_tol=depth_tol,
        )
        pairs.append(e)
        cover.append(c)
    k0 = int(np.argmin(np.abs(sw.angles)))
    frontal = []
    for i in range(len(sw.angles)):
        if i == k0:
            frontal.append(0.0)
            continue
        warped, valid = reproject(
            f[k0],
            sw.depths[k0],
            sw.alphas[k0],
            sw.cameras[k0],
            sw.depths[i],
            sw.alphas[i],
            sw.cameras[i],
            depth_tol=depth_tol,
        )
        frontal.append(float(np.abs(warped[valid] - f[i][valid]).mean()) if valid.any() else float("nan"))
    return {
        "flicker_mae": _mean(pairs),
        "flicker_mae_per_pair": _list(pairs),
        "covisible_fraction": _mean(cover),
        "frontal_warp_mae_per_angle": _list(frontal),
        "frontal_warp_mae": _mean([v for i, v in enumerate(frontal) if i != k0]),
    }


def _mean(v) -> float | None:
    m = summarise(v)
    return None if m is None else round(m, 6)


def _list(v) -> list:
    return [None if not np.isfinite(x) else round(float(x), 6) for x in v]


# ------------------------------------------------------------------------------ ground truth
def _head_to_world(R: np.ndarray, t: np.ndarray, pivot: np.ndarray) -> np.ndarray:
    """(4, 4) of the synthetic subject's pose convention x_w = R (x - pivot) + pivot + t."""
    M = np.eye(4)
    M[:3, :3] = R
    M[:3, 3] = pivot - R @ pivot + t
    return M


def triangulate(uv: np.ndarray, cameras: list[Camera]) -> np.ndarray:
    """Linear (DLT) triangulation. uv: (V, N, 2) pixel coords (NaN = not seen) -> (N, 3) world points
    (NaN where fewer than two views see a point)."""
    P = np.stack([c.K @ c.world_to_camera[:3] for c in cameras])  # (V, 3, 4)
    out = np.full((uv.shape[1], 3), np.nan)
    for n in range(uv.shape[1]):
        rows = []
        for v in range(len(cameras)):
            u, w = uv[v, n]
            if np.isfinite(u) and np.isfinite(w):
                rows += [u * P[v, 2] - P[v, 0], w * P[v, 2] - P[v, 1]]
        if len(rows) >= 4:
            X = np.linalg.svd(np.array(rows))[2][-1]
            out[n] = X[:3] / X[3]
    return out


def avatar_landmarks(
    avatar, code: torch.Tensor, size: int = 512, yaws=TRIANGULATION_YAWS, zoom: float = DEFAULT_ZOOM
) -> np.ndarray:
    """The avatar's own 478 landmarks in its world: our landmarker on renders from ``yaws`` (rest pose,
    blink 0, audio code ``code``), triangulated -> (478, 3), NaN where unseen."""
    cams = orbit_cameras(avatar, np.asarray(yaws, float), "yaw", size, zoom)
    sw = render_sweep(avatar, cams, code, np.asarray(yaws, float))
    uv = np.stack([detect_landmarks([f])[0] for f in sw.frames])  # (V, 478, 2), each view on its own
    return triangulate(uv, cams)


def truth_setup(avatar, truth, capture=None, code: torch.Tensor | None = None) -> dict:
    """The avatar -> truth head-space similarity and the rest frame both are posed at.

    With the training ``capture`` (CaptureSet): a similarity from its canonical landmarks to the
    truth's (Umeyama over all 478), and its rest frame as the trainer chose it. Without it: the
    avatar's landmarks triangulated from three renders (:func:`avatar_landmarks`, audio ``code``)
    aligned onto the truth's rigid landmarks, and the truth frame whose head rotation (mapped through
    that similarity) is closest to the avatar's rest camera.
    """
    subj = truth.subject
    canon_t = np.asarray(subj.canonical_landmarks, float)
    if capture is not None:
        src, dst = np.asarray(capture.canonical_landmarks, float), canon_t
        how = "similarity of the training capture's canonical landmarks onto the truth's (Umeyama)"
    else:
        if code is None:
            raise ValueError("truth_setup needs the capture or an audio code to render the avatar")
        lm = avatar_landmarks(avatar, code)
        rig = np.array(RIGID_INDICES)
        ok = np.isfinite(lm[rig]).all(1)
        if ok.sum() < 10:
            raise ValueError("the avatar's renders show too few landmarks to align it with the truth")
        src, dst = lm[rig][ok], canon_t[rig][ok]
        how = "similarity of the avatar's triangulated rigid landmarks (3 renders) onto the truth's (Umeyama)"
    s, R, t = similarity_fit(src, dst)
    resid = np.linalg.norm(s * src @ R.T + t - dst, axis=1)
    if capture is not None:
        r = rest_frame(np.asarray(capture.rotation, float), np.asarray(capture.valid, bool))
    else:
        Rv = np.asarray(avatar.meta.rest_viewmat)[:3, :3]
        r = int(
            np.argmin(
                [np.linalg.norm(truth.head_pose_in_camera(i)[0] @ R - Rv) for i in range(truth.n_frames)]
            )
        )
    return {
        "scale": s,
        "R": R,
        "t": t,
        "rest_frame": r,
        "alignment": how,
        "alignment_rms_mm": round(float(np.sqrt((resid**2).mean()) * 1000), 3),
    }


def truth_sweep(
    avatar,
    truth,
    angles: np.ndarray,
    axis: str = "yaw",
    *,
    size: int = 512,
    audio_frame: int | None = None,
    capture=None,
    zoom: float = DEFAULT_ZOOM,
    other: float = 0.0,
) -> ViewSweep:
    """Render the avatar and the synthetic ground truth from the same physical orbit viewpoints.

    The orbit is defined in the truth's head space (around its landmark centroid, at the truth camera's
    distance at the rest frame, with its focal scaled by ``size / width × zoom``) and mapped into the
    avatar's world by :func:`truth_setup`. Audio: the truth clip's own audio at ``audio_frame``
    (default: the frame whose jaw opening is the clip's 75th percentile), blink 0 in both.
    """
    if audio_frame is None:
        jaw = truth.jaw_open
        audio_frame = int(np.argmin(np.abs(jaw - np.percentile(jaw, DRIVE_PERCENTILE))))
    f = int(audio_frame)
    wave16 = _at_sample_rate(truth.wave, truth.sr)
    feats = features_for(avatar, wave16, truth.fps, truth.n_frames)
    code = audio_codes(avatar, feats, np.array([f]))[0]
    setup = truth_setup(avatar, truth, capture, code)
    subj, r = truth.subject, setup["rest_frame"]
    _, tc = truth.head_pose_in_camera(r)
    focal = truth.camera.K[0, 0] * size / truth.camera.width * zoom
    H_r = _head_to_world(truth.head_R[r], truth.head_t[r], subj.neck_pivot)
    s, Rs, ts = setup["scale"], setup["R"], setup["t"]
    cams_truth, cams_av = [], []
    for a in angles:
        ch = Camera.orbit(
            a if axis == "yaw" else other,
            a if axis == "pitch" else other,
            distance=float(np.linalg.norm(tc)),
            width=size,
            height=size,
            focal=focal,
        )
        Wh = ch.world_to_camera  # truth head space -> camera
        cams_truth.append(Camera(ch.K, Wh @ np.linalg.inv(H_r), size, size))
        Wa = np.eye(4)
        Wa[:3, :3] = Wh[:3, :3] @ Rs
        Wa[:3, 3] = (Wh[:3, :3] @ ts + Wh[:3, 3]) / s
        cams_av.append(Camera(ch.K, Wa, size, size))
    bg = tuple(float(c) for c in truth.background)
    sw = render_sweep(avatar, cams_av, code, angles, axis, blink=0.0, background=bg)
    gt = subj.render(
        cams_truth, truth.jaw_open[f], 0.0, truth.head_R[r], truth.head_t[r], background=bg
    ).numpy()
    g = subj.gaussians(truth.jaw_open[f], 0.0, truth.head_R[r], truth.head_t[r])
    head = subj.head_weight >= 1.0
    vm, Ks = stack_cameras(cams_truth)
    with torch.no_grad():
        al = (
            rasterize(
                g["means"][head],
                g["quats"][head],
                g["scales"][head],
                g["opacities"][head],
                torch.ones(int(head.sum()), 1),
                vm,
                Ks,
                size,
                size,
            )
            .alphas[..., 0]
            .numpy()
        )
    sw.truth = (np.clip(gt, 0, 1) * 255 + 0.5).astype(np.uint8)
    sw.truth_head = al > ALPHA_MIN
    sw.notes = {k: v for k, v in setup.items() if k not in ("R", "t")}
    sw.notes.update(audio_frame=f, zoom=zoom, size=size)
    return sw


def _at_sample_rate(wave: np.ndarray, sr: int) -> np.ndarray:
    """(T,) mono at ``sr`` -> (T',) float32 at :data:`SAMPLE_RATE`."""
    return load_audio((np.asarray(wave, np.float32), int(sr)), sr=SAMPLE_RATE)


def truth_errors(sw: ViewSweep) -> dict:
    """Per-angle PSNR of the avatar against the ground truth (whole image and head region) and SSIM.

    ``psnr_drop_30`` is frontal PSNR minus the mean PSNR of the views nearest to ±30° (the field's
    "does the face hold together when the camera moves" figure); None when the sweep lacks them."""
    if sw.truth is None:
        return {}
    full = psnr(sw.frames, sw.truth)
    head = np.array(
        [
            psnr(sw.frames[i], sw.truth[i], mask=sw.truth_head[i])[0] if sw.truth_head[i].any() else np.nan
            for i in range(len(sw.angles))
        ]
    )
    ang = np.asarray(sw.angles, np.float64)
    drop = None
    reach = DROP_ANGLE_DEG - DROP_ANGLE_SLACK_DEG
    if len(ang) >= 3 and ang.min() <= -reach and ang.max() >= reach:
        i0 = int(np.argmin(np.abs(ang)))
        ip, im = int(np.argmin(np.abs(ang - DROP_ANGLE_DEG))), int(np.argmin(np.abs(ang + DROP_ANGLE_DEG)))
        drop = float(full[i0] - 0.5 * (full[ip] + full[im]))
    return {
        "psnr_per_angle": _list(full),
        "psnr_head_per_angle": _list(head),
        "ssim_per_angle": _list(ssim(sw.frames, sw.truth)),
        "psnr": _mean(full),
        "psnr_head": _mean(head),
        "psnr_drop_30": None if drop is None else round(drop, 4),
    }


def _audio_sweep(
    avatar, angles: np.ndarray, axis: str, size: int, audio, audio_frame: int | None, zoom: float
) -> ViewSweep:
    """:func:`render_sweep` on :func:`orbit_cameras` with the code of one frame of ``audio`` (wave,
    rate) (silence when None; default frame: the envelope's 75th percentile)."""
    fps = float(avatar.meta.fps)
    if audio is None:
        wave = np.zeros(int(SILENCE_S * SAMPLE_RATE), np.float32)
    else:
        wave = _at_sample_rate(*audio)
    n = max(1, math.floor(len(wave) / SAMPLE_RATE * fps))
    if audio_frame is None:
        env = audio_energy(wave, SAMPLE_RATE, fps, n)
        audio_frame = int(np.argmin(np.abs(env - np.percentile(env, DRIVE_PERCENTILE))))
    frame = np.array([min(int(audio_frame), n - 1)])
    code = audio_codes(avatar, features_for(avatar, wave, fps, n), frame)[0]
    sw = render_sweep(avatar, orbit_cameras(avatar, angles, axis, size, zoom), code, angles, axis)
    sw.notes = {"audio_frame": int(audio_frame), "zoom": zoom, "size": size}
    return sw


def view_consistency(
    avatar,
    *,
    n_views: int = 31,
    max_angle: float = 45.0,
    axis: str = "yaw",
    size: int = 512,
    audio: tuple[np.ndarray, int] | None = None,
    audio_frame: int | None = None,
    truth=None,
    capture=None,
    zoom: float = DEFAULT_ZOOM,
    return_sweep: bool = False,
):
    """Orbit sweep of ``n_views`` over ±``max_angle`` degrees along ``axis`` with one audio frame.

    audio: (wave, sample_rate) whose frame ``audio_frame`` drives the mouth (default: the frame at the
    75th percentile of the envelope; silence when no audio). truth: a :class:`SyntheticTruth` to compare
    against (its own audio is used then); capture: the avatar's training CaptureSet (for the head-space
    alignment). Returns the report dict (and the :class:`ViewSweep` with ``return_sweep``).
    """
    if axis not in ("yaw", "pitch"):
        raise ValueError(f"axis must be 'yaw' or 'pitch', got {axis!r}")
    angles = sweep_angles(n_views, max_angle)
    if truth is not None:
        sw = truth_sweep(
            avatar, truth, angles, axis, size=size, audio_frame=audio_frame, capture=capture, zoom=zoom
        )
    else:
        sw = _audio_sweep(avatar, angles, axis, size, audio, audio_frame, zoom)
    rep = {
        "axis": axis,
        "angles": _list(angles),
        **sweep_flicker(sw),
        **truth_errors(sw),
        "setup": sw.notes,
        "definition": "mean |RGB difference| in [0, 1] over pixels seen in both views after a depth-based "
        "reprojection warp (occlusion-tested); PSNR per angle against ground-truth views",
    }
    return (rep, sw) if return_sweep else rep


__all__ = [
    "ViewSweep",
    "avatar_landmarks",
    "backproject",
    "orbit_cameras",
    "render_sweep",
    "reproject",
    "sweep_angles",
    "sweep_flicker",
    "triangulate",
    "truth_errors",
    "truth_setup",
    "truth_sweep",
    "view_consistency",
    "warp_error",
]
