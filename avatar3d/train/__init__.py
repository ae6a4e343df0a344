"""Per-subject training of a Gaussian avatar on a CaptureSet.

- :func:`fit_avatar` -> :class:`FittedAvatar` (:mod:`.fit`): a video or capture directory to an
  avatar's parts, in stages (config checks, capture, :func:`train`, the avatar's record).
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
from .fit import FittedAvatar, fit_avatar
from .trainer import TrainResult, evaluate, lpips_term, train

__all__ = [
    "FittedAvatar",
    "fit_avatar",
    "TrainData",
    "TrainResult",
    "evaluate",
    "load_checkpoint",
    "lpips_term",
    "rest_frame",
    "save_checkpoint",
    "train",
]
