"""The command line's parser: one ``add_*`` function per command, shared flag groups, ``--set``."""

from __future__ import annotations

import argparse

from ..config import PRESETS
from ..drive.motion import BLINK_MODES, POSE_MODES
from ..drive.stereo import LAYOUTS
from ..errors import Avatar3DError

DEFAULT_EVAL_SIZE = 512  # px: the field's protocol compares 512² head crops
DEFAULT_VIEW_SIZE = 384  # px: the viewer's render size (half while the camera moves)
DEFAULT_VIEW_PORT, DEFAULT_SERVE_PORT = 8080, 8765
DEFAULT_BASES = 16  # linear bake bases of `export --web`
DEFAULT_LOOKAHEAD_S = 0.2


class UsageError(Avatar3DError):
    """A command line argparse rejects."""


def one_line(text: str) -> str:
    return " ".join(str(text).split())


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as the project's one line (exit code 2)."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        raise UsageError(f"{one_line(message)} (see: {self.prog} --help)")


def size_arg(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512x512, got {text!r}") from None


def _overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output (a directory only if avatar3d wrote it)",
    )


def _speech_model(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--speech-model",
        help="the local speech model file this avatar was trained with "
        "(an avatar directory only records which one; it never loads it by itself)",
    )


def _settings(p: argparse.ArgumentParser, sections: tuple[str, ...]) -> None:
    """``--set SECTION.KEY=VALUE`` (repeatable): any field of the config (docs/configuration.md)."""
    names = ", ".join(f"{s}.*" for s in sections)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help=f"set any config field ({names}); repeatable, e.g. --set {sections[0]}.KEY=VALUE",
    )
    p.set_defaults(set_sections=sections)


def _capture_flags(p: argparse.ArgumentParser, speech_help: str) -> None:
    """The capture settings `capture` and `fit` share (shortcuts for --set capture.KEY=VALUE)."""
    p.add_argument("--max-size", type=int, help="longest side of stored frames (px; default 512)")
    p.add_argument(
        "--morphable",
        choices=["none", "open", "flame"],
        help="also fit a morphable model (flame needs --flame or AVATAR3D_FLAME_PATH)",
    )
    p.add_argument("--flame", help="FLAME model file (user-supplied, never downloaded)")
    p.add_argument("--flame-landmarks", help="MediaPipe landmark embedding for the FLAME file")
    p.add_argument("--focal", type=float, help="known focal length in pixels of the stored frames")
    p.add_argument(
        "--no-feature-tracks",
        action="store_true",
        help="pose from the landmarks alone, without optical-flow tracks (about twice as fast)",
    )
    p.add_argument("--speech-model", help=speech_help)


def add_capture(sub) -> None:
    c = sub.add_parser("capture", help="track a talking video into a CaptureSet directory")
    c.add_argument("video")
    c.add_argument("-o", "--output", required=True, help="capture directory to write")
    _overwrite(c)
    _capture_flags(
        c,
        "local speech model (HuBERT/wav2vec2 directory, TorchScript or .pt2; never "
        "downloaded): also store its features for training",
    )
    _settings(c, ("capture",))


def add_fit(sub) -> None:
    f = sub.add_parser("fit", help="fit an avatar to a video or a capture directory")
    f.add_argument("input", help="video file or CaptureSet directory")
    f.add_argument("-o", "--output", required=True, help="avatar directory to write")
    _overwrite(f)
    f.add_argument("--preset", choices=PRESETS, default=None)
    f.add_argument("--config", help="YAML config layered over the preset")
    f.add_argument("--steps", type=int, help="training steps (overrides the config)")
    f.add_argument("--workdir", help="keep capture and checkpoints here (resumable)")
    _capture_flags(
        f,
        "local speech model (HuBERT/wav2vec2 directory, TorchScript or .pt2; never downloaded) "
        "driving the avatar instead of log-mel (capture.speech_model)",
    )
    _settings(f, ("capture", "model", "train", "render"))


