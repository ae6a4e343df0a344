"""The synthetic subject's face: MediaPipe landmarks of a public-domain photo lifted to a 3D mesh.

The photo is ``skimage.data.astronaut()`` (Eileen Collins, NASA, public domain) and ships with
scikit-image, so nothing is downloaded. MediaPipe FaceMesh runs once per process (cached).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
from skimage import data

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
    # mediapipe is a hard dependency, but importing it costs most of a second: only when needed
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
    from mediapipe.python.solutions import face_mesh_connections as fmc  # see _facemesh

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


# ---- rig geometry (head-space metres; y down, z away from the camera)
JAW_PIVOT_ABOVE_SUBNASALE_M = 0.012  # the jaw hinge's height above the base of the nose
JAW_PIVOT_BEHIND_CHEEKS_M = 0.005  # ... and its depth behind the cheeks' mean depth
JAW_FIXED_BELOW_M = 0.014  # face points this far below the mouth corners follow the jaw fully
SKULL_FIXED_ABOVE_M = 0.012  # face points this far above the mouth corners never follow the jaw
MOUTH_CORNER_JAW_WEIGHT = 0.45
LIP_CLOSE_SHARE = 0.6  # the photo's lip gap the jaw closes (the lips are then sealed)
LIP_SEAL_OVERLAP_M = 0.0004  # sealed inner lips: the lower lip this far over the upper one
RIM_UV_PULL = 0.08  # the face rim's photo coordinates pulled this share towards the face centre
RING_UV_PULL = 0.035  # ... and the ring of points just inside it
INNER_LIP_UV_PULL = 0.4  # sealed inner-lip texture taken this share towards the outer lip
INNER_CORNER_UV_PULL = 0.3  # ... and the inner mouth corners towards the outer ones
RIM_TINT_RING = 0.45  # skin tint of the ring inside the rim (1 on the rim itself)
RIM_TINT_FADE_M = 0.03  # the tint fades in over this height below the nose tip
EYE_RING_RECESS_M = 0.0016  # the eye patch's contour behind the lid margin
EYE_CENTRE_RECESS_M = 0.0009  # the eye patch's centre behind the contour's mean depth
FACE_INSIDE_M = 0.06  # a point this far behind the face centroid is inside the head
LID_CLOSED_AT = 0.15  # closed lids meet this share of the way from the lower to the upper lid
BLINK_UPPER_OFFSET_M = (0.0, 0.0006, -0.0009)  # the closed upper lid's margin off that line
BLINK_LOWER_OFFSET_M = (0.0, -0.0003, 0.0)  # the closed lower lid's margin off that line
BLINK_REACH_M = 0.021  # face points farther than this from both eyes do not move in a blink
NECK_PIVOT_ABOVE_CHIN_M = 0.005  # the neck pivot's height above the chin
NECK_PIVOT_BEHIND_JAW_M = 0.012  # ... and its depth behind the jaw pivot
N_IRIS = 10  # iris landmarks after the 468 face points


def _jaw_weights(P: np.ndarray, edges: np.ndarray, n_face: int) -> np.ndarray:
    """(n_face,) jaw weights: 1 on the lower lip, chin and lower jaw line, 0 on the upper lip and
    above, harmonic (smooth along the mesh) in between."""
    y_mc = P[list(MOUTH_CORNERS_OUTER), 1].mean()
    fixed_one = set(LIP_LOWER_INNER + LIP_LOWER_OUTER)
    fixed_zero = set(LIP_UPPER_INNER + LIP_UPPER_OUTER)
    for i in range(n_face):
        if i in fixed_one or i in fixed_zero:
            continue
        if P[i, 1] > y_mc + JAW_FIXED_BELOW_M:
            fixed_one.add(i)
        elif P[i, 1] < y_mc - SKULL_FIXED_ABOVE_M:
            fixed_zero.add(i)
    corners = list(MOUTH_CORNERS_INNER + MOUTH_CORNERS_OUTER)
    fixed = np.array(sorted(fixed_one) + sorted(fixed_zero) + corners)
    vals = np.r_[
        np.ones(len(fixed_one)), np.zeros(len(fixed_zero)), np.full(len(corners), MOUTH_CORNER_JAW_WEIGHT)
    ]
    return harmonic_fill(n_face, edges, fixed, vals)


def _close_lips(P: np.ndarray, jaw_pivot: np.ndarray, jaw_w: np.ndarray) -> np.ndarray:
    """The rest pose: the photo smiles with parted lips; raise the jaw to close most of the gap, then
    seal the inner lip contours on a common line (lower lip a hair over the upper one). Iris landmarks
    follow nothing but the head and stay where they are."""
    P = P.copy()
    n_face = len(jaw_w)
    gap = P[LIP_LOWER_INNER, 1] - P[LIP_UPPER_INNER, 1]
    d = P[14] - jaw_pivot
    theta_close = LIP_CLOSE_SHARE * float(gap.max()) / float(np.hypot(d[1], d[2]))
    P[:n_face] = _rotate_x(P[:n_face], jaw_pivot, -theta_close * jaw_w)
    up, lo = P[LIP_UPPER_INNER].copy(), P[LIP_LOWER_INNER].copy()
    mid = 0.5 * (up + lo)
    P[LIP_UPPER_INNER] = mid + np.array([0.0, LIP_SEAL_OVERLAP_M, 0.0])
    P[LIP_LOWER_INNER] = mid - np.array([0.0, LIP_SEAL_OVERLAP_M, 0.0])
    for i in MOUTH_CORNERS_INNER:
        P[i, 1] = 0.5 * (P[i, 1] + mid[:, 1].mean())
    return P


def _face_texture(scan: FaceScan, P: np.ndarray, n_face: int) -> tuple[np.ndarray, np.ndarray]:
    """Photo coordinates (n_face, 2) of the face points and the rim's skin tint (n_face,) in [0, 1].

    The rim's coordinates are pulled slightly inwards, so the projective texture does not pick up the
    photo's background beside the jaw where the rim grazes the view; the sealed inner lip edges are
    sampled from the lip body (the photo shows teeth between the parted lips); the lower rim, dark in
    the photo (shadow on the neck), is tinted towards the skin."""
    face_uv = scan.uv[:n_face].copy()
    centre_uv = face_uv.mean(0)
    oval = np.array(scan.oval)
    ring = np.setdiff1d(np.unique(scan.edges[np.isin(scan.edges, oval).any(1)]), oval)
    face_uv[oval] += RIM_UV_PULL * (centre_uv - face_uv[oval])
    face_uv[ring] += RING_UV_PULL * (centre_uv - face_uv[ring])
    for inner, outer in ((LIP_UPPER_INNER, LIP_UPPER_OUTER), (LIP_LOWER_INNER, LIP_LOWER_OUTER)):
        face_uv[inner] += INNER_LIP_UV_PULL * (scan.uv[outer] - scan.uv[inner])
    for inner, outer in zip(MOUTH_CORNERS_INNER, MOUTH_CORNERS_OUTER):
        face_uv[inner] += INNER_CORNER_UV_PULL * (scan.uv[outer] - scan.uv[inner])
    rim_w = np.zeros(n_face)
    rim_w[ring] = RIM_TINT_RING
    rim_w[oval] = 1.0
    rim_w *= np.clip((P[:n_face, 1] - P[NOSE_TIP, 1]) / RIM_TINT_FADE_M, 0.0, 1.0)
    return face_uv, rim_w


def _eye_patches(
    scan: FaceScan, P: np.ndarray, face_uv: np.ndarray, n_face: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The face's vertices (V, 3) and photo coordinates (V, 2) with an eye patch (eyeball) appended
    per eye: the eye-opening polygon, slightly recessed, fanned around the iris; and the patches'
    triangles (2K, 3), oriented outwards."""
    verts, uv, tris_extra = [P[:n_face]], [face_uv], []
    base = n_face
    for upper, lower, (c_out, c_in), iris in (
        (R_EYE_UPPER, R_EYE_LOWER, R_EYE_CORNERS, R_IRIS),
        (L_EYE_UPPER, L_EYE_LOWER, L_EYE_CORNERS, L_IRIS),
    ):
        loop = [c_out] + upper + [c_in] + lower[::-1]
        eye_ring = P[loop] + np.array([0.0, 0.0, EYE_RING_RECESS_M])
        centre = P[loop].mean(0) + np.array([0.0, 0.0, EYE_CENTRE_RECESS_M])
        centre[:2] = P[iris, :2]
        verts += [eye_ring, centre[None]]
        uv += [scan.uv[loop], scan.uv[iris][None]]
        k = len(loop)
        tris_extra += [[base + i, base + (i + 1) % k, base + k] for i in range(k)]
        base += k + 1
    V = np.concatenate(verts)
    inside = P[:n_face].mean(0) + np.array([0.0, 0.0, FACE_INSIDE_M])
    return V, np.concatenate(uv), orient_outward(V, np.array(tris_extra), inside)


