"""Image and landmark metrics on pairs with known answers."""

import math

import numpy as np
import pytest
import torch

from avatar3d.core.lpips import LPIPSNet, load_lpips
from avatar3d.eval import metrics as M


def _textured(h=64, w=80, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / 10.0
    base = np.stack([np.sin(x), np.cos(y), np.sin(x + y)], -1) * 0.3 + 0.5
    return np.clip(base + rng.normal(0, 0.02, base.shape), 0, 1)


def test_psnr_identical_is_capped_and_ssim_one():
    img = _textured()
    assert M.psnr(img, img)[0] == pytest.approx(M.PSNR_CAP_DB)
    assert M.ssim(img, img)[0] == pytest.approx(1.0, abs=1e-6)
    u8 = (img * 255).astype(np.uint8)
    assert M.psnr(u8, u8)[0] == pytest.approx(M.PSNR_CAP_DB)


def test_psnr_known_noise():
    rng = np.random.default_rng(1)
    gt = np.full((2, 96, 96, 3), 0.5)
    noisy = gt + rng.normal(0, 0.05, gt.shape)  # no clipping at 10 sigma
    vals = M.psnr(noisy, gt)
    assert vals.shape == (2,)
    mse = ((noisy - gt) ** 2).reshape(2, -1).mean(1)
    np.testing.assert_allclose(vals, 10 * np.log10(1 / mse), rtol=1e-9)
    assert vals == pytest.approx(-20 * math.log10(0.05), abs=0.15)  # 26.02 dB
    assert 0.0 < M.ssim(noisy, gt).max() < 0.9


def test_psnr_mask_scores_only_masked_pixels():
    gt = np.full((32, 32, 3), 0.5)
    pred = gt.copy()
    pred[:, 16:] = 0.0  # wrong right half
    mask = np.zeros((32, 32))
    mask[:, :16] = 1
    assert M.psnr(pred, gt, mask=mask)[0] == pytest.approx(M.PSNR_CAP_DB)
    assert M.psnr(pred, gt)[0] == pytest.approx(10 * math.log10(1 / (0.25 / 2)))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        M.psnr(np.zeros((8, 8, 3)), np.zeros((8, 9, 3)))


def test_mouth_mapping_is_20_distinct_and_follows_the_68_point_layout():
    """On a real face (skimage's astronaut, our landmarker): the 20 points run like the 68-point mouth."""
    import cv2
    from skimage.data import astronaut

    from avatar3d.capture.landmarks import FaceLandmarker

    idx = M.MOUTH68_TO_MEDIAPIPE
    assert len(idx) == 20 and len(set(idx)) == 20
    img = cv2.resize(astronaut()[0:300, 100:400], (512, 512))
    with FaceLandmarker(max_num_faces=1, static_image_mode=True) as lm:
        faces = lm.detect(img)
    assert faces, "the landmarker found no face in the astronaut photo"
    p = M.mouth_points(faces[0][:, :2])  # (20, 2) in 68-point order 48..67
    width = p[6, 0] - p[0, 0]
    assert width > 20
    x = p[:, 0]
    assert (np.diff(x[0:7]) > 0).all()  # 48 -> 54: outer upper lip, image left to right
    assert (np.diff(x[[6, 7, 8, 9, 10, 11]]) < 0).all()  # 54 -> 59: lower lip back to the left
    assert (np.diff(x[12:17]) > 0).all() and (np.diff(x[[16, 17, 18, 19]]) < 0).all()  # inner lip
    mid = (p[0] + p[6]) / 2
    for k in (3, 9, 14, 18):  # 51, 57, 62, 66 sit on the midline
        assert abs(p[k, 0] - mid[0]) < 0.08 * width
    for up, lo in ((3, 9), (14, 18), (2, 10), (4, 8)):  # upper lip above lower lip
        assert p[up, 1] < p[lo, 1]
    for a, b in ((0, 6), (1, 5), (2, 4), (7, 11), (8, 10), (12, 16), (13, 15), (17, 19)):  # mirror pairs
        assert abs((p[a, 0] + p[b, 0]) / 2 - mid[0]) < 0.1 * width
        assert abs(p[a, 1] - p[b, 1]) < 0.15 * width


def _face(seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(100, 400, (478, 2))


def test_lmd_zero_for_identical_and_translation():
    a = _face()[None].repeat(3, 0)
    assert np.allclose(M.lmd(a, a), 0)
    assert np.allclose(M.lmd(a + np.array([7.0, -3.0]), a), 0)  # each set's mean is removed


def test_lmd_known_scale_and_shift_of_one_point():
    a = _face()[None]
    mouth = M.mouth_points(a)[0]
    c = mouth.mean(0)
    b = a.copy()
    sel = list(M.MOUTH68_TO_MEDIAPIPE)
    b[0, sel] = c + 1.1 * (mouth - c)  # mouth scaled by 10 % about its centre
    expected = 0.1 * np.linalg.norm(mouth - c, axis=1).mean()
    assert M.lmd(b, a)[0] == pytest.approx(expected, rel=1e-9)
    d = a.copy()
    d[0, sel[0]] += np.array([20.0, 0.0])  # one of 20 points moves 20 px: mean shifts by 1 px
    r = np.full((20, 2), [-1.0, 0.0])
    r[0] = [19.0, 0.0]
    assert M.lmd(d, a)[0] == pytest.approx(np.linalg.norm(r, axis=1).mean())


def test_lmd_nan_where_no_face():
    a = _face()[None].repeat(2, 0)
    b = a.copy()
    b[1] = np.nan
    out = M.lmd(b, a)
    assert out[0] == 0 and np.isnan(out[1])


def test_identity_consistency_identical_and_colour_shift():
    import cv2

    lms = np.stack([_face(0) * 0 + _synthetic_face_landmarks() + k for k in range(3)])
    frames = np.full((3, 512, 512, 3), 150, np.uint8)
    cols = np.array([M.face_colour(f, lm) for f, lm in zip(frames, lms)])
    ref = M.identity_reference(lms, cols)
    same = M.identity_consistency(lms, cols, ref)
    assert same.shape_cosine == pytest.approx(1.0, abs=1e-9) and same.shape_rms_iod == pytest.approx(
        0, abs=1e-9
    )
    assert same.colour_delta_e == pytest.approx(0, abs=1e-6) and same.frames == 3
    darker = np.full_like(frames, 120)
    cols2 = np.array([M.face_colour(f, lm) for f, lm in zip(darker, lms)])
    lab = lambda v: cv2.cvtColor(np.full((1, 1, 3), v / 255, np.float32), cv2.COLOR_RGB2LAB)[0, 0]
    res = M.identity_consistency(lms, cols2, ref)
    assert res.colour_delta_e == pytest.approx(np.linalg.norm(lab(150) - lab(120)), rel=1e-2)
    warped = lms.copy()
    warped[..., 0] *= 1.3  # a wider face
    assert M.identity_consistency(warped, cols, ref).shape_rms_iod > 0.05


def _synthetic_face_landmarks():
    """A plausible (478, 2) layout: points on an ellipse with eye corners placed apart."""
    rng = np.random.default_rng(5)
    t = rng.uniform(0, 2 * np.pi, 478)
    r = rng.uniform(0.2, 1.0, 478)
    pts = np.stack([256 + 120 * r * np.cos(t), 256 + 160 * r * np.sin(t)], -1)
    from avatar3d.core.topology import face_oval_loop

    loop = face_oval_loop()
    a = np.linspace(0, 2 * np.pi, len(loop), endpoint=False)
    pts[loop] = np.stack([256 + 130 * np.sin(a), 256 - 170 * np.cos(a)], -1)
    pts[33], pts[263] = [200, 220], [312, 220]
    return pts


# ---------------------------------------------------------------------------------- LPIPS
def test_lpips_not_computed_without_weights(tmp_path):
    img = _textured()
    r = M.lpips(img, img, None)
    assert isinstance(r, M.NotComputed) and "not computed" in r
    r = M.lpips(img, img, tmp_path / "missing.pth")
    assert isinstance(r, M.NotComputed) and "not found" in r


def test_lpips_vgg_taps_have_the_head_widths():
    from avatar3d.core.lpips import CHANNELS, _vgg_features

    net = LPIPSNet.__new__(LPIPSNet)
    torch.nn.Module.__init__(net)
    net.features, net.taps = _vgg_features(), (3, 8, 15, 22, 29)
    with torch.no_grad():
        feats = net._taps(torch.rand(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == list(CHANNELS["vgg"])
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]


def test_lpips_full_state_dict_in_lpips_key_format(tmp_path, net="alex"):
    torch.manual_seed(0)
    ref = LPIPSNet(net)
    with torch.no_grad():
        for lin in ref.lins:
            lin.weight.uniform_(0, 1)
    # the lpips package's key layout: backbone under net.sliceK.<torchvision index>, heads under linK.model.1
    state = {}
    for k, v in ref.state_dict().items():
        if k.startswith("features."):
            i = int(k.split(".")[1])
            taps = ref.taps
            s = next(j for j, t in enumerate(taps) if i <= t) + 1
            state[f"net.slice{s}.{k[len('features.') :]}"] = v
        elif k.startswith("lins."):
            state[f"lin{k.split('.')[1]}.model.1.weight"] = v
    path = tmp_path / f"lpips_{net}.pth"
    torch.save(state, path)
    a = _textured(64, 64, 0)
    b = np.clip(a + np.random.default_rng(3).normal(0, 0.1, a.shape), 0, 1)
    same = M.lpips(np.stack([a, a]), np.stack([a, a]), path)
    diff = M.lpips(a, b, path)
    assert np.allclose(same, 0, atol=1e-6)
    with torch.no_grad():
        want = ref(M.as_float_images(a).float(), M.as_float_images(b).float())
    assert diff[0] > 1e-4 and diff[0] == pytest.approx(float(want[0]), rel=1e-5)


def test_lpips_heads_only_needs_a_local_backbone(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate((64, 192, 384, 256, 256))}
    p = tmp_path / "alex.pth"
    torch.save(heads, p)
    r = load_lpips(p)
    assert isinstance(r, str) and r.startswith("not computed") and "never downloaded" in r
    # with the backbone in the (local) hub cache, in torchvision's key format, it loads
    ref = LPIPSNet("alex")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(
        {k: v for k, v in ref.state_dict().items() if k.startswith("features.")},
        tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth",
    )
    assert isinstance(load_lpips(p), LPIPSNet)


def test_lpips_bad_files_give_reasons(tmp_path):
    bad = tmp_path / "junk.pth"
    bad.write_bytes(b"not a torch file")
    assert load_lpips(bad).startswith("not computed")
    state = {k: v for k, v in LPIPSNet("alex").state_dict().items() if k.startswith("features.")}
    state.update(
        {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate((64, 192, 100, 256, 256))}
    )
    torch.save(state, tmp_path / "wrong.pth")
    r = load_lpips(tmp_path / "wrong.pth")
    assert isinstance(r, str) and "does not fit" in r
