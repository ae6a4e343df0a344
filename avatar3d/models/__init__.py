"""The Gaussian avatar model: canonical 3D Gaussians in head space, moved by audio and head pose.

- :class:`GaussianAvatar` (:mod:`.gaussian_avatar`): the Gaussians, the audio encoder, the
  deformation fields and the torso motion; ``posed()`` and ``render()``.
- :func:`initial_gaussians` from :class:`InitInputs` (:mod:`.init`): face mesh, silhouette-fitted
  head shell, eye and mouth interiors, torso relief (docs/design/initialisation.md).
- :mod:`.deform`: :class:`AudioMotion`, :class:`DeformationField`, :class:`TorsoMotion`.
- :mod:`.encoding`: :class:`SpatialEncoding` (hash grid, tri-plane or sin/cos).
- :func:`fit_viseme_map` -> :class:`VisemeFit` (:mod:`.viseme_map`): the subject's viseme ->
  expression map.
"""

from .deform import AudioMotion, DeformationField, TorsoMotion
from .encoding import SpatialEncoding
from .gaussian_avatar import PARAM_NAMES, GaussianAvatar
from .init import InitInputs, initial_gaussians
from .viseme_map import VisemeFit, fit_viseme_map

__all__ = [
    "PARAM_NAMES",
    "AudioMotion",
    "DeformationField",
    "GaussianAvatar",
    "InitInputs",
    "SpatialEncoding",
    "TorsoMotion",
    "VisemeFit",
    "fit_viseme_map",
    "initial_gaussians",
]
