"""Evaluation reports: the JSON file and a PNG of plots beside it, both written atomically.

Plots (from the report dict alone, so any saved ``report.json`` can be re-plotted): per-frame PSNR
(head composite and all-rendered) with their means; our sync measure's correlation against lag for the
avatar, the real video and shuffled audio; per-angle view error (frontal-view reprojection error,
consecutive-view flicker and, for the synthetic subject, PSNR against ground-truth views); and, when
the report carries ``samples``, a strip of real / avatar / difference frames.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_file

FIG_WIDTH_IN = 13  # figure width, inches
ROW_HEIGHT_IN = 4.2  # height of a full plot row, inches
DPI = 90
DIFF_GAIN = 3  # the sample strip's |difference| is amplified this much


def _jsonable(obj):
    """Replace NaN/inf by None and numpy scalars/arrays by Python values (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


def report_json(report: dict) -> str:
    """The report as JSON text (``samples`` left out)."""
    return json.dumps(
        _jsonable({k: v for k, v in report.items() if k != "samples"}), indent=1, allow_nan=False
    )


def _vals(seq) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in (seq or [])], dtype=float)


def _plot_psnr(ax, report: dict) -> None:
    """Per-frame PSNR (head composite and all rendered) with their means."""
    pf = report.get("per_frame", {})
    idx = np.array(pf.get("index", []))
    for key, label in (("psnr", "head composite"), ("psnr_all_rendered", "all rendered")):
        v = _vals(pf.get(key))
        if len(v) and np.isfinite(v).any():
            (line,) = ax.plot(idx, v, label=f"{label} (mean {np.nanmean(v):.2f} dB)")
            ax.axhline(np.nanmean(v), color=line.get_color(), ls=":", lw=1)
    prot = report.get("protocol", {})
    ax.set(
        xlabel="frame",
        ylabel="PSNR (dB)",
        title=f"per-frame PSNR, {prot.get('region', '')} {prot.get('size', '')}",
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _plot_sync(ax, sync: dict) -> None:
    """Our sync measure's correlation against lag: avatar, real video, shuffled audio."""
    for key, label, style in (
        ("avatar", "avatar", "-o"),
        ("ground_truth", "real video", "-s"),
        ("shuffled_audio", "shuffled audio", "--"),
    ):
        r = sync.get(key)
        if isinstance(r, dict) and r.get("lags"):
            conf = r.get("confidence")
            ax.plot(
                r["lags"],
                _vals(r["correlation"]),
                style,
                ms=4,
                label=f"{label}: offset {r.get('offset_frames')}, conf {conf if conf is None else round(conf, 3)}",
            )
    ax.axvline(0, color="k", lw=0.5)
    ratio = sync.get("mouth_motion_ratio")
    ax.set(
        xlabel="lag L (frames; + = mouth after sound)",
        ylabel="correlation",
        title="mouth opening vs audio envelope (ours, not SyncNet)"
        + (f"\navatar/real mouth-motion ratio {ratio:.2f}" if isinstance(ratio, float) else ""),
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _plot_views(ax, views) -> None:
    """Per-angle view error (and PSNR against ground-truth views on a twin axis)."""
    if not (isinstance(views, dict) and views.get("angles")):
        ax.text(0.5, 0.5, "view consistency not run", ha="center", va="center")
        ax.set_axis_off()
        return
    ang = _vals(views["angles"])
    ax.plot(
        ang, _vals(views.get("frontal_warp_mae_per_angle")), "-o", ms=3, label="frontal view warped (MAE)"
    )
    fl = _vals(views.get("flicker_mae_per_pair"))
    if len(fl):
        ax.plot((ang[1:] + ang[:-1]) / 2, fl, "-s", ms=3, label="consecutive views (flicker MAE)")
    ax.set(
        xlabel=f"{views.get('axis', 'yaw')} (degrees)",
        ylabel="mean |RGB diff| (0..1)",
        title="view consistency (depth-reprojection error on pixels seen in both views)",
    )
    ax.grid(alpha=0.3)
    h1, l1 = ax.get_legend_handles_labels()
    if views.get("psnr_per_angle"):
        ax2 = ax.twinx()
        ax2.plot(ang, _vals(views["psnr_per_angle"]), "-^", color="C3", ms=3, label="PSNR vs truth (image)")
        ax2.plot(
            ang, _vals(views.get("psnr_head_per_angle")), "-v", color="C4", ms=3, label="PSNR vs truth (head)"
        )
        ax2.set_ylabel("PSNR vs ground truth (dB)")
        h2, l2 = ax2.get_legend_handles_labels()
        h1, l1 = h1 + h2, l1 + l2
    ax.legend(h1, l1, fontsize=8)


def _plot_sample(ax, s: dict) -> None:
    """One real | avatar | 3x|difference| strip."""
    real, av = np.asarray(s["real"]), np.asarray(s["avatar"])
    diff = np.clip(np.abs(real.astype(int) - av.astype(int)) * DIFF_GAIN, 0, 255).astype(np.uint8)
    ax.imshow(np.concatenate([real, av, diff], 1))
    ax.set_title(f"frame {s['index']}: real | avatar | {DIFF_GAIN}×|diff|", fontsize=8)
    ax.set_axis_off()


def _title(report: dict) -> str:
    m, prot = report.get("metrics", {}), report.get("protocol", {})
    lp = m.get("lpips")
    lp = f"{lp:.4f}" if isinstance(lp, float) else "not computed"
    return (
        f"avatar3d eval — {prot.get('region', '')}: PSNR {m.get('psnr')} dB, SSIM {m.get('ssim')}, "
        f"LPIPS {lp}, LMD {m.get('lmd')} px"
    )


def plot_report(report: dict, path: str | Path) -> Path:
    """Write the plots PNG of a report dict (atomically) and return its path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    samples = report.get("samples") or []
    ratios = [1.0, 1.0] + ([0.5] if samples else [])
    fig = plt.figure(figsize=(FIG_WIDTH_IN, ROW_HEIGHT_IN * sum(ratios)))
    gs = fig.add_gridspec(len(ratios), max(2, len(samples) if samples else 2), height_ratios=ratios)
    ncol = gs.ncols
    _plot_psnr(fig.add_subplot(gs[0, : ncol // 2]), report)
    _plot_sync(fig.add_subplot(gs[0, ncol // 2 :]), report.get("sync", {}))
    _plot_views(fig.add_subplot(gs[1, :]), report.get("views"))
    for j, s in enumerate(samples[:ncol]):
        _plot_sample(fig.add_subplot(gs[2, j]), s)
    fig.suptitle(_title(report), fontsize=11)
    fig.tight_layout()
    path = Path(path)
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)
    return path


def write_report(report: dict, path: str | Path) -> tuple[Path, Path]:
    """Write ``path`` (JSON) and ``<stem>_plots.png`` beside it, each atomically. Returns both paths."""
    path = Path(path)
    text = report_json(report)
    png = path.with_name(path.stem + "_plots.png")
    plot_report(report, png)
    with atomic_file(path) as tmp:
        Path(tmp).write_text(text)
    return path, png


def load_report(path: str | Path) -> dict:
    """Read a report JSON (for re-plotting or comparison)."""
    return json.loads(Path(path).read_text())


__all__ = ["load_report", "plot_report", "report_json", "write_report"]
