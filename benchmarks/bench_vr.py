"""VR delivery figures: the linear bake's fidelity, size and speed; stereo parallax; the web page.

    python benchmarks/bench_vr.py AVATAR_DIR [--ks 8 16 32] [--only bake speed view stereo web stream]
        [--bake BAKE.safetensors] [--minutes 60] [--json out.json]

bake:   fit bakes with K bases on the training clip's first 10/11 of audio, synthetic speech and the
        first 40 s of speech_b; render bake and full model at the same frames (256 px, capture view,
        static pose, natural blinks) for held-out audio (the clip's last 1/11) and cross-speaker audio
        (speech_a, the last 8 s of speech_b); PSNR over the head (full model's coverage > 0.5) and over
        the frame. Also the exact projection's PSNR (weights from the full field: the bake's ceiling).
speed:  frames/s of the bake's render loop and of Avatar.render at 256 px on 2 threads.
view:   the viewer's render_frame at 256 px, full model against ``view --bake`` (wall and CPU time).
stream: live weights (``avatar3d serve``): latency (lookahead and processing apart) and fidelity to
        the offline weights on speech_b in 20 ms chunks; RSS every 5 minutes over ``--minutes`` of audio.
stereo: the head's disparity between the eyes against focal * IPD / depth.
web:    export the page, screenshot it in headless Chromium at the capture camera and at ±30°,
        PSNR against the Python render of the same frame (head region), page frames/s.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from avatar3d.drive.motion import blinks

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"

from avatar3d import Avatar
from avatar3d.audio import load_audio
from avatar3d.drive.stereo import expected_disparity, head_depth, head_disparity, head_render
from avatar3d.eval.metrics import psnr
from avatar3d.export._browser import Chromium, find_chromium, serve
from avatar3d.export.bake import BakedAvatar, LinearBake, _outputs, fit_bake, projector, sample_inputs
from avatar3d.export.serve import StreamingWeights
from avatar3d.export.web import export_web
from avatar3d.io.media import read_image, write_image
from avatar3d.synthetic.speech import synth_speech
from avatar3d.viewer.frames import FrameCache, make_drive, render_frame

SR = 16000
SIZE = (256, 256)


def waves_for(av: Avatar) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    clip = load_audio(av.meta.source, sr=SR)
    cut = int(len(clip) * 10 / 11)
    sb = load_audio(DATA / "speech_b_16k_60s.wav", sr=SR)
    train = [clip[:cut], sb[: 40 * SR]] + [
        synth_speech(8.0, SR, seed=100 + i, voice=v) for i, v in enumerate(("default", "low", "high"))
    ]
    tests = {
        "held-out (clip's last 1/11)": clip[cut:],
        "cross-speaker (speech_a)": load_audio(DATA / "speech_a_44k_stereo.wav", sr=SR)[: 4 * SR],
        "cross-speaker (speech_b, last 4 s)": sb[-4 * SR :],
    }
    return train, tests


_FULL: dict = {}


def full_render(av: Avatar, name: str, wave: np.ndarray):
    """The full model's render of a test audio (cached across K)."""
    if name not in _FULL:
        _FULL[name] = av.render(
            wave,
            av.rest_camera.resized(*SIZE),
            sample_rate=SR,
            pose="static",
            blink="auto",
            background="black",
            progress=False,
        )
    return _FULL[name]


def compare(av: Avatar, player: BakedAvatar, name: str, wave: np.ndarray, exact: bool = False) -> dict:
    cam = av.rest_camera.resized(*SIZE)
    full = full_render(av, name, wave)
    out = {}
    variants = {"solved": None}
    if exact:
        variants["exact projection"] = exact_weights(av, player.bake, wave)
    for vname, w in variants.items():
        baked = player.render(
            wave, cam, sample_rate=SR, pose="static", blink="auto", background="black", weights=w
        )
        head = (full.alphas > 0.5).astype(np.float32)
        out[vname] = {
            "psnr_head": float(psnr(baked.frames, full.frames, head).mean()),
            "psnr_head_min": float(psnr(baked.frames, full.frames, head).min()),
            "psnr_frame": float(psnr(baked.frames, full.frames).mean()),
            "frames": len(full),
        }
    return out


@torch.no_grad()
def exact_weights(av: Avatar, bake: LinearBake, wave: np.ndarray) -> np.ndarray:
    """Least-squares weights from the full field's outputs (all moving Gaussians): the bake's ceiling."""
    codes, _ = sample_inputs(av, [wave], blink_share=0.0)
    n = len(codes)
    blink_seq = blinks("auto", n, float(av.meta.fps), av.track["blink"])

    pinv = projector(bake.basis, bake.channel_scale)
    c = bake.canonical
    mean = torch.cat([c["means"][bake.moving], c["quats"][bake.moving], c["log_scales"][bake.moving]], 1)
    out = []
    for k in range(n):
        gs = av.model.posed(codes[k], torch.tensor([float(blink_seq[k])]), None)
        out.append((pinv @ ((_outputs(gs, bake.moving) - mean) / bake.channel_scale).reshape(-1)).numpy())
    return np.stack(out)


