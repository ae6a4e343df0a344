"""Index sets of MediaPipe's 478-point face mesh (468 face points + 2 × 5 iris points).

"Left"/"right" follow MediaPipe: the *subject's* left/right, so for a camera facing the subject the
subject's right eye (indices 33/133) is on the image's left. Loops are ordered polygons, built from the
connection lists that ship inside the mediapipe wheel (no network access, no model file).
"""

from __future__ import annotations

from functools import cache

import numpy as np

N_LANDMARKS = 478

# Iris centres (the first point of each 5-point iris group).
RIGHT_IRIS_CENTER = 468  # subject's right eye, image left
LEFT_IRIS_CENTER = 473  # subject's left eye, image right

# Eye corners and eyelid pairs (upper, lower) of each eye.
RIGHT_EYE_CORNERS = (33, 133)  # outer, inner
LEFT_EYE_CORNERS = (263, 362)
RIGHT_EYELID_PAIRS = ((159, 145), (158, 153), (160, 144))
LEFT_EYELID_PAIRS = ((386, 374), (385, 380), (387, 373))

# Inner-lip pairs (upper, lower), mouth corners, chin and forehead top.
INNER_LIP_PAIRS = ((13, 14), (82, 87), (312, 317), (81, 178), (311, 402))
MOUTH_CORNERS = (61, 291)
CHIN = 152
FOREHEAD = 10
NOSE_TIP = 1
# Lateral face-oval points at cheekbone/ear level (used as a rough jaw hinge).
RIGHT_CHEEK_OVAL = 234
LEFT_CHEEK_OVAL = 454

# Points whose position relative to the skull barely changes with expression: upper face oval,
# forehead (above the brows), nose bridge and tip, eye corners, temples and cheekbones. The mouth,
# jaw, lower face oval, eyelids and eyebrows are excluded on purpose.
RIGID_INDICES: tuple[int, ...] = tuple(
    sorted(
        {
            # upper face oval (forehead to cheekbone level)
            10,
            338,
            297,
            332,
            284,
            251,
            389,
            356,
            454,
            109,
            67,
            103,
            54,
            21,
            162,
            127,
            234,
            # forehead interior
            151,
            9,
            8,
            108,
            337,
            69,
            299,
            104,
            333,
            68,
            298,
            71,
            301,
            # nose bridge, dorsum, tip and sides
            168,
            6,
            197,
            195,
            5,
            4,
            1,
            45,
            275,
            122,
            351,
            188,
            412,
            196,
            419,
            3,
            248,
            51,
            281,
            # eye corners (inner and outer, plus the skin just outside them)
            33,
            133,
            362,
            263,
            130,
            359,
            243,
            463,
            226,
            446,
            # temples and cheekbones
            139,
            368,
            34,
            264,
            156,
            383,
            116,
            345,
            117,
            346,
            123,
            352,
            143,
            372,
            111,
            340,
        }
    )
)

# The rigid points that sit on image features (nose and eye corners). The other rigid points lie on
# the face oval or on smooth skin (forehead, temples, cheeks), where the landmarker places them from its
# shape prior: on a turning head they slide along the silhouette and under-rotate, which biases a focal
# estimate (it reads as strong perspective) while costing little in pose tracking.
FEATURE_RIGID_INDICES: tuple[int, ...] = tuple(
    sorted(
        {168, 6, 197, 195, 5, 4, 1, 45, 275, 122, 351, 188, 412, 196, 419, 3, 248, 51, 281}
        | {33, 133, 362, 263, 130, 359, 243, 463, 226, 446}
    )
)

# Symmetric (subject's right, subject's left) pairs and midline points, to orient head space.
SYMMETRIC_PAIRS = (
    (33, 263),
    (133, 362),
    (130, 359),
    (61, 291),
    (234, 454),
    (127, 356),
    (70, 300),
    (105, 334),
    (58, 288),
    (172, 397),
    (116, 345),
    (123, 352),
    (162, 389),
    (21, 251),
    (54, 284),
    (103, 332),
    (67, 297),
    (109, 338),
    (48, 278),
    (98, 327),
    (468, 473),
)
MIDLINE_UPPER = (10, 151, 9, 8)  # forehead / glabella
MIDLINE_LOWER = (17, 18, 200, 199, 175, 152)  # below the lower lip to the chin


