"""Training checkpoints: everything a killed fit needs to continue the same trajectory.

One safetensors file per checkpoint (``<workdir>/checkpoint.safetensors``) holds

- the model's state dict (``model.*``), the per-Gaussian densification accumulator (``acc.*``);
- the state of each Adam optimiser (``optim.<name>.<param index>.<key>`` tensors; their param groups
  and any non-tensor state go in the JSON below);
- the torch RNG states: the global one and each named ``torch.Generator`` (``rng.<name>``, uint8);
- the model's cached landmark binding and its call counter (``GaussianAvatar._bind_cache`` /
  ``_bind_calls``, ``aux.bind.*``), so that a resumed run refreshes it at the same steps;

and, in its string metadata, ``format`` / ``version`` / ``step`` / ``n`` (Gaussians) /
``fingerprint`` / ``fit`` (what the fit was: config and capture, see :func:`fit_identity`) and ``state``, a JSON
object with the numpy generator's ``bit_generator.state``, the optimisers' scalars and the caller's
scalars (loss average, history, elapsed seconds, ...).

Writes are atomic (:func:`avatar3d.io.atomic.atomic_file`), and the previous checkpoint is kept as
``<name>.prev.safetensors`` (``checkpoint.prev.safetensors``) until the next one is complete. On load, an unreadable file is set
aside as ``<name>.corrupt`` with a warning and the previous one is tried, then a fresh start; a
checkpoint of another fit (another config, step count, preset or capture, or an older format) is set
aside as ``<name>.stale`` and the fit starts over.

A stage inside the fit that runs before the training loop's first checkpoint (the audio
pre-training) checkpoints itself through a :class:`StageCheckpoint`: the same file format, checks and
atomic writes, in its own file beside the fit's (``checkpoint.<stage>.safetensors``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..errors import FormatError
from ..io.atomic import atomic_file

FORMAT = "avatar3d-train-checkpoint"
VERSION = 2
NAME = "checkpoint.safetensors"
PREV = "checkpoint.prev.safetensors"
AUDIO_NAME = "checkpoint.audio.safetensors"  # the audio pre-training's own checkpoint
# keys that change when or how often checkpoints are written, never what is trained
_NOT_FINGERPRINTED = ("checkpoint_every", "checkpoint_seconds")


def fit_identity(cfg, capture_digest: str | None) -> dict:
    """What a fit is, flat: its model and train config (all but the checkpoint intervals, so
    ``train.steps`` and every preset value count) and the digest of the capture it trains on."""
    d = cfg.to_dict()
    out = {f"model.{k}": v for k, v in d["model"].items()}
    out.update({f"train.{k}": v for k, v in d["train"].items() if k not in _NOT_FINGERPRINTED})
    out["capture"] = capture_digest
    return out


def prev_path(path: Path) -> Path:
    """Where the checkpoint before ``path`` is kept: ``x.safetensors`` -> ``x.prev.safetensors``."""
    path = Path(path)
    stem = path.name[: -len(".safetensors")] if path.name.endswith(".safetensors") else path.name
    return path.with_name(f"{stem}.prev.safetensors")


def fingerprint(identity: dict) -> str:
    """A short hash of a :func:`fit_identity`."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _what_differs(saved: str | None, identity: dict) -> str:
    try:
        old = json.loads(saved) if saved else None
    except ValueError:
        old = None
    if not isinstance(old, dict):
        return "another config or capture"
    keys = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
    if "capture" in keys:
        return "another capture"
    said = ", ".join(f"{k} {old.get(k)!r} there, {identity.get(k)!r} now" for k in keys[:3])
    return said + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


@dataclass
class Resumed:
    """What :func:`load_checkpoint` restored besides the model (loaded in place)."""

    step: int
    optimizers: dict[str, dict] = field(default_factory=dict)  # name -> optimiser state dict
    grad_acc: torch.Tensor | None = None  # (N,) accumulated position-gradient norms
    scalars: dict = field(default_factory=dict)  # the caller's scalars, as saved
    path: Path | None = None
    rng_state: dict = field(default_factory=dict)  # "numpy" -> bit_generator.state
    rng_tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # "torch" / generator name -> state

    def restore(
        self,
        optimizers: dict[str, torch.optim.Optimizer],
        rng: np.random.Generator,
        generators: dict[str, torch.Generator],
    ) -> None:
        """Load the saved optimiser and RNG states into freshly built ``optimizers``, ``rng`` and
        ``generators`` (the global torch RNG is restored as well). A state that does not fit them
        sets the checkpoint aside (``.corrupt``) and raises a one-line FormatError: the next run
        starts over."""
        try:
            for name, opt in optimizers.items():
                if name in self.optimizers:
                    opt.load_state_dict(self.optimizers[name])
            if "numpy" in self.rng_state:
                rng.bit_generator.state = self.rng_state["numpy"]
            if "torch" in self.rng_tensors:
                torch.set_rng_state(self.rng_tensors["torch"])
            for name, gen in generators.items():
                if name in self.rng_tensors:
                    gen.set_state(self.rng_tensors[name])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            where = self.path if self.path is not None else "checkpoint"
            if self.path is not None and self.path.is_file():
                _set_aside(self.path, "corrupt")
            raise FormatError(
                f"{where} does not fit this model ({str(e).splitlines()[0]}); set aside, run again to start over"
            ) from None


