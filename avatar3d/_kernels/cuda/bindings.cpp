// Python bindings of the CUDA build (raster_cuda.cu): the ops of include/ops.h, each with a trailing
// `stream` argument (torch.cuda.current_stream().cuda_stream), appended by _cuda_ext.py.
#define A3D_CUDA_BUILD
#include <torch/extension.h>

#include "../include/ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { A3D_BIND_OPS(m); }
