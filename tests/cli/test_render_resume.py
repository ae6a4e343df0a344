"""``avatar3d render`` survives ``kill -9`` and SIGTERM: real signals to a real subprocess, then the
same command again resumes from the finished segments and writes the video an uninterrupted render
writes, leaving no temporaries."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from _tiny import tiny_avatar

from avatar3d.drive.frames import SEGMENT_ENV
from avatar3d.io.media import iter_frames, read_audio, write_audio
from avatar3d.io.segments import MANIFEST, parts_dir

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # real subprocesses: 7 starts of the CLI

SEG = 5  # frames per segment in these tests
SECONDS = 4.0


def _env() -> dict:
    env = dict(os.environ, AVATAR3D_QUIET="1", OMP_NUM_THREADS="1", **{SEGMENT_ENV: str(SEG)})
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _render_cmd(d: Path, out: Path, audio: str = "speech.wav", *extra: str) -> list[str]:
    return [sys.executable, "-m", "avatar3d.cli", "render", str(d / "av"), "--audio", str(d / audio),
            "-o", str(out), "--pose", "generated", "--size", "96x96", *extra]  # fmt: skip


def _run(cmd: list[str]) -> tuple[int, str]:
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    return p.returncode, p.stdout + p.stderr


def _n_parts(out: Path) -> int:
    try:
        return len(json.loads((parts_dir(out) / MANIFEST).read_text())["parts"])
    except (OSError, ValueError, KeyError):  # not there yet, or being replaced
        return 0


def _interrupted(cmd: list[str], out: Path, sig: int, min_parts: int = 1) -> tuple[int, str, int]:
    """Start ``cmd``, send ``sig`` once ``min_parts`` segments are finished; (exit code, output, parts)."""
    p = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), bufsize=1
    )
    t0 = time.time()
    while _n_parts(out) < min_parts:
        if p.poll() is not None:
            pytest.fail(f"the render ended before the signal: {p.communicate()[0][-2000:]}")
        if time.time() - t0 > 240:
            p.kill()
            pytest.fail("timed out waiting for the first segment")
        time.sleep(0.02)
    p.send_signal(sig)
    text, _ = p.communicate(timeout=120)
    return p.returncode, text, _n_parts(out)


def _temps(d: Path) -> list[str]:
    return [q.name for q in d.iterdir() if re.fullmatch(r"\..+\.(tmp|old)-.*|\..+\.parts", q.name)]


def _same_video(a: Path, b: Path) -> None:
    with av.open(str(a)) as ca, av.open(str(b)) as cb:
        pa = [bytes(p) for p in ca.demux(ca.streams.video[0]) if p.size]
        pb = [bytes(p) for p in cb.demux(cb.streams.video[0]) if p.size]
    assert pa == pb  # the same H.264 packets
    fa, fb = list(iter_frames(a)), list(iter_frames(b))
    assert len(fa) == len(fb) and all(np.array_equal(x, y) for x, y in zip(fa, fb))
    assert np.array_equal(read_audio(a)[0], read_audio(b)[0])


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny avatar, two audio files and the uninterrupted render of the first (the reference)."""
    d = tmp_path_factory.mktemp("render_resume")
    tiny_avatar(n=2000).save(d / "av")
    t = np.arange(int(16000 * SECONDS)) / 16000
    write_audio(
        d / "speech.wav", (0.3 * np.sin(2 * np.pi * 200 * t) * (np.sin(2 * np.pi * 2 * t) > 0)), 16000
    )
    write_audio(d / "other.wav", (0.2 * np.sin(2 * np.pi * 330 * t[: len(t) // 2])), 16000)
    code, text = _run(_render_cmd(d, d / "ref.mp4"))
    assert code == 0, text
    assert "resuming" not in text and _temps(d) == []
    return d


def _resumed(text: str) -> tuple[int, int, int]:
    m = re.search(
        r"resuming .*: (\d+) of (\d+) frames were rendered by an interrupted run.*rendering the other (\d+)",
        text,
    )
    assert m, text
    return int(m[1]), int(m[2]), int(m[3])


def test_sigterm_then_kill_9_then_the_same_command_completes(work, tmp_path):
    out, n = tmp_path / "o.mp4", int(SECONDS * 25)
    code, text, parts = _interrupted(_render_cmd(work, out), out, signal.SIGTERM)
    assert code == 143 and "terminated" in text  # handled like Ctrl-C: the part being written is removed
    assert 1 <= parts < n // SEG and not out.exists()
    assert not [q for q in parts_dir(out).iterdir() if ".tmp-" in q.name]

    code, text, parts2 = _interrupted(_render_cmd(work, out), out, signal.SIGKILL, min_parts=parts + 1)
    assert code == -9 and _resumed(text) == (parts * SEG, n, n - parts * SEG)
    assert parts < parts2 < n // SEG and not out.exists()

    code, text = _run(_render_cmd(work, out))
    assert code == 0, text
    assert _resumed(text) == (parts2 * SEG, n, n - parts2 * SEG)  # only the frames not yet in a part
    _same_video(out, work / "ref.mp4")
    assert _temps(tmp_path) == []


def test_changed_input_discards_the_parts_and_a_damaged_part_is_redone(work, tmp_path):
    out = tmp_path / "o.mp4"
    _interrupted(_render_cmd(work, out), out, signal.SIGKILL, min_parts=2)
    kept = tmp_path / "kept"
    shutil.copytree(parts_dir(out), kept)

    code, text = _run(_render_cmd(work, out, "other.wav"))  # other audio: the parts are not this video's
    assert code == 0, text
    assert "removing the render parts" in text and "other audio" in text and "resuming" not in text
    assert len(list(iter_frames(out))) == int(SECONDS / 2 * 25) and _temps(tmp_path) == []

    out3 = tmp_path / "o3.mp4"
    shutil.copytree(kept, parts_dir(out3))
    first = parts_dir(out3) / "part-000000.mp4"
    first.write_bytes(first.read_bytes()[:-200])  # truncated
    code, text = _run(_render_cmd(work, out3))
    assert code == 0, text
    assert "part-000000.mp4 cannot be reused" in text and "resuming" in text
    _same_video(out3, work / "ref.mp4")
    assert _temps(tmp_path) == []
