"""Optical-flow feature tracks: the rigid zone, the KLT tracker, and their use in the pose fit."""

import cv2
import numpy as np
import pytest
import roma
import torch

from avatar3d.capture.canonical import INTER_PUPIL_M, build_canonical
from avatar3d.capture.feature_tracks import FeatureTracker, FeatureTracks, PatchTemplates, rigid_zone
from avatar3d.capture.focal import search_focal
from avatar3d.capture.geometry import project, rotation_angle_deg
from avatar3d.capture.landmarks import FaceLandmarker
from avatar3d.capture.resection import init_track_points
from avatar3d.capture.tracking import fit_rigid
from avatar3d.config import CaptureConfig
from avatar3d.core.topology import CHIN, FOREHEAD, NOSE_TIP, eye_loops

from ._synth import astronaut_face

S = 256


@pytest.fixture(scope="module")
def face():
    """The astronaut crop and its MediaPipe points (478, 3)."""
    img = astronaut_face(S)
    with FaceLandmarker(static_image_mode=True) as lm:
        pts = lm.detect(img)[0].astype(np.float64)
    return img, pts


def _head_mask(lm2d: np.ndarray, shape) -> np.ndarray:
    """A head mask: the landmarks' hull grown by 30 % about their centre (face + some hair)."""
    c = lm2d.mean(0)
    hull = cv2.convexHull(np.round(c + 1.3 * (lm2d - c)).astype(np.int32))
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [hull], 255)
    return m