def add_render(sub) -> None:
    r = sub.add_parser(
        "render",
        help="render an avatar speaking an audio file",
        description="Render an avatar speaking an audio file. The video is rendered in segments of 250 frames "
        "kept beside the output (.NAME.parts/) until it is complete: after a kill, the same command "
        "again resumes from them.",
    )
    r.add_argument("avatar", help="avatar directory")
    r.add_argument("--audio", required=True, help="audio (or video with audio) file")
    r.add_argument("-o", "--output", required=True, help="output .mp4 (.mov, .mkv)")
    _overwrite(r)
    _speech_model(r)
    r.add_argument("--camera", default="capture", help="capture | frontal | orbit | FILE.json")
    r.add_argument("--size", type=size_arg, help="output WxH")
    r.add_argument("--pose", choices=POSE_MODES, help="head motion")
    r.add_argument("--blink", choices=BLINK_MODES, help="eye blinks")
    r.add_argument("--background", help="plate | white | black | green | #rrggbb")
    r.add_argument(
        "--no-watermark",
        action="store_true",
        help="do not put the invisible provenance mark in the video (render.watermark: false)",
    )
    r.add_argument(
        "--stereo",
        action="store_true",
        help="both eyes packed in one video for headset players (--size is per eye)",
    )
    r.add_argument(
        "--ipd", type=float, help="with --stereo: distance between the eyes in metres (default 0.063)"
    )
    r.add_argument(
        "--layout",
        choices=LAYOUTS,
        help="with --stereo: sbs = side by side, left eye left (name it *_LR.mp4, the default); "
        "ou = over-under, left eye on top (*_TB.mp4)",
    )
    r.add_argument("--bake", help="render through a linear bake (bake.safetensors of `export --web`): faster")
    _settings(r, ("render",))


def add_export(sub) -> None:
    e = sub.add_parser(
        "export", help="export the avatar as 3D Gaussian Splatting PLY, or as a WebXR page (--web)"
    )
    e.add_argument("avatar", help="avatar directory")
    e.add_argument("-o", "--output", help="out.ply, or a directory with --audio")
    _overwrite(e)
    _speech_model(e)
    e.add_argument(
        "--audio",
        help="export one PLY per frame of this audio into the output directory; "
        "with --web: the audio the page plays (default: 5 s of idle face)",
    )
    e.add_argument(
        "--web", metavar="DIR", help="write a static web player (linear bake, WebXR 'Enter VR') to DIR"
    )
    e.add_argument(
        "--bases", type=int, default=DEFAULT_BASES, help="with --web: number of bake bases K (default 16)"
    )
    _settings(e, ("render",))


def add_demo(sub) -> None:
    d = sub.add_parser("demo", help="fit the built-in synthetic subject and render it with new audio")
    d.add_argument("-o", "--output", default="demo_out", help="output directory (default demo_out)")
    d.add_argument("--steps", type=int, help="training steps (default: the fast preset's)")
    d.add_argument("--seconds", type=float, default=8.0, help="length of the training video")


def add_eval(sub) -> None:
    e = sub.add_parser("eval", help="score an avatar on a held-out clip: PSNR, SSIM, LPIPS, LMD, sync, views")
    e.add_argument("avatar", help="avatar directory")
    e.add_argument("--video", required=True, help="held-out video (or CaptureSet directory)")
    e.add_argument("-o", "--output", required=True, help="report .json (plots go to <name>_plots.png)")
    _overwrite(e)
    _speech_model(e)
    e.add_argument(
        "--heldout-only",
        action="store_true",
        help="VIDEO is the training clip: score only its held-out last 1/11",
    )
    e.add_argument("--max-frames", type=int, help="score at most this many held-out frames")
    e.add_argument(
        "--size", type=int, default=DEFAULT_EVAL_SIZE, help="comparison size in pixels (default 512)"
    )
    e.add_argument("--crop", choices=["head", "full"], default="head", help="head crop or full frame")
    e.add_argument("--lpips-weights", help="local LPIPS weights file (never downloaded)")
    e.add_argument("--syncnet-weights", help="local SyncNet (syncnet_v2.model) weights file")
    e.add_argument("--truth", help="synthetic-subject truth .npz: compare novel views with ground truth")
    e.add_argument("--no-views", action="store_true", help="skip the view-consistency sweep")


