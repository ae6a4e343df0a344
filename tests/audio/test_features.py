"""avatar3d.audio: loading, log-mel, exact frame alignment, normalisation, energy, speech-model hook."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from avatar3d.audio import SpeechFeatureExtractor, audio_energy, frame_features, load_audio, log_mel
from avatar3d.errors import Avatar3DError, FormatError, MediaError
from avatar3d.io import write_video

DATA = Path(__file__).parents[2].parent / "shared" / "data"


@pytest.fixture(scope="module")
def real_data() -> Path:
    """../shared/data (real speech), or a clean skip when it is absent."""
    if not DATA.is_dir():
        pytest.skip(f"{DATA} is absent")
    return DATA


def burst(sr: int, seconds: float, at: float, freq: float = 1000.0, half: float = 0.01) -> np.ndarray:
    """(T,) float32 silence with a sine burst of +-``half`` s centred at ``at`` s."""
    t = np.arange(int(sr * seconds)) / sr
    x = np.zeros_like(t)
    m = np.abs(t - at) < half
    x[m] = 0.8 * np.sin(2 * np.pi * freq * t[m])
    return x.astype(np.float32)


def speechlike(sr: int, seconds: float, seed: int = 0) -> np.ndarray:
    """(T,) float32 noise with a syllable-rate envelope (stands in for speech)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    return (rng.standard_normal(t.size) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)) * 0.2).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# load_audio


def test_load_audio_layouts_rates_and_dtypes():
    mono = speechlike(48000, 1.0)
    stereo = np.stack([mono, mono], axis=1)  # (T, 2)
    a = load_audio((mono, 48000))
    assert a.shape == (16000,) and a.dtype == np.float32
    np.testing.assert_allclose(load_audio((stereo, 48000)), a, atol=1e-6)
    np.testing.assert_allclose(load_audio((stereo.T, 48000)), a, atol=1e-6)  # (C, T)
    ints = (np.clip(mono, -1, 1) * 32767).astype(np.int16)
    np.testing.assert_allclose(load_audio((ints, 48000)), a, atol=2e-4)
    low = load_audio((np.stack([speechlike(8000, 2.0)] * 2), 8000))  # 8 kHz stereo (C, T)
    assert low.shape == (32000,)
    assert load_audio((mono, 48000), sr=22050).shape == (22050,)


def test_load_audio_from_files(tmp_path):
    sr = 44100
    wave = np.stack([burst(sr, 1.0, 0.5), burst(sr, 1.0, 0.5)], axis=1)  # (T, 2) stereo 44.1 kHz
    clip = write_video(
        tmp_path / "c.mp4", np.zeros((25, 16, 16, 3), np.uint8), 25, wave, sr, preset="ultrafast"
    )
    x = load_audio(clip)
    assert x.shape == (16000,) and abs(np.argmax(np.abs(x)) / 16000 - 0.5) < 0.012
    assert load_audio(str(clip), sr=8000).shape == (8000,)


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ((np.zeros(100), 1000), "outside"),
        ((np.zeros(100), 300000), "outside"),
        ((np.array([0.0, np.nan, 0.1]), 16000), "NaN"),
        ((np.zeros(0), 16000), "no samples"),
        ((np.zeros((3, 3, 3)), 16000), "shape"),
        ((np.zeros(100), 16000.5), "integer"),
    ],
)
def test_load_audio_rejects_bad_input(source, match):
    with pytest.raises(MediaError, match=match) as e:
        load_audio(source)
    assert "\n" not in str(e.value)