def bench_bake(av: Avatar, ks: list[int], res: dict, samples: int = 400) -> LinearBake:
    train, tests = waves_for(av)
    rows = []
    best = None
    t0 = time.time()
    top = fit_bake(av, train, k=max(ks), max_samples=samples)  # PCA bases are nested: truncate for smaller K
    fit_s = time.time() - t0
    for k in sorted(ks):
        bake = top if k == max(ks) else top.truncated(k).attach(av.model)
        player = BakedAvatar(av, bake)
        row = {
            "k": k,
            "fit_seconds": round(fit_s, 1),
            "explained": bake.info["explained"][k - 1],
            "bases_mb_f16": bake.basis.numel() * 2 / 1e6,
            "bytes_per_frame_f32": 4 * k,
            "tests": {},
        }
        for name, w in tests.items():
            t1 = time.time()
            m = len(w) / SR
            row["tests"][name] = compare(av, player, name, w, exact=(k == max(ks)))
            row["tests"][name]["seconds_audio"] = round(m, 2)
            row["tests"][name]["weights_and_render_s"] = round(time.time() - t1, 1)
        rows.append(row)
        print(json.dumps(row, indent=1), flush=True)
        best = bake
    res["bake"] = rows
    return best


def bench_speed(av: Avatar, bake: LinearBake, res: dict) -> None:
    torch.set_num_threads(2)
    wave = load_audio(DATA / "speech_b_16k_60s.wav", sr=SR)[: 6 * SR]
    cam = av.rest_camera.resized(*SIZE)
    player = BakedAvatar(av, bake)
    t0 = time.time()
    w = player.weights(wave)
    t_w = time.time() - t0
    n = len(w)
    t0 = time.time()
    player.render(wave, cam, sample_rate=SR, pose="generated", blink="none", background="black", weights=w)
    t_bake = time.time() - t0
    t0 = time.time()
    av.render(wave, cam, sample_rate=SR, pose="generated", blink="none", background="black", progress=False)
    t_full = time.time() - t0
    res["speed"] = {
        "frames": n,
        "gaussians": av.model.n,
        "k": bake.k,
        "size": SIZE,
        "weights_ms_per_frame": 1000 * t_w / n,
        "bake_render_fps": n / t_bake,
        "full_render_fps": n / t_full,
        "threads": 2,
    }
    print(json.dumps(res["speed"], indent=1), flush=True)


def bench_view(av: Avatar, bake: LinearBake, res: dict, frames: int = 60) -> None:
    """The viewer's per-frame cost (``render_frame``: posed Gaussians then rasterise) at 256 px, the
    capture camera, playing frame after frame of speech_b: full model against the bake. Wall and
    process CPU time per frame (the box is shared: CPU time is the steadier figure)."""
    torch.set_num_threads(2)
    drive = make_drive(av, DATA / "speech_b_16k_60s.wav")
    cam = av.rest_camera.resized(*SIZE)
    player = BakedAvatar(av, bake)
    rows = {}
    try:
        for name, b in (("full model", None), ("bake", player)):
            cache = FrameCache()
            render_frame(av, drive, cam, 0.0, pose="generated", cache=cache, bake=b)  # warm up
            w0, c0 = time.perf_counter(), time.process_time()
            for k in range(1, frames + 1):
                render_frame(av, drive, cam, k / drive.fps, pose="generated", cache=cache, bake=b)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            rows[name] = {
                "fps_wall": round(frames / wall, 2),
                "ms_wall_per_frame": round(1000 * wall / frames, 1),
                "ms_cpu_per_frame": round(1000 * cpu / frames, 1),
                "fps_if_cpu_bound_on_2_cores": round(2 * frames / cpu, 1),
            }
            print(name, json.dumps(rows[name]), flush=True)
    finally:
        drive.close()
    res["view"] = {"size": SIZE, "gaussians": av.model.n, "k": bake.k, "threads": 2, "frames": frames, **rows}


