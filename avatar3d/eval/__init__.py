"""Evaluation: the field's held-out protocol and the metrics it reports.

Public API::

    from avatar3d.eval import EvalOptions, evaluate_avatar, view_consistency, write_report
    report = evaluate_avatar("avatar_dir", "heldout.mp4", size=512, lpips_weights=None)
    write_report(report, "report.json")          # + report_plots.png

Modules: :mod:`.protocol` (:func:`evaluate_avatar`, :class:`EvalOptions`), :mod:`.metrics` (PSNR,
SSIM, LPIPS, LMD, landmark-shape / face-colour consistency), :mod:`.sync` (mouth-opening /
audio-envelope correlation; SyncNet LSE-C/D with user weights), :mod:`.views` (orbit sweeps,
depth-reprojection flicker, error against synthetic ground-truth views), :mod:`.crops` (comparison
regions), :mod:`.report` (JSON + PNG). Design notes: ``docs/design/evaluation-protocol.md``,
``docs/design/sync-measure.md``. Importing this package loads no model and opens no file.
"""

from .metrics import MOUTH68_TO_MEDIAPIPE, NotComputed, lmd, lpips, psnr, ssim
from .protocol import EvalOptions, evaluate_avatar
from .report import load_report, plot_report, write_report
from .sync import av_sync, mouth_opening, shuffled_baseline
from .views import reproject, view_consistency, warp_error

__all__ = [
    "MOUTH68_TO_MEDIAPIPE",
    "EvalOptions",
    "NotComputed",
    "av_sync",
    "evaluate_avatar",
    "load_report",
    "lmd",
    "lpips",
    "mouth_opening",
    "plot_report",
    "psnr",
    "reproject",
    "shuffled_baseline",
    "ssim",
    "view_consistency",
    "warp_error",
    "write_report",
]