def _blink_field(P: np.ndarray, edges: np.ndarray, n_face: int) -> np.ndarray:
    """(n_face, 3) offsets at blink = 1: the upper-lid contour descends to a line just above the lower
    lid, the lower lid rises a little; the upper-lid skin up to the brow follows harmonically."""
    disp_fixed, disp_vals = [], []
    for upper, lower in ((R_EYE_UPPER, R_EYE_LOWER), (L_EYE_UPPER, L_EYE_LOWER)):
        for u, l in zip(upper, lower):
            line = P[l] + LID_CLOSED_AT * (P[u] - P[l])
            tgt_u = line + np.array(BLINK_UPPER_OFFSET_M)
            tgt_l = line + np.array(BLINK_LOWER_OFFSET_M)
            disp_fixed += [u, l]
            disp_vals += [tgt_u - P[u], tgt_l - P[l]]
    eye_r = P[R_EYE_UPPER + R_EYE_LOWER].mean(0)
    eye_l = P[L_EYE_UPPER + L_EYE_LOWER].mean(0)
    dist = np.minimum(np.linalg.norm(P[:n_face] - eye_r, axis=1), np.linalg.norm(P[:n_face] - eye_l, axis=1))
    far = [i for i in range(n_face) if dist[i] > BLINK_REACH_M and i not in disp_fixed]
    corners_e = list(R_EYE_CORNERS + L_EYE_CORNERS)
    fixed_b = np.array(disp_fixed + far + corners_e)
    vals_b = np.concatenate([np.array(disp_vals), np.zeros((len(far) + len(corners_e), 3))])
    return harmonic_fill(n_face, edges, fixed_b, vals_b)


