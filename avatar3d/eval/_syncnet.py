"""SyncNet LSE-C / LSE-D from user-supplied weights (``syncnet_v2.model`` of joonson/syncnet_python).

The network (the "S" model: an audio CNN on 13 x 20 MFCC windows and a 3D lip CNN on 5 frames of
224 x 224 face crops, 1024-d embeddings) is defined here with the reference's module names so its
state dict loads unchanged; the MFCC is a NumPy re-implementation of ``python_speech_features.mfcc``
defaults (25 ms / 10 ms, 26 filters, 512-point FFT, 13 cepstra, lifter 22, log-energy as c0) on
int16-scaled samples, as the reference reads them. Scores follow the reference ``evaluate``: for each
5-frame window the distance to the audio windows at offsets -15..15 frames; LSE-D is the minimum of
the mean distance curve, LSE-C the median minus that minimum, offset = 15 - argmin.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.fftpack import dct
from torch import nn

from ..core.constants import SAMPLE_RATE

VSHIFT = 15  # video frames of audio offset searched either way
FPS = 25.0  # SyncNet's video rate
CROP_PX = 224  # side of the face crops the lip network reads
LIP_FRAMES = 5  # video frames per lip window
MFCC_PER_FRAME = 4  # MFCC steps (100 per second) per 25 fps video frame
SAMPLES_PER_FRAME = round(SAMPLE_RATE / FPS)  # audio samples per 25 fps video frame
INT16_SCALE = 32767.0  # the reference reads 16-bit PCM
# python_speech_features.mfcc defaults
PREEMPHASIS = 0.97
WINDOW_S, STEP_S = 0.025, 0.01
CEP_LIFTER = 22


def _bn_relu(c: int, dim: int = 2) -> list[nn.Module]:
    return [nn.BatchNorm2d(c) if dim == 2 else nn.BatchNorm3d(c), nn.ReLU(inplace=True)]


class SyncNetS(nn.Module):
    """The reference S model; ``forward_aud`` (B, 1, 13, 20) and ``forward_lip`` (B, 3, 5, 224, 224)."""

    def __init__(self, dim: int = 1024) -> None:
        super().__init__()
        self.netcnnaud = nn.Sequential(
            nn.Conv2d(1, 64, 3, 1, 1),
            *_bn_relu(64),
            nn.MaxPool2d(1, 1),
            nn.Conv2d(64, 192, 3, 1, 1),
            *_bn_relu(192),
            nn.MaxPool2d(3, (1, 2)),
            nn.Conv2d(192, 384, 3, padding=1),
            *_bn_relu(384),
            nn.Conv2d(384, 256, 3, padding=1),
            *_bn_relu(256),
            nn.Conv2d(256, 256, 3, padding=1),
            *_bn_relu(256),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(256, 512, (5, 4), padding=0),
            nn.BatchNorm2d(512),
            nn.ReLU(),
        )
        self.netfcaud = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, dim)
        )
        self.netfclip = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, dim)
        )
        self.netcnnlip = nn.Sequential(
            nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2), 0),
            *_bn_relu(96, 3),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)),
            *_bn_relu(256, 3),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_bn_relu(256, 3),
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_bn_relu(256, 3),
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_bn_relu(256, 3),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            nn.Conv3d(256, 512, (1, 6, 6), padding=0),
            nn.BatchNorm3d(512),
            nn.ReLU(inplace=True),
        )

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(x).flatten(1))


# ------------------------------------------------------------------------------------ MFCC
def _hz2mel(hz):
    return 2595 * np.log10(1 + np.asarray(hz) / 700.0)


def _mel2hz(mel):
    return 700 * (10 ** (np.asarray(mel) / 2595.0) - 1)


def mfcc(
    signal: np.ndarray, sr: int = SAMPLE_RATE, numcep: int = 13, nfilt: int = 26, nfft: int = 512
) -> np.ndarray:
    """``python_speech_features.mfcc`` with its defaults -> (frames, numcep)."""
    x = np.asarray(signal, np.float64)
    x = np.append(x[0], x[1:] - PREEMPHASIS * x[:-1])
    flen, step = round(WINDOW_S * sr), round(STEP_S * sr)
    n = 1 if len(x) <= flen else 1 + int(np.ceil((len(x) - flen) / step))
    x = np.concatenate([x, np.zeros(max(0, (n - 1) * step + flen - len(x)))])
    idx = np.arange(flen)[None] + step * np.arange(n)[:, None]
    frames = x[idx]  # (n, flen), rectangular window as in the reference
    pspec = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    energy = pspec.sum(1)
    energy = np.where(energy == 0, np.finfo(float).eps, energy)
    mel = np.linspace(_hz2mel(0), _hz2mel(sr / 2), nfilt + 2)
    bins = np.floor((nfft + 1) * _mel2hz(mel) / sr)
    fbank = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        for i in range(int(bins[j]), int(bins[j + 1])):
            fbank[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(int(bins[j + 1]), int(bins[j + 2])):
            fbank[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    feat = pspec @ fbank.T
    feat = np.log(np.where(feat == 0, np.finfo(float).eps, feat))
    feat = dct(feat, type=2, axis=1, norm="ortho")[:, :numcep]
    lift = 1 + (CEP_LIFTER / 2.0) * np.sin(np.pi * np.arange(numcep) / CEP_LIFTER)
    feat = feat * lift
    feat[:, 0] = np.log(energy)
    return feat


# ------------------------------------------------------------------------------------ scores
def load_syncnet(path: str | Path) -> SyncNetS | str:
    """The S model from a weights file (``torch.load(weights_only=True)``) or a "not computed" reason."""
    p = Path(path)
    if not p.is_file():
        return f"not computed: SyncNet weights file not found: {p}"
    try:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise TypeError("not a state dict")
        state = {k.removeprefix("module.").removeprefix("__S__."): v for k, v in state.items()}
        net = SyncNetS()
        missing, _ = net.load_state_dict(state, strict=False)
    except Exception as e:  # noqa: BLE001  (corrupt / foreign file: report it, never crash the evaluation)
        return f"not computed: {p.name} is not SyncNet weights ({str(e).splitlines()[0][:120]})"
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if missing:
        return f"not computed: {p.name} lacks SyncNet weights ({missing[0]} ...)"
    return net.eval()


@torch.no_grad()
def lse_scores(frames: np.ndarray, wave16k: np.ndarray, fps: float, weights, batch: int = 8) -> dict | str:
    """LSE-C / LSE-D / offset of (T, H, W, 3) uint8 RGB face crops and mono audio at
    :data:`SAMPLE_RATE`."""
    net = load_syncnet(weights)
    if isinstance(net, str):
        return net
    T = len(frames)
    n25 = int(np.floor(T * FPS / fps))  # resample the frames onto the 25 fps timeline SyncNet needs
    pick = np.minimum((np.arange(n25) * fps / FPS).astype(int), T - 1)
    ims = np.stack(
        [
            cv2.cvtColor(
                cv2.resize(frames[i], (CROP_PX, CROP_PX), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR
            )
            for i in pick
        ]
    ).astype(np.float32)  # BGR 0..255
    cc = mfcc(np.asarray(wave16k, np.float64) * INT16_SCALE).T.astype(np.float32)  # (13, n)
    n = min(len(ims), int(np.floor(len(wave16k) / SAMPLES_PER_FRAME)))
    last = n - LIP_FRAMES
    if last < 1:
        return "not computed: fewer than 6 frames for SyncNet"
    vid = torch.from_numpy(ims).permute(3, 0, 1, 2)[None]  # (1, 3, T, 224, 224)
    aud = torch.from_numpy(cc)[None, None]  # (1, 1, 13, n_mfcc)
    im_feat, cc_feat = [], []
    for i in range(0, last, batch):
        js = range(i, min(last, i + batch))
        im_feat.append(net.forward_lip(torch.cat([vid[:, :, j : j + LIP_FRAMES] for j in js])))
        a0 = [MFCC_PER_FRAME * j for j in js]
        cc_feat.append(
            net.forward_aud(torch.cat([aud[..., a : a + MFCC_PER_FRAME * LIP_FRAMES] for a in a0]))
        )
    fi, fa = torch.cat(im_feat), torch.cat(cc_feat)  # (last, 1024)
    win = 2 * VSHIFT + 1
    fa_p = torch.nn.functional.pad(fa, (0, 0, VSHIFT, VSHIFT))
    dists = torch.stack(
        [
            torch.nn.functional.pairwise_distance(fi[[i]].repeat(win, 1), fa_p[i : i + win])
            for i in range(len(fi))
        ],
        1,
    )  # (win, last)
    mdist = dists.mean(1)
    minval, minidx = torch.min(mdist, 0)
    return {
        "lse_d": round(float(minval), 4),
        "lse_c": round(float(torch.median(mdist) - minval), 4),
        "offset_frames": int(VSHIFT - int(minidx)),
        "windows": int(last),
        "note": "face crops from our landmarker (not the reference S3FD crops)",
    }


__all__ = ["SyncNetS", "load_syncnet", "lse_scores", "mfcc"]
