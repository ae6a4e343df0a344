"""Invisible provenance watermark on rendered video: a label saying "made by avatar3d", not a lock.

Scheme (docs/provenance.md; why its strength and threshold: docs/design/watermark.md):

* **Payload**, 64 bits: a 32-bit avatar id, a 16-bit library version (major 4 bits, minor 6, patch
  6) and a CRC-16/CCITT (``binascii.crc_hqx``, init 0xFFFF) of those 48 bits, sent MSB first.
* **Patterns**: from one fixed, public library key, 65 luminance patterns on a 128x128 tile,
  band-limited to 2..8 cycles per tile (wavelengths 16..64 px, which H.264 keeps, also after a
  halving). The band's frequency bins are split at random: a flat-spectrum sync pattern on
  ``SYNC_BINS`` of them, 64 orthonormal bit patterns on the rest. The tile is
  ``sqrt(SYNC_SHARE) * sync + sqrt((1 - SYNC_SHARE) / 64) * sum(+-bit patterns)``.
* **Embedding**: the tile is repeated over the frame (period 128 px, x k from k * 1024 px) and
  added to R, G and B alike (luma only), weighted towards flat areas, minus the frame's own
  projections on the patterns (informed embedding), and scaled so every frame's mean squared
  change is fixed (``TARGET_MSE``). The same mark is in every frame.
* **Detection** (blind, over the whole video): per frame the luma residual (minus a 4 px blur)
  divided by its local contrast is summed over frames; candidate tile periods come from the
  whitened autocorrelation of that sum, from priors (64/128/256 px) and from a geometric grid
  of rescales (``SCALES``, step ``SCALE_STEP``), so a crop is a shift and a resize a change of
  period; the sum is resampled to the 128 px tile and folded onto one tile; a circular
  correlation with the sync pattern, each frequency bin weighted by the fold's own smoothed power
  to the power ``-WHITEN`` (a matched filter for the picture's coloured leftover), gives the
  shift, and the peak's z-score (against the other 16384 shifts) is the raw score. The detection
  score is that raw score minus the median of the same search's best z-scores under
  ``NULL_KEYS`` keys never embedded, plus ``NULL_CENTRE``: the search's chance level on this very
  video is taken out. The bits are the signs of the weighted projections on the bit patterns at
  that shift, with Chase decoding against the CRC.
* The threshold ``Z_THRESHOLD`` comes from the score's null distribution on unmarked video and
  unused keys (benchmarks/bench_watermark.py).

Anyone who knows this scheme (it is public) can remove or forge the mark: it labels honest output.
"""

from __future__ import annotations

import binascii
import hashlib
import itertools
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from avatar3d.errors import Avatar3DError
from avatar3d.io.media import iter_frames, probe_video

__all__ = ["Z_THRESHOLD", "Detection", "Payload", "avatar_id_from_file", "detect", "embed", "embed_frames"]

TILE = 128  # reference tile, pixels
N_BITS = 64  # 32 id + 16 version + 16 CRC
KEY = 0x5EED_A3D0  # the library's public pattern key
SYNC_SHARE = 0.45  # fraction of the mark's energy in the sync pattern (docs/design/watermark.md)
SYNC_BINS = 0.35  # fraction of the band's frequency bins given to the sync pattern (the rest: bits)
BAND = (2.0, 8.0)  # cycles per tile kept in the patterns (wavelengths 16..64 px)
HOST_REJECTION = 0.9  # share of the picture's own pattern projections cancelled at embedding
HOST_ITERATIONS = 2  # measure-and-correct rounds of that cancellation per frame
TARGET_MSE = 1.80  # mean squared change per frame (uint8 levels²) before rounding
CHASE_BITS = 5  # 32 tries: a damaged payload passes the CRC-16 by chance with p ~ 32 / 65536
Z_THRESHOLD = 7.0  # detection threshold on the score, from its null distribution (docs/design/watermark.md)
MAX_FRAMES = 300  # frames read by detect (spread over the video)
_PERIODS = (24.0, 320.0)  # tile periods searched by detect, pixels
SCALES = (0.45, 2.2)  # rescales of the video searched by detect (times the render's tile period)
SCALE_STEP = 1.01  # ratio between neighbouring periods of that search (0: autocorrelation candidates only)
NULL_KEYS = 8  # keys never embedded whose scores on the same video set its chance level
NULL_CENTRE = 4.1  # the chance level the score is re-centred on (the null median of the fixed search)
WHITEN = 1.0  # detection weighs each frequency bin by its measured power to the power -WHITEN
WHITEN_SIGMA = 2.0  # bins: the neighbourhood over which that power is averaged


