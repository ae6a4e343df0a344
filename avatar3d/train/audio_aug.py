"""Speaker-invariance for the audio -> motion mapping: mel augmentation and an audio pre-training stage.

An avatar is trained on minutes (often seconds) of ONE speaker but must be driven by any voice. With
log-mel input (no speech model on disk) the encoder otherwise latches onto that speaker's pitch and
timbre. Each training window is therefore randomly re-voiced in the normalised log-mel domain:

* a shift of the whole spectrum by a few mel bins (pitch / formant change: a higher or lower voice),
* a spectral tilt and a gain offset (microphone, distance, vocal effort),
* one masked band of mel bins (SpecAugment-style frequency masking),
* a little Gaussian noise.

Timing is never changed, so the mouth targets stay aligned. Why re-voicing, and why the branch is
then frozen: docs/design/audio-branch.md.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.deform import gather_windows
from .checkpoint import StageCheckpoint


def augment_mel(
    windows: Tensor,
    generator: torch.Generator | None = None,
    max_shift: int = 4,
    tilt: float = 0.3,
    gain: float = 0.2,
    max_mask: int = 10,
    noise: float = 0.1,
) -> Tensor:
    """Randomly re-voice normalised log-mel windows ``(B, ..., M)``; one draw per batch element.

    Returns a new tensor of the same shape; all the window's frames/steps of an element get the same
    voice change (a speaker does not change voice within a second)."""
    B, M = windows.shape[0], windows.shape[-1]
    dev, dt = windows.device, windows.dtype
    lead = (B,) + (1,) * (windows.ndim - 2)

    def rnd(*shape):
        return torch.rand(*shape, generator=generator, device=dev, dtype=dt)

    def rndn(*shape):
        return torch.randn(*shape, generator=generator, device=dev, dtype=dt)

    bins = torch.arange(M, device=dev)
    shift = torch.randint(-max_shift, max_shift + 1, (B,), generator=generator, device=dev)
    src = (bins[None, :] - shift[:, None]).clamp(0, M - 1)  # (B, M): edge bins repeat
    idx = src.reshape(lead + (M,)).expand(windows.shape)
    out = torch.gather(windows, -1, idx)
    ramp = torch.linspace(-1.0, 1.0, M, device=dev, dtype=dt)
    out = out + (tilt * rndn(B)).reshape(lead + (1,)) * ramp + (gain * rndn(B)).reshape(lead + (1,))
    lo = (rnd(B) * (M - max_mask)).long()
    width = (rnd(B) * (max_mask + 1)).long()
    band = (bins[None, :] >= lo[:, None]) & (bins[None, :] < (lo + width)[:, None])  # (B, M)
    out = out.masked_fill(band.reshape(lead + (M,)), 0.0)
    return out + noise * rndn(*out.shape)


def audio_targets_loss(
    model, data, idx: Tensor, augment: bool, generator: torch.Generator | None = None
) -> Tensor:
    """Auxiliary loss: audio codes of frames ``idx`` must predict the tracked mouth opening and the
    capture's expression coefficients (with the tracked blink as the eye input). With the speech front
    end the expression is the (fixed) viseme map's plus the bounded residual, which alone learns here."""
    win = gather_windows(data.features, idx, model.cfg.smooth_window)  # (B, S, W, M [+ V])
    if augment:
        V = model.n_visemes  # the speech front end's channels are not mel bins: left as they are
        win = torch.cat(
            [augment_mel(win[..., : win.shape[-1] - V], generator), win[..., win.shape[-1] - V :]], -1
        )
    code = model.audio(win)
    mouth = torch.sigmoid(model.read_mouth(code))
    expr = model.predict_expression(code, data.blink[idx][:, None])
    return F.mse_loss(mouth, data.mouth[idx]) + F.mse_loss(expr, data.expression[idx])


