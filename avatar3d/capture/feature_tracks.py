"""Optical-flow feature tracks on the rigid part of the head, a second observation for the pose fit.

MediaPipe regresses its landmarks frame by frame. On featureless skin they follow the head only in
part: the face-oval points slide along the silhouette as the head turns and the forehead points
under-rotate. A corner tracked by optical flow on the image's own texture (a skin pore, a brow hair,
the nostril rim) is the projection of one fixed surface point, so its motion is the head's motion and
nothing else. What this buys and what was tried: docs/design/feature-tracks.md.

Frame-to-frame flow drifts: each step's small error is kept by the next. With ``refine`` (config
``capture.track_refine``, off by default) each flow step is only a prediction: every track keeps the
patch where it was first seen, and the prediction is refined by matching that patch under an affine
warp with normalised brightness (:class:`PatchTemplates`, inverse-compositional Lucas-Kanade), so the
track stays on its point however long it lives.

:class:`FeatureTracker` runs inside the capture's decoding pass (no frame is kept): pyramidal
Lucas-Kanade from each frame to the next, a forward-backward check, and new corners seeded where
tracks are sparse. Points live only on the **rigid zone** (:func:`rigid_zone`): the face oval
within the head mask, eroded so that the silhouette (where a "corner" is where the face meets the
background, not a surface point) is left out, minus the eyes (blinks) and everything below the base
of the nose (jaw, lips, lower cheeks). Hair is left out: it can move on its own.
:func:`avatar3d.capture.pose_fit.bundle_adjust` fits one head-space point per track with the poses,
and :func:`avatar3d.capture.focal.search_focal` uses them to weigh candidate focal lengths.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..core.topology import eye_loops, face_oval_loop
from .segmentation import chin_axis, eye_centres, half_plane

SUBNASALE = 2  # MediaPipe point under the nose tip: the rigid zone ends on the line through it
ZONE_EROSION = 0.1  # the head mask is eroded by this fraction of the distance between the eyes ...
ZONE_MIN_EROSION_PX = 3  # ... and at least this many pixels
EYE_GROWTH = 1.35  # the eyes' contours are grown by this factor before they are left out
REF_SIZE = 512.0  # pixels: fb_px and max_refine_px are given at this longest-side size
LK_LEVELS = 3  # pyramid levels of Lucas-Kanade
LK_MAX_ITERATIONS, LK_EPSILON = 40, 1e-3  # its stopping criteria
TEMPLATE_BLUR_SIGMA = 0.8  # pixels: the templates' (and their matches') Gaussian blur
CORNER_QUALITY = 0.01  # goodFeaturesToTrack's quality level (fraction of the best corner's)


@dataclass
class FeatureTracks:
    """Observations of point tracks: ``frame`` (N,) frame index, ``track`` (N,) track id in
    ``0..n_tracks-1``, ``uv`` (N, 2) pixel position in the stored images (pixel centres at +0.5,
    the landmarks' convention). Each track has at most one observation per frame."""

    frame: np.ndarray
    track: np.ndarray
    uv: np.ndarray

    @property
    def n_tracks(self) -> int:
        return int(self.track.max()) + 1 if len(self.track) else 0

    def __len__(self) -> int:
        return len(self.frame)

    @classmethod
    def empty(cls) -> FeatureTracks:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2), np.float64))

    def select(self, keep: np.ndarray) -> FeatureTracks:
        """The observations where ``keep`` (N,) is True, track ids renumbered densely."""
        keep = np.asarray(keep, bool)
        _, track = np.unique(self.track[keep], return_inverse=True)
        return FeatureTracks(self.frame[keep], track.astype(np.int64), self.uv[keep])

    def split_at(self, breaks: np.ndarray | None) -> FeatureTracks:
        """Tracks cut at each frame t where ``breaks[t]`` (a detected cut) starts a new segment."""
        if breaks is None or not np.any(breaks) or not len(self):
            return self
        segment = np.cumsum(np.asarray(breaks, bool))[self.frame]
        _, track = np.unique(np.stack([self.track, segment], 1), axis=0, return_inverse=True)
        return FeatureTracks(self.frame, track.reshape(-1).astype(np.int64), self.uv)

    def min_length(self, n: int) -> FeatureTracks:
        """Only the tracks observed in at least ``n`` frames."""
        counts = np.bincount(self.track, minlength=self.n_tracks)
        return self.select(counts[self.track] >= n)

    def subset(self, frames: np.ndarray) -> FeatureTracks:
        """The observations in ``frames`` (sorted frame indices), re-indexed to positions in it."""
        frames = np.asarray(frames, np.int64)
        if not len(frames) or not len(self):
            return FeatureTracks.empty()
        pos = np.searchsorted(frames, self.frame)
        keep = (pos < len(frames)) & (frames[np.minimum(pos, len(frames) - 1)] == self.frame)
        out = self.select(keep)
        out.frame = pos[keep].astype(np.int64)
        return out

    def in_frames(self, valid: np.ndarray) -> FeatureTracks:
        """Only the observations in frames where ``valid`` (T,) is True."""
        return self.select(np.asarray(valid, bool)[self.frame])


