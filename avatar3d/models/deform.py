"""Audio-conditioned deformation field (the avatar's motion model).

The audio front end follows ER-NeRF's pattern — a 1D-conv encoder over a window of log-mel steps
per video frame, then a learned attention over neighbouring frames for temporal smoothness — and
the deformation field follows TalkingGaussian's lesson "deform, don't repaint": it predicts only
position, rotation and scale offsets of the canonical Gaussians, with the last layer zero-initialised
so training starts from the static avatar. Position-dependent *region attention* gates which audio
channels (and the eye/blink code) each Gaussian listens to.
"""

from __future__ import annotations

import math

import roma
import torch
from torch import Tensor, nn

from .encoding import SpatialEncoding, positional_encoding  # noqa: F401  (re-exported)


class AudioEncoder(nn.Module):
    """(B, W, M) log-mel windows -> (B, A) audio codes."""

    def __init__(self, n_mels: int = 80, window: int = 16, dim: int = 32, width: int = 64):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(n_mels, width, 3, padding=1),
            nn.LeakyReLU(0.02),
            nn.Conv1d(width, width, 3, stride=2, padding=1),
            nn.LeakyReLU(0.02),
            nn.Conv1d(width, width, 3, stride=2, padding=1),
            nn.LeakyReLU(0.02),
        )
        steps = math.ceil(math.ceil(window / 2) / 2)
        self.fc = nn.Sequential(
            nn.Dropout(0.1), nn.Linear(width * steps, width), nn.LeakyReLU(0.02), nn.Linear(width, dim)
        )

    def forward(self, mel: Tensor) -> Tensor:  # mel: (B, W, M)
        h = self.conv(mel.transpose(1, 2))  # (B, width, W/4)
        return self.fc(h.flatten(1))


class TemporalSmoother(nn.Module):
    """Learned attention over S neighbouring frames' codes: (B, S, A) -> (B, A)."""

    def __init__(self, dim: int = 32, span: int = 8):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(dim, 16, 3, padding=1), nn.LeakyReLU(0.02), nn.Conv1d(16, 1, 3, padding=1)
        )
        self.span = span

    def forward(self, codes: Tensor) -> Tensor:
        w = torch.softmax(self.net(codes.transpose(1, 2)).squeeze(1), dim=-1)  # (B, S)
        return torch.einsum("bs,bsa->ba", w, codes)


class DeformationField(nn.Module):
    """Per-Gaussian offsets from canonical position, audio code and eye code.

    The canonical position goes through a spatial encoding (multi-resolution hash grid, tri-plane
    hash grids, or the older sin/cos encoding) and a small MLP to a per-point feature ``f``; ``f``
    decides (region attention, a sigmoid gate per channel) how much of each audio channel and of the
    eye code the point listens to; a head MLP maps ``[f, gated audio, gated eye]`` to offsets.

    forward(x (N, 3), audio (A,), eye (E,)) -> (d_pos (N, 3), d_rot (N, 4) wxyz delta, d_log_scale (N, 3),
    audio_attention (N,), eye_attention (N,))
    """

    def __init__(
        self,
        audio_dim: int = 32,
        eye_dim: int = 1,
        hidden: int = 64,
        pe_freqs: int = 6,
        extent: float = 0.12,
        max_offset: float = 0.02,
        encoding: SpatialEncoding | None = None,
    ):
        super().__init__()
        self.pe_freqs = pe_freqs
        self.extent = extent
        self.max_offset = max_offset
        self.encoding = (
            encoding
            if encoding is not None
            else SpatialEncoding("frequency", pe_freqs=pe_freqs, pe_scale=extent)
        )
        d_in = self.encoding.out_dim
        self.spatial = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.audio_att = nn.Linear(hidden, audio_dim)
        self.eye_att = nn.Linear(hidden, eye_dim)
        self.head = nn.Sequential(
            nn.Linear(hidden + audio_dim + eye_dim, hidden), nn.ReLU(), nn.Linear(hidden, 10)
        )
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: Tensor, audio: Tensor, eye: Tensor):
        f = self.spatial(self.encoding(x))  # (N, H)
        a_att = torch.sigmoid(self.audio_att(f))  # (N, A)
        e_att = torch.sigmoid(self.eye_att(f))  # (N, E)
        a = a_att * audio[None, :]
        e = e_att * eye[None, :]
        out = self.head(torch.cat([f, a, e], dim=-1))
        d_pos = self.max_offset * torch.tanh(out[:, :3])
        d_rot = out[:, 3:7] * 0.1
        d_scale = 0.3 * torch.tanh(out[:, 7:10])
        return d_pos, d_rot, d_scale, a_att.mean(-1), e_att.mean(-1)


