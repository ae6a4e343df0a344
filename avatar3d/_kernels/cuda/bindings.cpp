// Python bindings of the CUDA build (cuda_ext/cuda/raster_cuda.cu): same API as the CPU build plus a
// trailing `stream` argument (torch.cuda.current_stream().cuda_stream), appended by _cuda_ext.py.
#include <torch/extension.h>

#include <vector>

using at::Tensor;

std::vector<Tensor> project_fwd_cuda(const Tensor& means, const Tensor& quats, const Tensor& scales,
                                     const Tensor& viewmats, const Tensor& Ks, int64_t W, int64_t H,
                                     double near, double far, double eps2d, int64_t stream);
std::vector<Tensor> project_bwd_cuda(const Tensor& means, const Tensor& quats, const Tensor& scales,
                                     const Tensor& viewmats, const Tensor& Ks, int64_t W, int64_t H,
                                     double near, double far, double eps2d, const Tensor& v_means2d,
                                     const Tensor& v_conics, const Tensor& v_depths, int64_t stream);
std::vector<Tensor> isect_tiles_cuda(const Tensor& means2d, const Tensor& radii, const Tensor& depths,
                                     int64_t W, int64_t H, int64_t tile, int64_t stream);
std::vector<Tensor> raster_fwd_cuda(const Tensor& means2d, const Tensor& conics, const Tensor& colors,
                                    const Tensor& opacities, const Tensor& flatten_ids,
                                    const Tensor& tile_offsets, int64_t W, int64_t H, int64_t tile,
                                    int64_t stream);
std::vector<Tensor> raster_bwd_cuda(const Tensor& means2d, const Tensor& conics, const Tensor& colors,
                                    const Tensor& opacities, const Tensor& flatten_ids,
                                    const Tensor& tile_offsets, int64_t W, int64_t H, int64_t tile,
                                    const Tensor& T_final, const Tensor& last_ids, const Tensor& v_colors,
                                    const Tensor& v_alphas, int64_t stream);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "avatar3d Gaussian rasteriser, CUDA build";
    m.def("project_fwd", &project_fwd_cuda, "EWA projection of N Gaussians into C cameras");
    m.def("project_bwd", &project_bwd_cuda, "VJP of project_fwd wrt means, quats, scales");
    m.def("isect_tiles", &isect_tiles_cuda, "sorted Gaussian/tile intersections");
    m.def("raster_fwd", &raster_fwd_cuda, "front-to-back compositing");
    m.def("raster_bwd", &raster_bwd_cuda, "VJP of raster_fwd");
}