def rigid_zone(landmarks2d: np.ndarray, head: np.ndarray) -> np.ndarray:
    """(H, W) bool: where tracked points move with the skull alone.

    landmarks2d: (478, 2) pixels; head: (H, W) head mask (face + hair inside the person, see
    :func:`avatar3d.capture.segmentation.region_masks`), cut to the face oval. The mask is eroded by a tenth of the
    distance between the eyes (at least 3 px) so that its silhouette is left out; the eyes (their
    contours grown by 35 %) and the half-plane below the line through the base of the nose, parallel
    to the eyes, are removed.
    """
    H, W = head.shape
    lm = np.asarray(landmarks2d, np.float64)
    eye_r, eye_l = eye_centres(lm)
    ex = eye_l - eye_r
    span = float(np.linalg.norm(ex))
    if span < 1e-6:
        return np.zeros((H, W), bool)
    ex /= span
    ey = chin_axis(lm, ex)
    r = max(ZONE_MIN_EROSION_PX, round(ZONE_EROSION * span))
    zone = cv2.erode(
        (head > 0).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)
    )
    eyes = np.zeros((H, W), np.uint8)  # everything left out: the eyes, then the lower face
    for loop in eye_loops():
        pts = lm[loop]
        c = pts.mean(0)
        grown = c + (pts - c) * EYE_GROWTH
        cv2.fillPoly(eyes, [cv2.convexHull(np.round(grown - 0.5).astype(np.int32))], 1)
    # below the nose: a large quadrilateral on the chin's side of the line (cv2 clips it)
    quad = half_plane(lm[SUBNASALE] - 0.5, ex, ey, H, W)
    cv2.fillPoly(eyes, [np.round(quad).astype(np.int32)], 1)
    face = np.zeros((H, W), np.uint8)  # hair can move on its own: the face oval only
    cv2.fillPoly(face, [np.round(lm[face_oval_loop()] - 0.5).astype(np.int32)], 1)
    zone &= face
    return (zone > 0) & (eyes == 0)


