"""Delivery to headsets: the linear bake (:mod:`.bake`), the WebXR page (:mod:`.web`) and live weights
over a WebSocket (:mod:`.serve`); stereo video lives in :mod:`avatar3d.drive.stereo`.

The submodules are imported on use (``from avatar3d.export.web import export_web``): the page and the
server pull in optional pieces that ``import avatar3d.export`` should not.
"""

__all__ = ["bake", "serve", "web"]
