"""Audio-visual sync: our always-available measure, and SyncNet LSE-C/D when weights are supplied.

**Mouth-opening / audio-envelope correlation** (ours, always computed; it is *not* SyncNet):

* mouth signal ``m[t]``: inner-lip gap (mean of the 5 upper/lower inner-lip landmark pairs) divided by
  the inter-ocular distance (outer eye corners 33-263), from our landmarker, per video frame;
* audio signal ``a[t]``: :func:`avatar3d.audio.audio_energy` (RMS envelope of the 1/fps span centred on
  the frame's timestamp, dB mapped to [0, 1]);
* ``corr[L]`` = Pearson correlation of ``m[t]`` with ``a[t - L]`` over the frames where both exist,
  for lags ``L = -N..N`` (N = 15 frames by default, SyncNet's search range; ``T // 3`` for clips of
  T < 45 frames). **Positive L: the mouth moves L frames after the sound** (the video lags the audio);
* ``offset`` = the lag of the highest correlation; ``peak`` = that correlation;
  ``confidence = peak - median(corr over all lags)`` — like SyncNet's confidence (median distance
  minus minimum distance), high when one lag clearly stands out. The lag range matters (mouth and
  envelope change at the syllable rate): why ±15 frames, docs/design/sync-measure.md;
* baselines: the same measure against **shuffled audio** (the envelope cut into segments, the
  segments permuted so none stays in place; mean over several permutations) — what chance gives —
  and on the **ground-truth video** — the ceiling a real speaker reaches with this measure.

**SyncNet LSE-C / LSE-D** (Chung & Zisserman 2016; as used by Wav2Lip and the talking-head papers):
computed by :mod:`avatar3d.eval._syncnet` only when the user gives the ``syncnet_v2.model`` weights;
otherwise reported as "not computed". Our face crops differ from the S3FD crops of the reference
script, so its numbers are indicative, not directly comparable with published tables.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ..core.topology import INNER_LIP_PAIRS
from ._syncnet import lse_scores

MAX_LAG = 15  # frames; SyncNet's ±15-frame offset search
MIN_MOUTH_STD = (
    0.01  # real mouth-opening std (fraction of the inter-ocular distance) below which it is "still"
)
EYE_OUTER = (33, 263)


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """(T, 478, D) landmarks -> (T,) inner-lip gap / inter-ocular distance (NaN where missing)."""
    lm = np.asarray(landmarks, np.float64)[..., :2]
    pairs = np.array(INNER_LIP_PAIRS)
    gap = np.linalg.norm(lm[:, pairs[:, 0]] - lm[:, pairs[:, 1]], axis=-1).mean(-1)
    iod = np.linalg.norm(lm[:, EYE_OUTER[0]] - lm[:, EYE_OUTER[1]], axis=-1)
    return gap / np.where(iod > 1e-9, iod, np.nan)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return float("nan")
    x, y = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 1e-12 else 0.0


def lag_correlations(
    mouth: np.ndarray, audio: np.ndarray, max_lag: int = MAX_LAG
) -> tuple[np.ndarray, np.ndarray]:
    """corr[L] = Pearson(mouth[t], audio[t - L]) for L in -N..N -> (lags (2N+1,), corr (2N+1,)), where
    N = min(max_lag, T // 3) (at least 1)."""
    m, a = np.asarray(mouth, np.float64), np.asarray(audio, np.float64)
    if m.shape != a.shape or m.ndim != 1:
        raise ValueError(f"mouth and audio signals must be (T,) of one length, got {m.shape} and {a.shape}")
    T = len(m)
    max_lag = int(min(max_lag, max(1, T // 3)))  # short clips: keep every lag's overlap >= 2/3 of them
    lags = np.arange(-max_lag, max_lag + 1)
    corr = np.full(len(lags), np.nan)
    for k, L in enumerate(lags):
        if L >= 0:
            corr[k] = _pearson(m[L:], a[: T - L]) if T - L >= 3 else np.nan
        else:
            corr[k] = _pearson(m[: T + L], a[-L:]) if T + L >= 3 else np.nan
    return lags, corr


@dataclass
class SyncResult:
    """offset (frames, + = video lags audio), peak correlation, confidence (peak - median over
    lags), the whole curve, and how many frames had a mouth signal."""

    offset: int | None
    peak: float
    confidence: float
    lags: np.ndarray
    corr: np.ndarray
    frames: int
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        r = lambda v: None if v is None or not np.isfinite(v) else round(float(v), 5)
        d = {
            "offset_frames": self.offset,
            "peak_correlation": r(self.peak),
            "confidence": r(self.confidence),
            "lags": self.lags.astype(int).tolist(),
            "correlation": [r(v) for v in self.corr],
            "frames": self.frames,
        }
        d.update(self.extra)
        return d


def av_sync(mouth: np.ndarray, audio: np.ndarray, max_lag: int = MAX_LAG) -> SyncResult:
    """Our sync measure of one mouth signal against one audio envelope (see the module docs)."""
    lags, corr = lag_correlations(mouth, audio, max_lag)
    m, a = np.asarray(mouth, float), np.asarray(audio, float)
    n = int(np.isfinite(m).sum())
    nan = float("nan")
    for sig, what in ((a, "audio envelope"), (m, "mouth opening")):
        ok = sig[np.isfinite(sig)]
        if ok.size < 3 or np.ptp(ok) < 1e-6:
            return SyncResult(
                None,
                nan,
                nan,
                lags,
                np.full(len(lags), nan),
                n,
                {"reason": f"not computed: the {what} is constant over the evaluated frames"},
            )
    if not np.isfinite(corr).any():
        return SyncResult(None, nan, nan, lags, corr, n, {"reason": "not computed: too few frames"})
    k = int(np.nanargmax(corr))
    peak = float(corr[k])
    return SyncResult(int(lags[k]), peak, peak - float(np.nanmedian(corr)), lags, corr, n)


def shuffle_segments(x: np.ndarray, segment: int, rng: np.random.Generator) -> np.ndarray:
    """Cut (T,) into segments of ``segment`` frames (the last may be shorter) and permute them so that
    no segment stays in place (a random derangement; with one segment the signal is reversed)."""
    x = np.asarray(x)
    segs = [x[i : i + segment] for i in range(0, len(x), max(1, segment))]
    n = len(segs)
    if n < 2:
        return x[::-1].copy()
    while True:
        perm = rng.permutation(n)
        if not (perm == np.arange(n)).any():
            break
    return np.concatenate([segs[p] for p in perm])


def shuffled_baseline(
    mouth: np.ndarray,
    audio: np.ndarray,
    max_lag: int = MAX_LAG,
    segment: int | None = None,
    n_perm: int = 20,
    seed: int = 0,
) -> SyncResult:
    """Our measure against segment-shuffled audio, averaged over ``n_perm`` permutations.

    segment: frames per segment; default ``clip(T // 4, max_lag + 1, 25)`` (1 s at 25 fps for clips of
    4 s or longer; shorter clips still get at least 4 segments where possible). The returned curve is
    the mean curve; ``peak``/``confidence``/``offset`` are means (offset: the most common) over
    permutations, and ``extra`` holds their spread.
    """
    a = np.asarray(audio, np.float64)
    seg = int(segment) if segment else int(np.clip(len(a) // 4, max_lag + 1, 25))
    rng = np.random.default_rng(seed)
    runs = [av_sync(mouth, shuffle_segments(a, seg, rng), max_lag) for _ in range(max(1, n_perm))]
    if "reason" in runs[0].extra:  # constant signal: nothing to shuffle
        return runs[0]
    curves = np.array([r.corr for r in runs])  # (P, 2N+1), NaN where a lag has too few frames
    offs = [r.offset for r in runs if r.offset is not None]
    off = int(np.bincount(np.array(offs) + max_lag).argmax() - max_lag) if offs else None
    with warnings.catch_warnings():  # all-NaN columns (very short clips) stay NaN, silently
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_curve = np.nanmean(curves, 0)
        peak = float(np.nanmean([r.peak for r in runs]))
        confs = np.array([r.confidence for r in runs])
        conf, conf_std = float(np.nanmean(confs)), float(np.nanstd(confs))
    return SyncResult(
        off,
        peak,
        conf,
        runs[0].lags,
        mean_curve,
        runs[0].frames,
        {
            "segment_frames": seg,
            "permutations": len(runs),
            "confidence_std": round(conf_std, 5) if np.isfinite(conf_std) else None,
        },
    )


def sync_report(
    avatar_mouth: np.ndarray, gt_mouth: np.ndarray | None, envelope: np.ndarray, max_lag: int = MAX_LAG
) -> dict:
    """Our measure for the avatar, the ground-truth video (ceiling) and shuffled audio (chance), plus
    ``mouth_motion_ratio`` = std of the avatar's mouth opening / std of the real one (correlation is
    blind to amplitude: 1 = as much mouth motion as the real speaker; None when the real mouth's std is
    below :data:`MIN_MOUTH_STD`, i.e. it does not move)."""
    out = {
        "measure": "mouth-opening / audio-envelope correlation over a ±lag search (ours; not SyncNet)",
        "definition": (
            "corr[L] = Pearson(mouth[t], envelope[t-L]); offset = argmax (frames, + = video lags "
            "audio); confidence = peak - median over lags"
        ),
        "max_lag_frames": max_lag,
        "avatar": av_sync(avatar_mouth, envelope, max_lag).to_dict(),
        "shuffled_audio": shuffled_baseline(avatar_mouth, envelope, max_lag).to_dict(),
    }
    if gt_mouth is not None:
        out["ground_truth"] = av_sync(gt_mouth, envelope, max_lag).to_dict()
        a, g = np.asarray(avatar_mouth, float), np.asarray(gt_mouth, float)
        sa, sg = (
            np.nanstd(a) if np.isfinite(a).any() else np.nan,
            np.nanstd(g) if np.isfinite(g).any() else np.nan,
        )
        # correlation ignores amplitude: a mouth that barely moves can still correlate. Undefined when the
        # real mouth hardly moves (silence): its std is then landmark noise.
        ok = np.isfinite(sa) and np.isfinite(sg) and sg >= MIN_MOUTH_STD
        out["mouth_motion_ratio"] = round(float(sa / sg), 4) if ok else None
    return out


def syncnet_scores(frames: np.ndarray, wave16k: np.ndarray, fps: float, weights) -> dict | str:
    """SyncNet LSE-C / LSE-D of face crops (T, H, W, 3) uint8 RGB with audio at SAMPLE_RATE, or a
    "not computed: ..." string when no usable weights are given."""
    if not weights:
        return "not computed: no SyncNet weights file given (--syncnet-weights)"
    return lse_scores(frames, wave16k, fps, weights)


__all__ = [
    "MAX_LAG",
    "SyncResult",
    "av_sync",
    "lag_correlations",
    "mouth_opening",
    "shuffle_segments",
    "shuffled_baseline",
    "sync_report",
    "syncnet_scores",
]