class TorsoMotion(nn.Module):
    """Head pose -> rigid motion of the torso.

    People lean and sway while they talk: the shoulders follow the head's translation and part of its
    turn. ER-NeRF conditions its torso field on the head pose; here a small MLP maps the head's pose
    relative to the rest frame — (rotation vector in rad, translation / 0.1 m) — to a rotation (at most
    ``max_angle`` rad) and a translation (at most ``max_shift`` m per axis) of all torso Gaussians about
    ``pivot`` (the torso's centroid). The output is differenced against the rest pose's, so the rest
    pose leaves the torso exactly where it was captured; the last layer starts at zero (a static torso).
    """

    def __init__(self, hidden: int = 32, max_angle: float = 0.2, max_shift: float = 0.05):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, hidden), nn.Tanh(), nn.Linear(hidden, 6))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.max_angle, self.max_shift = float(max_angle), float(max_shift)
        self.register_buffer("pivot", torch.zeros(3))

    def forward(self, head_pose: Tensor) -> tuple[Tensor, Tensor]:
        """(4, 4) head -> world pose (relative to the rest frame) -> torso rotation (3, 3), translation (3,)
        such that a torso point x moves to ``R (x - pivot) + pivot + t``."""
        x = torch.cat([roma.rotmat_to_rotvec(head_pose[:3, :3]), head_pose[:3, 3] / 0.1])
        y = self.net(x) - self.net(torch.zeros_like(x))
        n = y[:3].norm().clamp_min(1e-12)
        rot = y[:3] * (self.max_angle * torch.tanh(n / self.max_angle) / n)
        shift = self.max_shift * torch.tanh(y[3:] / self.max_shift)
        return roma.rotvec_to_rotmat(rot), shift


class AudioMotion(nn.Module):
    """Audio windows of neighbouring frames -> smoothed audio code for the centre frame.

    forward(mel (B, S, W, M + V)) -> (B, A + V), where S = ``span`` frames centred on each target
    frame. With ``n_visemes`` V > 0 the last V feature channels are the speech front end's per-frame
    vector (the same at every window step): they bypass the encoder, and the code ends with that
    vector of frame ``centre + lag`` (``lag`` a buffer, set when the viseme map is fitted; negative =
    the mouth moves before the sound), so every caller that turns features into codes carries it.
    """

    def __init__(self, n_mels: int = 80, window: int = 16, dim: int = 32, span: int = 8, n_visemes: int = 0):
        super().__init__()
        self.encoder = AudioEncoder(n_mels, window, dim)
        self.smoother = TemporalSmoother(dim, span)
        self.span = span
        self.n_visemes = int(n_visemes)
        self.n_mels = int(n_mels)
        if self.n_visemes:
            self.register_buffer("viseme_lag", torch.zeros((), dtype=torch.int64))

    def forward(self, mel: Tensor) -> Tensor:
        B, S, W, M = mel.shape
        V = self.n_visemes
        if V:
            k = int((S // 2 + self.viseme_lag).clamp(0, S - 1))
            vis = mel[:, k, 0, M - V :]
            mel = mel[..., : M - V]
        codes = self.encoder(mel.reshape(B * S, W, M - V)).reshape(B, S, -1)
        code = self.smoother(codes)
        return torch.cat([code, vis], -1) if V else code


def gather_windows(features: Tensor, index: Tensor | int, span: int) -> Tensor:
    """Audio windows of the ``span`` frames around each index (edge-clamped).

    Args:
        features: (T, W, M) per-frame mel windows.
        index: (B,) frame indices.
    Returns:
        (B, span, W, M)
    """
    idx = torch.as_tensor(index, device=features.device).reshape(-1)
    offs = torch.arange(span, device=features.device) - span // 2
    j = (idx[:, None] + offs[None, :]).clamp(0, features.shape[0] - 1)
    return features[j]
