"""CaptureSet.load validation: every missing or malformed part is a one-line FormatError naming it."""

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from avatar3d.errors import FormatError
from avatar3d.io.captureset import CaptureSet, c2w_opengl


@pytest.fixture()
def capture_copy(rolling_capture, tmp_path):
    dst = tmp_path / "cap"
    shutil.copytree(rolling_capture.root, dst)
    return dst


def _edit_json(root, fn):
    p = root / "transforms.json"
    d = json.loads(p.read_text())
    fn(d)
    p.write_text(json.dumps(d))


def _edit_tracking(root, fn):
    p = root / "tracking.safetensors"
    d = load_file(str(p))
    fn(d)
    save_file(d, str(p))


def test_c2w_opengl_matches_definition():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    R = q * np.sign(np.linalg.det(q))
    t = rng.normal(size=3)
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R, t
    np.testing.assert_allclose(c2w_opengl(R, t), np.linalg.inv(w2c) @ np.diag([1, -1, -1, 1]), atol=1e-12)


def test_valid_copy_loads(capture_copy):
    cs = CaptureSet.load(capture_copy)
    assert cs.n_frames == 12 and len(cs) == 12 and "frames" in repr(cs)
    with pytest.raises(IndexError):
        cs.image(12)


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda r: (r / "masks" / "000003.png").unlink(), "masks/000003.png"),
        (lambda r: (r / "images" / "000011.jpg").unlink(), "images/000011.jpg"),
        (lambda r: (r / "masks_mouth" / "000000.png").unlink(), "masks_mouth/000000.png"),
        (lambda r: (r / "audio.safetensors").unlink(), "audio.safetensors"),
        (lambda r: (r / "background.png").unlink(), "background.png"),
        (lambda r: (r / "transforms.json").write_text("{not json"), "not valid JSON"),
        (lambda r: (r / "tracking.safetensors").write_bytes(b"garbage"), "not a readable safetensors"),
        (lambda r: _edit_json(r, lambda d: d["avatar3d"].update(version=99)), "version 99"),
        (lambda r: _edit_json(r, lambda d: d.pop("fl_x")), "'fl_x'"),
        (lambda r: _edit_json(r, lambda d: d["frames"].pop()), "n_frames = 12 but 11"),
        (
            lambda r: _edit_json(
                r, lambda d: d["avatar3d"].update(train_split={"train": [0, 5], "test": [6, 12]})
            ),
            "train_split",
        ),
        (
            lambda r: _edit_json(r, lambda d: d["frames"][0].update(transform_matrix=np.eye(4).tolist())),
            "disagrees with tracking",
        ),
        (lambda r: _edit_tracking(r, lambda d: d.pop("blink")), "missing key 'blink'"),
        (
            lambda r: _edit_tracking(r, lambda d: d.update(mouth_open=np.zeros(11, np.float32))),
            "'mouth_open'",
        ),
        (
            lambda r: _edit_tracking(r, lambda d: d.update(landmarks2d=np.zeros((12, 468, 2), np.float32))),
            "'landmarks2d'",
        ),
        (
            lambda r: _edit_tracking(r, lambda d: d.update(translation=np.full((12, 3), np.nan, np.float32))),
            "NaN",
        ),
        # a capture from a stranger: paths may not leave the directory, numbers must be sane
        (
            lambda r: _edit_json(r, lambda d: d["frames"][2].update(file_path="../../../etc/passwd")),
            "outside",
        ),
        (lambda r: _edit_json(r, lambda d: d["frames"][2].update(mask_path="/etc/hostname")), "outside"),
        (lambda r: _edit_json(r, lambda d: d["frames"][2].update(file_path=7)), "file_path"),
        (lambda r: _edit_json(r, lambda d: d.update(fl_y=float("nan"))), "focal"),
        (lambda r: _edit_json(r, lambda d: d.update(cx="left")), "numbers"),
        (lambda r: _edit_json(r, lambda d: d["avatar3d"].update(fps=0)), "fps"),
        (lambda r: _edit_json(r, lambda d: d["avatar3d"].update(fps=1e9)), "fps"),
        (lambda r: _edit_json(r, lambda d: d.update(w=10**6)), "image size"),
    ],
)
def test_broken_capture_sets_name_the_problem(capture_copy, breakage, message):
    breakage(capture_copy)
    with pytest.raises(FormatError, match=message.replace("(", r"\(")) as e:
        CaptureSet.load(capture_copy)
    assert "\n" not in str(e.value)


def test_a_link_out_of_the_capture_is_refused(capture_copy, tmp_path):
    outside = tmp_path / "elsewhere.jpg"
    img = capture_copy / "images" / "000004.jpg"
    img.rename(outside)
    img.symlink_to(outside)
    with pytest.raises(FormatError, match="outside"):
        CaptureSet.load(capture_copy)


def test_not_a_directory(tmp_path):
    with pytest.raises(FormatError, match="not a directory"):
        CaptureSet.load(tmp_path / "nope")
    with pytest.raises(FormatError, match="no transforms.json"):
        CaptureSet.load(tmp_path)


def test_unknown_region_mask_kind(capture_copy):
    cs = CaptureSet.load(capture_copy)
    with pytest.raises(FormatError, match="no 'hair' masks"):
        cs.mask(0, "hair")