def test_rigid_zone_keeps_forehead_and_nose_bridge_drops_eyes_mouth_and_silhouette(face):
    img, pts = face
    lm = pts[:, :2]
    head = _head_mask(lm, img.shape[:2])
    zone = rigid_zone(lm, head)
    at = lambda p: bool(zone[int(p[1]), int(p[0])])
    assert at(lm[FOREHEAD] + (lm[CHIN] - lm[FOREHEAD]) * 0.08)  # forehead
    assert at(lm[168])  # nose bridge between the eyes
    assert not at(lm[NOSE_TIP] + (lm[CHIN] - lm[NOSE_TIP]) * 0.3)  # upper lip: below the nose
    assert not at(lm[CHIN])
    for loop in eye_loops():  # no point inside an eye
        assert not at(lm[loop].mean(0))
    # the head mask's silhouette is left out: no zone pixel within 3 px of outside the mask
    near_edge = cv2.dilate((head == 0).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    assert not (zone & near_edge).any()
    assert zone.sum() > 0.15 * (head > 0).sum()
    # a rolled face (image rotated 90°): the zone turns with it (chin side still excluded)
    rot = np.stack([S - lm[:, 1], lm[:, 0]], 1)
    zone_r = rigid_zone(rot, _head_mask(rot, img.shape[:2]))
    assert not zone_r[int(rot[CHIN, 1]), int(rot[CHIN, 0])]
    assert zone_r[int(rot[168, 1]), int(rot[168, 0])]


def test_tracker_follows_a_subpixel_shift_and_stays_on_the_zone(face):
    img, pts = face
    lm = pts[:, :2]
    head = _head_mask(lm, img.shape[:2])
    shifts = np.array([[0.0, 0.0], [0.6, 0.3], [1.4, -0.2], [2.1, 0.9], [2.5, 1.7], [3.3, 2.0]])
    tracker = FeatureTracker(S, S, reseed_every=100)
    for dx, dy in shifts:
        M = np.array([[1.0, 0, dx], [0, 1.0, dy]])
        frame = cv2.warpAffine(img, M, (S, S), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        tracker.update(frame, lm + (dx, dy), cv2.warpAffine(head, M, (S, S), flags=cv2.INTER_NEAREST))
    tr = tracker.result(min_length=len(shifts))
    assert tr.n_tracks >= 30
    first = {int(k): tr.uv[i] for i, k in enumerate(tr.track) if tr.frame[i] == 0}
    err = [np.linalg.norm(tr.uv[i] - first[int(k)] - shifts[tr.frame[i]]) for i, k in enumerate(tr.track)]
    assert np.median(err) < 0.05 and np.percentile(err, 95) < 0.2
    # every observation lies in that frame's rigid zone
    zone0 = rigid_zone(lm, head)
    p0 = np.array(list(first.values())) - 0.5
    assert zone0[np.round(p0[:, 1]).astype(int), np.round(p0[:, 0]).astype(int)].all()


def test_patch_templates_recover_an_affine_warp():
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.random((200, 200)).astype(np.float32), (0, 0), 2.0)
    centre = rng.uniform(40, 160, (80, 2))
    pt = PatchTemplates(15)
    pt.add(img, centre)
    # the image under x' = M (x - c0) + c0 + t
    M, t, c0 = np.array([[0.95, 0.05], [-0.03, 1.02]]), np.array([1.3, -0.7]), np.array([100.0, 100.0])
    yy, xx = np.mgrid[0:200, 0:200].astype(np.float64)
    src = (
        np.einsum("ij,jhw->ihw", np.linalg.inv(M), np.stack([xx - c0[0] - t[0], yy - c0[1] - t[1]]))
        + c0[:, None, None]
    )
    moved = cv2.remap(img, src[0].astype(np.float32), src[1].astype(np.float32), cv2.INTER_LINEAR)
    # brightness gain and offset do not matter
    moved = 0.7 * moved + 0.2
    truth = (centre - c0) @ M.T + c0 + t
    ref, zncc = pt.refine(moved, truth + rng.normal(0, 0.5, truth.shape))
    err = np.linalg.norm(ref - truth, axis=1)
    assert np.median(err) < 0.03 and err.max() < 0.15
    assert (zncc > 0.98).all()
    lin_err = np.abs(pt.linear - M).max((1, 2))
    assert np.median(lin_err) < 0.01 and lin_err.max() < 0.03
    pt.keep(zncc > 2)  # dropping every track leaves an empty, usable set
    assert len(pt) == 0 and pt.refine(moved, np.zeros((0, 2)))[0].shape == (0, 2)
    with pytest.raises(ValueError, match="odd"):
        PatchTemplates(14)


def test_refined_tracks_do_not_drift_where_frame_to_frame_flow_does(face):
    """40 frames of a slow roll, zoom and shear (what a turning head does to a skin patch):
    frame-to-frame flow accumulates its per-step errors; refined against the first patch, a
    track stays on its point."""
    img, pts = face
    lm = pts[:, :2]
    head = _head_mask(lm, img.shape[:2])
    c = np.array([S / 2, S / 2])
    T = 40

    def warp(k):
        a = k / (T - 1)
        ang = np.radians(6.0 * a)
        R = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        A = R @ np.array([[1.0 - 0.08 * a, 0.05 * a], [0.0, 1.0 + 0.03 * a]])
        return np.concatenate([A, (c - A @ c + np.array([4.0 * a, -2.0 * a]))[:, None]], 1)

    errors = {}
    for refine in (False, True):
        tracker = FeatureTracker(S, S, reseed_every=1000, refine=refine)
        for k in range(T):
            M = warp(k)
            frame = cv2.warpAffine(img, M, (S, S), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
            lm_k = lm @ M[:, :2].T + M[:, 2]
            tracker.update(frame, lm_k, cv2.warpAffine(head, M, (S, S), flags=cv2.INTER_NEAREST))
        tr = tracker.result(min_length=T)
        assert tr.n_tracks >= 20
        first = tr.uv[tr.frame == 0][np.argsort(tr.track[tr.frame == 0])] - 0.5
        last = tr.uv[tr.frame == T - 1][np.argsort(tr.track[tr.frame == T - 1])] - 0.5
        M = warp(T - 1)
        errors[refine] = np.linalg.norm(last - (first @ M[:, :2].T + M[:, 2]), axis=1)
    assert np.median(errors[True]) < 0.06
    assert np.median(errors[True]) < 0.5 * np.median(errors[False])


def test_tracker_ends_tracks_when_the_face_is_lost(face):
    img, pts = face
    lm = pts[:, :2]
    head = _head_mask(lm, img.shape[:2])
    tracker = FeatureTracker(S, S, reseed_every=1)
    for k in range(6):
        if k == 3:
            tracker.update(img, None, None)
        else:
            tracker.update(img, lm, head)
    tr = tracker.result(min_length=1)
    assert 3 not in set(tr.frame.tolist())
    before = set(tr.track[tr.frame < 3].tolist())
    after = set(tr.track[tr.frame > 3].tolist())
    assert before and after and not (before & after)  # no track bridges the lost frame


def test_feature_track_containers():
    tr = FeatureTracks(
        frame=np.array([0, 1, 2, 3, 4, 0, 1, 3, 4]),
        track=np.array([0, 0, 0, 0, 0, 1, 1, 1, 1]),
        uv=np.arange(18, dtype=np.float64).reshape(9, 2),
    )
    assert tr.n_tracks == 2 and len(tr) == 9
    breaks = np.array([False, False, False, True, False])
    cut = tr.split_at(breaks)
    assert cut.n_tracks == 4  # each track split at frame 3
    assert (
        len(
            {int(k) for k, f in zip(cut.track, cut.frame) if f < 3}
            & {int(k) for k, f in zip(cut.track, cut.frame) if f >= 3}
        )
        == 0
    )
    assert cut.min_length(3).n_tracks == 1  # only track 0's first part has 3 frames
    v = tr.in_frames(np.array([True, False, True, True, True]))
    assert 1 not in v.frame.tolist() and v.n_tracks == 2
    sub = tr.subset(np.array([1, 3, 4]))  # frames re-indexed to 0, 1, 2
    assert sorted(set(sub.frame.tolist())) == [0, 1, 2] and len(sub) == 6 and sub.n_tracks == 2
    assert np.allclose(sub.uv[(sub.frame == 1) & (sub.track == 1)], tr.uv[7])
    assert FeatureTracks.empty().n_tracks == 0
    assert tr.split_at(None) is tr


# ---- the pose fit with tracks -------------------------------------------------------------------

W = H = 512


def _scene(face_pts, T=40, focal=2.5 * W, seed=0):
    """True poses, a metric face shape, surface points for tracks (nose, forehead, hair-like points
    above and beside it) and their exact projections."""
    rng = np.random.default_rng(seed)
    shape = face_pts - face_pts.mean(0)
    shape = shape * INTER_PUPIL_M / np.linalg.norm(shape[473] - shape[468])
    s = np.linspace(0, 2 * np.pi, T)
    rv = np.stack([0.10 * np.sin(1.3 * s), 0.26 * np.sin(s), 0.05 * np.sin(2 * s)], 1)
    R = roma.rotvec_to_rotmat(torch.as_tensor(rv)).numpy()
    t = np.stack([0.02 * np.sin(s), 0.01 * np.cos(s), 0.9 + 0.03 * np.sin(0.5 * s)], 1)
    K = np.array([[focal, 0, W / 2], [0, focal, H / 2], [0, 0, 1]])
    upper = shape[shape[:, 1] < shape[NOSE_TIP, 1]]
    P = upper[rng.integers(0, len(upper), 150)] + rng.normal(size=(150, 3)) * 0.004
    return shape, R, t, K, P


def _under_rotated_landmarks(shape, R, t, K, factor=0.6, noise=0.3, seed=1):
    """MediaPipe-like detections: the face drawn with only ``factor`` of each frame's rotation about
    the mean pose (the landmarker's under-rotation on smooth skin), plus noise; relative depth too."""
    rng = np.random.default_rng(seed)
    rv = roma.rotmat_to_rotvec(torch.as_tensor(R)).numpy()
    R_seen = roma.rotvec_to_rotmat(torch.as_tensor(rv.mean(0) + factor * (rv - rv.mean(0)))).numpy()
    Xc = np.einsum("tij,nj->tni", R_seen, shape) + t[:, None]
    uv = project(Xc, K) + rng.normal(size=Xc.shape[:2] + (2,)) * noise
    z = (Xc[..., 2] - Xc[..., 2].mean(1, keepdims=True)) * K[0, 0] / t[:, None, 2]
    return np.concatenate([uv, z[..., None]], -1)


def _tracks(P, R, t, K, noise=0.05, seed=2):
    rng = np.random.default_rng(seed)
    T, n = len(R), len(P)
    uv = project(np.einsum("tij,nj->tni", R, P) + t[:, None], K) + rng.normal(size=(T, n, 2)) * noise
    frame = np.repeat(np.arange(T), n)
    track = np.tile(np.arange(n), T)
    return FeatureTracks(frame, track, uv.reshape(-1, 2))


def test_init_track_points_triangulates_exact_observations(face):
    shape, R, t, K, P = _scene(face[1])
    tr = _tracks(P, R, t, K, noise=0.0)
    X = init_track_points(tr, shape, R, t, K[0, 0], W, H)
    assert np.abs(X - P).max() < 1e-6
    # a track seen in one frame only cannot be triangulated: it starts at the face's depth instead
    one = FeatureTracks(np.array([5]), np.array([0]), tr.uv[tr.frame == 5][:1])
    X1 = init_track_points(one, shape, R, t, K[0, 0], W, H)
    assert np.abs(X1[0, 2] - P[0, 2]) < 0.03 and np.linalg.norm(X1[0, :2] - P[0, :2]) < 0.01


def test_tracks_correct_the_landmarks_under_rotation(face):
    shape, R_true, t, K, P = _scene(face[1])
    pts = _under_rotated_landmarks(shape, R_true, t, K)
    valid = np.ones(len(pts), bool)
    cfg = CaptureConfig(focal=float(K[0, 0]))

    def rel_err(R):
        rel = R @ R[0].T
        rel_true = R_true @ R_true[0].T
        return float(np.median(rotation_angle_deg(rel @ np.swapaxes(rel_true, 1, 2))))

    plain = fit_rigid(build_canonical(pts, valid), pts[..., :2], valid, W, H, cfg)
    with_tracks = fit_rigid(
        build_canonical(pts, valid), pts[..., :2], valid, W, H, cfg, tracks=_tracks(P, R_true, t, K)
    )
    e_plain, e_tracks = rel_err(plain.rotation), rel_err(with_tracks.rotation)
    # landmarks alone follow 60 % of the motion (measured 4.7° median error); with the tracks the
    # fit measured 0.95° (the landmarks still pull, with a robust loss, towards their 60 %)
    assert e_plain > 3.0, e_plain
    assert e_tracks < 0.4 * e_plain, (e_tracks, e_plain)
    # and no track at all is the plain fit
    empty = fit_rigid(
        build_canonical(pts, valid), pts[..., :2], valid, W, H, cfg, tracks=FeatureTracks.empty()
    )
    assert rel_err(empty.rotation) == pytest.approx(e_plain, abs=1e-6)


@pytest.mark.parametrize("focal_x", [1.1, 2.5])
def test_focal_search_recovers_the_focal_from_unbiased_tracks(face, focal_x):
    """The estimator itself: with tracks that follow the true camera (0.1 px noise) and landmarks
    that under-rotate, the converged focal search with the tracks weighted 1000 lands near the true
    focal (measured −3.0 % and +3.1 %; with the default weight 30, where the biased landmarks count
    as much: +56 % and +24 %; from the landmarks alone: +82 % and −19 %)."""
    shape, R, t, K, P = _scene(face[1], focal=focal_x * W)
    pts = _under_rotated_landmarks(shape, R, t, K, factor=0.85)
    valid = np.ones(len(pts), bool)
    tr = _tracks(P, R, t, K, noise=0.1)
    fit = build_canonical(pts, valid)
    f = search_focal(fit, pts[..., :2], valid, W, H, CaptureConfig(focal_track_weight=1000.0), tracks=tr)
    assert abs(f / K[0, 0] - 1) < 0.05, f / K[0, 0]


def test_focal_search_warns_when_it_ends_at_the_edge_of_its_range(face):
    shape, R, t, K, P = _scene(face[1], focal=1.1 * W)
    pts = _under_rotated_landmarks(shape, R, t, K, factor=0.85)
    valid = np.ones(len(pts), bool)
    fit = build_canonical(pts, valid)
    cfg = CaptureConfig(focal_search=(2.6, 8.0), focal_track_weight=1000.0)
    with pytest.warns(UserWarning, match="edge of its range"):
        f = search_focal(fit, pts[..., :2], valid, W, H, cfg, tracks=_tracks(P, R, t, K, noise=0.1))
    assert f == pytest.approx(2.6 * W)
