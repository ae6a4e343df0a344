"""A user-supplied local speech model end to end: capture -> fit -> render / eval / view features.

The 'speech model' is a tiny TorchScript Conv1d made here (HuBERT's geometry: kernel 400, stride 320
at 16 kHz, D = 8), so nothing is downloaded and the whole module runs in seconds.
"""

import dataclasses
import json
import shutil
import warnings

import numpy as np
import pytest
import torch

from avatar3d.errors import Avatar3DError, ConfigError, FormatError

D = 8


class _ConvSpeech(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hop_length, self.receptive_field, self.sample_rate = 320, 400, 16000
        self.conv = torch.nn.Conv1d(1, D, 400, stride=320)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (1, T) -> (1, S, D)
        return torch.tanh(self.conv(x[:, None, :] * 20.0)).transpose(1, 2)


def _save_model(path):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated in torch 2.13
        torch.jit.save(torch.jit.script(_ConvSpeech()), str(path))
    return path


def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def _other_audio(seconds=1.0, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)
    return (0.3 * env * np.sin(2 * np.pi * (180 + 60 * t) * t)).astype(np.float32)


@pytest.fixture(scope="module")
def speech_model(tmp_path_factory):
    return _save_model(tmp_path_factory.mktemp("speech") / "conv_speech.pt")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from avatar3d.synthetic import make_talking_video

    d = tmp_path_factory.mktemp("speech_clip")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        make_talking_video(d / "v.mp4", seconds=2.0, fps=25, size=128, seed=0)
    finally:
        torch.set_num_threads(threads)
    return d / "v.mp4"


@pytest.fixture(scope="module")
def speech_capture(clip, speech_model, tmp_path_factory):
    from avatar3d.capture import run_capture
    from avatar3d.config import CaptureConfig

    out = tmp_path_factory.mktemp("speech_cap") / "capture"
    return run_capture(clip, out, CaptureConfig(max_size=128, speech_model=str(speech_model)), progress=False)


def _small_cfg(**capture):
    return {
        "preset": "fast",
        "capture": {"max_size": 128, **capture},
        "model": {"n_head": 800, "n_mouth": 60, "n_torso": 200, "max_gaussians": 1500},
        "train": {
            "steps": 4,
            "resolution": 64,
            "static_fraction": 0.25,
            "audio_fraction": 0.25,
            "audio_pretrain_steps": 8,
            "audio_pretrain_batch": 8,
            "audio_batch": 2,
            "checkpoint_every": 0,
            "densify_every": 0,
        },
    }


@pytest.fixture(scope="module")
def speech_avatar(speech_capture, speech_model):
    import avatar3d.train.audio_aug as aug
    from avatar3d import Avatar

    mp = pytest.MonkeyPatch()
    calls = []
    mp.setattr(aug, "augment_mel", lambda *a, **k: calls.append(1) or pytest.fail("mel augmentation used"))
    try:
        # naming the model (as `fit --speech-model` does) lets the fitted avatar render
        av = Avatar.fit(
            speech_capture.root, config=_small_cfg(speech_model=str(speech_model)), progress=False, log=None
        )
    finally:
        mp.undo()
    assert not calls
    return av


def test_config_keys():
    from avatar3d.config import AvatarConfig, CaptureConfig

    assert (
        AvatarConfig.from_dict({"capture": {"speech_model": "/m/hubert"}}).capture.speech_model == "/m/hubert"
    )
    assert AvatarConfig().capture.speech_model is None
    assert CaptureConfig(speech_model="/m/x.pt").to_dict()["speech_model"] == "/m/x.pt"
    with pytest.raises(ConfigError, match="speech_model"):
        CaptureConfig(speech_model=3)


def test_capture_stores_speech_features(speech_capture, speech_model):
    from safetensors.numpy import load_file

    cs = speech_capture
    T = cs.n_frames
    assert cs.features.shape == (T, 16, 80)  # log-mel untouched
    assert cs.speech_features.shape == (T, 16, D) and cs.speech_features.dtype == np.float32
    assert np.isfinite(cs.speech_features).all() and cs.speech_features.std() > 1e-3
    raw = load_file(str(cs.root / "audio.safetensors"))
    assert set(raw) == {"features", "energy", "speech_features"}
    meta = json.loads((cs.root / "transforms.json").read_text())["avatar3d"]
    sm = meta["speech_model"]
    assert sm["path"] == str(speech_model.resolve())
    assert (sm["dim"], sm["window"], sm["hop"], sm["receptive_field"], sm["sample_rate"]) == (
        D,
        16,
        320,
        400,
        16000,
    )
    assert meta["config"]["speech_model"] == str(speech_model)
    # the same features as running the extractor on the stored audio (16-bit PCM: close, not equal)
    from avatar3d.audio import SpeechFeatureExtractor

    wave, sr = cs.audio()
    again = SpeechFeatureExtractor.from_path(speech_model)(wave, sr, cs.fps, n_frames=T, window=16)
    np.testing.assert_allclose(again, cs.speech_features, atol=0.05)


def test_capture_set_with_speech_features_must_name_the_model(speech_capture, tmp_path):
    from avatar3d.io.captureset import CaptureSet

    d = tmp_path / "cap"
    shutil.copytree(speech_capture.root, d)
    t = json.loads((d / "transforms.json").read_text())
    del t["avatar3d"]["speech_model"]
    (d / "transforms.json").write_text(json.dumps(t))
    with pytest.raises(FormatError, match="speech_model"):
        CaptureSet.load(d, check_files=False)


def _n_vis(av) -> int:
    """The speech front end's channels appended to the features (0 for avatars without it)."""
    return int(av.meta.n_visemes)


def test_training_uses_normalised_speech_features(speech_avatar, speech_capture, speech_model):
    av = speech_avatar
    sm = av.meta.speech_model
    n_vis = int(av.meta.n_visemes)  # the front end's channels
    assert av.meta.n_mels == D + n_vis and av.meta.audio_window == 16
    assert av.model.audio.encoder.conv[0].in_channels == D
    assert sm["path"] == str(speech_model.resolve()) and len(sm["mean"]) == D and len(sm["std"]) == D
    n_train = av.meta.train_frames
    raw = speech_capture.speech_features[:n_train].reshape(-1, D)
    np.testing.assert_allclose(sm["mean"], raw.mean(0), atol=1e-5)
    np.testing.assert_allclose(sm["std"], raw.std(0), rtol=1e-4, atol=1e-5)
    assert av.speech_model == str(speech_model.resolve())


def test_render_uses_the_speech_model_not_mel(speech_avatar, speech_model, tmp_path, monkeypatch):
    import avatar3d.audio
    import avatar3d.audio.features
    from avatar3d import Avatar
    from avatar3d.eval._drive import features_for
    from avatar3d.viewer.frames import make_drive

    speech_avatar.save(tmp_path / "av")
    av = Avatar.load(tmp_path / "av", speech_model=speech_model)

    def no_mel(*a, **k):
        raise AssertionError("log-mel used for a speech-model avatar")

    monkeypatch.setattr(avatar3d.audio, "frame_features", no_mel)
    monkeypatch.setattr(avatar3d.audio.features, "frame_features", no_mel)
    wave = _other_audio(1.0)
    res = av.render(wave, sample_rate=16000, progress=False)
    assert res.frames.shape[0] == 25 and res.frames.dtype == np.uint8 and res.frames.std() > 1
    feats = av.audio_features(wave, 25.0, 25)
    assert feats.shape == (25, 16, D + _n_vis(av)) and abs(float(feats.mean())) < 5
    np.testing.assert_allclose(features_for(av, wave, 25.0, 25), feats)
    drive = make_drive(av, wave, sample_rate=16000)
    assert drive.codes.shape[0] == 25
    assert make_drive(av, None, idle_seconds=0.5).codes.shape[1] == drive.codes.shape[1]  # silence code
    files = av.export_ply(tmp_path / "ply", audio=wave[:8000], sample_rate=16000)
    assert len(files) == 12


def test_eval_capture_features_follow_the_avatar(speech_avatar, speech_capture):
    from avatar3d.eval._drive import audio_codes, capture_features

    f = capture_features(speech_avatar, speech_capture)
    assert f.shape == (speech_capture.n_frames, 16, D + _n_vis(speech_avatar))
    assert audio_codes(speech_avatar, f, np.arange(3)).shape[0] == 3


def test_avatar_without_the_key_renders_from_mel(speech_avatar):
    """Avatars saved before speech models: meta without 'speech_model' means log-mel."""
    from avatar3d import Avatar
    from avatar3d.audio import frame_features

    meta = dataclasses.replace(speech_avatar.meta, speech_model=None)
    av = Avatar(
        speech_avatar.model, speech_avatar.config, meta, speech_avatar.track, speech_avatar.background
    )
    wave = _other_audio(0.5)
    assert av.speech_model is None
    feats = av.audio_features(wave, 25.0, 12)
    assert feats.shape[-1] == 80 + _n_vis(av)  # log-mel, then the front end's channels
    np.testing.assert_array_equal(feats[..., :80], frame_features(wave, 16000, 25.0, 12, 16))


def test_render_after_the_model_file_was_removed(speech_avatar, speech_model, tmp_path):
    from avatar3d import Avatar

    copy = tmp_path / "moved" / "model.pt"
    copy.parent.mkdir()
    shutil.copy(speech_model, copy)
    meta = speech_avatar.meta.to_dict()
    meta["speech_model"]["path"] = str(copy)
    av = Avatar(
        speech_avatar.model,
        speech_avatar.config,
        meta,
        speech_avatar.track,
        speech_avatar.background,
        speech_model=copy,
    )
    wave = _other_audio(0.2)
    assert len(av.render(wave, sample_rate=16000, progress=False)) == 5
    copy.unlink()
    with pytest.raises(FormatError) as e:
        av.render(wave, sample_rate=16000, progress=False)
    msg = _one_line(e)
    assert str(copy) in msg and "not found" in msg


def test_a_loaded_avatar_never_runs_the_model_it_names(speech_avatar, tmp_path, monkeypatch):
    """An avatar directory is data: the speech model recorded in avatar.json is never loaded; the
    user must name the file (--speech-model), and the error says so."""
    import avatar3d.audio.speech_model as sm
    from avatar3d import Avatar
    from avatar3d.cli import main

    def no_loading(*a, **k):
        raise AssertionError("a model file named by the avatar directory was loaded")

    monkeypatch.setattr(sm, "cached_extractor", no_loading)
    monkeypatch.setattr(sm.SpeechFeatureExtractor, "from_path", no_loading)
    speech_avatar.save(tmp_path / "av")
    meta = json.loads((tmp_path / "av" / "avatar.json").read_text())
    hostile = tmp_path / "av" / "evil.pt2"
    hostile.write_bytes(b"PK\x03\x04 not really a model")
    meta["speech_model"]["path"] = "evil.pt2"
    (tmp_path / "av" / "avatar.json").write_text(json.dumps(meta))
    av = Avatar.load(tmp_path / "av")
    with pytest.raises(FormatError) as e:
        av.render(_other_audio(0.2), sample_rate=16000, progress=False)
    assert "--speech-model" in _one_line(e)
    wav = tmp_path / "a.wav"
    from avatar3d.io.media import write_audio

    write_audio(wav, _other_audio(0.5), 16000)
    code = main(["render", str(tmp_path / "av"), "--audio", str(wav), "-o", str(tmp_path / "o.mp4")])
    assert code == 2 and not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("kind", ["missing", "corrupt"])
def test_bad_model_fails_before_any_work(kind, tmp_path, monkeypatch):
    from avatar3d.capture import run_capture
    from avatar3d.config import CaptureConfig
    from avatar3d.io import media

    model = tmp_path / "hubert.pt"
    if kind == "corrupt":
        model.write_bytes(b"not a model\x00" * 100)

    def no_decoding(*a, **k):
        raise AssertionError("the video was opened before the speech model was checked")

    monkeypatch.setattr(media, "probe_video", no_decoding)
    monkeypatch.setattr(media, "iter_frames", no_decoding)
    out = tmp_path / "capture"
    with pytest.raises(FormatError) as e:
        run_capture(tmp_path / "v.mp4", out, CaptureConfig(speech_model=str(model)), progress=False)
    msg = _one_line(e)
    assert "capture.speech_model" in msg and str(model) in msg
    assert not out.exists()


def test_cli_bad_model_one_line_no_output(tmp_path, capsys):
    from avatar3d.cli import main

    video = tmp_path / "v.mp4"
    video.write_bytes(b"\x00" * 64)
    for args in (
        ["capture", video, "-o", tmp_path / "cap", "--speech-model", tmp_path / "none.pt"],
        [
            "fit",
            video,
            "-o",
            tmp_path / "av",
            "--workdir",
            tmp_path / "w",
            "--speech-model",
            tmp_path / "none.pt",
        ],
    ):
        code = main([str(a) for a in args])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "none.pt" in err[0] and "speech" in err[0]
    assert not (tmp_path / "cap").exists() and not (tmp_path / "av").exists()
    assert not (tmp_path / "w").exists()


def test_fit_refuses_a_capture_made_without_the_model(speech_capture, speech_model, tmp_path):
    from avatar3d import Avatar

    other = _save_model(tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="capture again"):
        Avatar.fit(speech_capture.root, config=_small_cfg(speech_model=str(other)), progress=False, log=None)
    assert isinstance(ConfigError("x"), Avatar3DError)


def test_chunked_speech_model_features_run_the_model_once(speech_avatar, speech_model, tmp_path, monkeypatch):
    """A render asks for features chunk by chunk: the model runs once per wave, and the chunks equal
    the whole clip's rows."""
    from avatar3d import Avatar
    from avatar3d.audio.speech_model import SpeechFeatureExtractor

    speech_avatar.save(tmp_path / "av")
    av = Avatar.load(tmp_path / "av", speech_model=speech_model)
    wave = _other_audio(3.0)
    whole = av.audio_features(wave, 25.0, 75)
    calls = []
    real = SpeechFeatureExtractor._forward
    monkeypatch.setattr(SpeechFeatureExtractor, "_forward", lambda self, w: calls.append(1) or real(self, w))
    wave2 = wave.copy()  # a new wave: nothing cached for it yet
    chunks = [av.audio_features(wave2, 25.0, 75, frames=(a, min(75, a + 20))) for a in range(0, 75, 20)]
    np.testing.assert_allclose(np.concatenate(chunks), whole, rtol=1e-6, atol=1e-6)
    assert len(calls) == 1
