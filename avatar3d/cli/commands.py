"""The commands behind ``avatar3d <command>``: each checks its inputs and outputs first (one-line errors,
nothing written), then does the work through the public API."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

from ..api import Avatar
from ..audio import load_audio, viseme_track
from ..capture import run_capture
from ..config import AvatarConfig, apply_overrides, load_config, parse_overrides
from ..core.constants import SAMPLE_RATE
from ..demo import run_demo
from ..drive.stereo import render_stereo, tagged_name
from ..errors import Avatar3DError
from ..eval import evaluate_avatar, write_report
from ..export.bake import BakedAvatar, LinearBake, load_player
from ..export.web import export_web
from ..io.outputs import check_output
from ..io.watermark import detect
from ..synthetic import SyntheticTruth

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".m4v")
EVAL_SAMPLES = 4  # frames kept as image samples in an eval report
MAX_BASES = 256


def _existing(path: str, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise Avatar3DError(f"{what} not found: {p}")
    return p


def _capture_settings(a: Namespace) -> dict:
    """The capture flags given on the command line, as capture config keys."""
    flags = {
        "max_size": a.max_size,
        "morphable": a.morphable,
        "flame_path": a.flame,
        "flame_landmarks": a.flame_landmarks,
        "focal": a.focal,
        "speech_model": a.speech_model,
    }
    out = {k: v for k, v in flags.items() if v is not None}
    if a.no_feature_tracks:
        out["feature_tracks"] = False
    return out


def _configured(cfg: AvatarConfig, a: Namespace, capture: dict | None = None) -> AvatarConfig:
    """``cfg`` with the command's capture flags and ``--set`` overrides layered over it."""
    over = parse_overrides(a.set, a.set_sections)
    if capture:
        over.setdefault("capture", {}).update(capture)
    return apply_overrides(cfg, over)


def _load(a: Namespace, path: Path) -> Avatar:
    """An avatar directory, with the command's ``--set render.*`` overrides applied."""
    av = Avatar.load(path, speech_model=a.speech_model)
    if getattr(a, "set", None):
        av.config = _configured(av.config, a)
    return av


def cmd_verify(a: Namespace) -> None:
    d = detect(a.video)
    if a.json:
        print(json.dumps({"video": str(a.video), **d.to_dict()}))
        return
    if not d.present:
        print(
            f"{a.video}: no avatar3d watermark found (score {d.score:.1f}, threshold {d.to_dict()['threshold']})"
        )
        return
    who = (
        f"avatar {d.payload.avatar_id:08x}, avatar3d {d.payload.version}"
        if d.payload
        else "payload unreadable (too damaged to decode)"
    )
    print(f"{a.video}: avatar3d watermark present (score {d.score:.1f}): {who}")


def cmd_capture(a: Namespace) -> None:
    video = _existing(a.video, "input video")
    if video.is_dir():
        raise Avatar3DError(f"input {video} is a directory; give a video file")
    cfg = _configured(AvatarConfig(), a, _capture_settings(a)).capture
    check_output(a.output, kind="dir", overwrite=a.overwrite, inputs=[video, a.speech_model, a.flame])
    t0 = time.time()
    cs = run_capture(a.video, a.output, cfg)
    print(f"wrote {a.output}: {cs.n_frames} frames at {cs.width}x{cs.height} in {time.time() - t0:.1f} s")


def cmd_fit(a: Namespace) -> None:
    inp = _existing(a.input, "input")
    check_output(
        a.output, kind="dir", overwrite=a.overwrite, inputs=[inp, a.workdir, a.config, a.speech_model]
    )
    if a.workdir and Path(a.workdir).expanduser().resolve() == inp.expanduser().resolve():
        raise Avatar3DError(f"--workdir {a.workdir} is the input: choose another work directory")
    cfg = _configured(load_config(a.config, a.preset), a, _capture_settings(a))
    t0 = time.time()
    av = Avatar.fit(inp, cfg, workdir=a.workdir, steps=a.steps)
    av.save(a.output)
    print(f"wrote avatar {a.output} ({av.model.n} Gaussians) in {time.time() - t0:.1f} s")


def _render_stereo(a: Namespace, av: Avatar, audio: Path):
    res = render_stereo(
        av,
        audio,
        a.camera,
        ipd=a.ipd,
        layout=a.layout or "sbs",
        size=a.size,
        pose=a.pose,
        blink=a.blink,
        background=a.background,
    )
    if not tagged_name(a.output, res.layout):
        print(
            f"note: headset players pick the layout from the name; call it "
            f"*{'_LR' if res.layout == 'sbs' else '_TB'}{Path(a.output).suffix}",
            file=sys.stderr,
        )
    return res


def cmd_render(a: Namespace) -> None:
    avatar = _existing(a.avatar, "avatar directory")
    audio = _existing(a.audio, "audio file")
    check_output(
        a.output, kind="file", overwrite=a.overwrite, inputs=[avatar, audio], suffixes=VIDEO_SUFFIXES
    )
    if not a.stereo and (a.ipd is not None or a.layout is not None):
        raise Avatar3DError("--ipd and --layout need --stereo")
    if a.bake and (a.stereo or not Path(a.bake).is_file()):
        raise Avatar3DError(
            f"bake file not found: {a.bake}" if not a.stereo else "--bake does not go with --stereo"
        )
    t0 = time.time()
    av = _load(a, avatar)
    if a.no_watermark:
        av.config.render.watermark = False
    look = dict(size=a.size, pose=a.pose, blink=a.blink, background=a.background)
    if a.stereo or a.bake:
        res = (
            _render_stereo(a, av, audio)
            if a.stereo
            else BakedAvatar(av, LinearBake.load(a.bake)).render(audio, camera=a.camera, **look)
        )
        res.save(a.output)
        n, (h, w) = len(res), res.frames.shape[1:3]
    else:
        stream = av.stream(audio, camera=a.camera, **look)
        stream.save(a.output)  # frames are encoded as they are rendered: memory does not grow with the audio
        n, w, h = len(stream), stream.width, stream.height
    print(f"wrote {a.output}: {n} frames {w}x{h} at {av.meta.fps:g} fps in {time.time() - t0:.1f} s")