def build_face_rig(scan: FaceScan) -> FaceRig:
    """Close the photo's parted lips, add eyeballs, and derive jaw weights and the blink field."""
    n_face = 468
    P = scan.points
    cheeks_z = 0.5 * (P[CHEEK_R, 2] + P[CHEEK_L, 2])
    jaw_pivot = np.array(
        [0.0, P[SUBNASALE, 1] - JAW_PIVOT_ABOVE_SUBNASALE_M, cheeks_z + JAW_PIVOT_BEHIND_CHEEKS_M]
    )
    jaw_w = _jaw_weights(P, scan.edges, n_face)
    P = _close_lips(P, jaw_pivot, jaw_w)
    face_uv, rim_w = _face_texture(scan, P, n_face)
    V, UV, eye_tris = _eye_patches(scan, P, face_uv, n_face)
    tris = np.concatenate([scan.tris, eye_tris])
    tri_part = np.r_[np.zeros(len(scan.tris), np.int64), np.ones(len(eye_tris), np.int64)]
    blink_face = _blink_field(P, scan.edges, n_face)
    n_extra = len(V) - n_face  # the eye patches' vertices: no jaw, no blink, no tint

    centroid = P.mean(0)  # head space: the rest landmarks' centroid at the origin
    landmarks = P - centroid
    jaw_pivot = jaw_pivot - centroid
    neck_pivot = np.array(
        [0.0, landmarks[CHIN, 1] - NECK_PIVOT_ABOVE_CHIN_M, jaw_pivot[2] + NECK_PIVOT_BEHIND_JAW_M]
    )
    return FaceRig(
        verts=V - centroid,
        uv=UV,
        tris=tris,
        tri_part=tri_part,
        jaw_w=np.r_[jaw_w, np.zeros(n_extra)],
        blink_d=np.concatenate([blink_face, np.zeros((n_extra, 3))]),
        jaw_pivot=jaw_pivot,
        neck_pivot=neck_pivot,
        landmarks=landmarks,
        landmark_jaw_w=np.r_[jaw_w, np.zeros(N_IRIS)],
        landmark_blink_d=np.concatenate([blink_face, np.zeros((N_IRIS, 3))]),
        rim_w=np.r_[rim_w, np.zeros(n_extra)],
    )
