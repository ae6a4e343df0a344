"""Benchmark of the speech front end (avatar3d.audio.visemes) on one CPU core.

Measures, on the shared clips and speech files (../shared/data) and on speech with known content:

* speed: real-time factor of offline ``viseme_track`` (wall time / audio duration), one thread;
* streaming: per-push processing time for 20 ms chunks, latency = look-ahead + 32 ms VAD block +
  processing (95th percentile), and agreement of streamed rows with offline ones;
* accuracy on known-timing speech: espeak-ng sentences (phone timing from forced alignment of the
  known text) -> frame viseme accuracy (exact and +-1 frame), bilabial recall/precision; espeak-ng
  isolated words between known silences -> vowel class and closure per word; the synthetic
  subject's speech -> silence / speech agreement with its exact pauses;
* non-English: viseme distribution on talk_de (German) next to talk_long_en (English);
* real mouths: the speaker's inner-lip gap (MediaPipe) in frames the front end calls aa / PP / sil /
  ou (in std units of the clip's gap), and its correlation with a viseme openness score, next to the
  correlation with the loudness envelope;
* bad audio: silence, noise, tone, music -> sil fraction and voice.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/bench_frontend.py [--quick]``. Writes
benchmarks/results/frontend.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "audio"))

import numpy as np
import torch

from avatar3d.audio import VISEMES, StreamingVisemes, load_audio, speech_features, viseme_track
from avatar3d.audio.coarticulation import hard_visemes
from avatar3d.audio.phones import align_phones
from avatar3d.errors import Avatar3DError

DATA = ROOT.parent / "shared" / "data"
CLIPS = [
    "talk_a.mp4",
    "talk_b.mp4",
    "talk_c.mp4",
    "talk_de.mp4",
    "talk_long_en.mp4",
    "speech_a_44k_stereo.wav",
    "speech_b_16k_60s.wav",
]
SENTENCES = [
    "the quick brown fox jumps over the lazy dog while my mother reads a book",
    "please pass me the blue cup of warm milk before we go out to the park",
    "she sells sea shells by the sea shore and food at the market on monday",
    "bob moved the heavy boxes from the big room to the boat by the pier",
    "my brother bought five maps of the moon and a bright blue balloon",
    "we should meet at the beach when the weather is warm and sunny",
]
VOICES = ["en-us", "en-us+f3", "en-gb", "en-us+m3"]
SR, FPS = 16000, 25.0
V = {v: i for i, v in enumerate(VISEMES)}


def speed_and_streaming(name: str, wave: np.ndarray) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    off = speech_features(wave, FPS)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    s = StreamingVisemes(FPS, lookahead=0.2)
    chunk, times, parts = int(0.02 * SR), [], []
    c0 = time.process_time()
    for i in range(0, wave.size, chunk):
        t1 = time.perf_counter()
        parts.append(s.push(wave[i : i + chunk]))
        times.append(time.perf_counter() - t1)
    parts.append(s.flush())
    stream_cpu = time.process_time() - c0
    on = np.concatenate(parts)
    times = np.array(times)
    dom = off[:, :15].argmax(1)
    return {
        "clip": name,
        "seconds": round(wave.size / SR, 2),
        "offline_s": round(wall, 3),
        "rtf": round(wall / (wave.size / SR), 4),
        "cpu_s": round(cpu, 3),
        "rtf_cpu": round(cpu / (wave.size / SR), 4),
        "stream_rtf": round(times.sum() / (wave.size / SR), 4),
        "stream_rtf_cpu": round(stream_cpu / (wave.size / SR), 4),
        "push_ms_mean": round(1000 * times.mean(), 2),
        "push_ms_p95": round(1000 * np.percentile(times, 95), 2),
        "push_ms_max": round(1000 * times.max(), 1),
        "latency_ms_p95": round(1000 * (s.latency + np.percentile(times, 95)), 1),
        "stream_same_dominant": round(float((on[:, :15].argmax(1) == dom).mean()), 4),
        "stream_l1_mean": round(float(np.abs(on[:, :15] - off[:, :15]).sum(1).mean()), 4),
        "stream_voice_loud_maxdiff": float(np.abs(on[:, 15:] - off[:, 15:]).max()),
        "distribution": {
            v: round(float(x), 4) for v, x in zip(VISEMES, np.bincount(dom, minlength=15) / len(dom))
        },
        "mean_weights": {v: round(float(x), 4) for v, x in zip(VISEMES, off[:, :15].mean(0))},
        "closure_frames": round(float((off[:, V["PP"]] > 0.5).mean()), 4),
        "voiced_frames": round(float((off[:, 15] > 0.5).mean()), 4),
    }


_OPEN = {
    "sil": 0,
    "PP": 0,
    "FF": 0.2,
    "TH": 0.3,
    "DD": 0.3,
    "kk": 0.3,
    "CH": 0.3,
    "SS": 0.2,
    "nn": 0.3,
    "RR": 0.4,
    "aa": 1,
    "E": 0.7,
    "ih": 0.5,
    "oh": 0.8,
    "ou": 0.4,
}  # rough jaw opening per viseme


def lookahead_sweep(name: str, wave: np.ndarray, lookaheads=(0.12, 0.2, 0.3, 0.5)) -> list[dict]:
    """Agreement of streamed rows with offline ones for several look-aheads (20 ms chunks)."""
    off = speech_features(wave, FPS)
    out = []
    for la in lookaheads:
        s = StreamingVisemes(FPS, lookahead=la)
        parts = [s.push(wave[i : i + 320]) for i in range(0, wave.size, 320)]
        on = np.concatenate([*parts, s.flush()])
        out.append(
            {
                "clip": name,
                "lookahead_s": la,
                "latency_s": round(s.latency, 3),
                "same_dominant": round(float((on[:, :15].argmax(1) == off[:, :15].argmax(1)).mean()), 4),
                "l1_mean": round(float(np.abs(on[:, :15] - off[:, :15]).sum(1).mean()), 4),
            }
        )
    return out


def _best_r(x: np.ndarray, y: np.ndarray, max_lag: int = 3) -> tuple[float, int]:
    best = (-2.0, 0)
    for lag in range(-max_lag, max_lag + 1):
        a, b = (x[lag:], y[: y.size - lag]) if lag >= 0 else (x[:lag], y[-lag:])
        ok = np.isfinite(a) & np.isfinite(b)
        r = float(np.corrcoef(a[ok], b[ok])[0, 1])
        best = max(best, (r, lag))
    return round(best[0], 4), best[1]


def real_mouths(name: str) -> dict:
    """The real speaker's inner-lip gap against the front end's visemes on the same clip."""
    from avatar3d.audio import audio_energy
    from avatar3d.eval.metrics import detect_landmarks
    from avatar3d.eval.sync import mouth_opening
    from avatar3d.io import iter_frames, probe_video

    info = probe_video(DATA / name)
    gap = mouth_opening(detect_landmarks(iter_frames(DATA / name)))  # (T,)
    wave = load_audio(DATA / name)
    tr = viseme_track(wave, SR, fps=info.fps, n_frames=gap.size)
    ok = np.isfinite(gap)
    z = (gap - np.nanmean(gap)) / np.nanstd(gap)
    w = tr.weights
    open_score = w @ np.array([_OPEN[v] for v in VISEMES])
    sets = {
        "aa": w[:, V["aa"]] > 0.5,
        "PP": w[:, V["PP"]] > 0.5,
        "sil": w[:, V["sil"]] > 0.9,
        "ou": w[:, V["ou"]] > 0.5,
    }
    mean_z = {
        k: (round(float(z[m & ok].mean()), 3) if (m & ok).sum() >= 3 else None) for k, m in sets.items()
    }
    r_open, lag_open = _best_r(open_score, gap)
    r_loud, lag_loud = _best_r(audio_energy(wave, SR, info.fps, gap.size).astype(np.float64), gap)
    return {
        "clip": name,
        "frames": int(gap.size),
        "fps": info.fps,
        "lip_gap_z_by_viseme": mean_z,
        "frames_by_viseme": {k: int((m & ok).sum()) for k, m in sets.items()},
        "contrast_aa_minus_PP": (
            round(mean_z["aa"] - mean_z["PP"], 3)
            if mean_z["aa"] is not None and mean_z["PP"] is not None
            else None
        ),
        "r_openness": r_open,
        "lag_openness": lag_open,
        "r_loudness_baseline": r_loud,
        "lag_loudness": lag_loud,
    }


def sentence_accuracy(sentences: list[str], voices: list[str]) -> dict:
    from espeak_speech import say

    acc, tol, maj, rec, prec, n_fail = [], [], [], [], [], 0
    for text in sentences:
        for voice in voices:
            w = say(text, voice)
            try:
                ref_segs = align_phones(w, SR, text)
            except Avatar3DError:
                n_fail += 1
                continue
            tr = viseme_track(w, SR, fps=FPS)
            ref = hard_visemes(ref_segs, np.arange(len(tr)) / FPS)
            pred = tr.weights.argmax(1)
            sp = ref != V["sil"]
            acc.append((pred == ref)[sp].mean())
            tol.append(np.mean([pred[k] in ref[max(0, k - 1) : k + 2] for k in np.nonzero(sp)[0]]))
            maj.append(np.bincount(ref[sp]).max() / sp.sum())
            near = np.zeros(len(tr), bool)
            for s in ref_segs:
                if s.phone in ("P", "B", "M"):
                    k = np.arange(int((s.start - 0.04) * FPS), int((s.end + 0.04) * FPS) + 1)
                    k = k[(k >= 0) & (k < len(tr))]
                    rec.append(bool(tr.weights[k, V["PP"]].max() > 0.5))
                    near[max(0, int((s.start - 0.08) * FPS)) : int((s.end + 0.08) * FPS) + 1] = True
            prec += list(near[tr.weights[:, V["PP"]] > 0.5])
    return {
        "utterances": len(acc),
        "alignment_failures": n_fail,
        "frame_accuracy": round(float(np.mean(acc)), 4),
        "frame_accuracy_pm1": round(float(np.mean(tol)), 4),
        "majority_class_rate": round(float(np.mean(maj)), 4),
        "bilabial_recall": round(float(np.mean(rec)), 4),
        "bilabials": len(rec),
        "closure_precision": round(float(np.mean(prec)), 4) if prec else None,
    }


def word_accuracy(voices: list[str]) -> dict:
    from espeak_speech import words_with_gaps

    vowel_words = {
        "ah": "aa",
        "father": "aa",
        "hot": "aa",
        "food": "ou",
        "moon": "ou",
        "two": "ou",
        "see": "ih",
        "tea": "ih",
        "bed": "E",
        "go": "oh",
        "show": "oh",
    }
    closures = ["papa", "mama", "baby", "happy", "maybe", "bob", "mop"]
    vowel_ok, closure_ok, gap_sil = [], [], []
    for voice in voices:
        x, spans = words_with_gaps([*vowel_words, *closures], voice)
        tr = viseme_track(x, SR, fps=FPS)
        for w, a, b in spans:
            span = tr.weights[int(np.ceil(a * FPS)) : int(b * FPS) + 1]
            if w in vowel_words:
                vs = ["aa", "E", "ih", "oh", "ou"]
                vowel_ok.append(vs[int(np.argmax([span[:, V[v]].sum() for v in vs]))] == vowel_words[w])
            else:
                closure_ok.append(bool(span[:, V["PP"]].max() > 0.5))
        gaps = [(spans[i][2] + spans[i + 1][1]) / 2 for i in range(len(spans) - 1)]
        gap_sil += [float(tr.weights[round(g * FPS), 0]) for g in gaps]
    return {
        "vowel_class_accuracy": round(float(np.mean(vowel_ok)), 4),
        "vowel_words": len(vowel_ok),
        "closure_recall": round(float(np.mean(closure_ok)), 4),
        "closure_words": len(closure_ok),
        "gap_sil_min": round(min(gap_sil), 4),
    }


def synthetic_subject() -> dict:
    from avatar3d.synthetic.speech import synth_speech

    out = []
    for seed in range(3):
        x = synth_speech(20.0, SR, seed=seed)
        tr = viseme_track(x, SR, fps=FPS)
        t = np.arange(len(tr)) / FPS
        on = np.abs(x) > 1e-4
        far = np.array([not on[max(0, int((s - 0.1) * SR)) : int((s + 0.1) * SR)].any() for s in t])
        core = np.array([on[max(0, int((s - 0.04) * SR)) : int((s + 0.04) * SR)].all() for s in t])
        out.append(((tr.weights[far, 0] > 0.9).mean(), (tr.weights[core, 0] < 0.5).mean()))
    m = np.mean(out, axis=0)
    return {"pause_frames_closed": round(float(m[0]), 4), "syllable_frames_open": round(float(m[1]), 4)}


def bad_audio() -> dict:
    rng = np.random.default_rng(0)
    t = np.arange(5 * SR) / SR
    cases = {
        "silence": np.zeros(t.size),
        "white_noise": 0.3 * rng.standard_normal(t.size),
        "tone_440": 0.5 * np.sin(2 * np.pi * 440 * t),
        "music": sum(
            0.2 * np.sin(2 * np.pi * f * t) * (np.sin(2 * np.pi * r * t) > 0)
            for f, r in ((262, 2.0), (330, 3.0), (392, 1.5), (523, 4.0))
        ),
    }
    out = {}
    for k, x in cases.items():
        tr = viseme_track(x.astype(np.float32), SR, fps=FPS)
        out[k] = {
            "sil_mean": round(float(tr.weights[:, 0].mean()), 4),
            "voice_max": round(float(tr.voice.max()), 4),
        }
    return out


def markdown(res: dict) -> str:
    lines = [
        (
            "| clip | s | RTF offline (wall) | RTF offline (CPU time) | RTF stream (wall) | RTF stream (CPU) | push p95 ms | latency p95 ms | stream = offline (dominant) "
            "| L1 | closure frames | voiced |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["clips"]:
        lines.append(
            f"| {r['clip']} | {r['seconds']} | {r['rtf']} | {r['rtf_cpu']} | {r['stream_rtf']} | {r['stream_rtf_cpu']} | {r['push_ms_p95']} | "
            f"{r['latency_ms_p95']} | {r['stream_same_dominant']} | {r['stream_l1_mean']} | "
            f"{r['closure_frames']} | {r['voiced_frames']} |"
        )
    lines += [
        "",
        "| look-ahead sweep | look-ahead s | latency s | same dominant | L1 |",
        "|---|---|---|---|---|",
    ]
    for r in res.get("lookahead_sweep", []):
        lines.append(
            f"| {r['clip']} | {r['lookahead_s']} | {r['latency_s']} | {r['same_dominant']} | {r['l1_mean']} |"
        )
    lines += ["", "| known-timing speech | value |", "|---|---|"]
    for group in ("sentences", "words", "synthetic"):
        for k, v in res.get(group, {}).items():
            lines.append(f"| {group}: {k} | {v} |")
    lines += [
        "",
        (
            "| real mouth vs visemes | lip gap z: aa | PP | sil | ou | aa - PP | r(openness, gap) | "
            "r(loudness, gap) |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res.get("real_mouths", []):
        z = r["lip_gap_z_by_viseme"]
        lines.append(
            f"| {r['clip']} | {z['aa']} | {z['PP']} | {z['sil']} | {z['ou']} | {r['contrast_aa_minus_PP']} | "
            f"{r['r_openness']} (lag {r['lag_openness']}) | {r['r_loudness_baseline']} (lag {r['lag_loudness']}) |"
        )
    lines += ["", "| bad audio | sil mean | voice max |", "|---|---|---|"]
    for k, v in res["bad_audio"].items():
        lines.append(f"| {k} | {v['sil_mean']} | {v['voice_max']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer sentences and voices")
    ap.add_argument("--no-mouths", action="store_true", help="skip the real-mouth comparison (MediaPipe)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "frontend.json"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    from espeak_speech import have_espeak

    res: dict = {"threads": torch.get_num_threads(), "fps": FPS, "lookahead_s": 0.2, "clips": []}
    speech_features(np.zeros(SR, np.float32), FPS)  # warm up (model loads)
    for name in CLIPS if DATA.is_dir() else []:
        r = speed_and_streaming(name, load_audio(DATA / name))
        res["clips"].append(r)
        print(f"{name}: RTF {r['rtf']}, stream agreement {r['stream_same_dominant']}", flush=True)
    if have_espeak():
        sents, voices = (SENTENCES[:2], VOICES[:2]) if a.quick else (SENTENCES, VOICES)
        res["sentences"] = sentence_accuracy(sents, voices)
        res["words"] = word_accuracy(voices)
    if DATA.is_dir():
        res["lookahead_sweep"] = []
        for name in ("speech_b_16k_60s.wav", "talk_de.mp4"):
            res["lookahead_sweep"] += lookahead_sweep(name, load_audio(DATA / name))
    if DATA.is_dir() and not a.no_mouths:
        res["real_mouths"] = []
        for name in [c for c in CLIPS if c.endswith(".mp4")]:
            res["real_mouths"].append(real_mouths(name))
            print(name, res["real_mouths"][-1], flush=True)
    res["synthetic"] = synthetic_subject()
    res["bad_audio"] = bad_audio()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(markdown(res))


if __name__ == "__main__":
    main()
