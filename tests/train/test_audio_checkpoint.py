"""The audio pre-training's own checkpoints: a pre-training killed part-way continues on the same
trajectory (bit for bit on CPU), and a checkpoint of other settings or another fit is set aside."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError, safe_open

from avatar3d.capture import run_capture
from avatar3d.config import AvatarConfig, CaptureConfig, ModelConfig, load_config
from avatar3d.io.captureset import CaptureSet
from avatar3d.models.gaussian_avatar import GaussianAvatar
from avatar3d.synthetic import make_talking_video
from avatar3d.train.audio_aug import audio_branch, pretrain_audio
from avatar3d.train.checkpoint import NAME, PREV, StageCheckpoint, prev_path
from avatar3d.train.trainer import train

from .test_audio_aug import _toy_data

STEPS = 24
ARGS = {"steps": STEPS, "batch": 16, "lr": 2e-3, "seed": 3, "augment": True}
IDENTITY = {"train.steps": 100, "capture": "abc"}


class Killed(Exception):
    """Stands in for a kill: raised from the progress bar part-way through the stage."""


def _model() -> GaussianAvatar:
    torch.manual_seed(0)  # build_model is deterministic in a fit: the same weights in every run
    return GaussianAvatar(ModelConfig(), 10)


def _dies_at(k: int):
    def progress(it, desc):
        assert desc == "audio pre-training"
        for i, x in enumerate(it):
            if i == k:
                raise Killed
            yield x

    return progress


def _ck(tmp_path, said=None, every: int = 5, **identity) -> StageCheckpoint:
    return StageCheckpoint(
        tmp_path / "checkpoint.audio.safetensors",
        {**IDENTITY, **identity},
        every=every,
        log=None if said is None else said.append,
    )


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in audio_branch(model).state_dict().items()}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    return _toy_data(T=120)


@pytest.fixture(scope="module")
def straight(data):
    """The uninterrupted stage without checkpoints: (branch weights, stats, global torch RNG after)."""
    model = _model()
    stats = pretrain_audio(model, data, **ARGS)
    return _state(model), stats, torch.get_rng_state()


def _same(a: dict, b: dict) -> list[str]:
    return [k for k in a if not torch.equal(a[k], b[k])]


def test_checkpoints_do_not_change_the_trajectory(data, straight, tmp_path):
    model = _model()
    stats = pretrain_audio(model, data, **ARGS, checkpoint=_ck(tmp_path))
    assert not _same(straight[0], _state(model)) and stats == straight[1]
    assert (tmp_path / "checkpoint.audio.safetensors").is_file()
    assert prev_path(tmp_path / "checkpoint.audio.safetensors").is_file()


@pytest.mark.parametrize("kill_at", [3, 13, STEPS - 1])
def test_a_killed_pretraining_resumes_on_the_same_trajectory(data, straight, tmp_path, kill_at):
    with pytest.raises(Killed):
        pretrain_audio(_model(), data, **ARGS, progress=_dies_at(kill_at), checkpoint=_ck(tmp_path))
    model = _model()  # a fresh process: the model as built (the fit seeds the global RNG first)
    step = 5 * (kill_at // 5)  # the last checkpoint before the kill
    if step:
        torch.manual_seed(1234)  # the checkpoint's global RNG state must replace whatever is there
    said = []
    stats = pretrain_audio(model, data, **ARGS, checkpoint=_ck(tmp_path, said))
    if step:
        assert said == [
            f"resuming the audio pre-training from step {step} ({tmp_path}/checkpoint.audio.safetensors)"
        ]
    else:
        assert said == []
    assert not _same(straight[0], _state(model)), _same(straight[0], _state(model))
    assert stats == straight[1]
    assert torch.equal(torch.get_rng_state(), straight[2])  # the training loop's dropout continues alike


def test_a_finished_stage_is_not_run_again(data, straight, tmp_path):
    pretrain_audio(_model(), data, **ARGS, checkpoint=_ck(tmp_path))
    model, said = _model(), []

    def never(it, desc):
        assert list(it) == []
        return []

    assert pretrain_audio(model, data, **ARGS, progress=never, checkpoint=_ck(tmp_path, said)) == straight[1]
    assert said and f"from step {STEPS} " in said[0]
    assert not _same(straight[0], _state(model))


@pytest.mark.parametrize(
    "change",
    [{"steps": STEPS + 6}, {"seed": 4}, {"identity": {"capture": "xyz"}}],
    ids=["steps", "seed", "capture"],
)
def test_a_checkpoint_of_other_settings_or_another_fit_is_set_aside(data, straight, tmp_path, change):
    with pytest.raises(Killed):
        pretrain_audio(_model(), data, **ARGS, progress=_dies_at(12), checkpoint=_ck(tmp_path))
    args = {**ARGS, **{k: v for k, v in change.items() if k != "identity"}}
    said, model = [], _model()
    pretrain_audio(model, data, **args, checkpoint=_ck(tmp_path, said, **change.get("identity", {})))
    assert len(said) == 1 and "starting over" in said[0]
    assert (tmp_path / "checkpoint.audio.safetensors.stale").is_file()
    if change == {"seed": 4}:
        assert "stage.seed 3 there, 4 now" in said[0]
    if "identity" in change:
        assert "another capture" in said[0]


def test_a_truncated_checkpoint_falls_back_to_the_previous_one(data, straight, tmp_path):
    with pytest.raises(Killed):
        pretrain_audio(_model(), data, **ARGS, progress=_dies_at(12), checkpoint=_ck(tmp_path))
    path = tmp_path / "checkpoint.audio.safetensors"
    path.write_bytes(path.read_bytes()[:1000])  # the step-10 one, damaged on disk
    said, model = [], _model()
    with pytest.warns(RuntimeWarning, match="unreadable"):
        stats = pretrain_audio(model, data, **ARGS, checkpoint=_ck(tmp_path, said))
    assert "from step 5 " in said[0]
    assert not _same(straight[0], _state(model)) and stats == straight[1]
    assert (tmp_path / "checkpoint.audio.safetensors.corrupt").is_file()


def test_the_fits_checkpoint_files_are_apart(tmp_path):

    ck = StageCheckpoint.beside(tmp_path / NAME, "audio", IDENTITY, AvatarConfig().train)
    assert ck.path.name == "checkpoint.audio.safetensors" and ck.identity["stage"] == "audio"
    assert prev_path(ck.path).name == "checkpoint.audio.prev.safetensors"
    assert prev_path(tmp_path / NAME).name == PREV


# ------------------------------------------------------------------ through a fit (slow: a capture)

TINY = """preset: fast
capture: {max_size: 128}
model: {n_head: 1500, n_mouth: 150, n_torso: 300, max_gaussians: 3000}
train: {resolution: 96, audio_pretrain_steps: 100, densify_every: 10, checkpoint_every: 5, checkpoint_seconds: 0}
"""


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 1.6 s, 128 px synthetic talking video's capture and a tiny fit config (100 pre-training steps)."""

    d = tmp_path_factory.mktemp("audio_ck")
    make_talking_video(d / "tiny.mp4", seconds=1.6, fps=25, size=128, seed=0, n_gaussians=6000)
    run_capture(d / "tiny.mp4", d / "cap", CaptureConfig(max_size=128), progress=False)
    (d / "tiny.yaml").write_text(TINY)
    return d


