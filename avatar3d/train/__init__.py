"""Per-subject training of a Gaussian avatar on a CaptureSet.

- :func:`train` -> :class:`TrainResult` (:mod:`.trainer`): the staged fit (static appearance, the
  audio deformation, then everything jointly), resumable from checkpoints; :func:`evaluate` gives
  held-out PSNR / SSIM.
- :class:`TrainData` (:mod:`.data`): a capture's frames, poses, masks and audio features at the
  training resolution; :func:`rest_frame`.
- :mod:`.audio_aug`: mel re-voicing and the audio pre-training stage (docs/design/audio-branch.md).
- :mod:`.checkpoint`: :func:`save_checkpoint` / :func:`load_checkpoint` (model, optimisers, RNGs).
- :mod:`.losses`: D-SSIM, SSIM, PSNR.
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .data import TrainData, rest_frame
from .trainer import TrainResult, evaluate, lpips_term, train

__all__ = [
    "TrainData",
    "TrainResult",
    "evaluate",
    "load_checkpoint",
    "lpips_term",
    "rest_frame",
    "save_checkpoint",
    "train",
]
