"""Command line: ``avatar3d capture | fit | render | export | demo | eval | view | visemes``.

Exit codes: 0 success, 2 bad input (one-line error naming the problem), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512x512, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="avatar3d", description="Talking video -> 3D audio-driven avatar.")
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("capture", help="track a talking video into a CaptureSet directory")
    c.add_argument("video")
    c.add_argument("-o", "--output", required=True, help="capture directory to write")
    c.add_argument("--max-size", type=int, default=512, help="longest side of stored frames (px)")
    c.add_argument("--morphable", choices=["none", "open", "flame"], default="none",
                   help="also fit a morphable model (flame needs --flame or AVATAR3D_FLAME_PATH)")
    c.add_argument("--flame", help="FLAME model file (user-supplied, never downloaded)")
    c.add_argument("--flame-landmarks", help="MediaPipe landmark embedding for the FLAME file")
    c.add_argument("--focal", type=float, help="known focal length in pixels of the stored frames")
    c.add_argument("--no-feature-tracks", action="store_true",
                   help="pose from the landmarks alone, without optical-flow tracks (about twice as fast)")
    c.add_argument("--speech-model", help="local speech model (HuBERT/wav2vec2 directory, TorchScript or .pt2; "
                   "never downloaded): also store its features for training")

    f = sub.add_parser("fit", help="fit an avatar to a video or a capture directory")
    f.add_argument("input", help="video file or CaptureSet directory")
    f.add_argument("-o", "--output", required=True, help="avatar directory to write")
    f.add_argument("--preset", choices=["fast", "default", "quality"], default=None)
    f.add_argument("--config", help="YAML config layered over the preset")
    f.add_argument("--steps", type=int, help="training steps (overrides the config)")
    f.add_argument("--workdir", help="keep capture and checkpoints here (resumable)")
    f.add_argument("--speech-model", help="local speech model (HuBERT/wav2vec2 directory, TorchScript or .pt2; "
                   "never downloaded) driving the avatar instead of log-mel (capture.speech_model)")

    r = sub.add_parser("render", help="render an avatar speaking an audio file")
    r.add_argument("avatar", help="avatar directory")
    r.add_argument("--audio", required=True, help="audio (or video with audio) file")
    r.add_argument("-o", "--output", required=True, help="output .mp4")
    r.add_argument("--camera", default="capture", help="capture | frontal | orbit | FILE.json")
    r.add_argument("--size", type=_size, help="output WxH")
    r.add_argument("--pose", choices=["static", "track", "generated"], help="head motion")
    r.add_argument("--blink", choices=["auto", "none", "track"], help="eye blinks")
    r.add_argument("--background", help="plate | white | black | green | #rrggbb")

    e = sub.add_parser("export", help="export the avatar as 3D Gaussian Splatting PLY")
    e.add_argument("avatar", help="avatar directory")
    e.add_argument("-o", "--output", required=True, help="out.ply, or a directory with --audio")
    e.add_argument("--audio", help="export one PLY per frame of this audio into the output directory")

    d = sub.add_parser("demo", help="fit the built-in synthetic subject and render it with new audio")
    d.add_argument("-o", "--output", default="demo_out", help="output directory (default demo_out)")
    d.add_argument("--steps", type=int, help="training steps (default: the fast preset's)")
    d.add_argument("--seconds", type=float, default=8.0, help="length of the training video")

    e = sub.add_parser(
        "eval", help="score an avatar on a held-out clip: PSNR, SSIM, LPIPS, LMD, sync, views"
    )
    e.add_argument("avatar", help="avatar directory")
    e.add_argument("--video", required=True, help="held-out video (or CaptureSet directory)")
    e.add_argument("-o", "--output", required=True, help="report .json (plots go to <name>_plots.png)")
    e.add_argument("--heldout-only", action="store_true",
                   help="VIDEO is the training clip: score only its held-out last 1/11")
    e.add_argument("--max-frames", type=int, help="score at most this many held-out frames")
    e.add_argument("--size", type=int, default=512, help="comparison size in pixels (default 512)")
    e.add_argument("--crop", choices=["head", "full"], default="head", help="head crop or full frame")
    e.add_argument("--lpips-weights", help="local LPIPS weights file (never downloaded)")
    e.add_argument("--syncnet-weights", help="local SyncNet (syncnet_v2.model) weights file")
    e.add_argument("--truth", help="synthetic-subject truth .npz: compare novel views with ground truth")
    e.add_argument("--no-views", action="store_true", help="skip the view-consistency sweep")

    v = sub.add_parser(
        "view", help="interactive free-viewpoint viewer in the browser (needs avatar3d[view])",
        description="Serve an interactive viewer on a local web page: orbit / zoom with the mouse, play, "
                    "pause and scrub the animation, change pose, blinks, background and render size.",
        epilog="With --audio, tick Sound in the panel to hear it in the browser, kept in step with the "
               "video (browsers allow sound only after a click in the page). "
               "Needs the optional extra: pip install \"avatar3d[view]\".",
    )
    v.add_argument("avatar", help="avatar directory")
    v.add_argument("--audio", help="drive the avatar with this audio, looped (default: idle, mouth closed, blinking)")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    v.add_argument("--port", type=int, default=8080, help="port (default 8080; the next free one if busy)")
    v.add_argument("--size", type=int, default=384,
                   help="render about SIZE x SIZE pixels, shaped to the window (default 384; half while moving)")
    v.add_argument("--pose", choices=["static", "track", "generated"], default="static", help="head motion")
    v.add_argument("--blink", choices=["auto", "track", "none"], default="auto", help="eye blinks")
    v.add_argument("--background", default="plate", help="plate | white | black | green | #rrggbb")

    vs = sub.add_parser("visemes", help="per-frame viseme weights (15 lip-sync visemes) of any speech audio",
                        description="Speaker-independent speech front end: viseme weights, voice activity "
                                    "and loudness per frame, for any avatar rig or game engine.")
    vs.add_argument("audio", help="audio (or video with audio) file")
    vs.add_argument("-o", "--output", required=True, help="output .json (or .csv)")
    vs.add_argument("--fps", type=float, default=25.0, help="frames per second (default 25)")
    vs.add_argument("--format", choices=["json", "csv"], help="output format (default: from the file name, else json)")
    return p


def _cmd_capture(a) -> None:
    from .capture import run_capture
    from .capture.config import CaptureConfig

    t0 = time.time()
    cfg = CaptureConfig(max_size=a.max_size, morphable=a.morphable, flame_path=a.flame,
                        flame_landmarks=a.flame_landmarks, focal=a.focal, speech_model=a.speech_model,
                        feature_tracks=not a.no_feature_tracks)
    cs = run_capture(a.video, a.output, cfg)
    print(f"wrote {a.output}: {cs.n_frames} frames at {cs.width}x{cs.height} in {time.time() - t0:.1f} s")


def _cmd_fit(a) -> None:
    from .api import Avatar

    inp = Path(a.input)
    if not inp.exists():
        raise FileNotFoundError(f"input not found: {inp}")
    t0 = time.time()
    config, preset = a.config, a.preset
    if a.speech_model:
        from .config import load_config

        config, preset = load_config(a.config, a.preset), None
        config.capture.speech_model = a.speech_model
    av = Avatar.fit(inp, config, workdir=a.workdir, preset=preset, steps=a.steps)
    av.save(a.output)
    print(f"wrote avatar {a.output} ({av.model.n} Gaussians) in {time.time() - t0:.1f} s")


def _cmd_render(a) -> None:
    from .api import Avatar

    t0 = time.time()
    av = Avatar.load(a.avatar)
    res = av.render(a.audio, camera=a.camera, size=a.size, pose=a.pose, blink=a.blink, background=a.background)
    res.save(a.output)
    h, w = res.frames.shape[1:3]
    print(f"wrote {a.output}: {len(res)} frames {w}x{h} at {res.fps:g} fps in {time.time() - t0:.1f} s")


def _cmd_export(a) -> None:
    from .api import Avatar

    av = Avatar.load(a.avatar)
    files = av.export_ply(a.output, audio=a.audio)
    print(f"wrote {len(files)} PLY file(s) to {a.output}")


def _cmd_demo(a) -> None:
    from .demo import run_demo

    run_demo(Path(a.output), steps=a.steps, seconds=a.seconds)


def _cmd_eval(a) -> None:
    from .api import Avatar
    from .errors import Avatar3DError
    from .eval import evaluate_avatar, write_report

    if not Path(a.avatar).exists():
        raise Avatar3DError(f"avatar directory not found: {a.avatar}")
    if not Path(a.video).exists():
        raise Avatar3DError(f"held-out video not found: {a.video}")
    if a.max_frames is not None and a.max_frames < 1:
        raise Avatar3DError(f"--max-frames must be positive, got {a.max_frames}")
    for flag, f in (("--lpips-weights", a.lpips_weights), ("--syncnet-weights", a.syncnet_weights),
                    ("--truth", a.truth)):
        if f and not Path(f).is_file():
            raise Avatar3DError(f"{flag} file not found: {f}")
    if Path(a.output).is_dir():
        raise Avatar3DError(f"output {a.output} is a directory; give a .json file name")
    truth = None
    if a.truth:
        from .synthetic import SyntheticTruth

        truth = SyntheticTruth.load(a.truth)
    t0 = time.time()
    av = Avatar.load(a.avatar)
    rep = evaluate_avatar(av, a.video, max_frames=a.max_frames, size=a.size, heldout_only=a.heldout_only,
                          crop=a.crop, lpips_weights=a.lpips_weights, syncnet_weights=a.syncnet_weights,
                          views=not a.no_views, truth=truth, keep_samples=4, log=print)
    js, png = write_report(rep, a.output)
    m = rep["metrics"]
    print(f"wrote {js} and {png} in {time.time() - t0:.1f} s: PSNR {m['psnr']} dB, SSIM {m['ssim']}, "
          f"LMD {m['lmd']}, LPIPS {m['lpips']}")


def _cmd_view(a) -> None:
    from .viewer import run_viewer

    run_viewer(a.avatar, a.audio, host=a.host, port=a.port, size=a.size, pose=a.pose, blink=a.blink,
               background=a.background)


def _cmd_visemes(a) -> None:
    from .audio import load_audio, viseme_track
    from .errors import Avatar3DError

    if not Path(a.audio).is_file():
        raise Avatar3DError(f"audio file not found: {a.audio}")
    if not 1.0 <= a.fps <= 1000.0:
        raise Avatar3DError(f"--fps must be in 1..1000, got {a.fps:g}")
    if Path(a.output).is_dir():
        raise Avatar3DError(f"output {a.output} is a directory; give a .json or .csv file name")
    t0 = time.time()
    track = viseme_track(load_audio(a.audio), 16000, fps=a.fps)
    track.save(a.output, format=a.format)
    print(f"wrote {a.output}: {len(track)} frames at {a.fps:g} fps in {time.time() - t0:.1f} s")


def main(argv: list[str] | None = None) -> int:
    from .errors import Avatar3DError

    args = _parser().parse_args(argv)
    try:
        {"capture": _cmd_capture, "fit": _cmd_fit, "render": _cmd_render, "export": _cmd_export, "demo": _cmd_demo,
         "eval": _cmd_eval, "view": _cmd_view, "visemes": _cmd_visemes}[args.cmd](args)
    except Avatar3DError as e:
        print(f"avatar3d: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"avatar3d: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("avatar3d: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
