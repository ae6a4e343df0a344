"""Rasteriser constants, mirrored one-to-one in ``cuda_ext/include/constants.h``.

Keep the two files in step: the kernels and the PyTorch reference must not drift.
"""

ALPHA_THRESHOLD = 1.0 / 255.0  # a (pixel, Gaussian) pair with alpha below this is skipped
MAX_ALPHA = 0.99  # alpha is clamped here; keeps 1/(1-alpha) finite in the backward pass
TRANSMITTANCE_THRESHOLD = 1e-4  # a pixel stops compositing once T would fall to or below this
GAUSSIAN_EXTENT = 3.33  # bounding box half-size in standard deviations (per axis)
EPS2D = 0.3  # low-pass dilation added to every 2D covariance, in pixels^2
NEAR_PLANE = 0.01
FAR_PLANE = 1e10
TILE_SIZE = 16
FOV_CLAMP = 1.3  # x/z, y/z clamped to 1.3x the half-FOV tangent when building the EWA Jacobian