def bench_stereo(av: Avatar, res: dict) -> None:
    rows = []
    for ipd, dist in ((0.063, 1.0), (0.1, 1.6), (0.063, 1.6)):
        cam = av.camera(size=SIZE, distance_scale=dist)
        depth = head_depth(av, cam)
        r = av.render(
            synth_speech(0.2, SR, seed=1),
            cam.stereo(ipd),
            sample_rate=SR,
            pose="static",
            blink="none",
            background="black",
            progress=False,
        )
        ml, mr = (head_render(av, c)[0] for c in cam.stereo(ipd))
        got = head_disparity(r.left[0], r.right[0], ml, mr)
        want = expected_disparity(cam.K[0, 0], ipd, depth)
        surf = head_depth(av, cam, surface=True)
        rows.append(
            {
                "ipd": ipd,
                "distance_scale": dist,
                "depth_m": depth,
                "surface_depth_m": surf,
                "expected_px_surface": expected_disparity(cam.K[0, 0], ipd, surf),
                "focal_px": cam.K[0, 0],
                "disparity_px": got,
                "expected_px": want,
                "error": abs(got - want) / want,
            }
        )
    res["stereo"] = rows
    print(json.dumps(rows, indent=1), flush=True)


def bench_web(av: Avatar, bake: LinearBake, res: dict, out_dir: Path) -> None:
    chrome = find_chromium()
    if chrome is None:
        res["web"] = "chromium not found"
        return
    wave = load_audio(DATA / "speech_a_44k_stereo.wav", sr=SR)[: 3 * SR]
    page = export_web(av, out_dir / "page", (wave, SR), bake=bake, overwrite=True, log=lambda s: None)
    cam = av.rest_camera
    frame = 40
    rows = {}
    with serve(page) as url, Chromium(chrome, cam.width, cam.height) as br:
        for yaw in (0, 30, -30):
            title = br.open(f"{url}index.html?frame={frame}&camera=capture&yaw={yaw}")
            br.pump(2.0)
            shot = br.screenshot(out_dir / f"page_yaw{yaw:+d}.png")
            rows[f"yaw {yaw:+d}"] = {"title": title, "png": str(shot)}
        br.open(f"{url}index.html?frame={frame}&camera=capture&ui=0")  # without the controls, to compare
        br.pump(2.0)
        br.screenshot(out_dir / "page_capture_noui.png")
        fps_t0 = br.evaluate("window.avatar3d.frames")
        time.sleep(10)
        fps = (br.evaluate("window.avatar3d.frames") - fps_t0) / 10
        errors = list(br.errors)
        has_vr = br.evaluate("document.getElementById('vr').textContent")

    full = av.render(
        wave, "capture", sample_rate=SR, pose="static", blink="auto", background="black", progress=False
    )
    ref = full.frames[frame]
    write_image(out_dir / "python_capture.png", ref)
    shot = read_image(out_dir / "page_capture_noui.png")
    head = (full.alphas[frame] > 0.5).astype(np.float32)
    rows["psnr_head_vs_python"] = float(psnr(shot[None], ref[None], head)[0])
    rows["psnr_frame_vs_python"] = float(psnr(shot[None], ref[None])[0])
    rows.update(
        page_fps_swiftshader=fps,
        console_errors=errors,
        vr_button=has_vr,
        splats=bake.n,
        k=bake.k,
        size=[cam.width, cam.height],
    )
    res["web"] = rows
    print(json.dumps(rows, indent=1), flush=True)


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 1e6


def stream_latency(av: Avatar, bake: LinearBake, wave: np.ndarray, lookahead: float, chunk_s: float) -> dict:
    """Push ``wave`` in ``chunk_s`` chunks as fast as possible; per frame, the algorithmic delay (the
    arrival, in audio time, of the chunk that completed the frame, minus the frame's instant) and
    the processing time (the push that emitted it)."""
    stream = StreamingWeights(av, bake, lookahead=lookahead)
    chunk = int(chunk_s * SR)
    algo, proc, got = [], [], []
    for s in range(0, len(wave), chunk):
        t0 = time.perf_counter()
        out = stream.push(wave[s : s + chunk])
        dt = time.perf_counter() - t0
        arrived = min(len(wave), s + chunk) / SR
        for f, w in out:
            algo.append(arrived - f / stream.fps)
            proc.append(dt)
            got.append(w)
    ms = lambda x, q: round(1000 * float(np.percentile(x, q)), 1)  # noqa: E731
    return {
        "lookahead_s": lookahead,
        "chunk_ms": 1000 * chunk_s,
        "frames": len(got),
        "worst_case_delay_ms": round(1000 * stream.latency, 1),
        "algorithmic_ms_median": ms(algo, 50),
        "algorithmic_ms_max": ms(algo, 100),
        "processing_ms_median": ms(proc, 50),
        "processing_ms_p99": ms(proc, 99),
        "total_ms_median": ms(np.add(algo, proc), 50),
        "total_ms_p99": ms(np.add(algo, proc), 99),
        "weights": np.stack(got),
    }