def test_load_audio_bad_sources(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(MediaError, match="outside"):
        load_audio((np.zeros(100), 16000), sr=2000)
    with pytest.raises(TypeError):
        load_audio(np.zeros(100))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# features


def test_log_mel_matches_librosa():
    import librosa

    x = speechlike(16000, 1.3)
    ours = log_mel(x, 16000)
    ref = librosa.feature.melspectrogram(
        y=x,
        sr=16000,
        n_fft=800,
        hop_length=320,
        win_length=800,
        center=True,
        pad_mode="constant",
        power=2.0,
        n_mels=80,
        fmin=55,
        fmax=7600,
    )
    ref_db = librosa.power_to_db(ref, ref=1.0, amin=1e-10, top_db=80.0).T  # (n_steps, 80)
    assert ours.shape == ref_db.shape == (1 + len(x) // 320, 80)
    np.testing.assert_allclose(ours, ref_db, atol=1e-3)


def test_frame_features_shapes():
    x = speechlike(16000, 2.03)
    f = frame_features(x, 16000, fps=25)
    assert f.shape == (50, 16, 80) and f.dtype == np.float32  # floor(2.03 * 25)
    assert frame_features(x, 16000, fps=30, n_frames=70, window=8).shape == (
        70,
        8,
        80,
    )  # past the end: padded
    assert frame_features(x, 16000, fps=25, n_frames=0).shape == (0, 16, 80)
    assert np.isfinite(f).all()
    with pytest.raises(ValueError):
        frame_features(x, 16000, fps=0)


@pytest.mark.parametrize(
    ("sr", "fps", "k"), [(16000, 25, 40), (44100, 30, 48), (8000, 25, 37), (48000, 29.97, 31)]
)
def test_tone_burst_lands_in_the_centre_of_its_frame(sr, fps, k):
    at = k / fps
    x = burst(sr, 3.0, at)
    stereo = np.stack([x, x])  # (C, T): layouts must not matter
    f = frame_features(stereo, sr, fps)  # (n, 16, 80)
    band = f.mean(axis=2)  # (n, 16) loudness per step
    row = band[k]
    assert int(np.argmax(row)) in (7, 8)  # the two steps straddling t_k (+-10 ms)
    assert row[7] == pytest.approx(row[8], abs=0.05 * abs(row[7]) + 0.05)  # symmetric about t_k
    centre = band[:, 7:9].mean(axis=1)
    assert int(np.argmax(centre)) == k
    assert centre[k] - max(centre[k - 2], centre[k + 2]) > 2.0
    energy = audio_energy(stereo, sr, fps)
    assert (
        energy.shape == (f.shape[0],)
        and int(np.argmax(energy)) == k
        and energy.min() >= 0
        and energy.max() == 1
    )


def test_normalisation_is_loudness_invariant_and_standardised():
    x = speechlike(16000, 3.0, seed=3)
    a = frame_features(x, 16000, 25)
    b = frame_features(0.05 * x, 16000, 25)
    np.testing.assert_allclose(a, b, atol=1e-3)
    mid = a[:, 7:9].reshape(-1, 80)
    assert np.abs(mid.mean(axis=0)).max() < 0.3 and np.all(np.abs(mid.std(axis=0) - 1) < 0.3)


def test_audio_energy_edge_cases():
    assert np.array_equal(audio_energy(np.zeros(16000), 16000, 25), np.zeros(25, np.float32))
    e = audio_energy(speechlike(16000, 1.0), 16000, 25, n_frames=30)
    assert e.shape == (30,) and 0 <= e.min() and e.max() == 1.0


def test_real_speech_features_are_comparable(real_data):
    """Different speakers, rates, layouts and loudness give standardised features of the same shape."""
    for name, fps in (("speech_a_44k_stereo.wav", 25), ("speech_b_16k_60s.wav", 25), ("talk_de.mp4", 25)):
        wave = load_audio(real_data / name)
        f = frame_features(wave, 16000, fps)
        assert f.shape == (int(len(wave) / 16000 * fps), 16, 80)
        flat = f[:, 7:9].reshape(-1, 80)
        assert abs(float(flat.mean())) < 0.2 and 0.8 < float(flat.std()) < 1.2, name


# ------------------------------------------------------------------------------------------------
# speech-model hook


@pytest.fixture(scope="module")
def energy_model(tmp_path_factory) -> Path:
    """A tiny TorchScript 'speech model': mean square over 400-sample windows, stride 320 (HuBERT geometry)."""
    torch = pytest.importorskip("torch")

    class WindowEnergy(torch.nn.Module):
        def __init__(self) -> None:  # int attributes: TorchScript keeps them, from_path reads them
            super().__init__()
            self.hop_length, self.receptive_field, self.sample_rate = 320, 400, 16000

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (1, T) -> (1, S, 2)
            e = torch.nn.functional.avg_pool1d((x * x)[:, None, :], 400, 320)  # (1, 1, S)
            return torch.cat([e, -e], dim=1).transpose(1, 2)

    path = tmp_path_factory.mktemp("model") / "energy.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated in torch 2.13
        torch.jit.script(WindowEnergy()).save(str(path))
    return path


def test_speech_model_torchscript_alignment(energy_model):
    ext = SpeechFeatureExtractor.from_path(energy_model)
    assert (ext.hop, ext.receptive_field, ext.sample_rate, ext.kind) == (320, 400, 16000, "torchscript")
    fps, k = 25, 40
    x = burst(44100, 3.0, k / fps)
    feats = ext(x, 44100, fps)  # (n, 1, 2)
    assert feats.shape == (75, 1, 2) and feats.dtype == np.float32
    assert int(np.argmax(feats[:, 0, 0])) == k
    win = ext(x, 44100, fps, window=4)  # steps at t_k -30, -10, +10, +30 ms
    assert win.shape == (75, 4, 2) and int(np.argmax(win[k, :, 0])) in (1, 2)
    np.testing.assert_allclose(win[..., 1], -win[..., 0])
    seq, times, duration = ext.sequence(x, 44100)
    assert seq.shape == (((48000 - 400) // 320 + 1), 2) and times[0] == pytest.approx(199.5 / 16000)
    assert duration == pytest.approx(3.0, abs=1e-3)


def test_speech_model_torch_export_program(tmp_path, energy_model):
    """A .pt2 (torch.export) program with a dynamic time axis gives the same aligned features."""
    torch = pytest.importorskip("torch")

    class WindowEnergy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            e = torch.nn.functional.avg_pool1d((x * x)[:, None, :], 400, 320)
            return torch.cat([e, -e], dim=1).transpose(1, 2)

    t = torch.export.Dim("T", min=720, max=16000 * 3600)
    program = torch.export.export(WindowEnergy(), (torch.zeros(1, 16000),), dynamic_shapes={"x": {1: t}})
    torch.export.save(program, str(tmp_path / "energy.pt2"))
    ext = SpeechFeatureExtractor.from_path(tmp_path / "energy.pt2")
    assert ext.kind == "export"
    x = burst(16000, 2.0, 1.0)
    np.testing.assert_allclose(
        ext(x, 16000, 25, window=3),
        SpeechFeatureExtractor.from_path(energy_model)(x, 16000, 25, window=3),
        rtol=1e-5,
        atol=1e-7,
    )


def test_speech_model_errors(tmp_path, energy_model):
    with pytest.raises(FormatError, match="not found"):
        SpeechFeatureExtractor.from_path(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(FormatError, match="not a TorchScript"):
        SpeechFeatureExtractor.from_path(junk)
    with pytest.raises(FormatError, match="config.json"):
        SpeechFeatureExtractor.from_path(tmp_path)
    hf = tmp_path / "hubert"
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "hubert"}')
    try:
        import transformers  # noqa: F401
    except ImportError:
        with pytest.raises(Avatar3DError, match="transformers"):
            SpeechFeatureExtractor.from_path(hf)
    else:  # an incomplete checkpoint must fail cleanly and never download
        with pytest.raises(FormatError):
            SpeechFeatureExtractor.from_path(hf)


def test_frame_features_in_chunks_equal_the_whole():
    """Long audio is processed in chunks of frames (render, view): the rows are the same."""
    w = np.random.default_rng(3).standard_normal(16000 * 7).astype(np.float32) * 0.1
    whole = frame_features(w, 16000, 25.0)
    parts = [
        frame_features(w, 16000, 25.0, frames=(s, min(len(whole), s + 64))) for s in range(0, len(whole), 64)
    ]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    with pytest.raises(ValueError):
        frame_features(w, 16000, 25.0, frames=(10, 5000))


def test_chunks_with_the_clip_statistics_equal_the_whole():
    """Chunked features reuse the clip's normalisation (computed once) and give the same rows."""
    from avatar3d.audio.features import clip_statistics, frame_features

    rng = np.random.default_rng(3)
    w = (rng.normal(size=16000 * 4) * np.sin(np.linspace(0, 40, 16000 * 4)) * 0.1).astype(np.float32)
    whole = frame_features(w, 16000, 25.0)
    st = clip_statistics(w, 16000)
    parts = [
        frame_features(w, 16000, 25.0, frames=(a, min(100, a + 30)), stats=st) for a in range(0, 100, 30)
    ]
    assert np.array_equal(np.concatenate(parts), whole)
    silent = clip_statistics(np.zeros(16000, np.float32), 16000)
    quiet = frame_features(np.zeros(16000, np.float32), 16000, 25.0, stats=silent)
    assert silent.silent and np.ptp(quiet) == 0