class WatermarkError(Avatar3DError):
    """A payload cannot be encoded (id or version out of range)."""


# ------------------------------------------------------------------------------------ payload


def _version_code(version: str) -> int:
    parts = version.split("+")[0].split(".")
    try:
        nums = [int("".join(ch for ch in p if ch.isdigit()) or 0) for p in (parts + ["0", "0"])[:3]]
    except ValueError:
        raise WatermarkError(f"library version {version!r} is not MAJOR.MINOR.PATCH") from None
    major, minor, patch = nums
    if not (0 <= major < 16 and 0 <= minor < 64 and 0 <= patch < 64):
        raise WatermarkError(f"library version {version!r} does not fit 4+6+6 bits")
    return (major << 12) | (minor << 6) | patch


@dataclass(frozen=True)
class Payload:
    """What the mark says: which avatar (32-bit id) and which library version made the video."""

    avatar_id: int
    version: str

    def __post_init__(self) -> None:
        if not 0 <= int(self.avatar_id) < 2**32:
            raise WatermarkError(f"avatar id {self.avatar_id} is not a 32-bit unsigned integer")
        _version_code(self.version)

    def to_bits(self) -> np.ndarray:
        """(64,) int8 in {0, 1}: id (32), version (16), CRC-16 of those 6 bytes (16), MSB first."""
        body = int(self.avatar_id).to_bytes(4, "big") + _version_code(self.version).to_bytes(2, "big")
        word = body + binascii.crc_hqx(body, 0xFFFF).to_bytes(2, "big")
        return np.unpackbits(np.frombuffer(word, np.uint8)).astype(np.int8)

    @classmethod
    def from_bits(cls, bits: np.ndarray) -> Payload | None:
        """The payload in 64 decoded bits, or None when the CRC does not match."""
        word = np.packbits(np.asarray(bits, np.uint8)).tobytes()
        if binascii.crc_hqx(word[:6], 0xFFFF) != int.from_bytes(word[6:8], "big"):
            return None
        code = int.from_bytes(word[4:6], "big")
        return cls(int.from_bytes(word[:4], "big"), f"{code >> 12}.{(code >> 6) & 63}.{code & 63}")


