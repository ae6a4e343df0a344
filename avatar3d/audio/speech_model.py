"""Hook for a user-supplied local speech model (HuBERT / wav2vec2 / WavLM, TorchScript or .pt2).

Nothing is ever downloaded: Hugging Face checkpoints are loaded with ``local_files_only=True``.
The extractor returns features aligned like :func:`avatar3d.audio.features.frame_features`:
``(n_frames, window, D)`` where frame ``k`` gets ``window`` samples of the model's feature sequence,
one model step apart, centred exactly on ``t_k = k / fps`` (linear interpolation between model
steps, edge-clamped).

Step timing: a convolutional front end with total stride ``hop`` and receptive field ``rf`` (both
in input samples, at 16 kHz) gives step ``j`` the input samples ``[j * hop, j * hop + rf)``, i.e. a
centre at ``(j * hop + (rf - 1) / 2) / SAMPLE_RATE`` s. For Hugging Face models both come from the
config (``conv_kernel``, ``conv_stride``; 320 / 400 for HuBERT and wav2vec2). A TorchScript module
may define ``hop_length``, ``receptive_field`` and ``sample_rate`` attributes; otherwise 320, 400
and SAMPLE_RATE are assumed (override in :meth:`SpeechFeatureExtractor.from_path`). TorchScript
contract: input ``(1, T)`` float32 waveform, output ``(1, S, D)`` or ``(S, D)`` (or a tuple/list
whose first item is that, or a dict with ``"last_hidden_state"``).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avatar3d.audio.features import _check_frames, load_audio
from avatar3d.core.constants import SAMPLE_RATE
from avatar3d.errors import Avatar3DError, FormatError

DEFAULT_HOP = 320  # input samples per output step (HuBERT / wav2vec2)
DEFAULT_RECEPTIVE_FIELD = 400  # input samples seen by one output step (HuBERT / wav2vec2)

__all__ = ["SpeechFeatureExtractor", "cached_extractor"]

_CACHE: dict[tuple, SpeechFeatureExtractor] = {}


def _conv_geometry(kernels: list[int], strides: list[int]) -> tuple[int, int]:
    """(total stride, receptive field) of a stack of unpadded 1-D convolutions."""
    hop, rf = 1, 1
    for k, s in zip(kernels, strides):
        rf += (int(k) - 1) * hop
        hop *= int(s)
    return hop, rf


class SpeechFeatureExtractor:
    """Runs a local speech model on 16 kHz mono audio and aligns its output to video frames."""

    def __init__(
        self,
        model: Any,
        *,
        kind: str,
        sample_rate: int = SAMPLE_RATE,
        hop: int = DEFAULT_HOP,
        receptive_field: int = DEFAULT_RECEPTIVE_FIELD,
        normalize_input: bool = False,
        layer: int | None = None,
        device: str = "cpu",
        source: str = "",
    ) -> None:
        if kind not in ("hf", "torchscript", "export"):
            raise ValueError(f"kind must be 'hf', 'torchscript' or 'export', got {kind!r}")
        if hop < 1 or receptive_field < 1:
            raise ValueError(f"hop and receptive_field must be positive, got {hop}, {receptive_field}")
        self.model, self.kind, self.sample_rate = model, kind, int(sample_rate)
        self.hop, self.receptive_field = int(hop), int(receptive_field)
        self.normalize_input, self.layer, self.device, self.source = normalize_input, layer, device, source

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        *,
        device: str = "cpu",
        layer: int | None = None,
        hop: int | None = None,
        receptive_field: int | None = None,
        sample_rate: int | None = None,
    ) -> SpeechFeatureExtractor:
        """Load a Hugging Face model directory (needs ``transformers``), a TorchScript file, or a
        ``torch.export`` program saved as ``.pt2`` (exported with a dynamic time dimension).

        ``layer`` picks a hidden state of a Hugging Face model (default: the last). Raises
        FormatError when the path is missing or not a model, Avatar3DError when ``transformers``
        is needed but not installed.
        """
        p = Path(path)
        if not p.exists():
            raise FormatError(f"{p}: speech model not found")
        if p.is_dir():
            if not (p / "config.json").is_file():
                raise FormatError(f"{p}: not a Hugging Face model directory (no config.json)")
            return cls._from_hf(p, device=device, layer=layer, hop=hop, rf=receptive_field)
        what = "torch.export program (.pt2)" if p.suffix == ".pt2" else "TorchScript speech model"
        try:
            with warnings.catch_warnings():  # torch 2.13 marks torch.jit.load deprecated; it is our format
                warnings.simplefilter("ignore", DeprecationWarning)
                if p.suffix == ".pt2":
                    model = torch.export.load(str(p)).module().to(device)
                else:
                    model = torch.jit.load(str(p), map_location=device).eval()
        except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, ValueError, zipfile errors...
            raise FormatError(f"{p}: not a {what} ({' '.join(str(e).split())[:200]})") from None

        def attr(name: str, override: int | None, default: int) -> int:
            if override is not None:
                return int(override)
            value = getattr(model, name, None)
            return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default

        return cls(
            model,
            kind="export" if p.suffix == ".pt2" else "torchscript",
            sample_rate=attr("sample_rate", sample_rate, SAMPLE_RATE),
            hop=attr("hop_length", hop, DEFAULT_HOP),
            receptive_field=attr("receptive_field", receptive_field, DEFAULT_RECEPTIVE_FIELD),
            device=device,
            source=str(p),
        )

    @classmethod
    def _from_hf(
        cls, p: Path, *, device: str, layer: int | None, hop: int | None, rf: int | None
    ) -> SpeechFeatureExtractor:
        try:
            import transformers
        except ImportError:
            raise Avatar3DError(
                f"{p}: loading a Hugging Face speech model needs the 'transformers' package, which is not "
                "installed (pip install transformers)"
            ) from None
        try:
            config = transformers.AutoConfig.from_pretrained(str(p), local_files_only=True)
            model = transformers.AutoModel.from_pretrained(str(p), local_files_only=True)
        except Exception as e:  # noqa: BLE001 - OSError, ValueError, KeyError from transformers
            raise FormatError(
                f"{p}: cannot load the Hugging Face model ({' '.join(str(e).split())[:200]})"
            ) from None
        model.eval().to(device)
        kernels, strides = getattr(config, "conv_kernel", None), getattr(config, "conv_stride", None)
        g_hop, g_rf = (
            _conv_geometry(kernels, strides)
            if kernels and strides
            else (DEFAULT_HOP, DEFAULT_RECEPTIVE_FIELD)
        )
        normalize, sr = True, SAMPLE_RATE
        pre = p / "preprocessor_config.json"
        if pre.is_file():
            try:
                cfg = json.loads(pre.read_text())
                normalize = bool(cfg.get("do_normalize", True))
                sr = int(cfg.get("sampling_rate", SAMPLE_RATE))
            except (OSError, ValueError):
                pass
        return cls(
            model,
            kind="hf",
            sample_rate=sr,
            hop=hop or g_hop,
            receptive_field=rf or g_rf,
            normalize_input=normalize,
            layer=layer,
            device=device,
            source=str(p),
        )

    # -- inference -------------------------------------------------------------------------------

    def _forward(self, wave: np.ndarray) -> np.ndarray:
        """Model on (T,) float32 at the model rate -> (S, D) float32."""
        x = torch.from_numpy(np.ascontiguousarray(wave, np.float32))[None].to(self.device)  # (1, T)
        if self.normalize_input:
            x = (x - x.mean()) / torch.sqrt(x.var() + 1e-7)
        with torch.inference_mode():
            try:
                if self.kind == "hf":
                    out = self.model(x, output_hidden_states=self.layer is not None)
                    y = out.hidden_states[self.layer] if self.layer is not None else out.last_hidden_state
                else:
                    y = self.model(x)
            except Exception as e:  # noqa: BLE001 - surface model failures as one line
                raise FormatError(
                    f"{self.source}: speech model failed ({' '.join(str(e).split())[:200]})"
                ) from None
        if isinstance(y, dict):
            y = y.get("last_hidden_state", next(iter(y.values())))
        if isinstance(y, (tuple, list)):
            y = y[0]
        if not isinstance(y, torch.Tensor) or y.ndim not in (2, 3) or (y.ndim == 3 and y.shape[0] != 1):
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise FormatError(f"{self.source}: speech model output must be (1, S, D) or (S, D), got {shape}")
        y = y[0] if y.ndim == 3 else y
        return y.detach().float().cpu().numpy()

    def step_times(self, n_steps: int, n_samples: int) -> np.ndarray:
        """Centre time in seconds of each of the ``n_steps`` output steps for an input of ``n_samples``."""
        expected = (n_samples - self.receptive_field) // self.hop + 1
        if n_steps == expected:
            first = (self.receptive_field - 1) / 2.0
        else:  # padded model: assume the steps are spread symmetrically over the input
            first = (n_samples - 1 - (n_steps - 1) * self.hop) / 2.0
        return (first + np.arange(n_steps) * self.hop) / self.sample_rate

    def sequence(self, wave: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray, float]:
        """Raw model features (S, D) float32, their centre times (S,) in seconds, and the input duration."""
        w = load_audio((wave, sr), sr=self.sample_rate)  # (T,)
        n = w.shape[0]
        if n < self.receptive_field:
            w = np.pad(w, (0, self.receptive_field - n))
        feats = self._forward(w)
        if feats.shape[0] == 0:
            raise FormatError(f"{self.source}: speech model returned no steps for {n} samples")
        expected = (w.shape[0] - self.receptive_field) // self.hop + 1
        if abs(feats.shape[0] - expected) > 1 and abs(feats.shape[0] - w.shape[0] / self.hop) > 1:
            warnings.warn(
                f"{self.source}: model gave {feats.shape[0]} steps for {w.shape[0]} samples, expected about "
                f"{expected} at hop {self.hop}; alignment may be off",
                RuntimeWarning,
                stacklevel=2,
            )
        return feats, self.step_times(feats.shape[0], w.shape[0]), n / self.sample_rate

    def __call__(
        self, wave: np.ndarray, sr: int, fps: float, n_frames: int | None = None, window: int = 1
    ) -> np.ndarray:
        """Frame-aligned features (n_frames, window, D) float32.

        Frame k gets ``window`` samples of the feature sequence, ``hop / sample_rate`` apart
        (20 ms for HuBERT), centred on ``k / fps``; ``n_frames`` defaults to ``floor(duration * fps)``.
        """
        _check_frames(fps, n_frames, window)
        return self.frame_windows(self.sequence(wave, sr), fps, n_frames, window)

    def frame_windows(
        self,
        seq: tuple[np.ndarray, np.ndarray, float],
        fps: float,
        n_frames: int | None = None,
        window: int = 1,
        frames: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Rows of :meth:`__call__` from a :meth:`sequence` result ``seq``: all n_frames, or only
        ``frames=(a, b)`` -> (b - a, window, D), so a long clip's model pass is run once and its
        frames are windowed chunk by chunk."""
        _check_frames(fps, n_frames, window)
        feats, times, duration = seq  # (S, D), (S,), seconds
        if n_frames is None:
            n_frames = int(np.floor(duration * fps + 1e-6))
        a, b = (0, int(n_frames)) if frames is None else (int(frames[0]), int(frames[1]))
        step_s = self.hop / self.sample_rate
        offsets = (np.arange(int(window)) - (window - 1) / 2.0) * step_s  # (window,)
        t = np.arange(a, b)[:, None] / float(fps) + offsets[None, :]  # (b - a, window) seconds
        u = np.clip((t - times[0]) / step_s, 0.0, feats.shape[0] - 1)  # fractional step index
        i0 = np.floor(u).astype(np.int64)
        i1 = np.minimum(i0 + 1, feats.shape[0] - 1)
        w = (u - i0)[..., None].astype(np.float32)
        return ((1.0 - w) * feats[i0] + w * feats[i1]).astype(np.float32)  # (b - a, window, D)


def cached_extractor(path: str | os.PathLike[str], device: str = "cpu") -> SpeechFeatureExtractor:
    """:meth:`SpeechFeatureExtractor.from_path` with defaults, loaded once per process per
    (resolved path, modification time, device); raises like ``from_path``."""
    p = Path(path).expanduser()
    try:
        key = (str(p.resolve()), p.stat().st_mtime_ns, device)
    except OSError:
        raise FormatError(f"{p}: speech model not found") from None
    ext = _CACHE.get(key)
    if ext is None:
        ext = SpeechFeatureExtractor.from_path(p, device=device)
        _CACHE.clear()  # one model at a time: a HuBERT is a few hundred MB
        _CACHE[key] = ext
    return ext