def stream_memory(av: Avatar, bake: LinearBake, wave: np.ndarray, minutes: float, chunk_s: float) -> dict:
    """RSS every 5 minutes of audio while ``minutes`` of ``wave`` (looped) are pushed faster than real time."""
    stream = StreamingWeights(av, bake)
    chunk = int(chunk_s * SR)
    every = int(300 * SR)
    total = int(minutes * 60 * SR)
    rss, frames, t0 = [(0.0, round(rss_mb(), 1))], 0, time.time()
    for s in range(0, total, chunk):
        i = s % len(wave)
        frames += len(
            stream.push(
                wave[i : i + chunk]
                if i + chunk <= len(wave)
                else np.concatenate([wave[i:], wave[: i + chunk - len(wave)]])
            )
        )
        if (s + chunk) // every > s // every:
            rss.append(((s + chunk) / SR / 60, round(rss_mb(), 1)))
            print(
                f"  {rss[-1][0]:.1f} min of audio: RSS {rss[-1][1]} MB, {time.time() - t0:.0f} s", flush=True
            )
    return {
        "minutes": minutes,
        "chunk_ms": 1000 * chunk_s,
        "frames": frames,
        "wall_s": round(time.time() - t0, 1),
        "rss_mb_every_5_min": rss,
        "buffered_samples": len(stream.buf),
    }


def bench_stream(
    av: Avatar,
    bake: LinearBake,
    res: dict,
    minutes: float = 60.0,
    latency: bool = True,
    lookaheads: tuple[float, ...] = (0.2, 0.12),
) -> None:
    """Live weights: latency (lookahead and processing, reported apart) on a minute of speech_b in
    20 ms chunks; the streamed weights against the offline ones; RSS over ``minutes`` of audio."""
    torch.set_num_threads(1)
    sb = load_audio(DATA / "speech_b_16k_60s.wav", sr=SR)
    offline = BakedAvatar(av, bake).weights(
        sb, blinks("auto", int(len(sb) / SR * av.meta.fps), float(av.meta.fps), av.track["blink"])
    )
    rows = {}
    for la in lookaheads if latency else ():
        r = stream_latency(av, bake, sb, la, 0.02)
        w = r.pop("weights")
        m = min(len(w), len(offline))
        r["corr_vs_offline"] = round(float(np.corrcoef(w[:m].ravel(), offline[:m].ravel())[0, 1]), 4)
        r["relative_error_vs_offline"] = round(
            float(np.linalg.norm(w[:m] - offline[:m]) / np.linalg.norm(offline[:m])), 4
        )
        rows[f"lookahead {la}"] = r
        print(json.dumps(r), flush=True)
    if minutes > 0:
        rows["memory"] = stream_memory(av, bake, sb, minutes, 1.0)
        print(json.dumps(rows["memory"]), flush=True)
    res["stream"] = rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("avatar")
    ap.add_argument("--ks", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--only", nargs="+", default=["bake", "speed", "stereo", "web", "stream"])
    ap.add_argument("--out", default="/tmp/bench_vr")
    ap.add_argument("--samples", type=int, default=400, help="frames the bake is fitted on")
    ap.add_argument("--minutes", type=float, default=60.0, help="audio pushed for the stream's memory figure")
    ap.add_argument("--bake", help="a bake file to use instead of fitting one")
    ap.add_argument("--no-latency", action="store_true", help="stream: the memory run only")
    ap.add_argument("--lookaheads", type=float, nargs="+", default=[0.2, 0.12], help="stream: seconds")
    ap.add_argument("--json")
    a = ap.parse_args()
    av = Avatar.load(a.avatar)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res: dict = {"avatar": a.avatar, "gaussians": av.model.n}
    bake = None
    if "bake" in a.only:
        bake = bench_bake(av, a.ks, res, a.samples)
        bake.save(out / "bake.safetensors")
    elif a.bake or (out / "bake.safetensors").is_file():
        bake = LinearBake.load(a.bake or out / "bake.safetensors").attach(av.model)
    else:
        train, _ = waves_for(av)
        bake = fit_bake(av, train, k=a.ks[-1], max_samples=a.samples)
        bake.save(out / "bake.safetensors")
    if "speed" in a.only:
        bench_speed(av, bake, res)
    if "view" in a.only:
        bench_view(av, bake, res)
    if "stereo" in a.only:
        bench_stereo(av, res)
    if "web" in a.only:
        bench_web(av, bake, res, out)
    if "stream" in a.only:
        bench_stream(av, bake, res, a.minutes, latency=not a.no_latency, lookaheads=tuple(a.lookaheads))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    _ = math


if __name__ == "__main__":
    main()