def _pack_optimizer(name: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for idx, st in sd["state"].items():
        scalars[str(idx)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{name}.{idx}.{k}"] = v.detach().contiguous().cpu()
            else:
                scalars[str(idx)][k] = v
    return tensors, {"param_groups": sd["param_groups"], "state": scalars}


def _unpack_optimizer(name: str, meta: dict, tensors: dict[str, torch.Tensor]) -> dict:
    state: dict[int, dict] = {}
    for idx, scalars in meta["state"].items():
        prefix = f"optim.{name}.{idx}."
        st = dict(scalars)
        st.update({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        state[int(idx)] = st
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    step: int,
    *,
    identity: dict | None = None,
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    rng: np.random.Generator | None = None,
    generators: dict[str, torch.Generator] | None = None,
    grad_acc: torch.Tensor | None = None,
    scalars: dict | None = None,
) -> None:
    """Write a checkpoint atomically to ``path``; the one it replaces becomes :func:`prev_path`.

    ``identity``: the :func:`fit_identity` (checked on load); ``generators``: named torch generators
    (the global torch RNG is always saved); ``scalars`` must be JSON-serialisable.
    """
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    state: dict = {"scalars": scalars or {}, "optimizers": {}, "rng": {}}
    for name, opt in (optimizers or {}).items():
        t, meta = _pack_optimizer(name, opt)
        tensors.update(t)
        state["optimizers"][name] = meta
    if rng is not None:
        state["rng"]["numpy"] = rng.bit_generator.state
    tensors["rng.torch"] = torch.get_rng_state()
    for name, gen in (generators or {}).items():
        tensors[f"rng.{name}"] = gen.get_state()
    if grad_acc is not None:
        tensors["acc.grad"] = grad_acc.detach().contiguous().cpu()
    cache = getattr(model, "_bind_cache", None)
    if cache is not None:
        tensors["aux.bind.index"], tensors["aux.bind.weight"] = (c.detach().contiguous().cpu() for c in cache)
    state["bind_calls"] = int(getattr(model, "_bind_calls", 0))
    n = int(getattr(model, "n", 0))
    meta = {
        "format": FORMAT,
        "version": str(VERSION),
        "step": str(int(step)),
        "n": str(n),
        "fingerprint": fingerprint(identity or {}),
        "fit": json.dumps(identity or {}),
        "state": json.dumps(state),
    }
    path = Path(path)
    with atomic_file(path, suffix="") as tmp:
        save_file(tensors, str(tmp), metadata=meta)
        if path.is_file():  # keep the last good one until the new one is in place
            os.replace(path, prev_path(path))


def _read(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(metadata, tensors) of a checkpoint file; raises ValueError when it is not a readable one."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise ValueError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    return meta, tensors


def _set_aside(path: Path, tag: str) -> Path:
    dest = path.with_name(f"{path.name}.{tag}")
    try:
        os.replace(path, dest)
    except OSError as e:
        raise FormatError(
            f"checkpoint {path} cannot be used nor set aside ({e.strerror}): remove it"
        ) from None
    return dest


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    *,
    identity: dict | None = None,
    log: Callable[[str], None] | None = None,
) -> Resumed | None:
    """Load the newest usable checkpoint at ``path`` (or its :func:`prev_path` sibling) into
    ``model`` (resized to its Gaussian count); None when there is none (start from scratch).

    A file that cannot be read is renamed ``<name>.corrupt`` (a RuntimeWarning says so) and the
    previous one is tried. With ``identity`` (:func:`fit_identity`), a checkpoint of another fit is renamed
    ``<name>.stale`` and None is returned (``log`` says why).
    """
    path = Path(path)
    # the fixed-name temp of versions before atomic checkpoints, left by a kill (fits of one workdir
    # cannot overlap: avatar3d.workdir.WorkdirLock)
    path.with_name(path.name + ".tmp").unlink(missing_ok=True)
    n0 = int(getattr(model, "n", 0))
    backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for cand in (path, prev_path(path)):
        if not cand.is_file():
            continue
        try:
            meta, tensors = _read(cand)
            if meta.get("format") != FORMAT or int(meta.get("version", 0)) != VERSION:
                raise LookupError("it was written by an older version of avatar3d")
            if identity is not None and meta.get("fingerprint") != fingerprint(identity):
                raise LookupError(f"it is from another fit ({_what_differs(meta.get('fit'), identity)})")
            return _restore(cand, meta, tensors, model)
        except ValueError as e:
            _put_back(model, n0, backup)
            dest = _set_aside(cand, "corrupt")
            warnings.warn(
                f"checkpoint {cand} is unreadable ({e}); set aside as {dest.name}",
                RuntimeWarning,
                stacklevel=2,
            )
        except LookupError as e:
            for other in (path, prev_path(path)):
                if other.is_file():
                    _set_aside(other, "stale")
            if log is not None:
                log(f"not resuming from {cand}: {e}; starting over (set aside as {cand.name}.stale)")
            return None
    return None


def _put_back(model, n: int, state: dict) -> None:
    """Undo a partial load: the model as it was before (its Gaussian count and weights)."""
    if hasattr(model, "resize_"):
        model.resize_(n)
    model.load_state_dict(state)


def _restore(path: Path, meta: dict, tensors: dict[str, torch.Tensor], model) -> Resumed:
    try:
        state = json.loads(meta["state"])
        msd = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        if hasattr(model, "resize_"):
            model.resize_(int(meta["n"]))
        model.load_state_dict(msd)
        opts = {name: _unpack_optimizer(name, m, tensors) for name, m in state["optimizers"].items()}
        if "aux.bind.index" in tensors:
            model._bind_cache = (tensors["aux.bind.index"], tensors["aux.bind.weight"])
        if "bind_calls" in state:
            model._bind_calls = int(state["bind_calls"])
        step = int(meta["step"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
        raise ValueError(f"incomplete or inconsistent contents: {str(e).splitlines()[0]}") from None
    rng_tensors = {k[len("rng.") :]: v for k, v in tensors.items() if k.startswith("rng.")}
    return Resumed(
        step, opts, tensors.get("acc.grad"), state.get("scalars", {}), path, state.get("rng", {}), rng_tensors
    )


@dataclass
class StageCheckpoint:
    """Checkpoints of a stage that runs inside a fit before its training loop (the audio
    pre-training): its own file ``path``, refused unless written for the same ``identity`` (the
    fit's, plus the stage's own settings: :meth:`for_run`); written every ``every`` steps of the
    stage, every ``seconds`` of wall time and at the stage's end (``every`` and ``seconds`` 0: at
    the end only)."""

    path: Path
    identity: dict
    every: int = 0
    seconds: float = 0.0
    log: Callable[[str], None] | None = None
    last: float = field(default_factory=time.monotonic)

    @classmethod
    def beside(
        cls,
        main: Path,
        stage: str,
        identity: dict | None,
        train_cfg,
        log: Callable[[str], None] | None = None,
    ) -> StageCheckpoint:
        """The checkpoint of ``stage`` next to the fit's ``main`` checkpoint, on the fit's intervals
        (``train.checkpoint_every`` counted in the stage's steps, ``train.checkpoint_seconds``)."""
        return cls(
            Path(main).with_name(f"checkpoint.{stage}.safetensors"),
            {**(identity or {}), "stage": stage},
            int(train_cfg.checkpoint_every),
            float(train_cfg.checkpoint_seconds),
            log,
        )

    def for_run(self, **settings) -> StageCheckpoint:
        """The same checkpoint, its identity extended by the stage's own settings (steps, batch, ...)."""
        return replace(self, identity={**self.identity, **{f"stage.{k}": v for k, v in settings.items()}})

    def load(self, module: torch.nn.Module) -> Resumed | None:
        """Load the stage's last checkpoint into ``module`` (None: start the stage afresh); one of
        another fit or stage is set aside (``.stale``), an unreadable one too (``.corrupt``)."""
        res = load_checkpoint(self.path, module, identity=self.identity, log=self.log)
        self.last = time.monotonic()
        return res

    def due(self, step: int, steps: int) -> bool:
        """Whether to write one after ``step`` of ``steps``."""
        by_steps = self.every > 0 and step % self.every == 0
        by_time = self.seconds > 0 and time.monotonic() - self.last >= self.seconds
        return by_steps or by_time or step == steps

    def save(self, step: int, module: torch.nn.Module, **state) -> None:
        """Write one (``state``: :func:`save_checkpoint`'s optimizers, rng, generators, scalars)."""
        save_checkpoint(self.path, module, step, identity=self.identity, **state)
        self.last = time.monotonic()
