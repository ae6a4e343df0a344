// The rasteriser's host API, declared once for both builds, with the input checks they share.
//
// cpu/raster_cpu.cpp defines these ops for CPU tensors (OpenMP). cuda/raster_cuda.cu defines them
// for CUDA tensors; a file of the CUDA build defines A3D_CUDA_BUILD before including this header,
// and every op then takes one more trailing argument, torch's current stream as an integer
// (appended by avatar3d/render/_cuda_ext.py). Shapes: C cameras, N Gaussians, K colour channels,
// M Gaussian/tile intersections, (th, tw) tiles per image.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#ifdef A3D_CUDA_BUILD
#define A3D_STREAM_PARAM , int64_t stream
#define A3D_ON_DEVICE(t) ((t).is_cuda())
#define A3D_DEVICE_NAME "CUDA"
#define A3D_BUILD_NAME "CUDA"
#else
#define A3D_STREAM_PARAM
#define A3D_ON_DEVICE(t) ((t).device().is_cpu())
#define A3D_DEVICE_NAME "CPU"
#define A3D_BUILD_NAME "CPU (OpenMP)"
#endif

// Every tensor argument of every op goes through this one check: on this build's device,
// contiguous, and of the dtype the op computes in.
#define A3D_CHECK_INPUT(t, dtype)                                                                  \
    TORCH_CHECK(A3D_ON_DEVICE(t) && (t).is_contiguous() && (t).scalar_type() == (dtype), #t,       \
                " must be a contiguous " A3D_DEVICE_NAME " tensor of dtype ", (dtype), ", got ", \
                (t).scalar_type(), " on ", (t).device(), (t).is_contiguous() ? "" : " (not contiguous)")

namespace a3d::ops {

using at::Tensor;

// EWA projection; returns means2d (C, N, 2), conics (C, N, 3), depths (C, N), radii (C, N, 2) int32.
std::vector<Tensor> project_fwd(const Tensor& means,     // (N, 3)
                                const Tensor& quats,     // (N, 4) wxyz
                                const Tensor& scales,    // (N, 3)
                                const Tensor& viewmats,  // (C, 4, 4)
                                const Tensor& Ks,        // (C, 3, 3)
                                int64_t W, int64_t H, double near, double far,
                                double eps2d A3D_STREAM_PARAM);

// VJP of project_fwd; returns v_means (N, 3), v_quats (N, 4), v_scales (N, 3).
std::vector<Tensor> project_bwd(const Tensor& means, const Tensor& quats, const Tensor& scales,
                                const Tensor& viewmats, const Tensor& Ks, int64_t W, int64_t H,
                                double near, double far, double eps2d,
                                const Tensor& v_means2d,  // (C, N, 2)
                                const Tensor& v_conics,   // (C, N, 3)
                                const Tensor& v_depths A3D_STREAM_PARAM);  // (C, N)

// Gaussian/tile pairs sorted by (image, tile, depth, index); returns flatten_ids (M,) and
// tile_offsets (C, th, tw), both int32.
std::vector<Tensor> isect_tiles(const Tensor& means2d,  // (C, N, 2)
                                const Tensor& radii,    // (C, N, 2) int32
                                const Tensor& depths,   // (C, N)
                                int64_t W, int64_t H, int64_t tile A3D_STREAM_PARAM);

// Front-to-back compositing; returns colours (C, H, W, K), alphas (C, H, W, 1), T_final (C, H, W)
// and last_ids (C, H, W) int32.
std::vector<Tensor> raster_fwd(const Tensor& means2d,       // (C, N, 2)
                               const Tensor& conics,        // (C, N, 3)
                               const Tensor& colors,        // (C, N, K)
                               const Tensor& opacities,     // (C, N)
                               const Tensor& flatten_ids,   // (M,) int32
                               const Tensor& tile_offsets,  // (C, th, tw) int32
                               int64_t W, int64_t H, int64_t tile A3D_STREAM_PARAM);

// VJP of raster_fwd; returns v_means2d (C, N, 2), v_conics (C, N, 3), v_colors (C, N, K),
// v_opacities (C, N).
std::vector<Tensor> raster_bwd(const Tensor& means2d, const Tensor& conics, const Tensor& colors,
                               const Tensor& opacities, const Tensor& flatten_ids,
                               const Tensor& tile_offsets, int64_t W, int64_t H, int64_t tile,
                               const Tensor& T_final,   // (C, H, W)
                               const Tensor& last_ids,  // (C, H, W) int32
                               const Tensor& v_colors,  // (C, H, W, K)
                               const Tensor& v_alphas A3D_STREAM_PARAM);  // (C, H, W, 1)

}  // namespace a3d::ops

// The Python module of either build (expanded inside PYBIND11_MODULE, with torch/extension.h).
#define A3D_BIND_OPS(m)                                                                          \
    do {                                                                                         \
        (m).doc() = "avatar3d Gaussian rasteriser, " A3D_BUILD_NAME " build";                   \
        (m).def("project_fwd", &a3d::ops::project_fwd, "EWA projection of N Gaussians into C cameras"); \
        (m).def("project_bwd", &a3d::ops::project_bwd, "VJP of project_fwd wrt means, quats, scales"); \
        (m).def("isect_tiles", &a3d::ops::isect_tiles, "sorted Gaussian/tile intersections");   \
        (m).def("raster_fwd", &a3d::ops::raster_fwd, "front-to-back compositing");              \
        (m).def("raster_bwd", &a3d::ops::raster_bwd, "VJP of raster_fwd");                      \
    } while (0)
