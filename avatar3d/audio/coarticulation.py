"""Phones -> per-frame viseme weights with coarticulation (used by :mod:`avatar3d.audio.visemes`).

Each phone segment ``[s, e)`` gets a dominance function: ``alpha`` inside its span, a Gaussian
ramp ``alpha * exp(-((s - t) / TAU_ANT)^2)`` before it (the lips anticipate the next sound: half
its weight 50 ms early, a tenth 90 ms early) and a shorter one ``alpha * exp(-((t - e) / TAU_REL)^2)`` after it. At any
time the viseme weights are the segments' dominances normalised to sum to 1, pooled per viseme, so
neighbouring visemes blend. Visually strong articulations dominate their neighbours within their
span (bilabials most, then labiodentals and lip rounding), but anticipate with no more than a vowel's
strength (their extra strength fades within ``TAU_CORE`` of the span), so the lips move towards a
closure before it and close fully on it; tongue-only consonants are weak, so the surrounding vowels
shape the lips through them, as in speech.

A video frame averages the weights at ``M = ceil(100 / fps)`` sub-times spread over its span, then
moves towards the sub-time of strongest bilabial closure by that closure's weight, so a p/b/m
shorter than a frame still closes the lips fully in the frame that holds it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PHONE_TO_VISEME", "VISEMES", "hard_visemes", "segment_arrays", "viseme_weights"]

VISEMES: tuple[str, ...] = (
    "sil",
    "PP",
    "FF",
    "TH",
    "DD",
    "kk",
    "CH",
    "SS",
    "nn",
    "RR",
    "aa",
    "E",
    "ih",
    "oh",
    "ou",
)
_V = {v: i for i, v in enumerate(VISEMES)}
SIL, PP = _V["sil"], _V["PP"]

PHONE_TO_VISEME: dict[str, str] = {
    **dict.fromkeys(("P", "B", "M"), "PP"),
    **dict.fromkeys(("F", "V"), "FF"),
    **dict.fromkeys(("TH", "DH"), "TH"),
    **dict.fromkeys(("T", "D"), "DD"),
    **dict.fromkeys(("N", "L"), "nn"),
    **dict.fromkeys(("K", "G", "NG"), "kk"),
    **dict.fromkeys(("CH", "JH", "SH", "ZH"), "CH"),
    **dict.fromkeys(("S", "Z"), "SS"),
    **dict.fromkeys(("R", "ER"), "RR"),
    **dict.fromkeys(("AA", "AH", "AO", "AW", "AY"), "aa"),
    **dict.fromkeys(("EH", "AE", "EY"), "E"),
    **dict.fromkeys(("IH", "IY"), "ih"),
    **dict.fromkeys(("OW", "OY"), "oh"),
    **dict.fromkeys(("UH", "UW", "W"), "ou"),
    "SIL": "sil",
}
_TAKES_NEXT = ("HH", "Y")  # take the next vowel's (else the next sound's) viseme
_VOWEL_VISEMES = {_V[v] for v in ("aa", "E", "ih", "oh", "ou", "RR")}

# Dominance strength per viseme.
_ALPHA = np.ones(len(VISEMES), np.float64)
_ALPHA[PP] = 6.0
_ALPHA[_V["FF"]] = 3.0
_ALPHA[_V["ou"]] = 1.5
for _w in ("TH", "DD", "kk", "nn", "SS", "CH"):
    _ALPHA[_V[_w]] = 0.8
TAU_ANT = 0.06  # s, anticipation ramp before a segment
TAU_REL = 0.035  # s, release ramp after it
TAU_CORE = 0.02  # s, how far outside its span a strong viseme keeps its extra strength
REACH = 3.5 * TAU_ANT  # beyond this a segment's dominance is negligible (< 1e-5 of alpha)
_BLOCK_FRAMES = 512  # frames per dominance block (bounds memory to a few MB)


def segment_arrays(segments) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phone segments -> (starts (S,), ends (S,), viseme index (S,) int) with HH/Y resolved.

    Unknown labels (fillers such as ``+NSN+``) map to ``sil``. HH and Y take the viseme of the next
    vowel if it follows directly, else of the next non-silent sound, else ``sil``.
    """
    n = len(segments)
    starts = np.array([s.start for s in segments], np.float64)
    ends = np.array([s.end for s in segments], np.float64)
    vis = np.full(n, -1, np.int64)
    for i, s in enumerate(segments):
        if s.phone not in _TAKES_NEXT:
            vis[i] = _V[PHONE_TO_VISEME.get(s.phone, "sil")]
    for i in range(n - 1, -1, -1):  # right to left, so HH Y AA resolves to aa for both
        if vis[i] >= 0:
            continue
        nxt = vis[i + 1] if i + 1 < n and starts[i + 1] - ends[i] < 0.05 else SIL
        vis[i] = nxt if nxt >= 0 else SIL
    return starts, ends, vis


