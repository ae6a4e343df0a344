"""3D Gaussian Splatting PLY files (the layout common 3DGS viewers read).

Per vertex, little-endian float32: ``x y z nx ny nz f_dc_0..2 f_rest_0..44 opacity scale_0..2
rot_0..3`` with opacity as a logit, scales as logs, rotation as a wxyz quaternion and colour as the
degree-0 spherical-harmonic coefficient ``(rgb - 0.5) / C0``. Higher SH bands are written as zeros.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import FormatError
from .atomic import atomic_file

SH_C0 = 0.28209479177387814
N_REST = 45
FIELDS = (
    ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    + [f"f_rest_{i}" for i in range(N_REST)]
    + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
)


def write_gaussian_ply(
    path: str | Path,
    means: np.ndarray,  # (N, 3)
    quats: np.ndarray,  # (N, 4) wxyz
    scales: np.ndarray,  # (N, 3) linear
    opacities: np.ndarray,  # (N,) in (0, 1)
    colors: np.ndarray,  # (N, 3) rgb in [0, 1]
) -> Path:
    n = len(means)
    data = np.zeros((n, len(FIELDS)), dtype="<f4")
    data[:, 0:3] = means
    data[:, 6:9] = (np.asarray(colors) - 0.5) / SH_C0
    op = np.clip(np.asarray(opacities, np.float64), 1e-6, 1 - 1e-6)
    data[:, 9 + N_REST] = np.log(op / (1 - op))
    data[:, 10 + N_REST : 13 + N_REST] = np.log(np.maximum(scales, 1e-10))
    q = np.asarray(quats, np.float64)
    data[:, 13 + N_REST : 17 + N_REST] = q / np.linalg.norm(q, axis=1, keepdims=True)
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex {n}\n"
    header += "".join(f"property float {f}\n" for f in FIELDS) + "end_header\n"
    path = Path(path)
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(header.encode("ascii"))
            fh.write(data.tobytes())
    return path


def read_gaussian_ply(path: str | Path) -> dict[str, np.ndarray]:
    """Read a 3DGS PLY written by us or by common trainers (float properties, binary LE)."""
    path = Path(path)
    raw = path.read_bytes()
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply\n") or end < 0:
        raise FormatError(f"{path} is not a PLY file")
    lines = raw[:end].decode("ascii", "replace").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise FormatError(f"{path}: only binary little-endian PLY is supported")
    n = next((int(x.split()[2]) for x in lines if x.startswith("element vertex")), None)
    props = [x.split()[2] for x in lines if x.startswith("property float")]
    if n is None or not props:
        raise FormatError(f"{path}: no float vertex properties")
    body = raw[end + len(b"end_header\n") :]
    if len(body) < n * len(props) * 4:
        raise FormatError(f"{path} is truncated")
    arr = np.frombuffer(body[: n * len(props) * 4], dtype="<f4").reshape(n, len(props))
    col = {p: arr[:, i] for i, p in enumerate(props)}
    try:
        return {
            "means": np.stack([col["x"], col["y"], col["z"]], 1),
            "colors": np.stack([col[f"f_dc_{i}"] for i in range(3)], 1) * SH_C0 + 0.5,
            "opacities": 1 / (1 + np.exp(-col["opacity"])),
            "scales": np.exp(np.stack([col[f"scale_{i}"] for i in range(3)], 1)),
            "quats": np.stack([col[f"rot_{i}"] for i in range(4)], 1),
        }
    except KeyError as e:
        raise FormatError(f"{path}: missing property {e.args[0]}") from None