def _patch_grid(size: int) -> np.ndarray:
    """(size², 2) pixel offsets of a square patch about its centre, row by row."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    gx, gy = np.meshgrid(r, r)
    return np.stack([gx.ravel(), gy.ravel()], 1)


def _zero_mean_unit(p: np.ndarray) -> np.ndarray:
    """(N, K) rows with their mean removed and unit norm: brightness gain and offset left out."""
    p = p - p.mean(1, keepdims=True)
    return p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-6)


class PatchTemplates:
    """Each track's reference patch, and its affine refinement in a new frame.

    A patch is ``size`` × ``size`` pixels sampled (bilinear) from a lightly blurred frame about the
    track's first position; its brightness is normalised (zero mean, unit norm), so gain and offset
    changes between frames do not matter. :meth:`refine` fits the affine warp that maps the patch onto
    a new frame by inverse-compositional Lucas-Kanade (Baker & Matthews 2004): the Jacobian and the
    Gauss-Newton matrix belong to the template and are computed once, when the track is seeded. Pixels
    are weighted by a Gaussian of σ = size/3 about the centre. OpenCV's pixel convention (centres at
    integers) throughout.
    """

    def __init__(self, size: int = 15, iterations: int = 12) -> None:
        if size < 5 or size % 2 == 0:
            raise ValueError(f"patch size must be odd and at least 5, got {size}")
        self.size = int(size)
        self.iterations = int(iterations)
        self.grid = _patch_grid(self.size)
        self.weight = np.exp(-(self.grid**2).sum(1) / (2 * (self.size / 3) ** 2))
        k = self.size**2
        self.templates = np.zeros((0, k))  # (N, K) normalised
        self.solve = np.zeros((0, 6, k))  # (N, 6, K): H⁻¹ (w · steepest descent)ᵀ
        self.linear = np.zeros((0, 2, 2))  # each track's current linear part of the warp

    def __len__(self) -> int:
        return len(self.templates)

    def sample(self, image: np.ndarray, centre: np.ndarray, linear: np.ndarray) -> np.ndarray:
        """(N, K) float64: ``image`` (float32) at ``centre + linear @ offset`` for every patch pixel."""
        xy = np.matmul(self.grid, np.swapaxes(linear, 1, 2)) + centre[:, None, :]
        xy = xy.reshape(-1, self.size, 2).astype(np.float32)
        out = cv2.remap(image, xy[..., 0], xy[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return out.reshape(len(centre), -1).astype(np.float64)

    def add(self, image: np.ndarray, centre: np.ndarray) -> None:
        """Take the patches of new tracks at ``centre`` (M, 2) from ``image``."""
        n = len(centre)
        eye = np.broadcast_to(np.eye(2), (n, 2, 2)).copy()
        t = _zero_mean_unit(self.sample(image, centre, eye))
        gy, gx = np.gradient(t.reshape(n, self.size, self.size), axis=(1, 2))
        gx, gy = gx.reshape(n, -1), gy.reshape(n, -1)
        x, y = self.grid[:, 0], self.grid[:, 1]
        sd = np.stack([gx * x, gy * x, gx * y, gy * y, gx, gy], 1)  # (n, 6, K): ∂T/∂warp
        wsd = sd * self.weight
        H = np.matmul(wsd, np.swapaxes(sd, 1, 2)) + 1e-9 * np.eye(6)
        self.templates = np.concatenate([self.templates, t])
        self.solve = np.concatenate([self.solve, np.matmul(np.linalg.inv(H), wsd)])
        self.linear = np.concatenate([self.linear, eye])

    def keep(self, keep: np.ndarray) -> None:
        self.templates, self.solve, self.linear = self.templates[keep], self.solve[keep], self.linear[keep]

    def refine(self, image: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Refined positions (N, 2) of the patches predicted at ``centre`` in ``image`` (blurred like
        the templates), and the normalised correlation (N,) of each fitted patch with its template.
        Each track's linear part is updated for the next frame."""
        n = len(centre)
        if n == 0:
            return centre, np.zeros(0)
        A = np.zeros((n, 3, 3))
        A[:, :2, :2] = self.linear
        A[:, :2, 2] = centre
        A[:, 2, 2] = 1.0
        active = np.arange(n)
        for _ in range(self.iterations):
            patch = _zero_mean_unit(self.sample(image, A[active, :2, 2], A[active, :2, :2]))
            dp = np.matmul(self.solve[active], (patch - self.templates[active])[:, :, None])[..., 0]
            D = np.zeros((len(active), 3, 3))
            D[:, 0, 0], D[:, 1, 0], D[:, 0, 1], D[:, 1, 1] = 1 + dp[:, 0], dp[:, 1], dp[:, 2], 1 + dp[:, 3]
            D[:, :2, 2] = dp[:, 4:]
            D[:, 2, 2] = 1.0
            A[active] = A[active] @ np.linalg.inv(D)  # inverse composition
            active = active[np.abs(dp[:, 4:]).max(1) > 1e-3]
            if not len(active):
                break
        ok = np.isfinite(A).all((1, 2))
        A[~ok] = np.eye(3)
        zncc = (_zero_mean_unit(self.sample(image, A[:, :2, 2], A[:, :2, :2])) * self.templates).sum(1)
        zncc[~ok] = -1.0
        self.linear = A[:, :2, :2]
        return A[:, :2, 2], zncc