def _dominance(t: np.ndarray, starts: np.ndarray, ends: np.ndarray, vis: np.ndarray) -> np.ndarray:
    """Viseme weights (len(t), 15) at times ``t`` from the given segments; rows sum to 1."""
    if starts.size == 0:
        out = np.zeros((t.shape[0], len(VISEMES)), np.float64)
        out[:, SIL] = 1.0
        return out
    tt = t[:, None]
    before = np.maximum(starts[None, :] - tt, 0.0)
    after = np.maximum(tt - ends[None, :], 0.0)
    alpha = _ALPHA[vis][None, :]
    near = np.exp(-(((before + after) / TAU_CORE) ** 2))  # 1 inside the span, falling off within ~30 ms
    strength = alpha * near + np.minimum(alpha, 1.0) * (1.0 - near)
    dom = strength * np.exp(-((before / TAU_ANT) ** 2) - (after / TAU_REL) ** 2)  # (T, S)
    total = dom.sum(axis=1)
    out = dom @ np.eye(len(VISEMES))[vis]  # pool per viseme: (T, S) @ (S, 15)
    empty = total < 1e-6  # far from every segment
    out[~empty] /= total[~empty, None]
    out[empty] = 0.0
    out[empty, SIL] = 1.0
    return out


def viseme_weights(
    times: np.ndarray, fps: float, starts: np.ndarray, ends: np.ndarray, vis: np.ndarray
) -> np.ndarray:
    """Per-frame viseme weights (N, 15) float64 for frames centred at ``times`` (N,) seconds.

    Rows are non-negative and sum to 1 (see the module docstring for the frame pooling).
    """
    m = max(1, int(np.ceil(100.0 / fps - 1e-9)))
    offsets = ((np.arange(m) - (m - 1) / 2.0) / (m * fps))[None, :]  # (1, M)
    out = np.empty((times.shape[0], len(VISEMES)), np.float64)
    for b in range(0, times.shape[0], _BLOCK_FRAMES):
        tb = times[b : b + _BLOCK_FRAMES]
        lo, hi = tb[0] - 1.0 / fps - REACH, tb[-1] + 1.0 / fps + REACH
        sel = (ends > lo) & (starts < hi)
        sub = (tb[:, None] + offsets).reshape(-1)  # (n * M,)
        rows = _dominance(sub, starts[sel], ends[sel], vis[sel]).reshape(tb.shape[0], m, -1)
        mean = rows.mean(axis=1)  # (n, 15)
        j = rows[:, :, PP].argmax(axis=1)
        closure = rows[np.arange(tb.shape[0]), j]  # (n, 15) the sub-time of strongest closure
        k = closure[:, PP : PP + 1]
        out[b : b + _BLOCK_FRAMES] = mean + (closure - mean) * k
    return out


def hard_visemes(segments, times: np.ndarray) -> np.ndarray:
    """Viseme index (N,) int of the phone under each time (no coarticulation); ``sil`` outside segments."""
    starts, ends, vis = segment_arrays(segments)
    t = np.asarray(times, np.float64)
    i = np.searchsorted(starts, t, side="right") - 1
    ok = (i >= 0) & (t < ends[np.clip(i, 0, None)] if ends.size else np.zeros(t.shape, bool))
    return np.where(ok, vis[np.clip(i, 0, max(vis.size - 1, 0))] if vis.size else SIL, SIL)