def avatar_id_from_file(path: str | os.PathLike[str]) -> int:
    """A stable 32-bit id from a file's content (SHA-256 prefix; for avatars saved without an id)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return int.from_bytes(h.digest()[:4], "big")


def new_avatar_id() -> int:
    """A random non-zero 32-bit avatar id (0 means "unknown avatar")."""
    return secrets.randbelow(2**32 - 1) + 1


# ------------------------------------------------------------------------------------ patterns


def _draw(key: int) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    """The key's split of the band into sync and bit bins, and its unit-RMS sync pattern; returns
    (generator for the bit patterns, bit-bin mask (TILE, TILE) bool, sync (TILE, TILE) float64).

    The band's frequency bins are split at random: the sync pattern has a flat spectrum on its
    share, the bit patterns live on the rest, so the sync is orthogonal to every bit pattern at
    every shift (its correlation peak carries no self-noise from the payload).
    """
    rng = np.random.default_rng(key)
    f = np.fft.fftfreq(TILE) * TILE
    rad = np.hypot(f[:, None], f[None, :])
    band = (rad >= BAND[0]) & (rad <= BAND[1])
    # H.264's 8/16 px block grid, seen at scale 1 or 1/2, folds onto rows and columns of bins at
    # multiples of 4 cycles per tile: those bins carry no mark (else real video scores on them)
    grid = (np.abs(f) % 4 == 0) & (f != 0)
    band &= ~(grid[:, None] | grid[None, :])
    # one random draw per conjugate pair of bins keeps the split Hermitian (real patterns)
    iy, ix = np.nonzero(band)
    pair = np.minimum(iy * TILE + ix, ((-iy) % TILE) * TILE + (-ix) % TILE)
    uniq, inv = np.unique(pair, return_inverse=True)
    sync_bins = np.zeros_like(band)
    sync_bins[iy, ix] = rng.random(len(uniq))[inv] < SYNC_BINS
    spec = np.fft.fft2(rng.standard_normal((TILE, TILE)))
    sync = np.fft.ifft2(spec / np.maximum(np.abs(spec), 1e-12) * sync_bins).real
    return rng, band & ~sync_bins, sync * TILE / np.linalg.norm(sync)


@lru_cache(maxsize=128)
def _sync_spectrum(key: int = KEY) -> tuple[np.ndarray, np.ndarray]:
    """(FFT of the sync pattern, its circular autocorrelation normalised to 1 at 0)."""
    fs = np.fft.fft2(_draw(key)[2])
    auto = np.fft.ifft2(fs * np.conj(fs)).real
    return fs, auto / auto[0, 0]


@lru_cache(maxsize=4)
def _patterns(key: int = KEY) -> np.ndarray:
    """(1 + N_BITS, TILE, TILE) float64 orthonormal band-limited patterns, each of unit RMS:
    the sync pattern (index 0), then one per payload bit (orthonormalised noise on the bit bins)."""
    rng, bit_bins, sync = _draw(key)
    x = np.fft.ifft2(np.fft.fft2(rng.standard_normal((N_BITS, TILE, TILE))) * bit_bins).real
    q, _ = np.linalg.qr(x.reshape(N_BITS, -1).T)
    return np.concatenate([sync[None], q.T.reshape(N_BITS, TILE, TILE) * TILE])


@lru_cache(maxsize=16)
def _tile(bits: tuple[int, ...], key: int = KEY) -> np.ndarray:
    """(TILE, TILE) float64 unit-RMS mark tile for the given 64 bits."""
    p = _patterns(key)
    signs = 2.0 * np.asarray(bits, np.float64) - 1.0
    t = np.sqrt(SYNC_SHARE) * p[0] + np.sqrt((1 - SYNC_SHARE) / N_BITS) * np.tensordot(signs, p[1:], 1)
    return t / np.sqrt(np.mean(t**2))


def _period(h: int, w: int) -> int:
    """Tile period of a frame: 128 px, times k for a shorter side of k * 1024 px or more."""
    return TILE * max(1, min(h, w) // 1024)


def _tiled(t: np.ndarray, h: int, w: int) -> np.ndarray:
    """(h, w) float32: a (TILE, TILE) tile resized to the frame's period and repeated over it."""
    per = _period(h, w)
    if per != TILE:
        t = cv2.resize(t, (per, per), interpolation=cv2.INTER_AREA if per < TILE else cv2.INTER_CUBIC)
    reps = (-(-h // per), -(-w // per))
    return np.ascontiguousarray(np.tile(t, reps)[:h, :w], dtype=np.float32)


@lru_cache(maxsize=4)
def _field(bits: tuple[int, ...], h: int, w: int, key: int = KEY) -> np.ndarray:
    """(h, w) float32: the mark tile repeated over a frame at the frame's period."""
    return _tiled(_tile(bits, key), h, w)


def _luma(frame: np.ndarray) -> np.ndarray:
    """(H, W) float32 BT.601 luma of an (H, W, 3) RGB frame."""
    f = np.asarray(frame)
    return f[..., 0] * np.float32(0.299) + f[..., 1] * np.float32(0.587) + f[..., 2] * np.float32(0.114)


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W) float32 Gaussian blur; wide ones are computed at a reduced size (same result, faster)."""
    f = int(sigma // 3)
    h, w = x.shape
    if f < 2 or min(h, w) < 8 * f:
        return cv2.GaussianBlur(x, (0, 0), sigma)
    small = cv2.resize(x, (w // f, h // f), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / f)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


# ------------------------------------------------------------------------------------ embedding


def embed(frame: np.ndarray, payload: Payload, index: int = 0, *, key: int = KEY) -> np.ndarray:
    """Mark one RGB frame: (H, W, 3) uint8 -> (H, W, 3) uint8 with a fixed mean squared change.

    ``index`` is the frame's position in the video; this scheme puts the same mark in every frame
    (the detector sums over frames), so it does not change the result. Cost: a few blurs per frame
    and ``HOST_ITERATIONS`` rounds of measuring the mark as the detector would (the tiled pattern
    is cached per payload and frame size).
    """
    a = np.asarray(frame)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise WatermarkError(f"embed expects an (H, W, 3) uint8 frame, got {a.shape} {a.dtype}")
    h, w = a.shape[:2]
    bits = tuple(int(b) for b in payload.to_bits())
    _, norm = _highpass(_luma(a))
    # more where the picture is flat: the detector weighs each pixel by 1 / local contrast, and the
    # codec keeps a faint low-frequency pattern there (textured areas would hide it better, but
    # the picture itself drowns it there)
    act = norm - 0.5
    mask = 1.0 / (act + 0.5 * float(act.mean()) + 1.0)
    out = _apply(a, _field(bits, h, w, key) * mask)
    if HOST_REJECTION > 0:
        tile = _tile(bits, key)
        for _ in range(HOST_ITERATIONS):
            tile = _reject_host(out, tile, bits, key)
            out = _apply(a, _tiled(tile, h, w) * mask)
    return out


def _apply(a: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """The frame plus ``delta`` scaled to the fixed mean squared change, rounded, as uint8."""
    ms = float(np.mean(delta * delta))
    if ms > 0:
        delta = delta * np.float32(np.sqrt(TARGET_MSE / ms))
    step = np.rint(delta).astype(np.int16)[..., None]  # the frame is integer: round the change once
    return np.clip(a.astype(np.int16) + step, 0, 255).astype(np.uint8)


def _reject_host(marked: np.ndarray, tile: np.ndarray, bits: tuple[int, ...], key: int) -> np.ndarray:
    """Informed embedding (improved spread spectrum): measure the marked frame's projections on the
    sync and bit patterns exactly as the detector does, at full and at half size, and take
    ``HOST_REJECTION`` of their deviation from the intended coefficients (what the picture and the
    detector's nonlinearity add) off the tile. Returns the corrected (TILE, TILE) tile."""
    h, w = marked.shape[:2]
    per = float(_period(h, w))
    pats = _patterns(key)
    signs = 2.0 * np.asarray(bits, np.float64) - 1.0
    coef = np.concatenate([[np.sqrt(SYNC_SHARE)], np.sqrt((1 - SYNC_SHARE) / N_BITS) * signs])
    half = cv2.resize(marked, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    err = np.zeros(1 + N_BITS)
    for frame, (px, py) in ((marked, (per, per)), (half, (per * (w // 2) / w, per * (h // 2) / h))):
        proj = pats.reshape(1 + N_BITS, -1) @ _fold(_residual(frame), px, py).ravel()
        gain = float(proj @ coef / (coef @ coef))  # detector units per unit of tile coefficient
        if gain <= 0:
            return tile
        err += (proj - gain * coef) / gain / 2
    return tile - HOST_REJECTION * np.tensordot(err, pats, axes=1)


def embed_frames(frames: Iterable[np.ndarray], payload: Payload, *, key: int = KEY) -> Iterable[np.ndarray]:
    """Lazily mark a stream of (H, W, 3) uint8 frames (for ``write_video``)."""
    for k, f in enumerate(frames):
        yield embed(f, payload, k, key=key)


# ------------------------------------------------------------------------------------ detection


@dataclass(frozen=True)
class Detection:
    """What :func:`detect` found.

    present: the sync z-score reached ``Z_THRESHOLD``; score: that z-score; payload: the decoded
    payload when its CRC checks (None otherwise); scale: the video's size relative to the render
    (1.0 = unchanged, 0.5 = halved); frames: frames examined; bit_errors_fixed: bits flipped to
    pass the CRC.
    """

    present: bool
    score: float
    payload: Payload | None
    scale: tuple[float, float]
    shift: tuple[int, int]
    frames: int
    bit_errors_fixed: int = 0

    def to_dict(self) -> dict:
        p = self.payload
        return {
            "present": self.present,
            "score": round(self.score, 2),
            "threshold": Z_THRESHOLD,
            "avatar_id": None if p is None else f"{p.avatar_id:08x}",
            "version": None if p is None else p.version,
            "scale": [round(s, 4) for s in self.scale],
            "frames": self.frames,
            "bit_errors_fixed": self.bit_errors_fixed,
        }


def _highpass(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(luma minus a 4 px blur, its local RMS + 0.5), both (H, W) float32."""
    hp = y - _smooth(y, 4.0)
    return hp, np.sqrt(_smooth(hp * hp, 4.0)) + 0.5


def _residual(frame: np.ndarray) -> np.ndarray:
    """(H, W) float32 contrast-normalised luma residual of one RGB frame (clipped to +-3)."""
    hp, norm = _highpass(_luma(frame))
    return np.clip(hp / norm, -3.0, 3.0)


def _accumulate(frames: Iterable[np.ndarray]) -> tuple[np.ndarray, int]:
    acc, n = None, 0
    for f in frames:
        f = np.asarray(f)
        if f.ndim != 3 or f.shape[2] != 3:
            raise WatermarkError(f"detect expects (H, W, 3) frames, got {f.shape}")
        r = _residual(f)
        if acc is None:
            acc = np.zeros_like(r, dtype=np.float64)
        elif r.shape != acc.shape:
            raise WatermarkError(f"frame size changed from {acc.shape} to {r.shape}")
        acc += r
        n += 1
    if acc is None:
        raise WatermarkError("no frames to examine")
    return acc, n


def _autocorr(acc: np.ndarray) -> np.ndarray:
    """(H, W) circular autocorrelation of the windowed sum after spectral whitening (the power
    spectrum over its local average): a periodic mark's spectral lines stand out of the content's
    smooth spectrum, so the lags of the tile lattice peak. Normalised to 1 at lag 0."""
    h, w = acc.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    x = (acc - acc.mean()) * win
    pw = np.abs(np.fft.fft2(x)) ** 2
    env = cv2.GaussianBlur(np.fft.fftshift(pw).astype(np.float32), (0, 0), 4.0)
    white = pw / (np.fft.ifftshift(env).astype(np.float64) + 1e-9 * pw.mean() + 1e-30)
    for n, axis in ((w, 1), (h, 0)):  # the codec's 4/8/16-px block grid makes lines at k/16 cycles/px
        lines = np.round(np.arange(1, 16) * n / 16).astype(int)
        bad = np.unique(np.concatenate([lines - 1, lines, lines + 1]) % n)
        np.put_along_axis(white, bad[None, :] if axis == 1 else bad[:, None], 0.0, axis=axis)
    a = np.fft.ifft2(white).real
    return a / max(a[0, 0], 1e-12)


def _period_candidates(profile: np.ndarray, n: int = 2) -> list[float]:
    """Best tile periods (px) from an autocorrelation profile over lags 0..L-1.

    Score of a period p: the sum of the profile at its multiples k*p within the profile, over
    sqrt(count) -- the fundamental beats its multiples and fractions. Grid 0.25 px, refined 0.02 px.
    """
    lags = np.arange(len(profile), dtype=np.float64)
    lim = len(profile) - 1.0

    def score(p: float) -> float:
        ks = np.arange(1, int(lim // p) + 1) * p
        return float(np.interp(ks, lags, profile).sum() / np.sqrt(len(ks))) if len(ks) else -np.inf

    grid = np.arange(_PERIODS[0], min(_PERIODS[1], lim), 0.25)
    if len(grid) == 0:
        return []
    s = np.array([score(p) for p in grid])
    out: list[float] = []
    for i in np.argsort(-s):
        if len(out) >= n:
            break
        if all(abs(grid[i] / q - 1) > 0.03 for q in out):
            fine = np.arange(grid[i] - 0.3, grid[i] + 0.3, 0.02)
            out.append(float(fine[np.argmax([score(p) for p in fine])]))
    return out


def _period_pairs(acc: np.ndarray) -> list[tuple[float, float]]:
    """Candidate (px, py) periods: isotropic ones from both axes' profiles, then per axis."""
    h, w = acc.shape
    a = _autocorr(acc)
    m = int(0.7 * min(h, w))
    px = _period_candidates(a[0, : int(0.7 * w)])
    py = _period_candidates(a[: int(0.7 * h), 0])
    iso = _period_candidates(a[0, :m] + a[:m, 0])
    prior = [(float(p), float(p)) for p in (TILE // 2, TILE, 2 * TILE) if p <= min(h, w)]
    return [(p, p) for p in iso] + [(x, y) for x in px for y in py] + prior + _scale_grid(h, w)


def _scale_grid(h: int, w: int) -> list[tuple[float, float]]:
    """Isotropic periods on a geometric grid (ratio ``SCALE_STEP``) over the rescales searched
    (``SCALES`` x the 128 px tile), up to 0.7 of the frame's shorter side: a weak mark whose
    lattice does not stand out of the autocorrelation is still found at any scale."""
    hi = min(SCALES[1] * TILE, 0.7 * min(h, w))
    lo = max(SCALES[0] * TILE, _PERIODS[0])
    if SCALE_STEP <= 1 or hi <= lo:
        return []
    n = int(np.floor(np.log(hi / lo) / np.log(SCALE_STEP))) + 1
    return [(float(p), float(p)) for p in lo * SCALE_STEP ** np.arange(n)]


def _fold(acc: np.ndarray, px: float, py: float) -> np.ndarray:
    """Resample the sum so the period (px, py) becomes TILE and fold it onto one (TILE, TILE) tile."""
    sx, sy = TILE / px, TILE / py
    src = acc.astype(np.float32)
    if min(sx, sy) < 1.0:  # shrinking: blur first so the resampling does not alias
        src = cv2.GaussianBlur(src, (0, 0), sigmaX=0.5 / sx, sigmaY=0.5 / sy)
    h, w = acc.shape
    nh, nw = max(1, int(np.ceil(h * sy / TILE))), max(1, int(np.ceil(w * sx / TILE)))
    m = np.array([[sx, 0.0, 0.0], [0.0, sy, 0.0]])
    r = cv2.warpAffine(src, m, (nw * TILE, nh * TILE), flags=cv2.INTER_LINEAR, borderValue=0.0)
    return r.reshape(nh, TILE, nw, TILE).sum(axis=(0, 2)).astype(np.float64)


def _bin_weights(spec: np.ndarray) -> np.ndarray:
    """(TILE, TILE) weight per frequency bin of a folded sum's spectrum ``spec``: its locally
    averaged power to the power ``-WHITEN`` (1: the matched filter for coloured noise, 0: none).
    The picture's leftover spectrum is far from flat across the mark's band; weighting each bin by
    its measured noise lets the quiet bins count instead of being drowned by the loud ones."""
    if WHITEN == 0:
        return np.ones(spec.shape)
    pw = np.fft.fftshift(np.abs(spec) ** 2).astype(np.float32)
    env = np.fft.ifftshift(cv2.GaussianBlur(pw, (0, 0), WHITEN_SIGMA)).astype(np.float64)
    return (env + 1e-9 * env.mean() + 1e-30) ** -WHITEN


def _sync_z(spec: np.ndarray, wts: np.ndarray, key: int) -> tuple[float, tuple[int, int], float]:
    """The sync correlation of a fold (its spectrum ``spec``), each frequency bin weighted by
    ``wts`` (:func:`_bin_weights`): (peak z-score, shift (dy, dx), noise std). The std is taken
    after removing the (weighted) sync's own autocorrelation scaled to the peak, so a strong mark
    is not held back by its own sidelobes."""
    fs, _ = _sync_spectrum(key)
    c = np.fft.ifft2(spec * np.conj(fs) * wts).real
    dy, dx = np.unravel_index(int(np.argmax(c)), c.shape)
    auto = np.fft.ifft2(np.abs(fs) ** 2 * wts).real
    rest = c - c[dy, dx] * np.roll(auto / auto[0, 0], (dy, dx), axis=(0, 1))
    sd = float(rest.std()) or 1e-12
    return float((c[dy, dx] - c.mean()) / sd), (int(dy), int(dx)), sd


@lru_cache(maxsize=16)
def _null_keys(key: int) -> tuple[int, ...]:
    """``NULL_KEYS`` keys derived from ``key`` and never embedded: the same search run with them
    shows how high this video scores by chance."""
    ks = np.random.default_rng([key, 0x0DE7EC7]).integers(1, 2**31, NULL_KEYS + 1)
    return tuple(int(k) for k in ks if int(k) != key)[:NULL_KEYS]


def _decode(fold: np.ndarray, shift: tuple[int, int], key: int) -> tuple[Payload | None, int]:
    """Payload from the bit projections at ``shift`` (Chase: also try every flip of the
    ``CHASE_BITS`` least reliable bits, most likely first; the first to pass the CRC wins)."""
    spec = np.fft.fft2(fold)
    aligned = np.roll(np.fft.ifft2(spec * _bin_weights(spec)).real, (-shift[0], -shift[1]), axis=(0, 1))
    soft = np.tensordot(_patterns(key)[1:], aligned, axes=([1, 2], [0, 1]))  # (N_BITS,)
    bits = (soft > 0).astype(np.int8)
    weak = np.argsort(np.abs(soft))[:CHASE_BITS]
    tries = sorted(
        (c for r in range(CHASE_BITS + 1) for c in itertools.combinations(weak, r)),
        key=lambda c: float(np.abs(soft[list(c)]).sum()) if c else 0.0,
    )
    for flip in tries:
        b = bits.copy()
        b[list(flip)] ^= 1
        p = Payload.from_bits(b)
        if p is not None:
            return p, len(flip)
    return None, 0


def detect_frames(frames: Iterable[np.ndarray], *, key: int = KEY) -> Detection:
    """Look for the mark in a stream of (H, W, 3) uint8 RGB frames (all the same size)."""
    acc, n = _accumulate(frames)
    return detect_sum(acc, n, key=key)


def detect_sum(
    acc: np.ndarray, n: int, *, key: int = KEY, pairs: list[tuple[float, float]] | None = None
) -> Detection:
    """Detection from the summed residual of ``n`` frames (``pairs``: candidate periods, if known).

    The periods the autocorrelation and the priors propose are tried first; the rescale grid
    (:func:`_scale_grid`) only when they do not reach the threshold. The score is the sync z-score
    at the best period and shift, re-centred on this video's chance level: minus the median best
    z-score of the same search under ``NULL_KEYS`` keys never embedded, plus ``NULL_CENTRE`` (so a
    larger search or a smaller frame, which raise every key's maximum alike, do not raise the
    false-positive rate)."""
    h, w = acc.shape
    if min(h, w) < 2 * _PERIODS[0] / 0.6:
        raise WatermarkError(f"frames of {w}x{h} are too small to carry the mark")
    pairs = pairs if pairs is not None else _period_pairs(acc)
    grid = set(_scale_grid(h, w))
    first = [p for p in pairs if p not in grid]
    best, chance = _search(acc, first, key, None, None)
    z = _centred(best[0], chance)
    if z < Z_THRESHOLD and len(first) < len(pairs):
        best, chance = _search(acc, [p for p in pairs if p in grid], key, best, chance)
        z = _centred(best[0], chance)
    _, shift, (px, py), fold = best
    present = bool(z >= Z_THRESHOLD)
    payload, fixed = _decode(fold, shift, key) if present else (None, 0)
    scale = (px / _period_from_scaled(px), py / _period_from_scaled(py))
    return Detection(present, float(z), payload, scale, shift, n, fixed)


def _search(acc: np.ndarray, pairs, key: int, best, chance):
    """Fold at each candidate period; keep the best (z, shift, period, fold) for ``key`` and, per
    unused key (:func:`_null_keys`), its best z (continuing ``best`` / ``chance`` when given)."""
    nulls = _null_keys(key) if NULL_KEYS > 0 else ()
    best = best if best is not None else (-np.inf, (0, 0), (float(TILE), float(TILE)), None)
    chance = chance if chance is not None else np.full(len(nulls), -np.inf)
    for px, py in pairs:
        fold = _fold(acc, px, py)
        spec = np.fft.fft2(fold)
        wts = _bin_weights(spec)
        z, shift, _ = _sync_z(spec, wts, key)
        if z > best[0]:
            best = (z, shift, (px, py), fold)
        for i, k in enumerate(nulls):
            chance[i] = max(chance[i], _sync_z(spec, wts, k)[0])
    return best, chance


def _centred(z: float, chance: np.ndarray) -> float:
    return z - float(np.median(chance)) + NULL_CENTRE if len(chance) else z


def _period_from_scaled(p: float) -> float:
    """The render's tile period most likely behind an observed period ``p`` (64 * k px)."""
    return float(TILE * max(1, round(p / TILE)))


def detect(
    source: str | os.PathLike[str] | Iterable[np.ndarray], *, key: int = KEY, max_frames: int = MAX_FRAMES
) -> Detection:
    """Look for the mark in a video file (or an iterable of RGB frames).

    At most ``max_frames`` frames are read, spread evenly over the video. Raises MediaError on an
    unreadable file and WatermarkError on frames too small to carry the mark.
    """
    if isinstance(source, (str, os.PathLike)):
        info = probe_video(source)
        stride = max(1, -(-info.n_frames // max_frames))
        return detect_frames(iter_frames(Path(source), stride=stride), key=key)
    return detect_frames(source, key=key)


def attack_frames(
    frames: Iterable[np.ndarray],
    *,
    scale: float = 1.0,
    crop: float = 0.0,
    offset: tuple[float, float] = (0.37, 0.61),
    interp: int | None = None,
) -> Iterable[np.ndarray]:
    """The edits the mark must survive, for robustness checks: keep ``1 - crop`` of the width and
    height (the removed margin split ``offset`` : ``1 - offset`` before/after, x then y), then
    resize by ``scale`` with the OpenCV filter ``interp`` (default INTER_AREA when shrinking,
    INTER_LINEAR when enlarging). Yields (H', W', 3) uint8 frames."""
    for f in frames:
        h, w = f.shape[:2]
        if crop > 0:
            ch, cw = round(h * (1 - crop)), round(w * (1 - crop))
            y0, x0 = round((h - ch) * offset[1]), round((w - cw) * offset[0])
            f = f[y0 : y0 + ch, x0 : x0 + cw]
        if scale != 1.0:
            size = (max(2, round(f.shape[1] * scale)), max(2, round(f.shape[0] * scale)))
            flag = interp if interp is not None else cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            f = cv2.resize(f, size, interpolation=flag)
        yield np.ascontiguousarray(f)
