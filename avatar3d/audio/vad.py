"""Voice activity from silero-vad's TorchScript model, loaded from inside its wheel (no download).

The model is causal and stateful: it scores consecutive 512-sample blocks (32 ms at 16 kHz), each
with the previous 64 samples as context, so scoring a signal block by block as it arrives gives
exactly the same probabilities as scoring it all at once. Block ``i`` covers samples
``[512 i, 512 (i + 1))`` and its probability is attributed to the block's centre,
``t = (i + 0.5) * 0.032 s``.

Importing ``silero_vad`` sets torch's global thread count to 1 as a side effect; :func:`_load_model`
restores the caller's setting, and :class:`Vad` runs its tiny per-block forward passes on one
thread (restoring the setting afterwards), so it neither slows down nor is slowed by training.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from importlib import resources
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch

from avatar3d.core.constants import SAMPLE_RATE

__all__ = ["BLOCK", "BLOCK_S", "Vad", "vad_version"]

BLOCK = 512  # samples per VAD block at SAMPLE_RATE
BLOCK_S = BLOCK / float(SAMPLE_RATE)  # seconds per block


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    if n != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n != 1:
            torch.set_num_threads(n)


@functools.lru_cache(maxsize=1)
def _model_path() -> str:
    with _one_thread():  # silero_vad's import calls torch.set_num_threads(1); keep the caller's
        import silero_vad  # noqa: F401  (imported for its packaged data)
    path = resources.files("silero_vad.data").joinpath("silero_vad.jit")
    return str(path)


def vad_version() -> str:
    """``silero-vad <version>`` of the installed wheel."""
    try:
        return f"silero-vad {version('silero-vad')}"
    except PackageNotFoundError:  # pragma: no cover - a source checkout of silero-vad
        return "silero-vad"


def _load_model():
    with _one_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load: the wheel ships TorchScript
        model = torch.jit.load(_model_path(), map_location="cpu")
    model.eval()
    return model


class Vad:
    """Streaming voice-activity scorer: feed 512-sample blocks of 16 kHz float audio in order.

    Each instance owns its model copy (the TorchScript module keeps the recurrent state), so
    several streams can run side by side.
    """

    def __init__(self) -> None:
        self._model = _load_model()
        self._model.reset_states()

    def blocks(self, x: np.ndarray) -> np.ndarray:
        """Probabilities (n,) float32 in [0, 1] of ``x`` (n * 512,) float32, continuing the stream."""
        n = x.shape[0] // BLOCK
        out = np.empty(n, np.float32)
        if n == 0:
            return out
        blocks = torch.from_numpy(np.ascontiguousarray(x[: n * BLOCK], np.float32)).view(n, 1, BLOCK)
        with _one_thread(), torch.inference_mode():
            for i in range(n):
                out[i] = float(self._model(blocks[i], SAMPLE_RATE))
        return out
