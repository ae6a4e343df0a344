"""The linear bake: fidelity against the full model, probe-solved weights, files."""

import numpy as np
import pytest
import torch

from avatar3d.audio.visemes import StreamingVisemes, speech_features
from avatar3d.cli import main
from avatar3d.drive.motion import blinks
from avatar3d.errors import FormatError
from avatar3d.eval.metrics import psnr
from avatar3d.export.bake import BakedAvatar, LinearBake, _outputs, fit_bake, projector, sample_inputs
from avatar3d.export.serve import StreamingWeights
from avatar3d.io.media import write_audio
from avatar3d.synthetic.speech import synth_speech

SR = 16000


@pytest.fixture(scope="module")
def baked(fitted_avatar):
    waves = [synth_speech(4.0, SR, seed=10 + i, voice=v) for i, v in enumerate(("default", "low", "high"))]
    return fit_bake(fitted_avatar, waves, k=16, n_probes=256, max_samples=240)


def test_bake_matches_the_full_model_on_novel_audio(fitted_avatar, baked):
    """Held-out speech (another seed and voice than the fit): the bake renders within 35 dB of the model."""
    av = fitted_avatar
    wave = synth_speech(1.2, SR, seed=99, voice="high")
    cam = av.rest_camera.resized(128, 128)
    kw = {"sample_rate": SR, "pose": "generated", "blink": "auto", "background": "black"}
    full = av.render(wave, cam, progress=False, **kw)
    got = BakedAvatar(av, baked).render(wave, cam, **kw)
    assert got.frames.shape == full.frames.shape
    head = (full.alphas > 0.5).astype(np.float32)
    assert psnr(got.frames, full.frames, head).mean() >= 35.0
    # the bases carry the motion: the canonical face alone is clearly worse
    still = BakedAvatar(av, baked).render(wave, cam, weights=np.zeros((len(full), baked.k), np.float32), **kw)
    assert psnr(still.frames, full.frames, head).mean() < psnr(got.frames, full.frames, head).mean() - 1.0


def test_probe_weights_match_the_full_field_projection(fitted_avatar, baked):
    """Weights solved on a few hundred probe Gaussians reconstruct the full field's offsets about as
    well as the least-squares projection of all of them (the bake's ceiling)."""
    av = fitted_avatar
    codes, blinks = sample_inputs(av, [synth_speech(0.8, SR, seed=7)], blink_share=0.5, seed=3)
    w = baked.solve_weights(codes, blinks)
    assert w.shape == (len(codes), baked.k) and len(baked.probes) < len(baked.moving) / 4
    s = baked.channel_scale
    pinv = projector(baked.basis, s)
    c = baked.canonical
    mean = torch.cat([c["means"][baked.moving], c["quats"][baked.moving], c["log_scales"][baked.moving]], 1)
    B = (baked.basis / s).reshape(baked.k, -1)
    res_probe, res_exact, motion = 0.0, 0.0, 0.0
    with torch.no_grad():
        for i in range(len(codes)):
            x = (
                (_outputs(av.model.posed(codes[i], blinks[i].reshape(1), None), baked.moving) - mean) / s
            ).reshape(-1)
            res_probe += float((w[i] @ B - x).square().sum())
            res_exact += float(((pinv @ x) @ B - x).square().sum())
            motion += float(x.square().sum())
    assert res_exact < 0.1 * motion  # K bases carry >90 % of the motion
    assert res_probe < 1.5 * res_exact + 0.01 * motion


def test_bake_file_roundtrip(baked, tmp_path):
    p = baked.save(tmp_path / "b.safetensors")
    back = LinearBake.load(p)
    assert (
        back.k == baked.k
        and torch.equal(back.moving, baked.moving)
        and torch.equal(back.probes, baked.probes)
    )
    assert torch.allclose(back.basis, baked.basis, atol=1e-3 * float(baked.basis.abs().max()))
    w = torch.randn(baked.k)
    assert torch.allclose(back.deformed(w)["means"], baked.deformed(w)["means"], atol=1e-5)
    (tmp_path / "junk.safetensors").write_bytes(b"not a bake")
    with pytest.raises(FormatError):
        LinearBake.load(tmp_path / "junk.safetensors")


def _stream(av, bake, wave, lookahead):
    stream = StreamingWeights(av, bake, lookahead=lookahead, context=4.0)
    rng = np.random.default_rng(0)
    got, s, peak, vis_peak = [], 0, 0, 0
    while s < len(wave):
        n = int(rng.integers(80, 1600))
        got += stream.push(wave[s : s + n])
        s += n
        peak, vis_peak = max(peak, len(stream.buf)), max(vis_peak, len(stream._vis))
    return got, peak, vis_peak


def test_streaming_weights_follow_the_offline_ones_with_bounded_memory(fitted_avatar, baked):
    """Live weights (audio in random chunks, the front end streamed) against the offline ones: close
    when the lookahead covers the model's reach into the future (its audio window and smoother,
    about 0.3 s); at the default 0.2 s some of that future is unknown and the fit is looser. The
    streamed front end itself matches the offline one."""
    av = fitted_avatar
    assert av.meta.n_visemes  # the front end is part of the features
    wave = synth_speech(6.0, SR, seed=31, voice="low")
    offline = BakedAvatar(av, baked).weights(wave, blinks("auto", int(6.0 * 25), 25.0, av.track["blink"]))
    for lookahead, bound in ((0.4, 0.9), (0.2, 0.85)):
        got, peak, vis_peak = _stream(av, baked, wave, lookahead)
        frames = [f for f, _ in got]
        assert frames == list(range(len(frames))) and len(frames) >= len(offline) - 6 - 25 * lookahead
        w = np.stack([x for _, x in got])
        m = min(len(w), len(offline))
        assert np.corrcoef(w[:m].ravel(), offline[:m].ravel())[0, 1] > bound, lookahead
        assert peak <= (4.0 + lookahead + 0.2) * SR + 1600  # context + lookahead + a frame + a chunk
        assert vis_peak <= (4.0 + lookahead + 0.2) * 25 + 3
    sv = StreamingVisemes(25.0, 0.2)
    rows = np.concatenate([sv.push(wave[s : s + 800]) for s in range(0, len(wave), 800)])
    ref = speech_features(wave, 25.0)[: len(rows)]
    assert np.corrcoef(rows.ravel(), ref.ravel())[0, 1] > 0.98


def test_serve_refuses_a_busy_port(fitted_avatar, tmp_path, capsys):
    import socket

    avd = fitted_avatar.save(tmp_path / "av")
    wav = write_audio(tmp_path / "a.wav", synth_speech(0.5, seed=2), SR)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["serve", str(avd), "--audio", str(wav), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "in use" in err[0]
