"""Delivery to headsets: stereo video (:mod:`avatar3d.drive.stereo`), the linear bake (:mod:`.bake`) and the WebXR
page (:mod:`.web`)."""