class FeatureTracker:
    """Online KLT tracking of corners on the rigid zone; feed frames in order with :meth:`update`.

    ``max_points`` live tracks at most; new corners every ``reseed_every`` frames where none is
    within ``min_distance`` (default: 1/64 of the longest side, at least 4 px). A point is dropped when
    Lucas-Kanade fails, when tracking it back lands more than ``fb_px`` (pixels at 512 px, scaled to
    the image) from where it started, or when it leaves the rigid zone.
    """

    def __init__(
        self,
        width: int,
        height: int,
        *,
        max_points: int = 300,
        reseed_every: int = 3,
        min_distance: float | None = None,
        fb_px: float = 0.3,
        window: int = 15,
        refine: bool = False,
        patch: int = 15,
        min_zncc: float = 0.8,
        max_refine_px: float = 2.0,
    ) -> None:
        size = max(width, height)
        self.size = (width, height)
        self.max_points = int(max_points)
        self.reseed_every = max(1, int(reseed_every))
        self.min_distance = float(min_distance if min_distance is not None else max(4.0, size / 64))
        self.fb = float(fb_px) * size / REF_SIZE
        self.lk = {
            "winSize": (window, window),
            "maxLevel": LK_LEVELS,
            "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, LK_MAX_ITERATIONS, LK_EPSILON),
        }
        self._prev: np.ndarray | None = None
        self._ids = np.zeros(0, np.int64)
        self._pts = np.zeros((0, 2), np.float32)  # OpenCV convention: pixel centres at integers
        self._next_id = 0
        self._k = 0
        self._obs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._templates = PatchTemplates(patch) if refine else None
        self.min_zncc = float(min_zncc)
        self.max_refine = float(max_refine_px) * size / REF_SIZE

    def update(self, frame: np.ndarray, landmarks2d: np.ndarray | None, head: np.ndarray | None) -> None:
        """One frame, in order: (H, W, 3) uint8 RGB (or (H, W) gray), the subject's (478, 2)
        landmarks and head mask, or ``None`` for both when no face was found (every track ends)."""
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        k = self._k
        self._k += 1
        if landmarks2d is None or head is None:
            self._ids, self._pts, self._prev = self._ids[:0], self._pts[:0], gray
            if self._templates is not None:
                self._templates.keep(np.zeros(len(self._templates), bool))
            return
        zone = rigid_zone(landmarks2d, head)
        # the templates' image: blurred a little, for a smooth match
        smooth = (
            None
            if self._templates is None
            else cv2.GaussianBlur(gray.astype(np.float32), (0, 0), TEMPLATE_BLUR_SIGMA)
        )
        if self._prev is not None and len(self._pts):
            self._advance(gray, zone, smooth)
        if k % self.reseed_every == 0 and len(self._pts) < self.max_points:
            self._seed(gray, zone, smooth)
        if len(self._pts):
            self._obs.append(
                (np.full(len(self._ids), k, np.int64), self._ids.copy(), self._pts.astype(np.float64) + 0.5)
            )
        self._prev = gray

    def _advance(self, gray: np.ndarray, zone: np.ndarray, smooth: np.ndarray | None) -> None:
        p0 = self._pts.reshape(-1, 1, 2)
        p1, st, _ = cv2.calcOpticalFlowPyrLK(self._prev, gray, p0, None, **self.lk)
        pb, stb, _ = cv2.calcOpticalFlowPyrLK(gray, self._prev, p1, None, **self.lk)
        p1 = p1.reshape(-1, 2)
        fb = np.linalg.norm(pb.reshape(-1, 2) - self._pts, axis=1)
        W, H = self.size
        xi = np.round(p1[:, 0]).astype(np.int64)
        yi = np.round(p1[:, 1]).astype(np.int64)
        inside = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
        ok = (st.ravel() == 1) & (stb.ravel() == 1) & (fb < self.fb) & inside & np.isfinite(p1).all(1)
        ok[ok] = zone[yi[ok], xi[ok]]
        if self._templates is not None:
            self._templates.keep(ok)
            self._ids, pred = self._ids[ok], p1[ok]
            ref, zncc = self._templates.refine(smooth, pred.astype(np.float64))
            ok = (zncc > self.min_zncc) & (np.linalg.norm(ref - pred, axis=1) < self.max_refine)
            self._templates.keep(ok)
            p1 = ref.astype(np.float32)
        self._ids, self._pts = self._ids[ok], p1[ok]

    def _seed(self, gray: np.ndarray, zone: np.ndarray, smooth: np.ndarray | None) -> None:
        mask = zone.astype(np.uint8) * 255
        r = round(self.min_distance)
        for x, y in self._pts:
            cv2.circle(mask, (round(float(x)), round(float(y))), r, 0, -1)
        n = self.max_points - len(self._pts)
        pts = cv2.goodFeaturesToTrack(
            gray, maxCorners=n, qualityLevel=CORNER_QUALITY, minDistance=self.min_distance, mask=mask
        )
        if pts is None:
            return
        pts = pts.reshape(-1, 2).astype(np.float32)
        ids = np.arange(self._next_id, self._next_id + len(pts), dtype=np.int64)
        self._next_id += len(pts)
        self._ids = np.concatenate([self._ids, ids])
        self._pts = np.concatenate([self._pts, pts])
        if self._templates is not None:
            self._templates.add(smooth, pts.astype(np.float64))

    def result(self, min_length: int = 10) -> FeatureTracks:
        """All observations so far, tracks shorter than ``min_length`` frames left out."""
        if not self._obs:
            return FeatureTracks.empty()
        frame, track, uv = (np.concatenate(a) for a in zip(*self._obs))
        return FeatureTracks(frame, track, uv).min_length(min_length)
