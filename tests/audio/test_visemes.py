"""The speech front end: phones -> visemes, voice, loudness; offline, streaming, CLI, bad audio.

Known-timing speech comes from espeak-ng (tests skip without it; CI installs it with apt) and from
the synthetic subject's formant synthesiser (exact silence in its pauses).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from avatar3d.audio import (
    VISEMES,
    PhoneSegment,
    StreamingVisemes,
    VisemeTrack,
    recognise_phones,
    speech_features,
    viseme_track,
)
from avatar3d.audio.coarticulation import PHONE_TO_VISEME, hard_visemes
from avatar3d.audio.phones import align_phones
from avatar3d.errors import Avatar3DError
from avatar3d.synthetic.speech import synth_speech

sys.path.insert(0, str(Path(__file__).parent))
import itertools

from espeak_speech import have_espeak, say, words_with_gaps

SR = 16000
V = {v: i for i, v in enumerate(VISEMES)}
needs_espeak = pytest.mark.skipif(
    not have_espeak(), reason="espeak-ng is not installed (apt-get install espeak-ng)"
)
SENTENCE = "please pass me the blue cup of warm milk before we go out to the park"


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """7 s of the synthetic subject's speech (pauses are exact zeros)."""
    return synth_speech(7.0, SR, seed=3)


@pytest.fixture(scope="module")
def offline25(speech) -> np.ndarray:
    """speech_features of ``speech`` at 25 fps, computed once for the module."""
    return speech_features(speech, 25.0)


@pytest.fixture(scope="module")
def sentence() -> np.ndarray:
    if not have_espeak():
        pytest.skip("espeak-ng is not installed")
    return say(SENTENCE)


def test_viseme_names():
    assert VISEMES == (
        "sil",
        "PP",
        "FF",
        "TH",
        "DD",
        "kk",
        "CH",
        "SS",
        "nn",
        "RR",
        "aa",
        "E",
        "ih",
        "oh",
        "ou",
    )
    assert set(PHONE_TO_VISEME.values()) <= set(VISEMES)


@pytest.mark.parametrize("fps", [25.0, 30.0, 60.0])
def test_shapes_rows_sum_to_one(speech, fps):
    tr = viseme_track(speech, SR, fps=fps)
    n = int(np.floor(speech.size / SR * fps + 1e-6))
    assert isinstance(tr, VisemeTrack) and len(tr) == n
    assert tr.weights.shape == (n, 15) and tr.weights.dtype == np.float32
    assert tr.voice.shape == tr.loudness.shape == (n,)
    assert (tr.weights >= 0).all() and np.allclose(tr.weights.sum(axis=1), 1.0, atol=1e-5)
    for a in (tr.voice, tr.loudness):
        assert a.dtype == np.float32 and (a >= 0).all() and (a <= 1).all()
    longer = viseme_track(speech, SR, fps=fps, n_frames=n + 10)  # frames past the end: silence
    assert len(longer) == n + 10 and (longer.weights[n + 3 :, 0] > 0.99).all()
    assert (longer.voice[n + 3 :] == 0).all()


def test_synthetic_speech_pauses_and_syllables(speech, offline25):
    """The synthesiser's pauses (exact zeros) are sil; its syllables are not."""
    tr = VisemeTrack(offline25[:, :15], offline25[:, 15], offline25[:, 16], 25.0)
    t = np.arange(len(tr)) / 25
    active = np.convolve(np.abs(speech) > 1e-4, np.ones(1), "same")
    act = np.array([active[max(0, int((x - 0.1) * SR)) : int((x + 0.1) * SR)].any() for x in t])
    core = np.array([active[max(0, int((x - 0.04) * SR)) : int((x + 0.04) * SR)].all() for x in t])
    assert (tr.weights[~act, 0] > 0.9).mean() > 0.95  # >= 100 ms from any sound: closed
    assert (tr.weights[core, 0] < 0.5).mean() > 0.8  # inside syllables: speech visemes
    assert tr.voice[~act].mean() < 0.1 and tr.voice[core].mean() > 0.6


def test_speech_features_deterministic(speech, offline25):
    a = speech_features(speech.copy(), 25.0, 100)
    assert a.shape == (100, 17) and a.dtype == np.float32 and offline25.shape == (175, 17)
    np.testing.assert_array_equal(a, offline25[:100])
    tr = viseme_track(speech, SR, fps=25.0)
    np.testing.assert_array_equal(tr.features(), offline25)


