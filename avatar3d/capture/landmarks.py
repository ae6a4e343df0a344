"""Per-frame face landmarks (MediaPipe FaceMesh, 478 points) and consistent subject selection.

Landmarks are returned in pixels of the image given to the detector: ``(x * W, y * H, z * W)``,
where MediaPipe's ``z`` is a relative depth (same scale as ``x``, larger = farther from the camera).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np

from ..core.topology import N_LANDMARKS

GATE_START = 0.5  # face sizes: how far from its last position the subject may be found ...
GATE_GROWTH = 0.1  # ... growing by this per frame it has been lost ...
GATE_MAX = 3.0  # ... up to this
SIZE_RATIO_RANGE = (0.5, 2.0)  # a face this much smaller / larger than the subject's is someone else
CENTRALITY_WEIGHT = 0.5  # the first subject: size x (1 - this x distance from the centre / half-diagonal)

os.environ.setdefault("GLOG_minloglevel", "2")  # quieten MediaPipe's C++ logging
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class FaceLandmarker:
    """MediaPipe FaceMesh (``refine_landmarks=True``: 478 points) in video (tracking) mode.

    Use as a context manager or call :meth:`close`. ``detect(frame)`` returns every face found.
    """

    def __init__(
        self,
        max_num_faces: int = 4,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        static_image_mode: bool = False,
    ) -> None:
        import mediapipe as mp  # slow to import (seconds): only when a landmarker is made

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=static_image_mode,
            max_num_faces=int(max_num_faces),
            refine_landmarks=True,
            min_detection_confidence=float(min_detection_confidence),
            min_tracking_confidence=float(min_tracking_confidence),
        )

    def detect(self, frame: np.ndarray) -> list[np.ndarray]:
        """frame: (H, W, 3) uint8 RGB -> list of (478, 3) float32 landmark arrays in pixels."""
        h, w = frame.shape[:2]
        res = self._mesh.process(np.ascontiguousarray(frame))
        faces = []
        for face in res.multi_face_landmarks or []:
            pts = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32)  # (478, 3)
            if pts.shape[0] != N_LANDMARKS:
                continue
            pts *= np.array([w, h, w], dtype=np.float32)
            faces.append(pts)
        return faces

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> FaceLandmarker:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def face_box(points: np.ndarray) -> tuple[np.ndarray, float]:
    """points: (478, >=2) -> (centre (2,), size = sqrt of the 2D bounding-box area)."""
    lo, hi = points[:, :2].min(0), points[:, :2].max(0)
    return (lo + hi) / 2, float(np.sqrt(max((hi - lo).prod(), 1e-6)))


@dataclass
class _Track:
    centre: np.ndarray  # (2,)
    size: float
    last_seen: int


class SubjectSelector:
    """Chooses the same person in every frame among the faces the landmarker returns.

    The first subject is the face with the largest ``size × centrality``; later frames take the face
    nearest the subject's last position, gated by a radius that grows with the time it has been lost;
    after ``reacquire_after`` frames without it any face may be taken again. Warns (once) when a frame
    shows several faces.
    """

    def __init__(self, width: int, height: int, reacquire_after: int = 30, source: str = "video"):
        self.width, self.height = int(width), int(height)
        self.reacquire_after = max(1, int(reacquire_after))
        self.source = source
        self._track: _Track | None = None
        self._warned = False
        self.max_faces_seen = 0

    def _initial_choice(self, faces: list[np.ndarray]) -> int:
        centre_img = np.array([self.width / 2, self.height / 2])
        half_diag = 0.5 * float(np.hypot(self.width, self.height))
        scores = []
        for f in faces:
            c, s = face_box(f)
            centrality = 1.0 - CENTRALITY_WEIGHT * min(float(np.linalg.norm(c - centre_img)) / half_diag, 1.0)
            scores.append(s * centrality)
        return int(np.argmax(scores))

    def select(self, faces: list[np.ndarray], frame_index: int) -> np.ndarray | None:
        """faces: list of (478, 3) -> the subject's (478, 3) landmarks, or None when it is absent."""
        self.max_faces_seen = max(self.max_faces_seen, len(faces))
        if len(faces) > 1 and not self._warned:
            warnings.warn(
                f"{len(faces)} faces in frame {frame_index} of {self.source}; tracking one subject "
                "(the largest/most central at first, then the one nearest its previous position)",
                stacklevel=2,
            )
            self._warned = True
        if not faces:
            return None
        tr = self._track
        if tr is None or frame_index - tr.last_seen > self.reacquire_after:
            k = self._initial_choice(faces)
        else:
            gap = frame_index - tr.last_seen
            gate = tr.size * min(GATE_START + GATE_GROWTH * gap, GATE_MAX)
            best, best_d = None, np.inf
            for i, f in enumerate(faces):
                c, s = face_box(f)
                ratio = s / tr.size
                d = float(np.linalg.norm(c - tr.centre))
                if d < gate and SIZE_RATIO_RANGE[0] < ratio < SIZE_RATIO_RANGE[1] and d < best_d:
                    best, best_d = i, d
            if best is None:
                return None
            k = best
        c, s = face_box(faces[k])
        self._track = _Track(c, s, frame_index)
        return faces[k]