def _export_web(a: Namespace, avatar: Path, audio: Path | None) -> None:
    check_output(a.web, kind="dir", overwrite=a.overwrite, inputs=[avatar, audio])  # before loading anything
    if not 1 <= a.bases <= MAX_BASES:
        raise Avatar3DError(f"--bases must be within 1..{MAX_BASES}, got {a.bases}")
    t0 = time.time()
    out = export_web(_load(a, avatar), a.web, audio, k=a.bases, overwrite=a.overwrite)
    print(
        f"wrote {out} in {time.time() - t0:.1f} s: serve it (python -m http.server -d {out}) and open "
        "index.html; on a headset, serve it on the local network and press Enter VR"
    )


def cmd_export(a: Namespace) -> None:
    if (a.web is None) == (a.output is None):
        raise Avatar3DError("give either -o OUTPUT (PLY) or --web DIR")
    avatar = _existing(a.avatar, "avatar directory")
    audio = _existing(a.audio, "audio file") if a.audio else None
    if a.web is not None:
        _export_web(a, avatar, audio)
        return
    if audio is not None:
        check_output(a.output, kind="dir", overwrite=a.overwrite, inputs=[avatar, audio])
    else:
        check_output(a.output, kind="file", overwrite=a.overwrite, inputs=[avatar], suffixes=(".ply",))
    files = _load(a, avatar).export_ply(a.output, audio=a.audio)
    print(f"wrote {len(files)} PLY file(s) to {a.output}")


def cmd_serve(a: Namespace) -> None:
    from ..export.serve import check_port_free, run_server  # needs the optional websockets package

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


def cmd_demo(a: Namespace) -> None:
    run_demo(Path(a.output), steps=a.steps, seconds=a.seconds)


def _check_eval_inputs(a: Namespace) -> None:
    if not Path(a.avatar).exists():
        raise Avatar3DError(f"avatar directory not found: {a.avatar}")
    if not Path(a.video).exists():
        raise Avatar3DError(f"held-out video not found: {a.video}")
    if a.max_frames is not None and a.max_frames < 1:
        raise Avatar3DError(f"--max-frames must be positive, got {a.max_frames}")
    for flag, f in (
        ("--lpips-weights", a.lpips_weights),
        ("--syncnet-weights", a.syncnet_weights),
        ("--truth", a.truth),
    ):
        if f and not Path(f).is_file():
            raise Avatar3DError(f"{flag} file not found: {f}")
    check_output(
        a.output, kind="file", overwrite=a.overwrite, inputs=[a.avatar, a.video], suffixes=(".json",)
    )


def cmd_eval(a: Namespace) -> None:
    _check_eval_inputs(a)
    truth = SyntheticTruth.load(a.truth) if a.truth else None
    t0 = time.time()
    av = Avatar.load(a.avatar, speech_model=a.speech_model)
    rep = evaluate_avatar(
        av,
        a.video,
        max_frames=a.max_frames,
        size=a.size,
        heldout_only=a.heldout_only,
        crop=a.crop,
        lpips_weights=a.lpips_weights,
        syncnet_weights=a.syncnet_weights,
        views=not a.no_views,
        truth=truth,
        keep_samples=EVAL_SAMPLES,
        log=print,
    )
    js, png = write_report(rep, a.output)
    m = rep["metrics"]
    print(
        f"wrote {js} and {png} in {time.time() - t0:.1f} s: PSNR {m['psnr']} dB, SSIM {m['ssim']}, "
        f"LMD {m['lmd']}, LPIPS {m['lpips']}"
    )


def cmd_view(a: Namespace) -> None:
    from ..viewer import run_viewer  # needs the optional viser package

    bake = None if a.bake is None else (lambda av: load_player(av, a.bake))
    run_viewer(
        a.avatar,
        a.audio,
        host=a.host,
        port=a.port,
        size=a.size,
        pose=a.pose,
        blink=a.blink,
        background=a.background,
        speech_model=a.speech_model,
        bake=bake,
    )


def cmd_visemes(a: Namespace) -> None:
    audio = _existing(a.audio, "audio file")
    if not audio.is_file():
        raise Avatar3DError(f"audio {audio} is not a file")
    if not 1.0 <= a.fps <= 1000.0:  # (NaN fails this too)
        raise Avatar3DError(f"--fps must be in 1..1000, got {a.fps:g}")
    suffixes = None if a.format else (".json", ".csv")  # an explicit --format takes any file name
    check_output(a.output, kind="file", overwrite=a.overwrite, inputs=[audio], suffixes=suffixes)
    t0 = time.time()
    track = viseme_track(load_audio(a.audio), SAMPLE_RATE, fps=a.fps)
    track.save(a.output, format=a.format)
    print(f"wrote {a.output}: {len(track)} frames at {a.fps:g} fps in {time.time() - t0:.1f} s")


COMMANDS = {
    "capture": cmd_capture,
    "fit": cmd_fit,
    "render": cmd_render,
    "export": cmd_export,
    "demo": cmd_demo,
    "eval": cmd_eval,
    "view": cmd_view,
    "visemes": cmd_visemes,
    "verify": cmd_verify,
    "serve": cmd_serve,
}
