"""LPIPS (Zhang et al. 2018, "lpips" v0.1) from a weights file the user supplies; no download, no
torchvision: the AlexNet / VGG-16 feature stacks are defined here with torchvision's layer indices so
their state dicts load unchanged.

Accepted files (``.pth``/``.pt`` loaded with ``torch.load(weights_only=True)``, or ``.safetensors``):

* a full LPIPS state dict (``lpips.LPIPS(net=...).state_dict()``): backbone keys
  ``net.slice{k}.{i}.weight|bias`` and linear heads ``lin{k}.model.1.weight`` (or ``lins.{k}...``);
* backbone keys in torchvision form (``features.{i}.weight``) plus the heads;
* heads only (the official ``weights/v0.1/alex.pth``): the backbone is then looked for, without
  downloading, in the torch hub cache (``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``).

Distance: inputs in [0, 1] -> [-1, 1] -> scaling layer -> features at 5 ReLU taps, each unit-normalised
over channels, squared difference, 1x1 linear head (no bias), spatial mean, summed over taps.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor, nn

# torchvision's `features` layer lists; ints are conv output channels, "M" max-pool.
_ALEX = [
    (64, 11, 4, 2),
    "R",
    "M",
    (192, 5, 1, 2),
    "R",
    "M",
    (384, 3, 1, 1),
    "R",
    (256, 3, 1, 1),
    "R",
    (256, 3, 1, 1),
    "R",
    "M",
]
_ALEX_TAPS = (1, 4, 7, 9, 11)  # relu1..relu5
_VGG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
_VGG_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
HUB_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}


def _alex_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 3
    for item in _ALEX:
        if item == "R":
            layers.append(nn.ReLU(inplace=False))
        elif item == "M":
            layers.append(nn.MaxPool2d(3, 2))
        else:
            cout, k, s, p = item
            layers.append(nn.Conv2d(cin, cout, k, s, p))
            cin = cout
    return nn.Sequential(*layers)


def _vgg_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 3
    for item in _VGG:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, int(item), 3, padding=1), nn.ReLU(inplace=False)]
            cin = int(item)
    return nn.Sequential(*layers)


class LPIPSNet(nn.Module):
    """LPIPS distance; ``forward(a, b)`` with (B, 3, H, W) images in [0, 1] -> (B,)."""

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net not in CHANNELS:
            raise ValueError(f"LPIPS net must be 'alex' or 'vgg', got {net!r}")
        self.net_name = net
        self.features = _alex_features() if net == "alex" else _vgg_features()
        self.taps = _ALEX_TAPS if net == "alex" else _VGG_TAPS
        self.lins = nn.ModuleList([nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS[net]])
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def _taps(self, x: Tensor) -> list[Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
            if i >= self.taps[-1]:
                break
        return out

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        fa = self._taps(((a * 2 - 1) - self.shift) / self.scale)
        fb = self._taps(((b * 2 - 1) - self.shift) / self.scale)
        total = a.new_zeros(a.shape[0])
        for lin, x, y in zip(self.lins, fa, fb):
            x = x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            y = y / (y.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((x - y) ** 2).mean((1, 2, 3))
        return total


def _read(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise TypeError("the file does not hold a state dict")
    return {k: v for k, v in obj.items() if isinstance(v, Tensor)}


def _normalise_keys(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[int, Tensor]]:
    """-> (backbone {'features.i.weight': ...}, heads {k: (1, C, 1, 1)})."""
    backbone: dict[str, Tensor] = {}
    heads: dict[int, Tensor] = {}
    for k, v in state.items():
        k = k.removeprefix("module.")
        if (m := re.fullmatch(r"net\.slice\d\.(\d+)\.(weight|bias)", k)) or (
            m := re.fullmatch(r"features\.(\d+)\.(weight|bias)", k)
        ):
            backbone[f"features.{m[1]}.{m[2]}"] = v
        elif m := re.fullmatch(r"lins?\.?(\d)\.model\.1\.weight", k):
            heads[int(m[1])] = v
    return backbone, heads


def load_lpips(path: str | Path) -> LPIPSNet | str:
    """Build an :class:`LPIPSNet` from a weights file, or return a one-line "not computed: ..." reason."""
    p = Path(path)
    if not p.is_file():
        return f"not computed: LPIPS weights file not found: {p}"
    try:
        backbone, heads = _normalise_keys(_read(p))
    except Exception as e:  # noqa: BLE001  (corrupt or foreign files: report, never crash the evaluation)
        return f"not computed: {p.name} is not a readable weights file ({str(e).splitlines()[0][:120]})"
    if sorted(heads) != [0, 1, 2, 3, 4]:
        return f"not computed: {p.name} lacks the LPIPS linear heads lin0..lin4"
    net_name = {192: "alex", 128: "vgg"}.get(int(heads[1].shape[1]))
    if net_name is None:
        return f"not computed: {p.name}: LPIPS heads of unknown width {tuple(heads[1].shape)}"
    if not backbone:
        hub = Path(torch.hub.get_dir()) / "checkpoints" / HUB_FILES[net_name]
        if not hub.is_file():
            return (
                f"not computed: {p.name} holds only the LPIPS heads and the {net_name} backbone "
                f"weights are not in {hub.parent} (they are never downloaded)"
            )
        backbone, _ = _normalise_keys(_read(hub))
    net = LPIPSNet(net_name)
    state = {f"lins.{k}.weight": v for k, v in heads.items()}
    state.update(backbone)
    try:
        missing, _ = net.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch
        return (
            f"not computed: {p.name} does not fit LPIPS-{net_name} ({str(e).splitlines()[-1].strip()[:120]})"
        )
    missing = [m for m in missing if m not in ("shift", "scale")]
    if missing:
        return f"not computed: {p.name} lacks backbone weights ({missing[0]} ...)"
    return net.eval()


__all__ = ["LPIPSNet", "load_lpips"]
