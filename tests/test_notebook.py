"""notebooks/view_consistency.ipynb runs headless (nbclient) without a cell error and writes its outputs."""

import json
import math
import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "view_consistency.ipynb"


@pytest.mark.slow
def test_view_consistency_notebook_runs(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from jupyter_client.kernelspec import find_kernel_specs

    if "python3" not in find_kernel_specs():
        pytest.skip("no 'python3' Jupyter kernel is installed")
    monkeypatch.setenv("AVATAR3D_NB_OUT", str(tmp_path))
    monkeypatch.setenv("AVATAR3D_NB_STEPS", os.environ.get("AVATAR3D_NB_STEPS", "80"))
    monkeypatch.setenv("AVATAR3D_NB_VIEWS", os.environ.get("AVATAR3D_NB_VIEWS", "9"))
    monkeypatch.setenv("AVATAR3D_QUIET", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    images = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})
    ]
    assert len(images) >= 2  # the per-angle plot and the side-by-side frames
    for name in ("per_angle_error.png", "view_sweep.png", "view_consistency_summary.json"):
        assert (tmp_path / name).is_file(), name
    summary = json.loads((tmp_path / "view_consistency_summary.json").read_text())
    assert len(summary["yaw"]["psnr_per_angle"]) == int(os.environ.get("AVATAR3D_NB_VIEWS", "9"))
    assert math.isfinite(summary["yaw"]["psnr"]) and summary["yaw"]["psnr"] > 10