@pytest.mark.slow
def test_a_fit_killed_in_its_audio_pretraining_ends_as_an_uninterrupted_one(clip, tmp_path):

    cs = CaptureSet.load(clip / "cap")
    cfg = load_config(str(clip / "tiny.yaml"))
    cfg.train.steps = 8
    straight = train(cs, cfg, tmp_path / "a", log=lambda s: None)

    def dies_at_63(it, desc):
        return _dies_at(63)(it, desc) if desc == "audio pre-training" else it

    with pytest.raises(Killed):
        train(cs, cfg, tmp_path / "b", progress=dies_at_63, log=lambda s: None)
    assert not (tmp_path / "b" / "checkpoint.safetensors").exists()
    said = []
    resumed = train(cs, cfg, tmp_path / "b", log=said.append)
    assert any("resuming the audio pre-training from step 60 " in s for s in said), said
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    assert straight.audio["loss"] == resumed.audio["loss"]
    assert straight.heldout == resumed.heldout


@pytest.mark.slow
def test_kill_9_in_the_audio_pretraining_of_a_cli_fit_resumes_there(clip, tmp_path):

    work, out = tmp_path / "work", tmp_path / "avatar"
    cmd = [sys.executable, "-m", "avatar3d.cli", "fit", str(clip / "cap"), "-o", str(out)]
    cmd += ["--config", str(clip / "tiny.yaml"), "--steps", "10", "--workdir", str(work)]
    root = str(Path(__file__).resolve().parents[2])
    env = dict(
        os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])
    )

    def audio_step() -> int:
        """The step a rerun resumes from: the checkpoint's, or its previous one's while a write has
        moved the old file aside and not yet put the new one in place."""
        for name in ("checkpoint.audio.safetensors", "checkpoint.audio.prev.safetensors"):
            try:
                with safe_open(str(work / name), "pt") as f:
                    return int((f.metadata() or {}).get("step", -1))
            except (OSError, SafetensorError, RuntimeError):  # missing: safe_open raises RuntimeError
                continue
        return -1

    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    t0 = time.time()
    while audio_step() < 10 and p.poll() is None and time.time() - t0 < 240:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    k = audio_step()
    assert p.returncode == -signal.SIGKILL and 10 <= k < 100, k
    assert not (work / "checkpoint.safetensors").exists()  # killed before the training loop's first
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    log = r.stdout + r.stderr
    assert f"resuming the audio pre-training from step {k} " in log, log
    assert "Traceback" not in log and (out / "avatar.json").is_file()
