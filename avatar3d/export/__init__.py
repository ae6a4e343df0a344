"""Delivery to headsets: stereo video (:mod:`.stereo`), the linear bake (:mod:`.bake`) and the WebXR
page (:mod:`.web`)."""
