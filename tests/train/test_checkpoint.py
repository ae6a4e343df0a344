"""avatar3d.train.checkpoint: round trip of model, optimiser and RNG state; corrupt and stale files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar3d.errors import FormatError
from avatar3d.train.checkpoint import NAME, PREV, load_checkpoint, save_checkpoint


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam([{"params": model.parameters(), "lr": 1e-2, "name": "net"}])
    return model, opt, np.random.default_rng(seed), torch.Generator().manual_seed(seed + 1)


def _steps(model, opt, rng, gen, n: int) -> list[float]:
    losses = []
    for _ in range(n):
        x = torch.as_tensor(rng.normal(size=(16, 4)), dtype=torch.float32) + torch.randn(16, 4, generator=gen)
        x = x + 0.1 * torch.randn(16, 4)  # the global torch RNG
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


IDENTITY = {"train.steps": 10, "model.hidden": 8, "capture": "abc"}


def test_resume_continues_the_same_trajectory(tmp_path):
    model, opt, rng, gen = _setup()
    straight = _steps(model, opt, rng, gen, 10)

    model, opt, rng, gen = _setup()
    _steps(model, opt, rng, gen, 4)
    acc = torch.arange(5.0)
    save_checkpoint(
        tmp_path / NAME,
        model,
        4,
        identity=IDENTITY,
        optimizers={"net": opt},
        rng=rng,
        generators={"aug": gen},
        grad_acc=acc,
        scalars={"history": [{"step": 4}], "running": 0.5},
    )
    _steps(model, opt, rng, gen, 3)  # the killed run went on a little

    model, opt, rng, gen = _setup(seed=7)  # a fresh process: other weights and RNG states
    res = load_checkpoint(tmp_path / NAME, model, identity=IDENTITY)
    assert res is not None and res.step == 4
    res.restore({"net": opt}, rng, {"aug": gen})
    assert torch.equal(res.grad_acc, acc) and res.scalars == {"history": [{"step": 4}], "running": 0.5}
    assert _steps(model, opt, rng, gen, 6) == straight[4:]


def test_the_previous_checkpoint_is_kept_and_used_when_the_newest_is_corrupt(tmp_path):
    model, opt, rng, _ = _setup()
    save_checkpoint(tmp_path / NAME, model, 3, identity=IDENTITY, optimizers={"net": opt}, rng=rng)
    save_checkpoint(tmp_path / NAME, model, 6, identity=IDENTITY, optimizers={"net": opt}, rng=rng)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([NAME, PREV])
    data = (tmp_path / NAME).read_bytes()
    (tmp_path / NAME).write_bytes(data[: len(data) // 2])  # killed mid-write by something else
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(RuntimeWarning, match="unreadable"):
        res = load_checkpoint(tmp_path / NAME, model, identity=IDENTITY)
    assert res is not None and res.step == 3
    assert (tmp_path / f"{NAME}.corrupt").is_file() and not (tmp_path / NAME).exists()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_garbage_everywhere_starts_from_scratch_with_the_model_untouched(tmp_path):
    model, *_ = _setup()
    (tmp_path / NAME).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    (tmp_path / PREV).write_bytes(b"")
    (tmp_path / f"{NAME}.tmp").write_bytes(b"left by an older version")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(RuntimeWarning):
        assert load_checkpoint(tmp_path / NAME, model, identity=IDENTITY) is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{PREV}.corrupt", f"{NAME}.corrupt"]
    assert load_checkpoint(tmp_path / NAME, model, identity=IDENTITY) is None  # no warning twice


def test_a_checkpoint_of_another_fit_is_set_aside_and_says_what_differs(tmp_path):
    model, opt, rng, _ = _setup()
    save_checkpoint(tmp_path / NAME, model, 5, identity=IDENTITY, optimizers={"net": opt}, rng=rng)
    said = []
    other = {**IDENTITY, "train.steps": 20}
    assert load_checkpoint(tmp_path / NAME, model, identity=other, log=said.append) is None
    assert len(said) == 1 and "train.steps 10 there, 20 now" in said[0] and "starting over" in said[0]
    assert (tmp_path / f"{NAME}.stale").is_file() and not (tmp_path / NAME).exists()

    save_checkpoint(tmp_path / NAME, model, 5, identity=IDENTITY)
    said.clear()
    assert (
        load_checkpoint(tmp_path / NAME, model, identity={**IDENTITY, "capture": "xyz"}, log=said.append)
        is None
    )
    assert "another capture" in said[0]


def test_a_checkpoint_of_the_older_format_is_not_resumed(tmp_path):
    from safetensors.torch import save_file

    model, *_ = _setup()
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(tmp_path / NAME),
        metadata={"step": "500", "n": "0"},
    )
    said = []
    assert load_checkpoint(tmp_path / NAME, model, identity=IDENTITY, log=said.append) is None
    assert "older version" in said[0]


def test_optimiser_state_that_does_not_fit_is_set_aside_with_one_line(tmp_path):
    model, opt, rng, _ = _setup()
    _steps(model, opt, rng, torch.Generator(), 1)
    save_checkpoint(tmp_path / NAME, model, 1, identity=IDENTITY, optimizers={"net": opt}, rng=rng)
    res = load_checkpoint(tmp_path / NAME, model, identity=IDENTITY)
    two_groups = torch.optim.Adam([{"params": [model[0].weight]}, {"params": [model[0].bias]}])
    with pytest.raises(FormatError, match="does not fit this model.*run again") as e:
        res.restore({"net": two_groups}, rng, {})
    assert "\n" not in str(e.value) and (tmp_path / f"{NAME}.corrupt").is_file()