def test_shift_moves_the_track(speech, offline25):
    """Audio delayed by 0.32 s (10 VAD blocks, 8 frames at 25 fps) gives the same track 8 frames later."""
    a = VisemeTrack(offline25[:, :15], offline25[:, 15], offline25[:, 16], 25.0)
    b = viseme_track(np.concatenate([np.zeros(int(0.32 * SR), np.float32), speech]), SR, fps=25)
    assert len(b) == len(a) + 8
    dv = np.abs(b.voice[8:] - a.voice)  # the VAD's recurrent state saw more silence: nearly equal
    assert dv.mean() < 0.02 and dv.max() < 0.15
    agree = (b.weights[8:].argmax(1) == a.weights.argmax(1)).mean()
    assert agree > 0.9
    assert np.abs(b.loudness[8:] - a.loudness).mean() < 0.02


@needs_espeak
def test_onset_time_of_a_word():
    """A word starting at a known time: the mouth leaves sil within [-120, +80] ms of its onset."""
    x, spans = words_with_gaps(["father"], gap=1.0)
    tr = viseme_track(x, SR, fps=50)
    onset = spans[0][1]
    first = np.nonzero(tr.weights[:, 0] < 0.5)[0][0] / 50
    assert -0.12 <= first - onset <= 0.08
    assert (tr.weights[: int((onset - 0.2) * 50), 0] > 0.99).all()
    assert tr.voice[int((onset + 0.1) * 50)] > 0.5


@needs_espeak
@pytest.mark.parametrize("voice", ["en-us", "en-us+f3", "en-gb"])
def test_words_with_known_timing(voice):
    """Open, rounded and spread vowels and bilabial closures where the words put them."""
    closures = ["papa", "mama", "baby", "happy", "maybe"]
    x, spans = words_with_gaps(["ah", "food", "moon", "two", "see", *closures], voice)
    tr = viseme_track(x, SR, fps=25)
    span = {w: tr.weights[int(np.ceil(a * 25)) : int(b * 25) + 1] for w, a, b in spans}
    assert span["ah"][:, V["aa"]].mean() > 0.5
    for w in ("food", "moon", "two"):
        assert span[w][:, V["ou"]].mean() > 0.5, w
    vowels = ["aa", "E", "ih", "oh", "ou"]
    spread = vowels[int(np.argmax([span["see"][:, V[v]].sum() for v in vowels]))]
    assert spread in ("ih", "E"), spread  # spread lips, not open or rounded
    closed = [w for w in closures if span[w][:, V["PP"]].max() > 0.5]  # the lips close fully
    assert len(closed) >= 3, closed
    assert all(span[w][:, V["PP"]].max() < 0.2 for w in ("ah", "food", "moon", "two", "see"))
    gaps = [(spans[i][2] + spans[i + 1][1]) / 2 for i in range(len(spans) - 1)]
    assert all(tr.weights[round(g * 25), 0] > 0.95 for g in gaps)


@needs_espeak
def test_sentence_accuracy_against_forced_alignment(sentence):
    """Frame visemes agree with the phones a forced alignment of the known text puts there."""
    ref_segs = align_phones(sentence, SR, SENTENCE)
    tr = viseme_track(sentence, SR, fps=25)
    ref = hard_visemes(ref_segs, np.arange(len(tr)) / 25)
    pred = tr.weights.argmax(1)
    speech_frames = ref != V["sil"]
    acc = (pred == ref)[speech_frames].mean()
    majority = np.bincount(ref[speech_frames]).max() / speech_frames.sum()
    assert acc > max(0.3, 1.8 * majority), (acc, majority)


@needs_espeak
def test_align_phones(sentence):
    segs = align_phones(sentence, SR, SENTENCE.upper() + ".")
    names = [s.phone for s in segs if s.phone != "SIL"]
    assert names[:4] == ["P", "L", "IY", "Z"]  # "please"
    assert all(a.end <= b.start + 1e-9 for a, b in itertools.pairwise(segs))
    with pytest.raises(Avatar3DError, match="not in the dictionary"):
        align_phones(sentence, SR, "please xqzzy")


def test_recognise_phones(speech):
    segs = recognise_phones(speech, SR)
    assert segs and all(isinstance(s, PhoneSegment) for s in segs)
    assert all(0 <= s.start < s.end <= speech.size / SR + 0.05 for s in segs)
    assert all(a.end <= b.start + 1e-9 for a, b in itertools.pairwise(segs))
    assert any(s.phone in PHONE_TO_VISEME and s.phone != "SIL" for s in segs)


