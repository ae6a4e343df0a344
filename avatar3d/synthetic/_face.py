"""The synthetic subject's face: MediaPipe landmarks of a public-domain photo lifted to a 3D mesh.

The photo is ``skimage.data.astronaut()`` (Eileen Collins, NASA, public domain) and ships with
scikit-image, so nothing is downloaded. MediaPipe FaceMesh runs once per process (cached).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..core.topology import face_triangles
from ..errors import NoFaceError
from ._geometry import cycle_from_edges, harmonic_fill, orient_outward

INTEROCULAR = 0.063  # metres between the iris centres (landmarks 468 and 473)

# Landmark index groups (MediaPipe FaceMesh topology, checked against face_mesh_connections).
R_EYE_UPPER = [246, 161, 160, 159, 158, 157, 173]
R_EYE_LOWER = [7, 163, 144, 145, 153, 154, 155]
L_EYE_UPPER = [466, 388, 387, 386, 385, 384, 398]
L_EYE_LOWER = [249, 390, 373, 374, 380, 381, 382]
R_EYE_CORNERS = (33, 133)
L_EYE_CORNERS = (263, 362)
R_IRIS, L_IRIS = 468, 473
LIP_UPPER_INNER = [191, 80, 81, 82, 13, 312, 311, 310, 415]
LIP_LOWER_INNER = [95, 88, 178, 87, 14, 317, 402, 318, 324]
LIP_UPPER_OUTER = [185, 40, 39, 37, 0, 267, 269, 270, 409]
LIP_LOWER_OUTER = [146, 91, 181, 84, 17, 314, 405, 321, 375]
MOUTH_CORNERS_INNER = (78, 308)
MOUTH_CORNERS_OUTER = (61, 291)
CHIN, FOREHEAD, NOSE_TIP, SUBNASALE = 152, 10, 4, 2
CHEEK_R, CHEEK_L = 234, 454


@dataclass(frozen=True)
class FaceScan:
    """MediaPipe's reading of the photo.

    photo: (H, W, 3) float32 RGB in [0, 1]; uv: (478, 2) landmark pixels in ``photo``;
    points: (478, 3) metric landmarks, OpenCV axes, eye line along +x, centred on their centroid;
    tris: (F, 3) face-mesh triangles over landmarks 0..467; edges: (E, 2); oval: ordered face-oval
    landmark indices.
    """

    photo: np.ndarray
    uv: np.ndarray
    points: np.ndarray
    tris: np.ndarray
    edges: np.ndarray
    oval: list[int]


def _facemesh(image: np.ndarray) -> np.ndarray | None:
    import mediapipe as mp

    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.5
    ) as fm:
        res = fm.process(np.ascontiguousarray(image))
    if not res.multi_face_landmarks:
        return None
    h, w = image.shape[:2]
    lm = res.multi_face_landmarks[0].landmark
    return np.array([[p.x * w, p.y * h, p.z * w] for p in lm], dtype=np.float64)


@functools.lru_cache(maxsize=1)
def scan_photo() -> FaceScan:
    """Detect the face in the photo, refine on a crop around it, lift to metric 3D (cached)."""
    import cv2
    from mediapipe.python.solutions import face_mesh_connections as fmc
    from skimage import data

    photo = data.astronaut()
    first = _facemesh(photo)
    if first is None:
        raise NoFaceError("MediaPipe found no face in skimage.data.astronaut()")
    lo, hi = first[:, :2].min(0), first[:, :2].max(0)
    centre, half = (lo + hi) / 2, 0.9 * float(np.max(hi - lo))
    x0, y0 = round(centre[0] - half), round(centre[1] - half)
    side = round(2 * half)
    pad = max(0, -x0, -y0, x0 + side - photo.shape[1], y0 + side - photo.shape[0])
    padded = np.pad(photo, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    crop = padded[y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side]
    size = 384
    lm = _facemesh(cv2.resize(crop, (size, size), interpolation=cv2.INTER_CUBIC))
    if lm is None:
        lm = first
    else:
        lm = lm * (side / size)
        lm[:, 0] += x0
        lm[:, 1] += y0
    uv = lm[:, :2].copy()

    pts = lm * (INTEROCULAR / np.linalg.norm(lm[R_IRIS] - lm[L_IRIS]))
    # Level the eye line (remove roll and yaw of the photo); keep MediaPipe's pitch.
    ex = pts[L_IRIS] - pts[R_IRIS]
    ex /= np.linalg.norm(ex)
    ey = np.array([0.0, 1.0, 0.0]) - ex[1] * ex
    ey /= np.linalg.norm(ey)
    R = np.stack([ex, ey, np.cross(ex, ey)])
    pts = pts @ R.T
    pts -= pts.mean(0)

    tris = np.array(face_triangles())
    tris = orient_outward(pts, tris, pts[:468].mean(0) + np.array([0.0, 0.0, 0.06]))
    edges = np.array(sorted({(min(a, b), max(a, b)) for a, b in fmc.FACEMESH_TESSELATION}), dtype=np.int64)
    oval = cycle_from_edges(fmc.FACEMESH_FACE_OVAL, FOREHEAD)
    return FaceScan(photo.astype(np.float32) / 255.0, uv, pts, tris, edges, oval)


# ------------------------------------------------------------------------------ deformation rig
@dataclass
class FaceRig:
    """Rest-pose face (lips closed, eyes open) and its deformation fields.

    verts: (V, 3) rest vertices: 468 face landmarks, then the two eye patches (17 each: contour +
    centre); uv: (V, 2) photo pixels; tris: (F, 3) face + eye-patch triangles; tri_part: (F,) 0 face,
    1 eye; jaw_w: (V,) jaw weights in [0, 1]; blink_d: (V, 3) vertex offset at blink = 1;
    jaw_pivot, neck_pivot: (3,); landmarks: (478, 3) rest landmarks (head space, centroid 0);
    landmark_jaw_w, landmark_blink_d: the same fields for the 478 landmarks; rim_w: (V,) how much
    the texture is tinted towards the skin colour at the lower face rim.
    """

    verts: np.ndarray
    uv: np.ndarray
    tris: np.ndarray
    tri_part: np.ndarray
    jaw_w: np.ndarray
    blink_d: np.ndarray
    jaw_pivot: np.ndarray
    neck_pivot: np.ndarray
    landmarks: np.ndarray
    landmark_jaw_w: np.ndarray
    landmark_blink_d: np.ndarray
    rim_w: np.ndarray


JAW_MAX_RADIANS = np.radians(19.0)  # jaw rotation at jaw_open = 1


def _rotate_x(points: np.ndarray, pivot: np.ndarray, angles: np.ndarray) -> np.ndarray:
    c, s = np.cos(angles), np.sin(angles)
    d = points - pivot
    out = d.copy()
    out[:, 1] = c * d[:, 1] - s * d[:, 2]
    out[:, 2] = s * d[:, 1] + c * d[:, 2]
    return out + pivot


def build_face_rig(scan: FaceScan) -> FaceRig:
    """Close the photo's parted lips, add eyeballs, and derive jaw weights and the blink field."""
    P = scan.points.copy()
    n_face = 468
    y_mc = P[list(MOUTH_CORNERS_OUTER), 1].mean()
    jaw_pivot = np.array([0.0, P[SUBNASALE, 1] - 0.012, 0.5 * (P[CHEEK_R, 2] + P[CHEEK_L, 2]) + 0.005])

    # Jaw weights: 1 on the lower lip, chin and lower jaw line, 0 on the upper lip and above,
    # harmonic (smooth along the mesh) in between.
    fixed_one = set(LIP_LOWER_INNER + LIP_LOWER_OUTER)
    fixed_zero = set(LIP_UPPER_INNER + LIP_UPPER_OUTER)
    for i in range(n_face):
        if i in fixed_one or i in fixed_zero:
            continue
        if P[i, 1] > y_mc + 0.014:
            fixed_one.add(i)
        elif P[i, 1] < y_mc - 0.012:
            fixed_zero.add(i)
    corners = list(MOUTH_CORNERS_INNER + MOUTH_CORNERS_OUTER)
    fixed = np.array(sorted(fixed_one) + sorted(fixed_zero) + corners)
    vals = np.r_[np.ones(len(fixed_one)), np.zeros(len(fixed_zero)), np.full(len(corners), 0.45)]
    jaw_w = harmonic_fill(n_face, scan.edges, fixed, vals)

    # Rest pose: the photo smiles with parted lips; raise the jaw to close most of the gap, then
    # seal the inner lip contours on a common line (lower lip a hair over the upper one).
    gap = P[LIP_LOWER_INNER, 1] - P[LIP_UPPER_INNER, 1]
    d = P[14] - jaw_pivot
    theta_close = 0.6 * float(gap.max()) / float(np.hypot(d[1], d[2]))
    P[:n_face] = _rotate_x(P[:n_face], jaw_pivot, -theta_close * jaw_w)
    up, lo = P[LIP_UPPER_INNER].copy(), P[LIP_LOWER_INNER].copy()
    mid = 0.5 * (up + lo)
    P[LIP_UPPER_INNER] = mid + np.array([0.0, 0.0004, 0.0])
    P[LIP_LOWER_INNER] = mid - np.array([0.0, 0.0004, 0.0])
    for i in MOUTH_CORNERS_INNER:
        P[i, 1] = 0.5 * (P[i, 1] + mid[:, 1].mean())
    # Iris landmarks follow nothing but the head; keep them where they are.

    # Texture: pull the rim's photo coordinates slightly inwards, so that the projective texture
    # does not pick up the photo's background beside the jaw where the rim grazes the view.
    face_uv = scan.uv[:n_face].copy()
    centre_uv = face_uv.mean(0)
    oval = np.array(scan.oval)
    ring = np.setdiff1d(np.unique(scan.edges[np.isin(scan.edges, oval).any(1)]), oval)
    face_uv[oval] += 0.08 * (centre_uv - face_uv[oval])
    face_uv[ring] += 0.035 * (centre_uv - face_uv[ring])
    # The photo shows teeth between the parted lips: sample the sealed inner lip edges from the
    # lip body instead.
    for inner, outer in ((LIP_UPPER_INNER, LIP_UPPER_OUTER), (LIP_LOWER_INNER, LIP_LOWER_OUTER)):
        face_uv[inner] += 0.4 * (scan.uv[outer] - scan.uv[inner])
    for inner, outer in zip(MOUTH_CORNERS_INNER, MOUTH_CORNERS_OUTER):
        face_uv[inner] += 0.3 * (scan.uv[outer] - scan.uv[inner])
    # The jaw line is dark in the photo (shadow on the neck); tint the lower rim towards skin.
    rim_w = np.zeros(n_face)
    rim_w[ring] = 0.45
    rim_w[oval] = 1.0
    rim_w *= np.clip((P[:n_face, 1] - P[NOSE_TIP, 1]) / 0.03, 0.0, 1.0)

    # Eye patches (eyeballs): the eye-opening polygon, slightly recessed, textured from the photo.
    verts, uv, tris_extra = [P[:n_face]], [face_uv], []
    base = n_face
    for upper, lower, (c_out, c_in), iris in (
        (R_EYE_UPPER, R_EYE_LOWER, R_EYE_CORNERS, R_IRIS),
        (L_EYE_UPPER, L_EYE_LOWER, L_EYE_CORNERS, L_IRIS),
    ):
        loop = [c_out] + upper + [c_in] + lower[::-1]
        eye_ring = P[loop] + np.array([0.0, 0.0, 0.0016])
        centre = P[loop].mean(0) + np.array([0.0, 0.0, 0.0009])
        centre[:2] = P[iris, :2]
        verts += [eye_ring, centre[None]]
        uv += [scan.uv[loop], scan.uv[iris][None]]
        k = len(loop)
        tris_extra += [[base + i, base + (i + 1) % k, base + k] for i in range(k)]
        base += k + 1
    V = np.concatenate(verts)
    UV = np.concatenate(uv)
    eye_tris = orient_outward(V, np.array(tris_extra), P[:n_face].mean(0) + np.array([0.0, 0.0, 0.06]))
    tris = np.concatenate([scan.tris, eye_tris])
    tri_part = np.r_[np.zeros(len(scan.tris), np.int64), np.ones(len(eye_tris), np.int64)]
    jaw_all = np.r_[jaw_w, np.zeros(len(V) - n_face)]

    # Blink: upper-lid contour descends to a line just above the lower lid, the lower lid rises a
    # little; the upper-lid skin up to the brow follows harmonically.
    disp_fixed, disp_vals = [], []
    for upper, lower in ((R_EYE_UPPER, R_EYE_LOWER), (L_EYE_UPPER, L_EYE_LOWER)):
        for u, l in zip(upper, lower):
            line = P[l] + 0.15 * (P[u] - P[l])
            tgt_u = line + np.array([0.0, 0.0006, -0.0009])
            tgt_l = line + np.array([0.0, -0.0003, 0.0])
            disp_fixed += [u, l]
            disp_vals += [tgt_u - P[u], tgt_l - P[l]]
    eye_r = P[R_EYE_UPPER + R_EYE_LOWER].mean(0)
    eye_l = P[L_EYE_UPPER + L_EYE_LOWER].mean(0)
    dist = np.minimum(np.linalg.norm(P[:n_face] - eye_r, axis=1), np.linalg.norm(P[:n_face] - eye_l, axis=1))
    far = [i for i in range(n_face) if dist[i] > 0.021 and i not in disp_fixed]
    corners_e = list(R_EYE_CORNERS + L_EYE_CORNERS)
    fixed_b = np.array(disp_fixed + far + corners_e)
    vals_b = np.concatenate([np.array(disp_vals), np.zeros((len(far) + len(corners_e), 3))])
    blink_face = harmonic_fill(n_face, scan.edges, fixed_b, vals_b)
    blink_d = np.concatenate([blink_face, np.zeros((len(V) - n_face, 3))])

    landmarks = P.copy()
    centroid = landmarks.mean(0)
    V = V - centroid
    landmarks = landmarks - centroid
    jaw_pivot = jaw_pivot - centroid
    neck_pivot = np.array([0.0, landmarks[CHIN, 1] - 0.005, jaw_pivot[2] + 0.012])
    lm_jaw = np.r_[jaw_w, np.zeros(10)]
    lm_blink = np.concatenate([blink_face, np.zeros((10, 3))])
    rim_all = np.r_[rim_w, np.zeros(len(V) - n_face)]
    return FaceRig(
        V, UV, tris, tri_part, jaw_all, blink_d, jaw_pivot, neck_pivot, landmarks, lm_jaw, lm_blink, rim_all
    )
