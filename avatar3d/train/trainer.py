"""Per-subject training of a Gaussian avatar on a CaptureSet.

Staged schedule (TalkingGaussian / GaussianTalker): static appearance first (deformation off), then
the audio deformation alone (canonical Gaussians frozen), then everything jointly. Losses: L1 +
D-SSIM, extra L1 weight in the mouth box, alpha vs person mask, L1 on offsets, region-attention
sparsity (audio attention above the nose, eye attention below it), and — when ``train.lpips_weights``
names a local weights file — LPIPS on a lower-face crop from the joint stage on. Checkpoints
(:mod:`avatar3d.train.checkpoint`: model, optimiser, RNG and densification state) are written right
after the audio pre-training, every ``train.checkpoint_every`` steps, every ``train.checkpoint_seconds``
of wall time and at the end; a killed run resumes from the last one on the same trajectory.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..config import AvatarConfig
from ..core.lpips import load_lpips
from ..core.topology import NOSE_TIP
from ..errors import Avatar3DError, ConfigError
from ..models.gaussian_avatar import PARAM_NAMES, GaussianAvatar
from ..models.init import InitInputs, initial_gaussians
from ..models.viseme_map import fit_viseme_map
from ..workdir import capture_digest
from .audio_aug import audio_branch_parameters, audio_targets_loss, heldout_mouth_correlation, pretrain_audio
from .checkpoint import NAME as CHECKPOINT_NAME
from .checkpoint import StageCheckpoint, fit_identity, load_checkpoint, save_checkpoint
from .data import TrainData
from .losses import dssim, psnr, ssim


@dataclass
class TrainResult:
    model: GaussianAvatar
    data: TrainData
    history: list[dict] = field(default_factory=list)
    heldout: dict = field(default_factory=dict)
    seconds: float = 0.0
    audio: dict = field(default_factory=dict)  # audio pre-training summary


def _gauss_optimizer(model: GaussianAvatar, cfg, extent: float) -> torch.optim.Optimizer:
    t = cfg.train
    return torch.optim.Adam(
        [
            {"params": [model.means], "lr": t.lr_means * extent, "name": "means"},
            {"params": [model.log_scales], "lr": t.lr_scales, "name": "log_scales"},
            {"params": [model.quats], "lr": t.lr_quats, "name": "quats"},
            {"params": [model.opacity_logits], "lr": t.lr_opacity, "name": "opacity_logits"},
            {"params": [model.color_logits], "lr": t.lr_colors, "name": "color_logits"},
        ],
        eps=1e-15,
    )


def _net_optimizer(model: GaussianAvatar, cfg) -> torch.optim.Optimizer:
    """Adam over the trainable networks; the hash-grid tables (``*.encoding.*``) get their own, larger rate."""
    t = cfg.train
    grid, net = [], []
    for n, p in model.named_parameters():
        if n in PARAM_NAMES or not p.requires_grad:
            continue
        (grid if ".encoding." in n else net).append(p)
    groups = [{"params": net, "lr": t.lr_net, "name": "net"}]
    if grid:
        groups.append({"params": grid, "lr": t.lr_grid, "name": "grid"})
    return torch.optim.Adam(groups)


def lpips_term(cfg: AvatarConfig):
    """The LPIPS network of ``train.lpips_weights`` (frozen), None when no file is set.

    Raises a one-line ConfigError when the file is missing or unusable, so callers can check it
    before any capture or training work (the file is read locally; nothing is downloaded).
    """
    path = cfg.train.lpips_weights
    if not path:
        return None
    net = load_lpips(path)
    if isinstance(net, str):
        raise ConfigError(f"train.lpips_weights: {net.removeprefix('not computed: ')}")
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def lpips_crop(data: TrainData, i: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the square lower-face crop of frame i (mouth, cheeks, chin, nose) where
    the LPIPS term applies: side twice the mouth box's width (at least 64 px), clamped to the image."""
    x0, y0, x1, y1 = data.mouth_boxes[i].tolist()
    H, W = data.height, data.width
    side = int(min(min(H, W), max(64.0, 2.0 * (x1 - x0))))
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    left = round(min(max(cx - 0.5 * side, 0), W - side))
    top = round(min(max(cy - 0.55 * side, 0), H - side))
    return top, top + side, left, left + side