@pytest.mark.parametrize("chunk", [160, 1000, 5120])
def test_streaming_matches_offline(speech, offline25, chunk):
    """Stated tolerance: voice and loudness equal to 1e-5; visemes: mean |row difference| (L1) <= 0.1
    and the same dominant viseme in >= 90 % of frames (the decoder's partial path may still change
    within the look-ahead)."""
    off = offline25
    s = StreamingVisemes(fps=25.0, lookahead=0.2)
    parts = [s.push(speech[i : i + chunk]) for i in range(0, speech.size, chunk)]
    parts.append(s.flush())
    on = np.concatenate(parts)
    assert on.shape == off.shape
    np.testing.assert_allclose(on[:, 15:], off[:, 15:], atol=1e-5)
    assert np.abs(on[:, :15] - off[:, :15]).sum(1).mean() <= 0.1
    assert (on[:, :15].argmax(1) == off[:, :15].argmax(1)).mean() >= 0.9


def test_streaming_emits_after_lookahead(speech):
    s = StreamingVisemes(fps=25.0, lookahead=0.2)
    assert s.latency == pytest.approx(0.232)
    got = s.push(speech[: int(1.0 * SR)])
    # blocks consumed: 31 (0.992 s); frames with k / 25 + 0.2 <= 0.992 -> k <= 19
    assert got.shape == (20, 17)
    assert s.push(np.zeros(0, np.float32)).shape == (0, 17)
    rest = s.flush()
    assert len(got) + len(rest) == 25
    with pytest.raises(ValueError):
        StreamingVisemes(lookahead=0.03)


def test_low_latency_streaming_differs_from_offline_only_at_voice_onsets(speech, offline25):
    """Below MIN_LOOKAHEAD the voice gate looks less far ahead: the voice probability is the offline
    one, the gate (and so the visemes and loudness) may open later at an onset, never elsewhere."""
    s = StreamingVisemes(fps=25.0, lookahead=0.07)
    assert s.latency == pytest.approx(0.102)
    on = np.concatenate([s.push(speech[i : i + 320]) for i in range(0, speech.size, 320)] + [s.flush()])
    off = offline25
    assert on.shape == off.shape
    np.testing.assert_allclose(on[:, 15], off[:, 15], atol=1e-5)  # voice probability
    assert (on[:, 16] <= off[:, 16] + 1e-5).all()  # a later-opening gate only lowers the loudness
    same = np.abs(on[:, 16] - off[:, 16]) < 1e-5
    assert same.mean() >= 0.8
    assert (on[:, :15].argmax(1) == off[:, :15].argmax(1)).mean() >= 0.75


def _bad_cases() -> dict[str, tuple[np.ndarray, int]]:
    rng = np.random.default_rng(0)
    t = np.arange(3 * SR) / SR
    music = sum(
        0.2 * np.sin(2 * np.pi * f * t) * (np.sin(2 * np.pi * r * t) > 0)
        for f, r in ((262, 2.0), (330, 3.0), (392, 1.5), (523, 4.0))
    )
    return {
        "silence": (np.zeros(3 * SR, np.float32), SR),
        "white_noise": ((0.3 * rng.standard_normal(3 * SR)).astype(np.float32), SR),
        "quiet_noise": ((0.003 * rng.standard_normal(3 * SR)).astype(np.float32), SR),
        "tone": ((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), SR),
        "music": (music.astype(np.float32), SR),
    }


@pytest.mark.parametrize("name", list(_bad_cases()))
def test_non_speech_keeps_the_mouth_closed(name):
    x, sr = _bad_cases()[name]
    tr = viseme_track(x, sr, fps=25)
    assert len(tr) == 75
    assert tr.weights[:, 0].mean() > 0.95, tr.weights[:, 0].mean()
    assert tr.voice.max() < 0.5 and tr.voice.mean() < 0.1
    assert tr.loudness.mean() < 0.05


def test_odd_inputs_do_not_crash(speech):
    speech8k = speech[::2].copy()  # 8 kHz, aliasing and all
    tr = viseme_track(speech8k, 8000, fps=25)
    assert len(tr) == 175 and (tr.weights[:, 0] < 0.5).mean() > 0.2  # speech is still heard
    clipped = np.clip(speech * 8.0, -1, 1)
    tr = viseme_track(clipped, SR, fps=25)
    assert (tr.weights[:, 0] < 0.5).mean() > 0.2
    short = viseme_track(speech[int(0.5 * SR) : int(0.6 * SR)], SR, fps=25)
    assert len(short) == 2 and np.allclose(short.weights.sum(1), 1, atol=1e-5)
    assert len(viseme_track(np.zeros(10, np.float32), SR)) == 0
    stereo = np.stack([speech, speech], axis=1)[: 2 * SR]
    assert len(viseme_track(stereo, SR, fps=25)) == 50
    with pytest.raises(Avatar3DError):
        viseme_track(np.array([0.0, np.nan] * 800, np.float32), SR)


