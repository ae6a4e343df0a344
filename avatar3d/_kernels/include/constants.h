// Rasteriser constants, mirrored one-to-one from avatar3d/render/_constants.py.
// Keep the two files in step (tests/render/test_kernels.py parses this file and compares).
// Use them as T(A3D_...) so comparisons happen in the kernel's scalar type, like the reference.
#pragma once

#define A3D_ALPHA_THRESHOLD (1.0 / 255.0)      // skip a (pixel, Gaussian) pair below this alpha
#define A3D_MAX_ALPHA 0.99                     // alpha clamp; keeps 1/(1 - alpha) finite
#define A3D_TRANSMITTANCE_THRESHOLD 1e-4       // a pixel stops once T would fall to or below this
#define A3D_GAUSSIAN_EXTENT 3.33               // bbox half-size in standard deviations (per axis)
#define A3D_EPS2D 0.3                          // low-pass dilation of 2D covariances, pixels^2
#define A3D_NEAR_PLANE 0.01
#define A3D_FAR_PLANE 1e10
#define A3D_TILE_SIZE 16
#define A3D_FOV_CLAMP 1.3                      // x/z, y/z clamped to 1.3x the half-FOV tangent
