"""Report files (JSON + PNG, atomic) and the crop geometry shared by renders and real frames."""

import json

import numpy as np
import pytest

from avatar3d.eval import crops as P
from avatar3d.eval.report import load_report, write_report
from avatar3d.eval.sync import sync_report


def _fake_report():
    rng = np.random.default_rng(0)
    env = rng.uniform(0, 1, 40)
    return {
        "protocol": {"region": "head crop", "size": [512, 512]},
        "metrics": {"psnr": 30.0, "ssim": 0.9, "lpips": "not computed: no weights", "lmd": float("nan")},
        "per_frame": {
            "index": list(range(40)),
            "psnr": list(rng.uniform(25, 35, 40)) + [],
            "psnr_all_rendered": [None] * 40,
        },
        "sync": sync_report(env + rng.normal(0, 0.1, 40), env, env),
        "views": {
            "axis": "yaw",
            "angles": [-45.0, 0.0, 45.0],
            "frontal_warp_mae_per_angle": [0.05, 0.0, 0.04],
            "flicker_mae_per_pair": [0.01, 0.012],
            "psnr_per_angle": [20.0, 25.0, np.nan],
            "psnr_head_per_angle": [18.0, 24.0, 19.0],
        },
        "samples": [
            {"index": 3, "real": np.zeros((32, 32, 3), np.uint8), "avatar": np.full((32, 32, 3), 9, np.uint8)}
        ],
    }


def test_write_report_json_and_png(tmp_path):
    js, png = write_report(_fake_report(), tmp_path / "out" / "report.json")
    assert js == tmp_path / "out" / "report.json" and png == tmp_path / "out" / "report_plots.png"
    data = json.loads(js.read_text())  # strict JSON: NaN became null
    assert data["metrics"]["lmd"] is None and data["views"]["psnr_per_angle"][2] is None
    assert "samples" not in data and load_report(js)["metrics"]["psnr"] == 30.0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.json", "report_plots.png"]


def test_write_report_failure_leaves_old_files(tmp_path):
    good = tmp_path / "report.json"
    write_report(_fake_report(), good)
    before = good.read_text()
    bad = _fake_report()
    bad["metrics"]["oops"] = object()  # not serialisable
    with pytest.raises(TypeError):
        write_report(bad, good)
    assert good.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "report_plots.png"]


def test_crop_intrinsics_match_crop_image():
    """A 3D point projected with the crop's intrinsics lands where the cropped real frame shows it."""
    W, H = 320, 240
    K = np.array([[300.0, 0, 160], [0, 300, 120], [0, 0, 1]])
    X = np.array([0.03, -0.02, 0.5])
    u = K @ X
    u = u[:2] / u[2]
    img = np.zeros((H, W, 3), np.uint8)
    img[int(u[1]), int(u[0])] = 255  # the pixel whose area contains the projection
    box = np.array([100, 60, 128, 128])
    for ow in (512, 64):
        Kc = P.crop_intrinsics(K, box, ow, ow)
        uc = Kc @ X
        uc = uc[:2] / uc[2]
        crop = P.crop_image(img, box, ow, ow).max(-1).astype(float)
        iy, ix = np.unravel_index(np.argmax(crop), crop.shape)
        s = ow / 128
        # the bright source pixel covers [j, j+1) -> [s(j - x0), s(j + 1 - x0)) in the crop
        assert s * (int(u[0]) - 100) - 1 <= ix + 0.5 <= s * (int(u[0]) + 1 - 100) + 1
        assert s * (int(u[1]) - 60) - 1 <= iy + 0.5 <= s * (int(u[1]) + 1 - 60) + 1
        assert s * (int(u[0]) - 100) <= uc[0] <= s * (int(u[0]) + 1 - 100)


def test_crop_boxes_are_square_inside_the_frame():
    rng = np.random.default_rng(0)
    lm = rng.uniform(0, 100, (5, 478, 2)) + np.array([[[-20.0, 150.0]]])  # partly outside on the left
    boxes = P.crop_boxes(lm, 400, 300, "head")
    assert (boxes[:, 2] == boxes[:, 3]).all() and (boxes[:, :2] >= 0).all()
    assert (boxes[:, 0] + boxes[:, 2] <= 400).all() and (boxes[:, 1] + boxes[:, 3] <= 300).all()
    assert boxes[0, 2] == round(1.7 * np.median((lm.max(1) - lm.min(1)).max(1)))
    full = P.crop_boxes(lm, 400, 300, "full")
    assert (full == [0, 0, 400, 300]).all() and P.out_size(full[0], 512) == (512, 384)
    with pytest.raises(ValueError):
        P.crop_boxes(lm, 400, 300, "torso")


def test_plate_warp_matches_the_frame_crop():
    W, H = 320, 240
    yy, xx = np.mgrid[0:H, 0:W]
    src = (np.stack([np.sin(xx / 9.0), np.cos(yy / 7.0), np.sin((xx + yy) / 11.0)], -1) * 100 + 128).astype(
        np.uint8
    )
    import cv2

    plate = cv2.resize(src, (W // 2, H // 2), interpolation=cv2.INTER_AREA)  # the avatar's lower-res plate
    box = np.array([80, 40, 150, 150])
    a = P.warp_plate(plate, box, W, H, 150, 150).astype(float)
    b = P.crop_image(src, box, 150, 150).astype(float)
    assert np.abs(a - b)[5:-5, 5:-5].mean() < 6.0  # same content, up to the plate's lower resolution
    shifted = P.crop_image(src, box + np.array([6, 0, 0, 0]), 150, 150).astype(float)
    assert np.abs(a - shifted)[5:-5, 5:-5].mean() > 3 * np.abs(a - b)[5:-5, 5:-5].mean()