def _edges(name: str) -> list[tuple[int, int]]:
    from mediapipe.python.solutions import face_mesh_connections as fmc

    return sorted(tuple(e) for e in getattr(fmc, name))


def _loop_from_edges(edges: list[tuple[int, int]], start: int) -> list[int]:
    """Order the vertices of a single closed polyline given as undirected edges."""
    adj: dict[int, list[int]] = {}
    for a, b in edges:
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    loop, prev, cur = [start], None, start
    while True:
        nxt = [n for n in adj[cur] if n != prev]
        if not nxt:
            break
        prev, cur = cur, nxt[0]
        if cur == start:
            break
        loop.append(cur)
    return loop


@cache
def face_oval_loop() -> np.ndarray:
    """(36,) face-oval landmark indices in polygon order, starting at the forehead top (10)."""
    return np.array(_loop_from_edges(_edges("FACEMESH_FACE_OVAL"), FOREHEAD), dtype=np.int64)


@cache
def eye_loops() -> tuple[np.ndarray, np.ndarray]:
    """(16,) lid-margin indices of each eye opening in polygon order: (subject's left eye, starting at
    its outer corner 263; right eye, starting at 33)."""
    return (
        np.array(_loop_from_edges(_edges("FACEMESH_LEFT_EYE"), LEFT_EYE_CORNERS[0]), dtype=np.int64),
        np.array(_loop_from_edges(_edges("FACEMESH_RIGHT_EYE"), RIGHT_EYE_CORNERS[0]), dtype=np.int64),
    )


@cache
def inner_lip_loop() -> np.ndarray:
    """(20,) inner-lip contour indices in polygon order (starts at the mouth corner 78)."""
    edges = _edges("FACEMESH_LIPS")
    inner = {78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95}
    return np.array(
        _loop_from_edges([e for e in edges if e[0] in inner and e[1] in inner], 78), dtype=np.int64
    )


@cache
def outer_lip_loop() -> np.ndarray:
    """(20,) outer-lip contour indices in polygon order (starts at the mouth corner 61)."""
    edges = _edges("FACEMESH_LIPS")
    inner = set(inner_lip_loop().tolist())
    return np.array(
        _loop_from_edges([e for e in edges if e[0] not in inner and e[1] not in inner], 61), dtype=np.int64
    )


@cache
def tessellation_edges() -> np.ndarray:
    """(2556, 2) edges of MediaPipe's face mesh over the first 468 points."""
    return np.array(_edges("FACEMESH_TESSELATION"), dtype=np.int64)


@cache
def contour_edges() -> np.ndarray:
    """(124, 2) edges of the face contours (oval, lips, eyes, brows, irises excluded)."""
    return np.array(_edges("FACEMESH_CONTOURS"), dtype=np.int64)


@cache
def face_triangles() -> np.ndarray:
    """(852, 3) int64 triangles of MediaPipe's 468-point face mesh, unoriented (sorted vertex ids).

    The triangles are the 3-cliques of the tesselation's edge graph, minus the spurious ones: a clique
    whose three edges each border three cliques covers a degree-3 vertex's fan and is not a face. The
    one triangle builder of the package: models, the morphable model (which orients them) and the
    synthetic subject all use it.
    """
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    edges = {(min(a, b), max(a, b)) for a, b in FACEMESH_TESSELATION}
    adj: dict[int, set[int]] = {}
    for a, b in edges:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    cliques = sorted({tuple(sorted((a, b, c))) for a, b in edges for c in adj[a] & adj[b]})
    count: dict[tuple[int, int], int] = {}
    for t in cliques:
        for e in ((t[0], t[1]), (t[0], t[2]), (t[1], t[2])):
            count[e] = count.get(e, 0) + 1
    faces = [t for t in cliques if not all(count[e] > 2 for e in ((t[0], t[1]), (t[0], t[2]), (t[1], t[2])))]
    out = np.asarray(faces, dtype=np.int64)
    out.setflags(write=False)
    return out