def add_view(sub) -> None:
    v = sub.add_parser(
        "view",
        help="interactive free-viewpoint viewer in the browser (needs avatar3d[view])",
        description="Serve an interactive viewer on a local web page: orbit / zoom with the mouse, play, "
        "pause and scrub the animation, change pose, blinks, background and render size.",
        epilog="With --audio, tick Sound in the panel to hear it in the browser, kept in step with the "
        "video (browsers allow sound only after a click in the page). "
        'Needs the optional extra: pip install "avatar3d[view]".',
    )
    v.add_argument("avatar", help="avatar directory")
    v.add_argument(
        "--audio", help="drive the avatar with this audio, looped (default: idle, mouth closed, blinking)"
    )
    _speech_model(v)
    v.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)"
    )
    v.add_argument(
        "--port", type=int, default=DEFAULT_VIEW_PORT, help="port (default 8080; the next free one if busy)"
    )
    v.add_argument(
        "--size",
        type=int,
        default=DEFAULT_VIEW_SIZE,
        help="render about SIZE x SIZE pixels, shaped to the window (default 384; half while moving)",
    )
    v.add_argument("--pose", choices=POSE_MODES, default="static", help="head motion")
    v.add_argument(
        "--bake", help="play through this linear bake (bake.safetensors, or an export --web folder)"
    )
    v.add_argument("--blink", choices=BLINK_MODES, default="auto", help="eye blinks")
    v.add_argument("--background", default="plate", help="plate | white | black | green | #rrggbb")


def add_visemes(sub) -> None:
    vs = sub.add_parser(
        "visemes",
        help="per-frame viseme weights (15 lip-sync visemes) of any speech audio",
        description="Speaker-independent speech front end: viseme weights, voice activity "
        "and loudness per frame, for any avatar rig or game engine.",
    )
    vs.add_argument("audio", help="audio (or video with audio) file")
    vs.add_argument("-o", "--output", required=True, help="output .json (or .csv)")
    _overwrite(vs)
    vs.add_argument("--fps", type=float, default=25.0, help="frames per second (default 25)")
    vs.add_argument(
        "--format", choices=["json", "csv"], help="output format (default: from the file name, else json)"
    )


def add_verify(sub) -> None:
    w = sub.add_parser(
        "verify",
        help="look for avatar3d's provenance watermark in a video",
        description="Report whether VIDEO carries avatar3d's invisible watermark and, if so, "
        "which avatar id and library version made it. A label, not a proof: "
        "see docs/provenance.md.",
    )
    w.add_argument("video", help="video file to check")
    w.add_argument("--json", action="store_true", help="print the result as one JSON object")


def add_serve(sub) -> None:
    s = sub.add_parser("serve", help="stream live bake weights from audio to the web player over a WebSocket")
    s.add_argument("avatar", help="avatar directory")
    s.add_argument(
        "--audio", required=True, help="audio file, played in real time (looped) as the live input"
    )
    s.add_argument(
        "--web",
        metavar="DIR",
        help="an earlier `export --web` folder of this avatar (default: export one "
        "into a temporary folder first)",
    )
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument(
        "--port",
        type=int,
        default=DEFAULT_SERVE_PORT,
        help="HTTP port; the WebSocket uses PORT+1 (default 8765)",
    )
    s.add_argument(
        "--lookahead",
        type=float,
        default=DEFAULT_LOOKAHEAD_S,
        help="seconds of audio to wait for per frame (default 0.2)",
    )
    _speech_model(s)


COMMANDS = (
    add_capture,
    add_fit,
    add_render,
    add_export,
    add_demo,
    add_eval,
    add_view,
    add_visemes,
    add_verify,
    add_serve,
)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="avatar3d", description="Talking video -> 3D audio-driven avatar.")
    p.add_argument("--debug", action="store_true", help="print the full traceback of an unexpected error")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    for add in COMMANDS:
        add(sub)
    return p
