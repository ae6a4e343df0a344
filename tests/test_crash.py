"""Crash safety with real signals: ``kill -9`` / SIGTERM a CLI run in a subprocess, run the same
command again, and it completes from where it was (fit: the last checkpoint), leaving no temporaries."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
STEPS = 40
TINY = """preset: fast
capture: {max_size: 128}
model: {n_head: 1500, n_mouth: 150, n_torso: 300, max_gaussians: 3000}
train: {resolution: 96, audio_pretrain_steps: 20, densify_every: 10, checkpoint_every: 5, checkpoint_seconds: 0}
"""


def _env() -> dict:
    env = dict(os.environ, AVATAR3D_QUIET="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "avatar3d.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
    )


def _finish(p: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    out, _ = p.communicate(timeout=timeout)
    return p.returncode, out


def _ckpt_step(work: Path) -> int:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(work / "checkpoint.safetensors"), "pt") as f:
            return int((f.metadata() or {}).get("step", -1))
    except (OSError, SafetensorError, RuntimeError):  # not there yet, or being replaced
        return -1


def _wait_for(cond, p: subprocess.Popen, timeout: float = 180) -> None:
    t0 = time.time()
    while not cond():
        if p.poll() is not None:
            pytest.fail(f"the run ended before the signal: {p.communicate()[0][-2000:]}")
        if time.time() - t0 > timeout:
            p.kill()
            pytest.fail("timed out waiting for the run to get there")
        time.sleep(0.05)


def _temps(*dirs: Path) -> list[str]:
    pat = re.compile(r"\..+\.(tmp|old)-.*")
    return [f"{d}/{q.name}" for d in dirs if d.is_dir() for q in d.iterdir() if pat.fullmatch(q.name)]


def _plant_stale(d: Path, name: str, is_dir: bool) -> Path:
    """A temp sibling as a killed writer leaves it (its pid is dead)."""
    from avatar3d.io import atomic

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    p = d / f".{name}.tmp-{dead.pid}-{atomic._HOST}-0badc0de"
    if is_dir:
        (p / "images").mkdir(parents=True)
    else:
        p.write_bytes(b"half-written")
    return p


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 1.6 s, 128 px synthetic talking video, its capture and a tiny fit config."""
    from avatar3d.capture import run_capture
    from avatar3d.config import CaptureConfig
    from avatar3d.synthetic import make_talking_video

    d = tmp_path_factory.mktemp("crash")
    make_talking_video(d / "tiny.mp4", seconds=1.6, fps=25, size=128, seed=0, n_gaussians=6000)
    run_capture(d / "tiny.mp4", d / "cap", CaptureConfig(max_size=128), progress=False)
    (d / "tiny.yaml").write_text(TINY)
    return d


def test_fit_survives_kill_9_and_sigterm_and_resumes(clip, tmp_path):
    work, out = tmp_path / "work", tmp_path / "out" / "avatar"
    out.parent.mkdir()
    cmd = [
        "fit",
        str(clip / "cap"),
        "-o",
        str(out),
        "--config",
        str(clip / "tiny.yaml"),
        "--steps",
        str(STEPS),
        "--workdir",
        str(work),
    ]

    p = _start(*cmd)  # 1. kill -9 once the first in-loop checkpoint is there
    _wait_for(lambda: _ckpt_step(work) >= 5, p)
    p.send_signal(signal.SIGKILL)
    rc, _ = _finish(p)
    k1 = _ckpt_step(work)
    assert rc == -signal.SIGKILL and 5 <= k1 < STEPS
    planted = [_plant_stale(work, "checkpoint.safetensors", False), _plant_stale(out.parent, "avatar", True)]

    p = _start(*cmd)  # 2. the same command again, SIGTERM after a later checkpoint
    _wait_for(lambda: _ckpt_step(work) > k1, p)
    p.send_signal(signal.SIGTERM)
    rc, log = _finish(p)
    assert rc == 143, log
    assert log.strip().splitlines()[-1] == "avatar3d: terminated" and "Traceback" not in log
    assert f"resuming from step {k1} " in log
    assert not planted[0].exists() and _temps(work) == []  # cleaned by this run; its own temp removed on exit
    k2 = _ckpt_step(work)
    assert k1 < k2 < STEPS

    rc, log = _finish(_start(*cmd))  # 3. completes from the last checkpoint
    assert rc == 0, log
    k3 = int(re.search(r"resuming from step (\d+) ", log).group(1))
    assert k3 >= k2 > 0 and f"wrote avatar {out}" in log
    assert _temps(work, out.parent) == [] and not planted[1].exists()
    from avatar3d import Avatar

    av = Avatar.load(out)
    assert av.meta.history[-1]["step"] == STEPS

    # 4. a truncated checkpoint: set aside with a warning, the previous one is used; no traceback
    ck = work / "checkpoint.safetensors"
    ck.write_bytes(ck.read_bytes()[:1000])
    rc, log = _finish(_start(*cmd, "--overwrite"))  # (the avatar of step 3 exists now)
    assert rc == 0 and "Traceback" not in log and "unreadable" in log, log
    assert (work / "checkpoint.safetensors.corrupt").is_file()
    assert re.search(r"resuming from step (\d+) \(.*checkpoint\.prev\.safetensors\)", log)

    # 5. the workdir, reused for another clip, is refused before any work
    other = tmp_path / "other.mp4"
    shutil.copyfile(clip / "tiny.mp4", other)
    with open(other, "ab") as f:
        f.write(b"\0" * 16)
    t0 = time.time()
    rc, log = _finish(
        _start(
            "fit",
            str(other),
            "-o",
            str(tmp_path / "b"),
            "--config",
            str(clip / "tiny.yaml"),
            "--workdir",
            str(work),
        )
    )
    assert rc == 2 and time.time() - t0 < 60, log
    line = log.strip().splitlines()[-1]
    assert (
        line.startswith("avatar3d: error: --workdir")
        and "other.mp4" in line
        and str((clip / "cap").resolve()) in line
    )
    assert not (tmp_path / "b").exists()