@torch.no_grad()
def heldout_mouth_correlation(model, data) -> float | None:
    """Pearson correlation of the mouth opening read from held-out audio with the tracked one."""
    idx = torch.as_tensor(data.test_idx)
    if len(idx) < 3:
        return None
    was = model.training
    model.eval()
    try:
        code = model.audio(gather_windows(data.features, idx, model.cfg.smooth_window))
        pred = torch.sigmoid(model.read_mouth(code))[:, 0].numpy()
    finally:
        model.train(was)
    pred, true = pred.astype(np.float64), data.mouth[idx, 0].numpy().astype(np.float64)
    if pred.std() < 1e-6 or true.std() < 1e-6:  # a constant read-out (float32) has no correlation
        return None
    return float(np.corrcoef(pred, true)[0, 1])


def audio_branch_parameters(model) -> list:
    """The parameters the audio pre-training fits: audio encoder + smoother, mouth read-out, expression head."""
    return (
        list(model.audio.parameters())
        + list(model.mouth_readout.parameters())
        + list(model.expr_head.parameters())
    )


def audio_branch(model) -> torch.nn.Module:
    """The audio branch as one module (audio encoder + smoother, mouth read-out, expression head):
    what the audio pre-training changes, and what its checkpoints hold."""
    return torch.nn.ModuleDict(
        {"audio": model.audio, "mouth_readout": model.mouth_readout, "expr_head": model.expr_head}
    )


def pretrain_audio(
    model,
    data,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    augment: bool,
    progress=None,
    checkpoint: StageCheckpoint | None = None,
) -> dict:
    """Pre-train the audio encoder, temporal smoother, mouth read-out and expression head on the
    auxiliary targets alone (no rendering: cheap), before the avatar is rendered at all.

    With ``checkpoint`` the stage writes its state (the branch's weights, the optimiser, the step,
    the numpy, torch and global torch RNG states, the running loss) on the checkpoint's intervals,
    and continues from the last one written for the same fit and settings: a killed pre-training
    resumes on the trajectory it would have followed.

    Returns ``{"steps", "loss", "heldout_mouth_corr"}``."""
    if steps <= 0 or len(data.train_idx) == 0:
        return {"steps": 0}
    opt = torch.optim.Adam(audio_branch_parameters(model), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(int(seed) + 1)
    rng = np.random.default_rng(int(seed) + 1)
    w = 1.0 + data.mouth[data.train_idx, 0].numpy()  # open mouths are rarer: sample them more
    p = w / w.sum()
    branch, start, running = audio_branch(model), 0, None
    if checkpoint is not None:
        checkpoint = checkpoint.for_run(
            steps=int(steps), batch=int(batch), lr=lr, seed=int(seed), augment=augment
        )
        resumed = checkpoint.load(branch)
        if resumed is not None:
            resumed.restore({"audio": opt}, rng, {"audio": gen})
            start, running = min(resumed.step, int(steps)), resumed.scalars.get("running")
            if checkpoint.log is not None:
                checkpoint.log(f"resuming the audio pre-training from step {start} ({resumed.path})")
    rng_steps = range(start, int(steps))
    it = rng_steps if progress is None else progress(rng_steps, "audio pre-training")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small ops: threads would only contend (docs/design/cpu-preset.md)
    try:
        for step in it:
            idx = torch.as_tensor(rng.choice(data.train_idx, size=int(batch), p=p))
            loss = audio_targets_loss(model, data, idx, augment, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lv = float(loss.detach())
            running = lv if running is None else 0.98 * running + 0.02 * lv
            if checkpoint is not None and checkpoint.due(step + 1, int(steps)):
                state = {"optimizers": {"audio": opt}, "rng": rng, "generators": {"audio": gen}}
                checkpoint.save(step + 1, branch, scalars={"running": running}, **state)
    finally:
        torch.set_num_threads(threads)
    return {
        "steps": int(steps),
        "loss": running,
        "heldout_mouth_corr": heldout_mouth_correlation(model, data),
    }
