"""Optical-flow feature tracks on the rigid part of the head, a second observation for the pose fit.

MediaPipe regresses its landmarks frame by frame. On featureless skin they follow the head only in
part: the face-oval points slide along the silhouette as the head turns, the forehead points
under-rotate, and the tracked pitch follows 55-65 % of the true slow pitch on the synthetic subject
(BENCHMARKS.md, "Capture vs synthetic ground truth"). A corner tracked by optical flow on the
image's own texture (a skin pore, a brow hair, the nostril rim) is the projection of one fixed
surface point, so its motion is the head's motion and nothing else.

:class:`FeatureTracker` runs inside the capture's decoding pass (no frame is kept): pyramidal
Lucas-Kanade from each frame to the next, a forward-backward check, and new corners seeded where
tracks are sparse. Points live only on the **rigid zone** (:func:`rigid_zone`): the face oval
within the head mask, eroded so that the silhouette (where a "corner" is where the face meets the
background, not a surface point) is left out, minus the eyes (blinks) and everything below the base
of the nose (jaw, lips, lower cheeks). Hair is left out: it can move on its own (on the synthetic
subject, leaving it out lowered the rotation error from 0.98° to 0.85°).
:func:`avatar3d.capture.tracking.bundle_adjust` fits one head-space point per track with the poses,
and :func:`avatar3d.capture.tracking.search_focal` uses them to weigh candidate focal lengths.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .topology import LEFT_EYE_CORNERS, RIGHT_EYE_CORNERS, eye_loops, face_oval_loop

SUBNASALE = 2  # MediaPipe point under the nose tip: the rigid zone ends on the line through it


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
    eye_r = lm[list(RIGHT_EYE_CORNERS)].mean(0)
    eye_l = lm[list(LEFT_EYE_CORNERS)].mean(0)
    ex = eye_l - eye_r
    span = float(np.linalg.norm(ex))
    if span < 1e-6:
        return np.zeros((H, W), bool)
    ex /= span
    ey = np.array([-ex[1], ex[0]])
    if ey @ (lm[152] - lm[10]) < 0:  # chin below forehead, whatever the roll
        ey = -ey
    r = max(3, round(0.1 * span))
    zone = cv2.erode(
        (head > 0).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)
    )
    eyes = np.zeros((H, W), np.uint8)  # everything left out: the eyes, then the lower face
    for loop in eye_loops():
        pts = lm[loop]
        c = pts.mean(0)
        grown = c + (pts - c) * 1.35
        cv2.fillPoly(eyes, [cv2.convexHull(np.round(grown - 0.5).astype(np.int32))], 1)
    # below the nose: a large quadrilateral on the chin's side of the line (cv2 clips it)
    big = 4.0 * (H + W)
    c = lm[SUBNASALE] - 0.5
    quad = np.stack([c - big * ex, c + big * ex, c + big * ex + big * ey, c - big * ex + big * ey])
    cv2.fillPoly(eyes, [np.round(quad).astype(np.int32)], 1)
    face = np.zeros((H, W), np.uint8)  # hair can move on its own: the face oval only
    cv2.fillPoly(face, [np.round(lm[face_oval_loop()] - 0.5).astype(np.int32)], 1)
    zone &= face
    return (zone > 0) & (eyes == 0)


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
    ) -> None:
        size = max(width, height)
        self.size = (width, height)
        self.max_points = int(max_points)
        self.reseed_every = max(1, int(reseed_every))
        self.min_distance = float(min_distance if min_distance is not None else max(4.0, size / 64))
        self.fb = float(fb_px) * size / 512.0
        self.lk = {
            "winSize": (window, window),
            "maxLevel": 3,
            "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 40, 1e-3),
        }
        self._prev: np.ndarray | None = None
        self._ids = np.zeros(0, np.int64)
        self._pts = np.zeros((0, 2), np.float32)  # OpenCV convention: pixel centres at integers
        self._next_id = 0
        self._k = 0
        self._obs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def update(self, frame: np.ndarray, landmarks2d: np.ndarray | None, head: np.ndarray | None) -> None:
        """One frame, in order: (H, W, 3) uint8 RGB (or (H, W) gray), the subject's (478, 2)
        landmarks and head mask, or ``None`` for both when no face was found (every track ends)."""
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        k = self._k
        self._k += 1
        if landmarks2d is None or head is None:
            self._ids, self._pts, self._prev = self._ids[:0], self._pts[:0], gray
            return
        zone = rigid_zone(landmarks2d, head)
        if self._prev is not None and len(self._pts):
            self._advance(gray, zone)
        if k % self.reseed_every == 0 and len(self._pts) < self.max_points:
            self._seed(gray, zone)
        if len(self._pts):
            self._obs.append(
                (np.full(len(self._ids), k, np.int64), self._ids.copy(), self._pts.astype(np.float64) + 0.5)
            )
        self._prev = gray

    def _advance(self, gray: np.ndarray, zone: np.ndarray) -> None:
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
        self._ids, self._pts = self._ids[ok], p1[ok]

    def _seed(self, gray: np.ndarray, zone: np.ndarray) -> None:
        mask = zone.astype(np.uint8) * 255
        r = round(self.min_distance)
        for x, y in self._pts:
            cv2.circle(mask, (round(float(x)), round(float(y))), r, 0, -1)
        n = self.max_points - len(self._pts)
        pts = cv2.goodFeaturesToTrack(
            gray, maxCorners=n, qualityLevel=0.01, minDistance=self.min_distance, mask=mask
        )
        if pts is None:
            return
        pts = pts.reshape(-1, 2).astype(np.float32)
        ids = np.arange(self._next_id, self._next_id + len(pts), dtype=np.int64)
        self._next_id += len(pts)
        self._ids = np.concatenate([self._ids, ids])
        self._pts = np.concatenate([self._pts, pts])

    def result(self, min_length: int = 10) -> FeatureTracks:
        """All observations so far, tracks shorter than ``min_length`` frames left out."""
        if not self._obs:
            return FeatureTracks.empty()
        frame, track, uv = (np.concatenate(a) for a in zip(*self._obs))
        return FeatureTracks(frame, track, uv).min_length(min_length)