def test_capture_killed_then_rerun_completes_without_leftovers(clip, tmp_path):
    out = tmp_path / "cap"
    cmd = ["capture", str(clip / "tiny.mp4"), "-o", str(out), "--max-size", "128"]
    started = lambda: any(
        (q / "images").is_dir() and any((q / "images").iterdir()) for q in tmp_path.glob(".cap.tmp-*")
    )
    first_pass_done = lambda: any((q / "_pass1.json").is_file() for q in tmp_path.glob(".cap.tmp-*"))

    p = _start(*cmd)  # SIGTERM: the temp directory is removed on the way out
    _wait_for(started, p)
    p.send_signal(signal.SIGTERM)
    rc, log = _finish(p)
    assert rc == 143 and log.strip().splitlines()[-1] == "avatar3d: terminated", log
    assert _temps(tmp_path) == [] and not out.exists()

    p = _start(*cmd)  # kill -9 after the streaming pass: its temp directory stays behind
    _wait_for(first_pass_done, p)
    p.send_signal(signal.SIGKILL)
    _finish(p)
    assert len(_temps(tmp_path)) == 1
    early = _plant_stale(tmp_path, "cap", True)  # and one killed earlier, before its first pass ended

    rc, log = _finish(_start(*cmd))  # the same command: goes on after the first pass, cleans the rest
    assert rc == 0 and "resuming a killed capture after its first pass (40 frames)" in log, log
    assert _temps(tmp_path) == [] and not early.exists()
    assert sorted(q.name for q in out.iterdir()) == sorted(q.name for q in (clip / "cap").iterdir())
    from avatar3d.io.captureset import CaptureSet

    a, b = CaptureSet.load(out), CaptureSet.load(clip / "cap")
    assert a.n_frames == b.n_frames == 40
    for k in ("rotation", "translation", "landmarks2d"):
        assert np.allclose(getattr(a, k), getattr(b, k), atol=1e-4), k

    # expression: PCA coefficients can turn within the principal subspace when the data differ in the
    # last bits (threads); what they describe, the landmark motion, must agree to 0.1 mm
    def motion(c):
        return np.einsum("te,eld->tld", c.expression, np.asarray(c.expression_basis))

    assert np.allclose(motion(a), motion(b), atol=1e-4)


def test_a_resumed_fit_follows_the_uninterrupted_trajectory_exactly(clip, tmp_path):
    """Killed (an exception from the progress bar) after step 9, resumed from the step-8 checkpoint:
    the same model, bit for bit, as a fit that was never interrupted (CPU)."""
    import torch

    from avatar3d.config import load_config
    from avatar3d.io.captureset import CaptureSet

    cs = CaptureSet.load(clip / "cap")
    cfg = load_config(str(clip / "tiny.yaml"))
    cfg.train.steps, cfg.train.checkpoint_every, cfg.train.densify_every = 12, 4, 3
    # bit for bit on one thread: with several, torch's parallel reductions may split work differently
    # between runs (the resumed trajectory then agrees only to rounding)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _straight_and_resumed(cs, cfg, tmp_path)
    finally:
        torch.set_num_threads(threads)


def _straight_and_resumed(cs, cfg, tmp_path):
    import torch

    from avatar3d.train.trainer import train

    straight = train(cs, cfg, tmp_path / "a", log=lambda s: None).model.state_dict()

    def dies_at_9(it, desc):
        if desc != "training":
            return it

        def gen():
            for i, x in enumerate(it):
                if i == 9:
                    raise KeyboardInterrupt
                yield x

        return gen()

    with pytest.raises(KeyboardInterrupt):
        train(cs, cfg, tmp_path / "b", progress=dies_at_9, log=lambda s: None)
    said = []
    resumed = train(cs, cfg, tmp_path / "b", log=said.append).model.state_dict()
    assert any("resuming from step 8 " in s for s in said)
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight), [
        k for k in straight if not torch.equal(straight[k], resumed[k])
    ]
