"""The Gaussian avatar: canonical 3D Gaussians in head space moved by audio.

Groups: ``HEAD`` Gaussians (face, scalp) are moved by the deformation field and then rigidly by the
head pose; ``MOUTH`` Gaussians (teeth, tongue, cavity) have their own audio-only motion field that
mostly slides vertically (TalkingGaussian's face/mouth decomposition), and are composited behind the
lips naturally by depth; ``TORSO`` Gaussians live in the body frame and move rigidly with a learned
function of the head pose (:class:`~.deform.TorsoMotion`: people lean and sway as they talk).
Colour and opacity are never changed by audio ("deform, don't repaint").

With the speech front end (``n_visemes`` > 0), the expression that moves the landmarks is the
subject's viseme map (:mod:`.viseme_map`, fitted on the training frames) applied to the per-frame
viseme vector, plus a bounded residual learned from the log-mel (or speech-model) code, so another
voice still produces the subject's own mouth shapes at the subject's own amplitude.

The landmark motion reaches the Gaussians by inverse-distance weights over the nearest landmarks,
never across the mouth slit (a lip Gaussian follows its own lip); the mouth interior is split along the
slit: its upper part (upper teeth) stays with the skull, its lower part (lower teeth, tongue) follows
the jaw (chin and lower-lip landmarks), with a smooth blend only deep in the cavity.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig
from ..core.geometry import quat_multiply, rotmat_to_quat
from ..core.groups import HEAD, MOUTH, TORSO
from ..render.footprint import footprint_scales
from ..render.rasterize import RenderOutput, rasterize
from .deform import AudioMotion, DeformationField, TorsoMotion, gather_windows
from .encoding import SpatialEncoding
from .init import mouth_midline
from .viseme_map import apply_lip_floor

# landmarks whose mean motion is the jaw's (lower inner / outer lip centre, below-lip, chin)
JAW_LANDMARKS = (14, 17, 200, 152)

PARAM_NAMES = ("means", "log_scales", "quats", "opacity_logits", "color_logits")


LOGIT_EPS = 1e-4  # initial opacities and colours are clamped to [eps, 1 - eps] before the logit


def _encoding(cfg: ModelConfig, kind: str, mouth: bool) -> SpatialEncoding:
    """The spatial encoding of the face (``mouth``: the mouth-interior) deformation field.

    The mouth interior (a few hundred Gaussians that slide almost as one) always uses the smooth
    3-octave sin/cos encoding: a grid would add cost there and nothing to learn.
    """
    if kind == "frequency" or mouth:
        freqs = max(2, cfg.pe_freqs // 2) if mouth else cfg.pe_freqs
        return SpatialEncoding("frequency", pe_freqs=freqs, pe_scale=0.12)
    return SpatialEncoding(
        kind,
        bound=cfg.grid_bound,
        levels=cfg.grid_levels,
        features=cfg.grid_features,
        log2_table=cfg.grid_log2_table,
        base_res=cfg.grid_base_res,
        max_res=cfg.grid_max_res,
        smooth_freqs=cfg.grid_pe_freqs,
    )


def encoding_of_state(state: dict) -> str | None:
    """The spatial encoding a saved state dict was trained with (None when it holds no deformation field)."""
    keys = [k for k in state if k.startswith("deform.")]
    if not keys:
        return None
    if any(k.startswith("deform.encoding.grid.") for k in keys):
        return "hashgrid"
    if any(k.startswith("deform.encoding.planes.") for k in keys):
        return "triplane"
    return "frequency"


class GaussianAvatar(nn.Module):
    """Canonical Gaussians + audio motion. Build with :meth:`from_init` or load a state dict."""

    def __init__(self, cfg: ModelConfig, n: int, n_mels: int = 80, n_expr: int = 16, n_visemes: int = 0):
        super().__init__()
        self.cfg = cfg
        self.means = nn.Parameter(torch.zeros(n, 3))
        self.log_scales = nn.Parameter(torch.zeros(n, 3))
        self.quats = nn.Parameter(torch.tensor([1.0, 0, 0, 0]).repeat(n, 1))
        self.opacity_logits = nn.Parameter(torch.zeros(n))
        self.color_logits = nn.Parameter(torch.zeros(n, 3))
        self.register_buffer("group", torch.zeros(n, dtype=torch.int64))
        self.n_visemes = int(n_visemes)
        self.code_dim = cfg.audio_dim + self.n_visemes  # audio code (+ the per-frame viseme vector)
        self.audio = AudioMotion(n_mels, cfg.audio_window, cfg.audio_dim, cfg.smooth_window, self.n_visemes)
        self._build_deform(cfg.encoding)
        # auxiliary read-out: the audio code must carry the tracked mouth opening (training only)
        self.mouth_readout = nn.Linear(cfg.audio_dim, 2)
        if self.n_visemes:  # viseme vector -> expression (fitted per subject, not trained by gradient)
            self.register_buffer("viseme_matrix", torch.zeros(self.n_visemes, n_expr))
            # [lip-opening direction (E), closed level]: the map's output never closes past the
            # subject's closed lips (:func:`.viseme_map.apply_lip_floor`; zeros = no floor)
            self.register_buffer("viseme_floor", torch.zeros(n_expr + 1))
        # audio (+ blink) -> the capture's expression coefficients; the landmark motion they imply
        # is carried to the Gaussians by inverse-distance weights (an explicit, mesh-like prior)
        self.expr_dim = n_expr
        self.expr_head = nn.Sequential(
            nn.Linear(cfg.audio_dim + 1, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, n_expr)
        )
        self.register_buffer("landmarks", torch.zeros(478, 3))  # canonical landmarks, head space
        self.register_buffer("expr_basis", torch.zeros(n_expr, 478, 3))
        self.register_buffer("expr_mean", torch.zeros(478, 3))
        self.torso_motion = TorsoMotion()
        self.deform_enabled = True
        # the camera the Gaussians were fitted through, at the training size (not saved: the avatar's
        # metadata carries it); renders finer than it get the footprint filter (see :meth:`render`)
        self.train_camera: tuple[Tensor, Tensor] | None = None
        self.footprint_share = 1.0

    def set_train_camera(self, viewmat, K) -> None:
        """Record the training camera ((4, 4) world -> camera, (3, 3) intrinsics at the training size);
        ``footprint_share`` sets how much of its pixel footprint finer renders keep (see :meth:`render`)."""
        self.train_camera = (
            torch.as_tensor(viewmat, dtype=torch.float32).reshape(4, 4),
            torch.as_tensor(K, dtype=torch.float32).reshape(3, 3),
        )

    # ------------------------------------------------------------------ building
    def _build_deform(self, kind: str) -> None:
        """(Re)create the face and mouth deformation fields with spatial encoding ``kind``."""
        cfg = self.cfg
        self.deform = DeformationField(
            self.code_dim,
            1,
            cfg.hidden,
            cfg.pe_freqs,
            max_offset=cfg.max_offset,
            encoding=_encoding(cfg, kind, False),
        )
        self.mouth_deform = DeformationField(
            self.code_dim,
            1,
            max(16, cfg.hidden // 2),
            max(2, cfg.pe_freqs // 2),
            max_offset=cfg.max_offset,
            encoding=_encoding(cfg, kind, True),
        )

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As nn.Module's, but an avatar saved with another spatial encoding than ``cfg.encoding``
        (avatars saved before the key existed used "frequency") rebuilds its deformation fields with
        the saved one first, and ``cfg.encoding`` is set to it."""
        state_dict = dict(state_dict)
        for k, v in TorsoMotion().state_dict(prefix="torso_motion.").items():
            state_dict.setdefault(k, v)  # avatars saved before the torso followed the head: a static torso
        if "viseme_matrix" in state_dict:  # saved before the closed-lip floor: none
            state_dict.setdefault("viseme_floor", torch.zeros(state_dict["viseme_matrix"].shape[1] + 1))
        kind = encoding_of_state(state_dict)
        if kind is not None and kind != self.deform.encoding.kind:
            dev = self.means.device
            self._build_deform(kind)
            self.deform.to(dev)
            self.mouth_deform.to(dev)
            self.cfg.encoding = kind
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @classmethod
    def from_init(
        cls,
        cfg: ModelConfig,
        init: dict[str, Tensor],
        n_mels: int = 80,
        expression: dict[str, Tensor] | None = None,
        n_visemes: int = 0,
    ) -> "GaussianAvatar":
        n_expr = 16 if expression is None else expression["basis"].shape[0]
        m = cls(cfg, init["means"].shape[0], n_mels, n_expr, n_visemes)
        if expression is not None:
            m.landmarks.copy_(expression["landmarks"])
            m.expr_basis.copy_(expression["basis"])
            m.expr_mean.copy_(expression["mean"])
        with torch.no_grad():
            m.means.copy_(init["means"])
            m.log_scales.copy_(torch.log(init["scales"].clamp(min=1e-6)))
            m.quats.copy_(init["quats"])
            m.opacity_logits.copy_(torch.logit(init["opacities"], eps=LOGIT_EPS))
            m.color_logits.copy_(torch.logit(init["colors"], eps=LOGIT_EPS))
            m.group.copy_(init["group"])
            torso = m.group == TORSO
            if torso.any():
                m.torso_motion.pivot.copy_(m.means[torso].mean(0))
        return m

    @property
    def n(self) -> int:
        return self.means.shape[0]

    def resize_(self, n: int) -> None:
        """Re-create the per-Gaussian tensors for ``n`` Gaussians (before loading a state dict)."""
        for name in PARAM_NAMES:
            old = getattr(self, name)
            setattr(self, name, nn.Parameter(old.new_zeros((n,) + old.shape[1:])))
        self.group = self.group.new_zeros(n)

    # ------------------------------------------------------------------ audio
    def audio_code(self, features: Tensor, index: Tensor | int) -> Tensor:
        """Smoothed audio codes (B, A) for frame indices into ``features`` (T, W, M)."""
        return self.audio(gather_windows(features, index, self.cfg.smooth_window))

    # ------------------------------------------------------------------ expression
    def read_mouth(self, code: Tensor) -> Tensor:
        """(..., A[+V]) codes -> (..., 2) mouth / jaw opening logits (auxiliary read-out of the audio part)."""
        return self.mouth_readout(code[..., : self.cfg.audio_dim])

    def viseme_expression(self, code: Tensor) -> Tensor:
        """(..., A+V) codes -> (..., E) the viseme map's expression (zeros without the front end)."""
        if not self.n_visemes:
            return code.new_zeros(code.shape[:-1] + (self.expr_dim,))
        return apply_lip_floor(code[..., self.cfg.audio_dim :] @ self.viseme_matrix, self.viseme_floor)

    def predict_expression(self, audio: Tensor, eye: Tensor) -> Tensor:
        """(..., A[+V]) audio codes + (..., 1) blink -> (..., E) expression coefficients.

        With the speech front end: the viseme map's expression plus the audio residual, bounded to
        ``cfg.residual_scale`` per coefficient (tanh) so a foreign voice cannot pull the mouth back to
        its mean shape."""
        A = self.cfg.audio_dim
        raw = self.expr_head(torch.cat([audio[..., :A], eye], dim=-1))
        if not self.n_visemes:
            return raw
        r = float(self.cfg.residual_scale)
        return self.viseme_expression(audio) + r * torch.tanh(raw / r)

    @torch.no_grad()
    def _binding(
        self, x: Tensor, group: Tensor | None = None, k: int = 4, falloff: float = 0.02
    ) -> tuple[Tensor, Tensor]:
        """Nearest-landmark indices (N, k) and weights (N, k) for canonical positions x (N, 3).

        Near the mouth (between the mouth corners, from 3 cm above the slit to 5 cm below it) a point
        binds only to landmarks on its own side of the slit, so upper and lower lips never average into
        a smear. ``group`` (N,): MOUTH points follow the jaw landmarks by a weight that goes from 0
        (above the slit: upper teeth, with the skull) to 1 (below: lower teeth, tongue), sharply at the
        front of the cavity and smoothly at its back wall."""
        lm = self.landmarks
        d = torch.cdist(x, lm)  # (N, 478)
        xs, ys = mouth_midline(lm) if self.cfg.mouth_split else (None, None)
        if xs is not None:
            lo, hi = float(xs[0]), float(xs[-1])

            def side(p: Tensor) -> tuple[Tensor, Tensor]:
                mid = torch.as_tensor(
                    np.interp(p[:, 0].cpu().numpy(), xs, ys), dtype=p.dtype, device=p.device
                )
                near = (p[:, 0] > lo) & (p[:, 0] < hi) & (p[:, 1] > mid - 0.03) & (p[:, 1] < mid + 0.05)
                return near, p[:, 1] > mid

            near_x, below_x = side(x)
            near_l, below_l = side(lm)
            cross = near_x[:, None] & near_l[None, :] & (below_x[:, None] != below_l[None, :])
            d = torch.where(cross, torch.full_like(d, 1e3), d)
        dk, ik = torch.topk(d, k, dim=1, largest=False)
        w = 1.0 / (dk + 1e-3) ** 2
        w = w / w.sum(1, keepdim=True) * torch.exp(-((dk[:, :1] / falloff) ** 2))
        if group is not None and xs is not None and bool((group == MOUTH).any()):
            mo = group == MOUTH
            p = x[mo]
            mid = torch.as_tensor(np.interp(p[:, 0].cpu().numpy(), xs, ys), dtype=p.dtype, device=p.device)
            depth = (p[:, 2] - lm[list(JAW_LANDMARKS[:2]), 2].mean()).clamp(0.0, 0.04)
            soft = 0.001 + 0.2 * depth  # metres: 1 mm at the lips' depth, ~7 mm at the back wall
            f = torch.sigmoid((p[:, 1] - mid) / soft)
            jaw = torch.as_tensor(JAW_LANDMARKS, device=x.device)[
                torch.arange(k, device=x.device) % len(JAW_LANDMARKS)
            ]
            ik = ik.clone()
            w = w.clone()
            ik[mo] = jaw[None, : ik.shape[1]].expand(int(mo.sum()), -1)
            w[mo] = (f / ik.shape[1])[:, None].expand(-1, ik.shape[1])
        return ik, w

    def expression_offsets(self, x: Tensor, coeffs: Tensor, group: Tensor | None = None) -> Tensor:
        """Per-Gaussian offsets (N, 3) carried from the landmark motion of ``coeffs`` (E,); ``group``
        (N,) the points' Gaussian groups (the mouth interior binds to the jaw, see :meth:`_binding`).

        The nearest-landmark binding is cached and refreshed every 25 calls while training (the
        canonical Gaussians drift slowly) and whenever the number of Gaussians changes.
        """
        disp = self.expr_mean + torch.einsum("e,eld->ld", coeffs, self.expr_basis)  # (478, 3)
        cache = getattr(self, "_bind_cache", None)
        calls = getattr(self, "_bind_calls", 0)
        self._bind_calls = calls + 1
        if cache is None or cache[0].shape[0] != x.shape[0] or (self.training and calls % 25 == 0):
            cache = self._binding(x.detach(), group)
            self._bind_cache = cache
        ik, w = cache
        return (disp[ik] * w[..., None]).sum(1)

    # ------------------------------------------------------------------ posing
    def posed(
        self,
        audio: Tensor,
        eye: Tensor,
        head_pose: Tensor | None = None,
        deform: bool | None = None,
        expression: Tensor | None = None,
    ):
        """World-space Gaussians for one frame.

        Args:
            audio: (A,) audio code; eye: (1,) blink amount in [0, 1].
            head_pose: (4, 4) head -> world transform (None = identity).
            expression: (E,) expression coefficients (the tracked ones while training); None means
                predicted from audio and blink when the deformation is on.
        Returns:
            dict with means (N, 3), quats (N, 4), scales (N, 3), opacities (N,), colors (N, 3), and
            the raw offsets ``d_pos`` (N, 3) plus attention maps for regularisation.
        """
        means, quats, log_s = self.means, self.quats, self.log_scales
        head = self.group == HEAD
        mouth = self.group == MOUTH
        moving = head | mouth
        out: dict[str, Tensor] = {}
        use_deform = self.deform_enabled if deform is None else deform
        if expression is not None or use_deform:
            if expression is None:
                expression = self.predict_expression(audio, eye)
            mi_all = torch.nonzero(moving).squeeze(1)
            means = means.index_add(
                0, mi_all, self.expression_offsets(means[mi_all], expression, self.group[mi_all])
            )
        if use_deform:
            d_pos = torch.zeros_like(means)
            d_rot = torch.zeros_like(quats)
            d_scale = torch.zeros_like(log_s)
            hi = torch.nonzero(head).squeeze(1)
            mi = torch.nonzero(mouth).squeeze(1)
            # grid encodings are keyed by the canonical position (a Gaussian's identity, as in
            # TalkingGaussian), so the per-frame expression offsets do not move it across cells; the
            # sin/cos field keeps the expression-moved position it was trained with
            query = means if self.deform.encoding.kind == "frequency" else self.means
            dp, dr, ds, a_att, e_att = self.deform(query[hi], audio, eye)
            d_pos = d_pos.index_put((hi,), dp)
            d_rot = d_rot.index_put((hi,), dr)
            d_scale = d_scale.index_put((hi,), ds)
            if mi.numel():
                dpm, _, _, _, _ = self.mouth_deform(means[mi], audio, torch.zeros_like(eye))
                dpm = dpm * dpm.new_tensor([0.2, 1.0, 0.2])
                d_pos = d_pos.index_put((mi,), dpm)
            means = means + d_pos
            quats = F.normalize(quats, dim=-1) + d_rot
            log_s = log_s + d_scale
            out.update(d_pos=d_pos, audio_attention=a_att, eye_attention=e_att, head_index=hi)
        if head_pose is not None:
            R, t = head_pose[:3, :3], head_pose[:3, 3]
            mv = moving[:, None]
            means = torch.where(mv, means @ R.T + t, means)
            qR = rotmat_to_quat(R)[None].expand_as(quats)
            quats = torch.where(mv, quat_multiply(qR, quats), quats)
            torso = (self.group == TORSO)[:, None]
            if self.cfg.torso_motion and bool(torso.any()):
                Rt, tt = self.torso_motion(head_pose)
                pivot = self.torso_motion.pivot
                means = torch.where(torso, (means - pivot) @ Rt.T + pivot + tt, means)
                qT = rotmat_to_quat(Rt)[None].expand_as(quats)
                quats = torch.where(torso, quat_multiply(qT, quats), quats)
        out.update(
            means=means,
            quats=quats,
            scales=torch.exp(log_s),
            opacities=torch.sigmoid(self.opacity_logits),
            colors=torch.sigmoid(self.color_logits),
        )
        return out

    def render_scales(self, gs: dict[str, Tensor], viewmats: Tensor, Ks: Tensor) -> Tensor:
        """The posed Gaussians' scales for rendering through ``viewmats`` / ``Ks`` (C cameras)."""
        if self.train_camera is None:
            return gs["scales"]
        return footprint_scales(
            gs["means"], gs["scales"], viewmats, Ks, *self.train_camera, self.footprint_share
        )

    def render(
        self,
        gs: dict[str, Tensor],
        viewmats: Tensor,  # (C, 4, 4)
        Ks: Tensor,  # (C, 3, 3)
        width: int,
        height: int,
        background: Tensor | None = None,  # (C, H, W, 3) image or (C, 3) colour
        backend: str = "auto",
    ) -> RenderOutput:
        """Rasterise posed Gaussians and composite them over ``background``.

        A camera that samples the head more finely than the training camera (a larger image, or
        closer) gets the 3D footprint filter (:func:`~avatar3d.render.footprint.footprint_scales`), so
        the Gaussians fitted at the training size leave no cracks."""
        out = rasterize(
            gs["means"],
            gs["quats"],
            self.render_scales(gs, viewmats, Ks),
            gs["opacities"],
            gs["colors"],
            viewmats,
            Ks,
            width,
            height,
            None,
            backend=backend,
        )
        if background is not None:
            bg = background if background.ndim == 4 else background[:, None, None, :]
            out.colors = out.colors + (1.0 - out.alphas) * bg
        return out


__all__ = ["GaussianAvatar", "HEAD", "MOUTH", "TORSO"]
