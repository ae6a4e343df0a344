"""Evaluation: the field's held-out protocol and the metrics it reports.

Public API::

    from avatar3d.eval import evaluate_avatar, view_consistency, write_report
    report = evaluate_avatar("avatar_dir", "heldout.mp4", lpips_weights=None)
    write_report(report, "report.json")          # + report_plots.png

Modules: :mod:`.metrics` (PSNR, SSIM, LPIPS, LMD, landmark-shape / face-colour consistency),
:mod:`.sync` (mouth-opening / audio-envelope correlation; SyncNet LSE-C/D with user weights),
:mod:`.protocol` (:func:`evaluate_avatar`), :mod:`.views` (orbit sweeps, depth-reprojection flicker,
error against synthetic ground-truth views), :mod:`.report` (JSON + PNG).
Importing this package loads no model and opens no file.
"""

from .metrics import MOUTH68_TO_MEDIAPIPE, NotComputed, lmd, lpips, psnr, ssim
from .protocol import evaluate_avatar
from .report import plot_report, write_report
from .sync import av_sync, mouth_opening, shuffled_baseline
from .views import reproject, view_consistency, warp_error

__all__ = [
    "MOUTH68_TO_MEDIAPIPE",
    "NotComputed",
    "av_sync",
    "evaluate_avatar",
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
