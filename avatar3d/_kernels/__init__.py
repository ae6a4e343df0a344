"""The rasteriser's C++ and CUDA sources, shipped as package data and JIT-built on first use.

``include/ops.h`` declares the ops and their input check once for both builds, ``include/raster.h``
holds the per-element ``__host__ __device__`` functions, ``include/constants.h`` mirrors
:mod:`avatar3d.render._constants`; ``cpu/`` is the OpenMP build, ``cuda/`` the CUDA build.
:mod:`avatar3d.render._cuda_ext` builds and loads them; ``check_nvcc.sh`` compile-checks the CUDA
sources without a GPU. Nothing here is importable Python.
"""
