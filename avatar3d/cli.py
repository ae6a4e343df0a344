"""Command line: ``avatar3d capture | fit | render | export | demo | eval | view | visemes | verify | serve``.

Exit codes: 0 success, 2 bad input (one-line error naming the problem), 130 interrupted (Ctrl-C),
143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from .errors import Avatar3DError
from .io.outputs import check_output


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512x512, got {text!r}") from None


def _overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output (a directory only if avatar3d wrote it)")


def _speech_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--speech-model", help="the local speech model file this avatar was trained with "
                        "(an avatar directory only records which one; it never loads it by itself)")


def _existing(path: str, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise Avatar3DError(f"{what} not found: {p}")
    return p


VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".m4v")


class _UsageError(Avatar3DError):
    """A command line argparse rejects."""


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as the project's one line (exit code 2)."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        raise _UsageError(f"{_one_line(message)} (see: {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="avatar3d", description="Talking video -> 3D audio-driven avatar.")
    p.add_argument("--debug", action="store_true", help="print the full traceback of an unexpected error")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    c = sub.add_parser("capture", help="track a talking video into a CaptureSet directory")
    c.add_argument("video")
    c.add_argument("-o", "--output", required=True, help="capture directory to write")
    _overwrite(c)
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
    _overwrite(f)
    f.add_argument("--preset", choices=["fast", "default", "quality"], default=None)
    f.add_argument("--config", help="YAML config layered over the preset")
    f.add_argument("--steps", type=int, help="training steps (overrides the config)")
    f.add_argument("--workdir", help="keep capture and checkpoints here (resumable)")
    f.add_argument("--speech-model", help="local speech model (HuBERT/wav2vec2 directory, TorchScript or .pt2; "
                   "never downloaded) driving the avatar instead of log-mel (capture.speech_model)")

    r = sub.add_parser("render", help="render an avatar speaking an audio file")
    r.add_argument("avatar", help="avatar directory")
    r.add_argument("--audio", required=True, help="audio (or video with audio) file")
    r.add_argument("-o", "--output", required=True, help="output .mp4 (.mov, .mkv)")
    _overwrite(r)
    _speech_model(r)
    r.add_argument("--camera", default="capture", help="capture | frontal | orbit | FILE.json")
    r.add_argument("--size", type=_size, help="output WxH")
    r.add_argument("--pose", choices=["static", "track", "generated"], help="head motion")
    r.add_argument("--blink", choices=["auto", "none", "track"], help="eye blinks")
    r.add_argument("--background", help="plate | white | black | green | #rrggbb")
    r.add_argument("--no-watermark", action="store_true",
                   help="do not put the invisible provenance mark in the video (render.watermark: false)")
    r.add_argument("--stereo", action="store_true",
                   help="both eyes packed in one video for headset players (--size is per eye)")
    r.add_argument("--ipd", type=float, help="with --stereo: distance between the eyes in metres (default 0.063)")
    r.add_argument("--layout", choices=["sbs", "ou"],
                   help="with --stereo: sbs = side by side, left eye left (name it *_LR.mp4, the default); "
                        "ou = over-under, left eye on top (*_TB.mp4)")
    r.add_argument("--bake", help="render through a linear bake (bake.safetensors of `export --web`): faster")

    e = sub.add_parser("export", help="export the avatar as 3D Gaussian Splatting PLY, or as a WebXR page (--web)")
    e.add_argument("avatar", help="avatar directory")
    e.add_argument("-o", "--output", help="out.ply, or a directory with --audio")
    _overwrite(e)
    _speech_model(e)
    e.add_argument("--audio", help="export one PLY per frame of this audio into the output directory; "
                   "with --web: the audio the page plays (default: 5 s of idle face)")
    e.add_argument("--web", metavar="DIR", help="write a static web player (linear bake, WebXR 'Enter VR') to DIR")
    e.add_argument("--bases", type=int, default=16, help="with --web: number of bake bases K (default 16)")

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
    _overwrite(e)
    _speech_model(e)
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
    _speech_model(v)
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
    _overwrite(vs)
    vs.add_argument("--fps", type=float, default=25.0, help="frames per second (default 25)")
    vs.add_argument("--format", choices=["json", "csv"], help="output format (default: from the file name, else json)")

    w = sub.add_parser("verify", help="look for avatar3d's provenance watermark in a video",
                       description="Report whether VIDEO carries avatar3d's invisible watermark and, if so, "
                                   "which avatar id and library version made it. A label, not a proof: "
                                   "see docs/provenance.md.")
    w.add_argument("video", help="video file to check")
    w.add_argument("--json", action="store_true", help="print the result as one JSON object")

    s = sub.add_parser("serve", help="stream live bake weights from audio to the web player over a WebSocket")
    s.add_argument("avatar", help="avatar directory")
    s.add_argument("--audio", required=True, help="audio file, played in real time (looped) as the live input")
    s.add_argument("--web", metavar="DIR", help="an earlier `export --web` folder of this avatar (default: export one "
                   "into a temporary folder first)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8765, help="HTTP port; the WebSocket uses PORT+1 (default 8765)")
    s.add_argument("--lookahead", type=float, default=0.2, help="seconds of audio to wait for per frame (default 0.2)")
    _speech_model(s)
    return p


def _cmd_verify(a) -> None:
    import json

    from .io.watermark import detect

    d = detect(a.video)
    if a.json:
        print(json.dumps({"video": str(a.video), **d.to_dict()}))
        return
    if not d.present:
        print(f"{a.video}: no avatar3d watermark found (score {d.score:.1f}, threshold {d.to_dict()['threshold']})")
        return
    who = (f"avatar {d.payload.avatar_id:08x}, avatar3d {d.payload.version}" if d.payload
           else "payload unreadable (too damaged to decode)")
    print(f"{a.video}: avatar3d watermark present (score {d.score:.1f}): {who}")


def _cmd_capture(a) -> None:
    from .capture import run_capture
    from .config import CaptureConfig

    video = _existing(a.video, "input video")
    if video.is_dir():
        raise Avatar3DError(f"input {video} is a directory; give a video file")
    check_output(a.output, kind="dir", overwrite=a.overwrite, inputs=[video, a.speech_model, a.flame])
    t0 = time.time()
    cfg = CaptureConfig(max_size=a.max_size, morphable=a.morphable, flame_path=a.flame,
                        flame_landmarks=a.flame_landmarks, focal=a.focal, speech_model=a.speech_model,
                        feature_tracks=not a.no_feature_tracks)
    cs = run_capture(a.video, a.output, cfg)
    print(f"wrote {a.output}: {cs.n_frames} frames at {cs.width}x{cs.height} in {time.time() - t0:.1f} s")


def _cmd_fit(a) -> None:
    from .api import Avatar

    inp = _existing(a.input, "input")
    check_output(a.output, kind="dir", overwrite=a.overwrite, inputs=[inp, a.workdir, a.config, a.speech_model])
    if a.workdir and Path(a.workdir).expanduser().resolve() == inp.expanduser().resolve():
        raise Avatar3DError(f"--workdir {a.workdir} is the input: choose another work directory")
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

    avatar = _existing(a.avatar, "avatar directory")
    audio = _existing(a.audio, "audio file")
    check_output(a.output, kind="file", overwrite=a.overwrite, inputs=[avatar, audio], suffixes=VIDEO_SUFFIXES)
    t0 = time.time()
    if not a.stereo and (a.ipd is not None or a.layout is not None):
        raise Avatar3DError("--ipd and --layout need --stereo")
    if a.bake and (a.stereo or not Path(a.bake).is_file()):
        raise Avatar3DError(f"bake file not found: {a.bake}" if not a.stereo else "--bake does not go with --stereo")
    av = Avatar.load(avatar, speech_model=a.speech_model)
    if a.no_watermark:
        av.config.render.watermark = False
    if a.stereo or a.bake:
        if a.stereo:
            from .drive.stereo import render_stereo, tagged_name

            res = render_stereo(av, audio, a.camera, ipd=a.ipd, layout=a.layout or "sbs", size=a.size, pose=a.pose,
                                blink=a.blink, background=a.background)
            if not tagged_name(a.output, res.layout):
                print(f"note: headset players pick the layout from the name; call it "
                      f"*{'_LR' if res.layout == 'sbs' else '_TB'}{Path(a.output).suffix}", file=sys.stderr)
        else:
            from .export.bake import BakedAvatar, LinearBake

            res = BakedAvatar(av, LinearBake.load(a.bake)).render(audio, camera=a.camera, size=a.size, pose=a.pose,
                                                                    blink=a.blink, background=a.background)
        res.save(a.output)
        n, (h, w) = len(res), res.frames.shape[1:3]
    else:
        stream = av.stream(audio, camera=a.camera, size=a.size, pose=a.pose, blink=a.blink, background=a.background)
        stream.save(a.output)  # frames are encoded as they are rendered: memory does not grow with the audio
        n, w, h = len(stream), stream.width, stream.height
    print(f"wrote {a.output}: {n} frames {w}x{h} at {av.meta.fps:g} fps in {time.time() - t0:.1f} s")


def _cmd_export(a) -> None:
    from .api import Avatar
    from .errors import Avatar3DError

    if (a.web is None) == (a.output is None):
        raise Avatar3DError("give either -o OUTPUT (PLY) or --web DIR")
    avatar = _existing(a.avatar, "avatar directory")
    audio = _existing(a.audio, "audio file") if a.audio else None
    if a.web is not None:
        from .export.web import export_web

        check_output(a.web, kind="dir", overwrite=a.overwrite, inputs=[avatar, audio])  # before loading anything
        if not 1 <= a.bases <= 256:
            raise Avatar3DError(f"--bases must be within 1..256, got {a.bases}")
        t0 = time.time()
        out = export_web(Avatar.load(avatar, speech_model=a.speech_model), a.web, audio, k=a.bases,
                         overwrite=a.overwrite)
        print(f"wrote {out} in {time.time() - t0:.1f} s: serve it (python -m http.server -d {out}) and open "
              "index.html; on a headset, serve it on the local network and press Enter VR")
        return
    if audio is not None:
        check_output(a.output, kind="dir", overwrite=a.overwrite, inputs=[avatar, audio])
    else:
        check_output(a.output, kind="file", overwrite=a.overwrite, inputs=[avatar], suffixes=(".ply",))
    av = Avatar.load(avatar, speech_model=a.speech_model)
    files = av.export_ply(a.output, audio=a.audio)
    print(f"wrote {len(files)} PLY file(s) to {a.output}")


def _cmd_serve(a) -> None:
    import tempfile

    from .api import Avatar
    from .errors import Avatar3DError
    from .export.serve import check_port_free, run_server
    from .export.web import export_web

    for port in (a.port, a.port + 1):
        check_port_free(a.host, port)
    if not Path(a.audio).is_file():
        raise Avatar3DError(f"audio file not found: {a.audio}")
    if a.web is not None and not (Path(a.web) / "bake.safetensors").is_file():
        raise Avatar3DError(f"{a.web} is not an `avatar3d export --web` folder (no bake.safetensors)")
    if not 0.0 <= a.lookahead <= 1.0:
        raise Avatar3DError(f"--lookahead must be within 0..1 s, got {a.lookahead}")
    av = Avatar.load(_existing(a.avatar, "avatar directory"), speech_model=a.speech_model)
    with tempfile.TemporaryDirectory(prefix="avatar3d-serve-") as tmp:
        page = Path(a.web) if a.web else export_web(av, Path(tmp) / "page", a.audio)
        run_server(av, page, a.audio, host=a.host, port=a.port, lookahead=a.lookahead)


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
    check_output(a.output, kind="file", overwrite=a.overwrite, inputs=[a.avatar, a.video], suffixes=(".json",))
    truth = None
    if a.truth:
        from .synthetic import SyntheticTruth

        truth = SyntheticTruth.load(a.truth)
    t0 = time.time()
    av = Avatar.load(a.avatar, speech_model=a.speech_model)
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
               background=a.background, speech_model=a.speech_model)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _os_error(e: OSError) -> str:
    what = e.strerror or type(e).__name__
    return f"{what}: {e.filename}" if e.filename else _one_line(str(e) or what)


def _cmd_visemes(a) -> None:
    from .audio import load_audio, viseme_track

    audio = _existing(a.audio, "audio file")
    if not audio.is_file():
        raise Avatar3DError(f"audio {audio} is not a file")
    if not 1.0 <= a.fps <= 1000.0:  # (NaN fails this too)
        raise Avatar3DError(f"--fps must be in 1..1000, got {a.fps:g}")
    suffixes = None if a.format else (".json", ".csv")  # an explicit --format takes any file name
    check_output(a.output, kind="file", overwrite=a.overwrite, inputs=[audio], suffixes=suffixes)
    t0 = time.time()
    track = viseme_track(load_audio(a.audio), 16000, fps=a.fps)
    track.save(a.output, format=a.format)
    print(f"wrote {a.output}: {len(track)} frames at {a.fps:g} fps in {time.time() - t0:.1f} s")


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` and atomic temp cleanup runs."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit codes: 0 done; 2 bad input or an unusable file/path (one line naming the
    problem); 1 an internal error (one line; ``--debug`` prints the traceback); 130 interrupted;
    143 terminated (SIGTERM, cleaned up like Ctrl-C)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        args = _parser().parse_args(argv)
    except _UsageError as e:
        print(f"avatar3d: error: {e}", file=sys.stderr)
        return 2
    commands = {"capture": _cmd_capture, "fit": _cmd_fit, "render": _cmd_render, "export": _cmd_export,
                "demo": _cmd_demo, "eval": _cmd_eval, "view": _cmd_view, "visemes": _cmd_visemes,
                "verify": _cmd_verify, "serve": _cmd_serve}
    try:
        commands[args.cmd](args)
    except Avatar3DError as e:
        print(f"avatar3d: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # missing, unreadable or unwritable files, a full disk
        if args.debug:
            traceback.print_exc()
        print(f"avatar3d: error: {_os_error(e)}", file=sys.stderr)
        return 2
    except MemoryError:
        print("avatar3d: error: out of memory (try a smaller --size or a shorter input)", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print("avatar3d: terminated" if isinstance(e, _Terminated) else "avatar3d: interrupted", file=sys.stderr)
        return 143 if isinstance(e, _Terminated) else 130
    except Exception as e:  # noqa: BLE001 - the one place that turns a bug into one line
        if args.debug:
            traceback.print_exc()
        print(f"avatar3d: error: internal error ({type(e).__name__}: {_one_line(e)}); "
              "rerun with --debug for the traceback and report it", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
