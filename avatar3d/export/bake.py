"""The linear bake: an avatar whose audio motion is canonical Gaussians plus K offset bases.

Any frame's head-space Gaussians are ``canonical + sum_k w_k B_k`` (positions, quaternions and log
scales of the moving Gaussians), so a renderer (a splat shader, or :class:`BakedAvatar` here)
deforms them with one small matrix product per frame; head pose (and the torso that follows it) is
a rigid transform applied afterwards, outside the bake.

Fitting (:func:`fit_bake`): the avatar's own ``GaussianAvatar.posed`` is evaluated (without head
pose) at many (audio code, blink) samples: the training clip's audio and several novel audios,
with random blinks. Each sample's outputs minus their mean over all samples form one row; a PCA of
these rows gives the bases. The channels are weighted by the inverse of their RMS motion so
position, rotation and scale count alike in the PCA (the bases are stored unweighted).

Weights for new audio (:meth:`LinearBake.solve_weights`): the deformation is evaluated only on a
few hundred *probe* Gaussians (chosen by pivoted QR of the bases, so they pin every basis down) by
a copy of the model cut to those Gaussians; the weights are the least-squares fit of the bases to
the probes' offsets. No per-Gaussian MLP runs over the full avatar, and the result tracks whatever
the deformation does (it reads ``posed``'s outputs, not its internals).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..audio import load_audio
from ..core.constants import SAMPLE_RATE
from ..core.geometry import quat_multiply, rotmat_to_quat
from ..core.groups import HEAD, MOUTH, TORSO
from ..drive.background import background_image
from ..drive.frames import RenderResult
from ..drive.motion import blinks, head_poses
from ..errors import FormatError
from ..io.atomic import atomic_file

CHANNELS = {"pos": 3, "rot": 4, "scale": 3}
BAKE_VERSION = 1
BLINK_SHARE = 0.4  # share of the fitting samples given a random blink
MIN_RMS = 1e-9  # floor of a channel group's RMS motion (a group that does not move)
EXPLAINED_KEPT = 64  # explained-variance curve recorded up to this many bases (or K)


def _outputs(gs: dict, idx: Tensor) -> Tensor:
    """(M, 10) head-space [position, quaternion (unnormalised), log scale] of Gaussians ``idx``."""
    return torch.cat([gs["means"][idx], gs["quats"][idx], torch.log(gs["scales"][idx])], dim=1)


def _submodel(model, idx: Tensor):
    """A copy of ``model`` holding only Gaussians ``idx`` (every per-Gaussian tensor indexed)."""
    n = model.n
    sub = copy.deepcopy(model)
    state = {k: (v[idx] if v.ndim and v.shape[0] == n else v) for k, v in model.state_dict().items()}
    sub.resize_(len(idx))
    sub.load_state_dict(state)
    for attr in ("_bind_cache", "_bind_calls"):
        if hasattr(sub, attr):
            delattr(sub, attr)
    return sub.eval()


@dataclass
class LinearBake:
    """Canonical Gaussians + K bases.

    canonical: dict of (N, 3) means, (N, 4) quats, (N, 3) log_scales, (N,) opacities, (N, 3) colors;
    group: (N,) int64; moving: (Nm,) indices of the Gaussians the bases move; basis: (K, Nm, 10)
    float32 offsets of [position, quaternion, log scale]; probes: (P,) indices into ``moving``;
    torso: the model's TorsoMotion state (for the rigid torso); info: fitting record.
    """

    canonical: dict
    group: Tensor
    moving: Tensor
    basis: Tensor
    probes: Tensor
    info: dict = field(default_factory=dict)
    _probe_model: object = None
    _pinv: Tensor | None = None

    @property
    def k(self) -> int:
        return int(self.basis.shape[0])

    @property
    def n(self) -> int:
        return int(self.group.shape[0])

    # ------------------------------------------------------------------ evaluation
    def deformed(self, weights: Tensor) -> dict:
        """Head-space Gaussians for (K,) weights: canonical + sum_k w_k B_k (means, quats, scales, ...)."""
        c = self.canonical
        d = torch.einsum("k,kmc->mc", weights.to(self.basis.dtype), self.basis)  # (Nm, 10)
        means = c["means"].index_add(0, self.moving, d[:, :3])
        quats = c["quats"].index_add(0, self.moving, d[:, 3:7])
        log_s = c["log_scales"].index_add(0, self.moving, d[:, 7:10])
        return {
            "means": means,
            "quats": quats,
            "scales": torch.exp(log_s),
            "opacities": c["opacities"],
            "colors": c["colors"],
        }

    def truncated(self, k: int) -> LinearBake:
        """The same bake with its first ``k`` bases only (PCA bases are nested: this equals a fit
        with ``k``); probes are re-picked for them. Attach a model before solving weights."""
        b = self.basis[:k].contiguous()
        return LinearBake(
            self.canonical,
            self.group,
            self.moving,
            b,
            _pick_probes(b, len(self.probes)),
            {**self.info, "k": int(k)},
        )

    def attach(self, model) -> LinearBake:
        """Bind the avatar's model: the probe copy that computes weights from audio codes."""
        self._probe_model = _submodel(model, self.moving[self.probes])
        self._pinv = projector(self.basis[:, self.probes], self.channel_scale)  # (K, P*10)
        return self

    @property
    def channel_scale(self) -> Tensor:
        """(10,) the RMS motion of [position x3, quaternion x4, log scale x3] the fit weighted by."""
        rms = self.info.get("rms", [1.0, 1.0, 1.0])
        return torch.tensor([rms[0]] * 3 + [rms[1]] * 4 + [rms[2]] * 3, dtype=torch.float32)

    @torch.no_grad()
    def solve_weights(self, codes: Tensor, blinks: Tensor) -> Tensor:
        """(T, K) weights for (T, A) audio codes and (T,) blinks, from the probes' offsets."""
        if self._probe_model is None:
            raise RuntimeError("LinearBake.attach(model) first")
        mean = self.info_mean_probes
        out = []
        idx = torch.arange(len(self.probes))
        for k in range(len(codes)):
            gs = self._probe_model.posed(codes[k], blinks[k].reshape(1).float(), None)
            out.append(self._pinv @ ((_outputs(gs, idx) - mean) / self.channel_scale).reshape(-1))
        return torch.stack(out) if out else torch.zeros(0, self.k)

    @property
    def info_mean_probes(self) -> Tensor:
        c = self.canonical
        m = self.moving[self.probes]
        return torch.cat([c["means"][m], c["quats"][m], c["log_scales"][m]], dim=1)

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write ``path`` (a .safetensors file; the bases in float16, the rest in float32)."""
        from safetensors.torch import save_file

        t = {f"canonical.{k}": v.contiguous() for k, v in self.canonical.items()}
        t.update(
            group=self.group, moving=self.moving, probes=self.probes, basis=self.basis.half().contiguous()
        )
        path = Path(path)
        with atomic_file(path) as tmp:
            save_file(
                t, str(tmp), metadata={"avatar3d_bake": str(BAKE_VERSION), "info": json.dumps(self.info)}
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> LinearBake:
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error type on a bad header
            raise FormatError(f"{path}: unreadable bake ({str(e).splitlines()[0]})") from None
        if meta.get("avatar3d_bake") != str(BAKE_VERSION):
            raise FormatError(f"{path}: not an avatar3d bake of version {BAKE_VERSION}")
        canon = {k.split(".", 1)[1]: v for k, v in t.items() if k.startswith("canonical.")}
        return cls(canon, t["group"], t["moving"], t["basis"].float(), t["probes"], json.loads(meta["info"]))


def projector(basis: Tensor, scale: Tensor) -> Tensor:
    """(K, M*10) least-squares projector onto ``basis`` (K, M, 10) with channels divided by ``scale``
    (10,): apply it to ``((outputs - canonical) / scale).reshape(-1)`` to get the weights."""
    b = (basis / scale).reshape(basis.shape[0], -1).T  # (M*10, K)
    return torch.linalg.pinv(b.double()).float()


def pose_gaussians(gs: dict, group: Tensor, head_pose: Tensor | None, model=None) -> dict:
    """Apply the head pose rigidly to the head and mouth Gaussians (and the model's torso motion to
    the torso ones), as ``GaussianAvatar.posed`` does after its deformation."""
    if head_pose is None:
        return gs
    R, t = head_pose[:3, :3], head_pose[:3, 3]
    mv = ((group == HEAD) | (group == MOUTH))[:, None]
    means = torch.where(mv, gs["means"] @ R.T + t, gs["means"])
    quats = F.normalize(gs["quats"], dim=-1)
    quats = torch.where(mv, quat_multiply(rotmat_to_quat(R)[None].expand_as(quats), quats), quats)
    torso = (group == TORSO)[:, None]
    if model is not None and model.cfg.torso_motion and bool(torso.any()):
        Rt, tt = model.torso_motion(head_pose)
        pivot = model.torso_motion.pivot
        means = torch.where(torso, (means - pivot) @ Rt.T + pivot + tt, means)
        quats = torch.where(torso, quat_multiply(rotmat_to_quat(Rt)[None].expand_as(quats), quats), quats)
    return {**gs, "means": means, "quats": quats}


# ---------------------------------------------------------------------------------------- fitting
def _codes(avatar, wave16k: np.ndarray) -> Tensor:
    """(T, A) audio codes of every whole frame of a 16 kHz wave (the drive's chunked codes)."""
    fps = float(avatar.meta.fps)
    n = avatar.audio.n_frames(wave16k, fps)
    if n == 0:
        return torch.zeros(0, avatar.model.cfg.audio_dim)
    return torch.cat(list(avatar.audio.codes(wave16k, fps, n)))


def sample_inputs(
    avatar, waves: list[np.ndarray], blink_share: float = BLINK_SHARE, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """(S, A) audio codes of every frame of ``waves`` (16 kHz) and (S,) blinks: 0 for most frames,
    uniform in [0, 1] for ``blink_share`` of them."""
    rng = np.random.default_rng(seed)
    c = torch.cat([_codes(avatar, w) for w in waves])
    b = np.where(rng.random(len(c)) < blink_share, rng.random(len(c)), 0.0)
    return c, torch.as_tensor(b, dtype=torch.float32)


@torch.no_grad()
def _sample_matrix(model, moving: Tensor, codes: Tensor, blinks: Tensor) -> Tensor:
    """(S, Nm, 10) posed outputs of the moving Gaussians for each (code, blink)."""
    out = torch.empty(len(codes), len(moving), 10)
    for s in range(len(codes)):
        gs = model.posed(codes[s], blinks[s].reshape(1), None)
        out[s] = _outputs(gs, moving)
    return out


def _pick_probes(basis: Tensor, n_probes: int) -> Tensor:
    """Indices of ``n_probes`` Gaussians whose rows best pin the bases down (pivoted QR)."""
    import scipy.linalg

    k, nm, c = basis.shape
    per = basis.permute(1, 0, 2).reshape(nm, k * c).norm(dim=1)  # each Gaussian's total basis weight
    a = basis[:, :, :3].permute(0, 2, 1).reshape(k * 3, nm).numpy().astype(np.float64)
    _, _, piv = scipy.linalg.qr(a, pivoting=True, mode="economic")
    chosen = list(piv[: min(n_probes // 2, nm)])
    rest = [i for i in torch.argsort(per, descending=True).tolist() if i not in set(chosen)]
    chosen += rest[: max(0, n_probes - len(chosen))]
    return torch.as_tensor(sorted(chosen), dtype=torch.int64)


@torch.no_grad()
def fit_bake(
    avatar, waves: list[np.ndarray], k: int = 32, n_probes: int = 512, seed: int = 0, max_samples: int = 1500
) -> LinearBake:
    """Bake ``avatar`` with ``k`` bases from the deformation's outputs over the frames of ``waves``
    (16 kHz mono arrays; at most ``max_samples`` frames, an even subsample)."""
    model = avatar.model
    codes, blinks = sample_inputs(avatar, waves, seed=seed)
    if len(codes) > max_samples:
        keep = torch.as_tensor(np.linspace(0, len(codes) - 1, max_samples).round().astype(np.int64))
        codes, blinks = codes[keep], blinks[keep]
    moving = torch.nonzero((model.group == HEAD) | (model.group == MOUTH)).squeeze(1)
    X = _sample_matrix(model, moving, codes, blinks)  # (S, Nm, 10)
    mean = X.mean(0)
    X -= mean
    rms = torch.stack(
        [
            X[..., :3].square().mean().sqrt(),
            X[..., 3:7].square().mean().sqrt(),
            X[..., 7:].square().mean().sqrt(),
        ]
    ).clamp_min(MIN_RMS)
    scale = torch.cat([rms[0].repeat(3), rms[1].repeat(4), rms[2].repeat(3)])
    X /= scale  # in place: the channels weighted alike
    Xf = X.reshape(len(X), -1)
    k = int(min(k, len(X) - 1))
    evals, U = torch.linalg.eigh((Xf @ Xf.T).double())  # PCA through the (S, S) Gram matrix
    evals, U = evals.flip(0).clamp_min(0), U.flip(1).float()
    basis = ((U[:, :k].T @ Xf) / math.sqrt(len(X))).reshape(
        k, len(moving), 10
    ) * scale  # unit-variance weights
    var = evals
    del Xf, X
    gs0 = model.posed(codes[0], blinks[0].reshape(1), None)
    canonical = {
        "means": model.means.detach().clone().index_copy(0, moving, mean[:, :3]),
        "quats": F.normalize(model.quats.detach(), dim=-1).index_copy(0, moving, mean[:, 3:7]),
        "log_scales": model.log_scales.detach().clone().index_copy(0, moving, mean[:, 7:]),
        "opacities": gs0["opacities"].detach().clone(),
        "colors": gs0["colors"].detach().clone(),
    }
    info = {
        "k": k,
        "samples": len(codes),
        "explained": [float(x) for x in (var.cumsum(0) / var.sum())[: max(k, EXPLAINED_KEPT)]],
        "rms": [float(x) for x in rms],
        "n_probes": n_probes,
        "fps": float(avatar.meta.fps),
    }
    bake = LinearBake(
        canonical, model.group.clone(), moving, basis.contiguous(), torch.zeros(0, dtype=torch.int64), info
    )
    bake.probes = _pick_probes(bake.basis, n_probes)
    return bake.attach(model)


class BakedAvatar:
    """An :class:`~avatar3d.api.Avatar` rendered through its linear bake: per frame, the weights
    (solved from audio once per clip) blend the bases, then the head pose moves the result rigidly."""

    def __init__(self, avatar, bake: LinearBake):
        if bake.n != avatar.model.n or not torch.equal(bake.group, avatar.model.group):
            raise FormatError(
                f"this bake is of another avatar ({bake.n} Gaussians, the avatar has {avatar.model.n})"
            )
        self.avatar = avatar
        self.bake = bake if bake._probe_model is not None else bake.attach(avatar.model)

    @torch.no_grad()
    def weights(self, wave16k: np.ndarray, blinks: np.ndarray | None = None) -> np.ndarray:
        """(T, K) float32 weights for every frame of a 16 kHz wave (``blinks``: (T,) amounts, default 0)."""
        codes = _codes(self.avatar, wave16k)
        n = len(codes)
        b = torch.zeros(n) if blinks is None else torch.as_tensor(np.asarray(blinks, np.float32)[:n])
        return self.bake.solve_weights(codes, b).numpy()

    @torch.no_grad()
    def frame(self, weights: np.ndarray, head_pose: np.ndarray | None = None) -> dict:
        """World-space Gaussians (torch) for one frame's (K,) weights and (4, 4) head pose."""
        gs = self.bake.deformed(torch.as_tensor(weights, dtype=torch.float32))
        pose = None if head_pose is None else torch.as_tensor(head_pose, dtype=torch.float32)
        return pose_gaussians(gs, self.bake.group, pose, self.avatar.model)

    @torch.no_grad()
    def render(
        self,
        audio,
        camera=None,
        *,
        sample_rate: int | None = None,
        size=None,
        pose: str | None = None,
        blink=None,
        background=None,
        weights: np.ndarray | None = None,
    ):
        """As :meth:`Avatar.render` (same cameras, poses, blinks, background), through the bake.
        ``weights``: precomputed (T, K) weights (default: solved from the audio)."""
        av = self.avatar
        wave = load_audio(audio if sample_rate is None else (audio, sample_rate), sr=SAMPLE_RATE)
        fps = float(av.meta.fps)
        n = int(math.floor(len(wave) / SAMPLE_RATE * fps))
        cams = av.cameras(camera, n, size)
        poses = head_poses(pose or av.config.render.pose, n, fps, av.track["head_poses"])
        blink_seq = blinks(blink if blink is not None else av.config.render.blink, n, fps, av.track["blink"])
        w = self.weights(wave, blink_seq) if weights is None else np.asarray(weights, np.float32)
        frames = np.zeros((n, cams[0].height, cams[0].width, 3), np.uint8)
        alphas = np.zeros((n, cams[0].height, cams[0].width), np.float32)
        for k in range(n):
            vm, K = cams[k].to_torch()
            gs = self.frame(w[k], poses[k])
            out = av.model.render(
                gs,
                vm[None],
                K[None],
                cams[k].width,
                cams[k].height,
                background_image(
                    background if background is not None else av.config.render.background,
                    cams[k],
                    av.background,
                ),
                backend=av.config.render.backend,
            )
            frames[k] = (out.colors[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            alphas[k] = out.alphas[0, ..., 0].numpy()
        return RenderResult(frames, fps, wave, SAMPLE_RATE, alphas)


def load_player(avatar, path: str | Path) -> BakedAvatar:
    """``avatar`` played through the bake in ``path`` (a bake file or an ``export --web`` folder)."""
    p = Path(path)
    p = p / "bake.safetensors" if p.is_dir() else p
    if not p.is_file():
        raise FormatError(
            f"bake not found: {p} (give a bake.safetensors or an `avatar3d export --web` folder)"
        )
    return BakedAvatar(avatar, LinearBake.load(p))
