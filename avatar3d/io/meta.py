""":class:`AvatarMeta`: the typed record of an avatar directory's ``avatar.json``.

Read with :func:`AvatarMeta.from_dict` after :func:`avatar3d.io.migrations.migrate` has brought an
older record up to :data:`FORMAT_VERSION`; written with :meth:`AvatarMeta.to_dict`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

FORMAT_NAME = "avatar3d-avatar"
FORMAT_VERSION = 2  # 2: audio_front_end, avatar_id and source_size always present (1: optional)


@dataclass
class FrontEnd:
    """The speech front end an avatar was trained with.

    name: 'mel', 'speech_model', 'visemes+mel' or 'visemes+speech_model'; viseme_channels: width
    of the viseme/VAD/loudness vector appended to every audio window step (0: none).
    """

    name: str = "mel"
    version: int = 1
    viseme_channels: int = 0


@dataclass
class AvatarMeta:
    """What an avatar records besides its weights: the capture camera, the audio layout, provenance.

    width, height: training image size; K (3, 3) intrinsics and rest_viewmat (4, 4) world->camera of
    the capture camera at that size; fps: video frame rate; n_mels: audio feature channels per
    window step (log-mel or speech-model features, plus the front end's viseme channels);
    audio_window: window steps per frame; source_size: (width, height) of the source clip, the
    capture camera's default render size; speech_model: the recorded speech model (its path, for
    information only, and the training feature mean/std) or None; avatar_id: 32-bit id carried by
    the watermark of its renders.
    """

    width: int
    height: int
    K: list[list[float]]
    rest_viewmat: list[list[float]]
    fps: float
    n_mels: int
    audio_window: int = 16
    front_end: FrontEnd = field(default_factory=FrontEnd)
    source_size: tuple[int, int] | None = None
    speech_model: dict[str, Any] | None = None
    avatar_id: int = 0
    source: str = ""
    n_gaussians: int = 0
    train_frames: int = 0
    test_frames: int = 0
    train_seconds: float = 0.0
    heldout: dict[str, Any] = field(default_factory=dict)
    history: Any = field(default_factory=list)
    audio_pretrain: Any = None

    @property
    def n_visemes(self) -> int:
        """Channels of the speech front end's vector within each window step (0: none)."""
        return int(self.front_end.viseme_channels)

    @property
    def intrinsics(self) -> np.ndarray:
        return np.asarray(self.K, np.float64)

    @property
    def viewmat(self) -> np.ndarray:
        return np.asarray(self.rest_viewmat, np.float64)

    def to_dict(self) -> dict[str, Any]:
        """The avatar.json mapping (with the format name and version)."""
        d = asdict(self)
        d["audio_front_end"] = d.pop("front_end")
        d["source_size"] = list(self.source_size) if self.source_size else None
        if self.speech_model is None:
            d.pop("speech_model")
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AvatarMeta:
        """From a validated, migrated avatar.json mapping (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)} - {"front_end"}
        kw = {k: v for k, v in d.items() if k in known}
        fe = d.get("audio_front_end") or {}
        kw["front_end"] = FrontEnd(**{k: fe[k] for k in ("name", "version", "viseme_channels") if k in fe})
        if kw.get("source_size"):
            kw["source_size"] = (int(kw["source_size"][0]), int(kw["source_size"][1]))
        return cls(**kw)


__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "AvatarMeta", "FrontEnd"]