def lpips_loss(net, pred: torch.Tensor, gt: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """LPIPS between the ``box`` (y0, y1, x0, x1) crops of (H, W, 3) images in [0, 1]; a scalar."""
    y0, y1, x0, x1 = box
    a = pred.clamp(0, 1)[y0:y1, x0:x1].permute(2, 0, 1)[None]
    b = gt[y0:y1, x0:x1].permute(2, 0, 1)[None]
    return net(a, b)[0]


def build_model(cfg: AvatarConfig, cs, data: TrainData) -> GaussianAvatar:
    r = data.rest
    img = data.image(r).numpy()
    inp = InitInputs(
        canonical=np.asarray(cs.canonical_landmarks, np.float64),
        image=img,
        mask=data.masks[r].numpy().astype(np.float32) / 255.0,
        viewmat=data.viewmats[r].double().numpy(),
        K=data.K.double().numpy(),
    )
    m = cfg.model
    init = initial_gaussians(inp, m.n_head, m.n_mouth, m.n_torso, seed=cfg.train.seed)
    expression = {
        "landmarks": torch.as_tensor(np.asarray(cs.canonical_landmarks), dtype=torch.float32),
        "basis": torch.as_tensor(np.asarray(cs.expression_basis), dtype=torch.float32),
        "mean": torch.as_tensor(np.asarray(cs.expression_mean), dtype=torch.float32),
    }
    nv = data.n_visemes
    return GaussianAvatar.from_init(
        m, init, n_mels=data.features.shape[-1] - nv, expression=expression, n_visemes=nv
    )


def fit_visemes(model: GaussianAvatar, cs, data: TrainData, cfg: AvatarConfig) -> dict:
    """Fit the subject's viseme -> expression map on the training frames (never the held-out ones)
    into ``model`` (its ``viseme_matrix`` and the audio code's viseme lag); returns the fit's summary."""
    tr = data.train_idx
    valid = np.asarray(getattr(cs, "valid", np.ones(cs.n_frames, bool)), bool)[tr]
    fit = fit_viseme_map(
        data.visemes[tr].numpy(),
        data.expression[tr].numpy(),
        np.asarray(cs.landmarks3d, np.float64)[tr],
        prior_strength=cfg.train.viseme_prior,
        calibrate=cfg.train.viseme_gain,
        valid=valid,
    )
    with torch.no_grad():
        model.viseme_matrix.copy_(torch.as_tensor(fit.matrix, dtype=torch.float32))
        if fit.floor is not None:
            model.viseme_floor.copy_(torch.as_tensor(fit.floor, dtype=torch.float32))
        model.audio.viseme_lag.fill_(int(fit.lag))
    return fit.stats


def frame_loss(
    model: GaussianAvatar,
    data: TrainData,
    i: int,
    cfg: AvatarConfig,
    nose_y: float,
    deform: bool,
    teacher: bool = True,
):
    """Loss and rendered image of training frame i (``teacher``: drive it with the tracked expression)."""
    t = cfg.train
    audio = model.audio_code(data.features, i)[0]
    eye = data.blink[i : i + 1]
    expr = data.expression[i] if teacher else None
    gs = model.posed(audio, eye, data.head_poses[i], deform=deform, expression=expr)
    out = model.render(gs, data.rest_viewmat[None], data.K[None], data.width, data.height, data.plate[None])
    pred = out.colors[0]
    gt = data.image(i)
    wmap = data.lip_weight_map(i, t.lip_weight)
    l1 = ((pred - gt).abs().mean(-1) * wmap).sum() / wmap.sum()
    loss = (1 - t.lambda_dssim) * l1 + t.lambda_dssim * dssim(pred, gt)
    if t.lambda_mask > 0:
        mask = data.masks[i].float() / 255.0
        loss = loss + t.lambda_mask * (out.alphas[0, ..., 0] - mask).abs().mean()
    if "d_pos" in gs:
        loss = loss + t.lambda_offset * gs["d_pos"].abs().sum(-1).mean() / model.cfg.max_offset
        hi = gs["head_index"]
        upper = model.means[hi, 1].detach() < nose_y
        a, e = gs["audio_attention"], gs["eye_attention"]
        reg = 0.0
        if upper.any():
            reg = reg + a[upper].mean()
        if (~upper).any():
            reg = reg + e[~upper].mean()
        loss = loss + 1e-3 * reg
    return loss, pred


@torch.no_grad()
def densify_and_prune(model: GaussianAvatar, grad_acc: torch.Tensor, count: int, cfg: AvatarConfig) -> int:
    """Clone the Gaussians with the largest accumulated position gradient; prune transparent ones."""
    t, m = cfg.train, cfg.model
    keep = torch.sigmoid(model.opacity_logits) > t.prune_opacity
    n_keep = int(keep.sum())
    room = max(0, m.max_gaussians - n_keep)
    k = min(room, int(t.densify_fraction * n_keep))
    score = torch.where(keep, grad_acc / max(count, 1), torch.full_like(grad_acc, -1))
    clone = torch.topk(score, k).indices if k > 0 else score.new_zeros(0, dtype=torch.long)
    tensors = {name: getattr(model, name).data for name in PARAM_NAMES}
    group = model.group
    scales = torch.exp(tensors["log_scales"][clone])
    jitter = torch.randn_like(scales) * scales * 0.5
    new = {name: torch.cat([tensors[name][keep], tensors[name][clone]]) for name in PARAM_NAMES}
    new["means"][n_keep:] += jitter
    shrink = math.log(0.8)
    new["log_scales"][n_keep:] += shrink
    # the parents shrink too: find their rows among the kept ones
    parent_rows = torch.cumsum(keep.long(), 0)[clone] - 1
    new["log_scales"][parent_rows] += shrink
    new_group = torch.cat([group[keep], group[clone]])
    model.resize_(new["means"].shape[0])
    for name in PARAM_NAMES:
        getattr(model, name).data.copy_(new[name])
    model.group.copy_(new_group)
    return model.n


class _Checkpointer:
    """When and what to checkpoint: every ``checkpoint_every`` steps, every ``checkpoint_seconds`` of
    wall time, and at the end (both intervals 0: never). ``save(step, **state)`` writes one."""

    def __init__(self, path: Path | None, t, identity: dict | None) -> None:
        self.path, self.identity, self.steps = path, identity, t.steps
        self.every, self.seconds = t.checkpoint_every, t.checkpoint_seconds
        self.enabled = path is not None and (self.every > 0 or self.seconds > 0)
        self.last = time.monotonic()

    def due(self, step: int) -> bool:
        if not self.enabled:
            return False
        by_steps = self.every > 0 and step % self.every == 0
        by_time = self.seconds > 0 and time.monotonic() - self.last >= self.seconds
        return by_steps or by_time or step == self.steps

    def save(self, step: int, model, optimizers, rng, generators, grad_acc, scalars) -> None:
        if self.enabled:
            scalars = json.loads(json.dumps(scalars, default=float))  # numpy scalars -> plain numbers
            save_checkpoint(
                self.path,
                model,
                step,
                identity=self.identity,
                optimizers=optimizers,
                rng=rng,
                generators=generators,
                grad_acc=grad_acc,
                scalars=scalars,
            )
            self.last = time.monotonic()


AUDIO_PRETRAIN_PER_STEP = 2.5  # short fits get at most this many audio pre-training steps per render step
MIN_AUDIO_PRETRAIN_STEPS = 100
STUDENT_SHARE = 0.5  # in the joint stage, this share of frames is driven by audio instead of tracking
RUNNING_LOSS_KEEP, RUNNING_LOSS_NEW = 0.95, 0.05  # the logged loss: an exponential moving average
HISTORY_RECORDS = 10  # history records per fit (plus the last step)
HELDOUT_PROBES = 4  # held-out frames rendered per history record


class _Schedule(NamedTuple):
    """What the training loop needs besides the model and data: the stage boundaries (steps), the
    frame-sampling probabilities over ``data.train_idx``, the nose height splitting the attention
    regularisation (head-space y), the scene extent for the position learning rate (metres), whether
    the mel windows are re-voiced, whether the audio branch is frozen, and the LPIPS network (or None)."""

    s_static: int
    s_audio: int
    sample_p: np.ndarray
    nose_y: float
    extent: float
    augment: bool
    frozen: bool
    lpips_net: object


@dataclass
class _Loop:
    """The training loop's mutable state: everything a checkpoint saves besides the model."""

    g_opt: torch.optim.Optimizer
    n_opt: torch.optim.Optimizer
    rng: np.random.Generator
    aug_gen: torch.Generator
    grad_acc: torch.Tensor
    t0: float
    audio_stats: dict
    acc_count: int = 0
    running: float | None = None
    history: list[dict] = field(default_factory=list)

    @property
    def optimizers(self) -> dict:
        return {"gauss": self.g_opt, "net": self.n_opt}

    @property
    def generators(self) -> dict:
        return {"aug": self.aug_gen}

    def scalars(self) -> dict:
        return {
            "acc_count": self.acc_count,
            "running": self.running,
            "history": self.history,
            "elapsed": time.time() - self.t0,
            "audio_stats": self.audio_stats,
        }

    def save(self, saver: _Checkpointer, step: int, model: GaussianAvatar) -> None:
        saver.save(step, model, self.optimizers, self.rng, self.generators, self.grad_acc, self.scalars())

    def restore(self, resumed) -> None:
        """Continue a checkpointed run: optimiser, RNG and densification state, history and clock."""
        resumed.restore(self.optimizers, self.rng, self.generators)
        sc = resumed.scalars
        self.grad_acc = resumed.grad_acc if resumed.grad_acc is not None else self.grad_acc
        self.acc_count, self.running = int(sc.get("acc_count", 0)), sc.get("running")
        self.history = list(sc.get("history", []))
        self.t0 -= float(sc.get("elapsed", 0.0))


def _prepare(cs, cfg: AvatarConfig, progress, log) -> tuple[TrainData, GaussianAvatar, dict | None]:
    """The training data, the initial model and (with the speech front end) its fitted viseme map."""
    t = cfg.train
    data = TrainData.from_capture(cs, t.resolution, t.holdout_fraction, progress, visemes=cfg.model.visemes)
    if len(data.train_idx) == 0:
        raise Avatar3DError("the capture has no training frames")
    model = build_model(cfg, cs, data)
    viseme_stats = fit_visemes(model, cs, data, cfg) if data.n_visemes else None
    if viseme_stats is not None:
        log(f"viseme map: lag {viseme_stats['lag']} frames, gain {viseme_stats['gain']:.2f}")
    return data, model, viseme_stats


def _resume(cs, cfg: AvatarConfig, workdir, model: GaussianAvatar, log):
    """(checkpointer, the checkpoint loaded into ``model`` or None); no checkpoints without a workdir."""
    ckpt = Path(workdir) / CHECKPOINT_NAME if workdir else None
    resumed, ident = None, None
    if ckpt is not None:
        ident = fit_identity(cfg, capture_digest(cs.root) if getattr(cs, "root", None) else None)
        resumed = load_checkpoint(ckpt, model, identity=ident, log=log)
    if resumed is not None:
        log(f"resuming from step {resumed.step} ({resumed.path})")
    return _Checkpointer(ckpt, cfg.train, ident), resumed


def _audio_stage(
    model: GaussianAvatar, data: TrainData, cfg: AvatarConfig, augment: bool, progress, log, saver=None
) -> dict:
    """Pre-train the audio branch on its auxiliary targets (a short fit gets a proportionally short
    stage); returns the stage's summary."""
    t = cfg.train
    n_pre = min(t.audio_pretrain_steps, max(MIN_AUDIO_PRETRAIN_STEPS, int(AUDIO_PRETRAIN_PER_STEP * t.steps)))
    ck = None  # the stage's own checkpoints, beside the fit's
    if saver is not None and saver.enabled:
        ck = StageCheckpoint.beside(saver.path, "audio", saver.identity, t, log)
    b, lr = t.audio_pretrain_batch, t.lr_net
    stats = pretrain_audio(model, data, n_pre, b, lr, t.seed, augment, progress, ck)
    corr = stats.get("heldout_mouth_corr")
    log(
        f"audio pre-training: {stats['steps']} steps, held-out mouth-opening correlation "
        + ("n/a (held-out mouth still or < 3 frames)" if corr is None else f"{corr:.2f}")
    )
    return stats


def _step(
    model: GaussianAvatar, data: TrainData, cfg: AvatarConfig, sch: _Schedule, loop: _Loop, step: int
) -> None:
    """One optimisation step: sample a frame, render it, add the LPIPS and audio terms, update,
    accumulate the densification statistics, densify on schedule and record the history."""
    t = cfg.train
    deform = step >= sch.s_static
    train_canon = step < sch.s_static or step >= sch.s_audio
    i = int(loop.rng.choice(data.train_idx, p=sch.sample_p))
    teacher = step < sch.s_audio or loop.rng.random() < STUDENT_SHARE
    loss, pred = frame_loss(model, data, i, cfg, sch.nose_y, deform, teacher)
    if sch.lpips_net is not None and t.lpips_weight > 0 and step >= sch.s_audio:
        loss = loss + t.lpips_weight * lpips_loss(sch.lpips_net, pred, data.image(i), lpips_crop(data, i))
    if t.lambda_audio > 0 and not sch.frozen:
        j = torch.as_tensor(loop.rng.choice(data.train_idx, size=t.audio_batch))
        loss = loss + t.lambda_audio * audio_targets_loss(model, data, j, sch.augment, loop.aug_gen)
    loop.g_opt.zero_grad(set_to_none=True)
    loop.n_opt.zero_grad(set_to_none=True)
    loss.backward()
    if model.means.grad is not None:
        loop.grad_acc += model.means.grad.norm(dim=-1)
        loop.acc_count += 1
    if train_canon:
        loop.g_opt.step()
    loop.n_opt.step()  # the audio encoder learns from the auxiliary loss from the start
    lv = float(loss.detach())
    loop.running = lv if loop.running is None else RUNNING_LOSS_KEEP * loop.running + RUNNING_LOSS_NEW * lv
    due = t.densify_every > 0 and step > 0 and step % t.densify_every == 0
    if due and step < t.densify_until * t.steps and train_canon:
        densify_and_prune(model, loop.grad_acc, loop.acc_count, cfg)
        loop.g_opt = _gauss_optimizer(model, cfg, sch.extent)
        loop.grad_acc = torch.zeros(model.n)
        loop.acc_count = 0
    if (step + 1) % max(1, t.steps // HISTORY_RECORDS) == 0 or step + 1 == t.steps:
        rec = {
            "step": step + 1,
            "loss": loop.running,
            "n_gaussians": model.n,
            "seconds": time.time() - loop.t0,
        }
        if len(data.test_idx):
            probes = data.test_idx[:: max(1, len(data.test_idx) // HELDOUT_PROBES)]
            rec["heldout_psnr"] = evaluate(model, data, probes)["psnr"]
        loop.history.append(rec)


def train(cs, cfg: AvatarConfig, workdir: str | Path | None = None, progress=None, log=print) -> TrainResult:
    """Fit an avatar to a CaptureSet. ``progress(iterable, description)`` wraps loops in a bar.

    Stages: data and initial model (with the viseme map), resume from a checkpoint in ``workdir``, the
    audio pre-training (skipped when resuming), then the staged render loop (:func:`_step`)."""
    t = cfg.train
    lpips_net = lpips_term(cfg)  # a bad weights file fails here, before any work
    torch.manual_seed(t.seed)
    rng = np.random.default_rng(t.seed)
    t0 = time.time()
    data, model, viseme_stats = _prepare(cs, cfg, progress, log)
    nose_y = float(torch.as_tensor(np.asarray(cs.canonical_landmarks))[NOSE_TIP, 1])
    extent = float(model.means.detach().std(0).norm())
    saver, resumed = _resume(cs, cfg, workdir, model, log)
    audio_stats: dict = dict(resumed.scalars.get("audio_stats") or {}) if resumed is not None else {}
    # the re-voicing augmentation shifts mel bins: meaningless for speech-model features
    augment = t.audio_augment and data.feature_kind == "mel"
    if resumed is None and t.audio_pretrain_steps > 0 and t.lambda_audio > 0:
        audio_stats = _audio_stage(model, data, cfg, augment, progress, log, saver)
    aug_gen = torch.Generator().manual_seed(t.seed + 2)
    frozen = t.audio_freeze and t.audio_pretrain_steps > 0 and t.lambda_audio > 0
    if frozen:  # (also when resuming: the checkpoint holds the pre-trained audio branch)
        for p in audio_branch_parameters(model):
            p.requires_grad_(False)
    s_static = int(t.static_fraction * t.steps)
    w = 1.0 + t.mouth_sampling * data.mouth[data.train_idx, 0].numpy()
    sch = _Schedule(
        s_static=s_static,
        s_audio=s_static + int(t.audio_fraction * t.steps),
        sample_p=w / w.sum(),
        nose_y=nose_y,
        extent=extent,
        augment=augment,
        frozen=frozen,
        lpips_net=lpips_net,
    )
    g_opt, n_opt = _gauss_optimizer(model, cfg, extent), _net_optimizer(model, cfg)
    loop = _Loop(g_opt, n_opt, rng, aug_gen, torch.zeros(model.n), t0, audio_stats)
    if resumed is not None:
        loop.restore(resumed)
    else:  # the first checkpoint comes early: the audio pre-training is kept
        loop.save(saver, 0, model)
    steps = range(resumed.step if resumed is not None else 0, t.steps)
    for step in steps if progress is None else progress(steps, "training"):
        _step(model, data, cfg, sch, loop, step)
        if saver.due(step + 1):
            loop.save(saver, step + 1, model)
    for p in audio_branch_parameters(model):
        p.requires_grad_(True)
    heldout = evaluate(model, data, data.test_idx) if len(data.test_idx) else {}
    if saver.path is not None:
        (Path(workdir) / "history.json").write_text(json.dumps(loop.history, indent=1))
    if loop.audio_stats:
        loop.audio_stats["heldout_mouth_corr_final"] = heldout_mouth_correlation(model, data)
    if viseme_stats is not None:
        loop.audio_stats["viseme_map"] = viseme_stats
    return TrainResult(model, data, loop.history, heldout, time.time() - loop.t0, loop.audio_stats)


@torch.no_grad()
def evaluate(model: GaussianAvatar, data: TrainData, idx) -> dict:
    """PSNR / SSIM of rendered vs real frames at ``idx`` (their own audio and head pose)."""
    ps, ss = [], []
    for i in idx:
        i = int(i)
        audio = model.audio_code(data.features, i)[0]
        gs = model.posed(audio, data.blink[i : i + 1], data.head_poses[i])
        out = model.render(
            gs, data.rest_viewmat[None], data.K[None], data.width, data.height, data.plate[None]
        )
        ps.append(psnr(out.colors[0], data.image(i)))
        ss.append(ssim(out.colors[0], data.image(i)))
    return {
        "psnr": float(np.mean(ps)) if ps else float("nan"),
        "ssim": float(np.mean(ss)) if ss else float("nan"),
        "frames": len(ps),
    }