def test_loudness_is_gain_invariant(speech, offline25):
    a = VisemeTrack(offline25[:, :15], offline25[:, 15], offline25[:, 16], 25.0)
    b = viseme_track(speech * 0.1, SR, fps=25)
    late = np.arange(len(a)) > 50  # after two seconds the speech level is known
    assert np.abs(a.loudness[late] - b.loudness[late]).mean() < 0.05
    assert a.loudness[a.voice > 0.8].mean() > 0.5


def test_save_json_and_csv(speech, tmp_path):
    tr = viseme_track(speech[: 2 * SR], SR, fps=30)
    doc = json.loads(tr.save(tmp_path / "v.json").read_text())
    assert doc["visemes"] == list(VISEMES) and doc["fps"] == 30.0 and doc["n_frames"] == 60
    assert np.array(doc["weights"]).shape == (60, 15) and len(doc["voice"]) == len(doc["loudness"]) == 60
    assert doc["frontend"]["name"] == "avatar3d-visemes" and "pocketsphinx" in doc["frontend"]["phones"]
    lines = tr.save(tmp_path / "v.csv").read_text().splitlines()
    assert lines[0].split(",") == ["frame", "time", *VISEMES, "voice", "loudness"] and len(lines) == 61
    assert not list(tmp_path.glob(".*"))  # no temp files left


def test_cli_visemes(speech, tmp_path, capsys):
    from avatar3d.cli import main
    from avatar3d.io import write_audio

    wav = tmp_path / "s.wav"
    write_audio(wav, speech[: 3 * SR], SR)
    out = tmp_path / "out.json"
    assert main(["visemes", str(wav), "-o", str(out), "--fps", "50"]) == 0
    doc = json.loads(out.read_text())
    assert doc["n_frames"] == 150 and len(doc["weights"]) == 150
    assert main(["visemes", str(wav), "-o", str(tmp_path / "o.txt"), "--format", "csv"]) == 0
    assert (tmp_path / "o.txt").read_text().startswith("frame,time,sil")
    capsys.readouterr()
    for bad in (tmp_path / "missing.wav", tmp_path / "junk.wav"):
        if bad.name == "junk.wav":
            bad.write_bytes(b"not audio at all")
        assert main(["visemes", str(bad), "-o", str(tmp_path / "x.json")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("avatar3d: error:") and "\n" not in err
    assert not (tmp_path / "x.json").exists()


def test_offline_models_and_threads(monkeypatch):
    """Models load from the wheels with no network, and torch's thread setting is left as it was."""
    import socket

    import torch

    from avatar3d.audio import vad

    def no_network(*a, **k):
        raise AssertionError("the front end tried to open a network connection")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    vad._model_path.cache_clear()
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        tr = viseme_track(synth_speech(1.0, SR, seed=1), SR)
        assert len(tr) == 25 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(n)


def test_hh_and_y_take_the_next_vowel():
    from avatar3d.audio.coarticulation import segment_arrays

    segs = [
        PhoneSegment("SIL", 0, 0.1),
        PhoneSegment("HH", 0.1, 0.15),
        PhoneSegment("UW", 0.15, 0.3),
        PhoneSegment("Y", 0.3, 0.35),
        PhoneSegment("AA", 0.35, 0.5),
        PhoneSegment("+NSN+", 0.5, 0.6),
        PhoneSegment("HH", 0.6, 0.65),
    ]
    _, _, vis = segment_arrays(segs)
    assert [VISEMES[i] for i in vis] == ["sil", "ou", "ou", "aa", "aa", "sil", "sil"]


def test_bilabial_closes_fully_at_any_fps():
    """A 40 ms M between two open vowels: PP dominates the frame at its centre, at 25 and 60 fps."""
    from avatar3d.audio.coarticulation import segment_arrays, viseme_weights

    segs = [PhoneSegment("AA", 0.0, 0.5), PhoneSegment("M", 0.5, 0.54), PhoneSegment("AA", 0.54, 1.0)]
    for fps in (25.0, 60.0):
        t = np.arange(int(fps)) / fps
        w = viseme_weights(t, fps, *segment_arrays(segs))
        k = int(np.argmin(np.abs(t - 0.52)))
        assert w[k, V["PP"]] > 0.75 and w[k].argmax() == V["PP"]
        assert np.allclose(w.sum(1), 1)
        # anticipation: the closure starts before the M and is stronger before than after
        before, after = w[np.argmin(np.abs(t - 0.45)), V["PP"]], w[np.argmin(np.abs(t - 0.59)), V["PP"]]
        assert 0.05 < before < 0.75 and before > after
