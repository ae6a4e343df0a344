// CUDA build of the avatar3d Gaussian rasteriser: the per-element functions of include/raster.h
// launched as kernels, defining the ops declared in include/ops.h (as cpu/raster_cpu.cpp does).
//
//   projection   one thread per Gaussian (covariance, shared by all cameras), then one per
//                (camera, Gaussian); backward: per (camera, Gaussian) with atomics, then per Gaussian
//   isect        count per (camera, Gaussian), cumsum, fill 64-bit keys image|tile|depth-bits,
//                cub radix sort (stable: ties keep Gaussian order, like the reference), offsets
//   compositing  one block per tile, one thread per pixel, tile lists walked in shared-memory
//                batches; backward back to front, warp-reduced grads, one atomicAdd per warp
#define A3D_CUDA_BUILD  // include/ops.h: the ops take a trailing stream argument
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <cub/device/device_radix_sort.cuh>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "../include/ops.h"
#include "../include/raster.h"

using at::Tensor;

// Only ATen + the CUDA runtime are used (no c10/cuda headers), so this file compiles against a
// CPU-only torch install too. The caller (avatar3d/render/_cuda_ext.py) makes the tensors' device
// current and passes torch's current stream as an integer.
#define A3D_CUDA_CHECK(expr)                                                                                 \
    do {                                                                                                     \
        const cudaError_t a3d_err = (expr);                                                                  \
        TORCH_CHECK(a3d_err == cudaSuccess, "CUDA error: ", cudaGetErrorString(a3d_err));                    \
    } while (0)
#define A3D_LAUNCH_CHECK() A3D_CUDA_CHECK(cudaGetLastError())

namespace {

constexpr int kThreads = 256;

inline int blocks_for(int64_t n) { return (int)((n + kThreads - 1) / kThreads); }

// ------------------------------------------------------------------ projection
template <typename T>
__global__ void covars_kernel(int64_t N, const T* __restrict__ quats,  // (N, 4)
                              const T* __restrict__ scales,            // (N, 3)
                              T* __restrict__ cov) {                   // (N, 6)
    const int64_t n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    a3d::quat_scale_to_covar(quats + 4 * n, scales + 3 * n, cov + 6 * n);
}

template <typename T>
__global__ void project_fwd_kernel(int64_t C, int64_t N, const T* __restrict__ means,  // (N, 3)
                                   const T* __restrict__ cov,                          // (N, 6)
                                   const T* __restrict__ vm,                           // (C, 4, 4)
                                   const T* __restrict__ Ks,                           // (C, 3, 3)
                                   int W, int H, T near, T far, T eps2d,
                                   T* __restrict__ m2d,     // (C, N, 2)
                                   T* __restrict__ conics,  // (C, N, 3)
                                   T* __restrict__ depths,  // (C, N)
                                   int* __restrict__ radii) {  // (C, N, 2)
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= C * N) return;
    const int64_t c = i / N, n = i % N;
    a3d::project_one<T>(means + 3 * n, cov + 6 * n, vm + 16 * c, Ks + 9 * c, W, H, near, far, eps2d,
                        m2d + 2 * i, conics + 3 * i, depths + i, radii + 2 * i);
}

template <typename T>
__global__ void project_bwd_kernel(int64_t C, int64_t N, const T* __restrict__ means,
                                   const T* __restrict__ cov,
                                   const T* __restrict__ vm, const T* __restrict__ Ks, int W, int H, T near,
                                   T far, T eps2d, const T* __restrict__ v_m2d,  // (C, N, 2)
                                   const T* __restrict__ v_conics,               // (C, N, 3)
                                   const T* __restrict__ v_depths,               // (C, N)
                                   T* __restrict__ v_means,                      // (N, 3) accumulated
                                   T* __restrict__ v_cov) {                      // (N, 6) accumulated
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= C * N) return;
    const int64_t c = i / N, n = i % N;
    T vmean[3] = {T(0), T(0), T(0)}, vcov[6] = {T(0), T(0), T(0), T(0), T(0), T(0)};
    a3d::project_one_vjp<T>(means + 3 * n, cov + 6 * n, vm + 16 * c, Ks + 9 * c, W, H, near, far, eps2d,
                            v_m2d + 2 * i, v_conics + 3 * i, v_depths[i], vmean, vcov);
    for (int k = 0; k < 3; ++k) atomicAdd(v_means + 3 * n + k, vmean[k]);
    for (int k = 0; k < 6; ++k) atomicAdd(v_cov + 6 * n + k, vcov[k]);
}

template <typename T>
__global__ void covars_bwd_kernel(int64_t N, const T* __restrict__ quats, const T* __restrict__ scales,
                                  const T* __restrict__ v_cov,  // (N, 6)
                                  T* __restrict__ v_quats,      // (N, 4)
                                  T* __restrict__ v_scales) {   // (N, 3)
    const int64_t n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    a3d::quat_scale_to_covar_vjp(quats + 4 * n, scales + 3 * n, v_cov + 6 * n, v_quats + 4 * n,
                                 v_scales + 3 * n);
}

// ------------------------------------------------------------------ tile intersection
template <typename T>
__global__ void isect_count_kernel(int64_t CN, const T* __restrict__ m2d, const int* __restrict__ radii,
                                   int tw, int th, int tile, int64_t* __restrict__ counts) {  // (CN,)
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= CN) return;
    int x0, x1, y0, y1;
    counts[i] = a3d::tile_rect<T>(m2d + 2 * i, radii + 2 * i, tw, th, tile, &x0, &x1, &y0, &y1);
}

template <typename T>
__global__ void isect_fill_kernel(int64_t CN, int64_t N, const T* __restrict__ m2d,
                                  const int* __restrict__ radii, const T* __restrict__ depths,
                                  const int64_t* __restrict__ ends,  // (CN,) inclusive cumsum of counts
                                  int tw, int th, int tile, int64_t* __restrict__ keys,  // (M,)
                                  int32_t* __restrict__ vals) {                          // (M,)
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= CN) return;
    int x0, x1, y0, y1;
    const int cnt = a3d::tile_rect<T>(m2d + 2 * i, radii + 2 * i, tw, th, tile, &x0, &x1, &y0, &y1);
    int64_t pos = ends[i] - cnt;
    // depth > near > 0, so the float bit pattern orders like the value
    const uint64_t dbits = (uint64_t)__float_as_uint((float)depths[i]);
    const int64_t base = (i / N) * th * tw;
    for (int y = y0; y < y1; ++y)
        for (int x = x0; x < x1; ++x) {
            keys[pos] = (int64_t)(((uint64_t)(base + (int64_t)y * tw + x) << 32) | dbits);
            vals[pos] = (int32_t)i;
            ++pos;
        }
}

__global__ void isect_offsets_kernel(int64_t M, int64_t n_tiles, const int64_t* __restrict__ keys,  // sorted
                                     int32_t* __restrict__ offsets) {  // (n_tiles,)
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= M) return;
    const int64_t t = keys[i] >> 32;
    const int64_t prev = i == 0 ? -1 : keys[i - 1] >> 32;
    for (int64_t j = prev + 1; j <= t; ++j) offsets[j] = (int32_t)i;  // first entry of tiles (prev, t]
    if (i == M - 1)
        for (int64_t j = t + 1; j < n_tiles; ++j) offsets[j] = (int32_t)M;
}

// ------------------------------------------------------------------ compositing
constexpr int kG = 7;  // per-Gaussian shared record: x, y, a, b, c, opacity, sigma cutoff

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

template <typename T>
__device__ __forceinline__ void load_record(T* s, int64_t g, const T* m2d, const T* con, const T* op) {
    s[0] = m2d[2 * g]; s[1] = m2d[2 * g + 1];
    s[2] = con[3 * g]; s[3] = con[3 * g + 1]; s[4] = con[3 * g + 2];
    s[5] = op[g];
    s[6] = a3d::sigma_cutoff(s[5]);
}

template <typename T, int CDIM>
__global__ void raster_fwd_kernel(int W, int H, int tw, int th, int64_t M,
                                  const T* __restrict__ m2d,        // (C, N, 2)
                                  const T* __restrict__ con,        // (C, N, 3)
                                  const T* __restrict__ colors,     // (C, N, CDIM)
                                  const T* __restrict__ op,         // (C, N)
                                  const int32_t* __restrict__ ids,  // (M,)
                                  const int32_t* __restrict__ off,  // (C, th, tw)
                                  T* __restrict__ out,              // (C, H, W, CDIM)
                                  T* __restrict__ alphas,           // (C, H, W)
                                  T* __restrict__ T_final,          // (C, H, W)
                                  int32_t* __restrict__ last) {     // (C, H, W)
    extern __shared__ unsigned char smem[];
    const int bs = blockDim.x * blockDim.y, tid = threadIdx.y * blockDim.x + threadIdx.x;
    int32_t* s_id = reinterpret_cast<int32_t*>(smem);
    T* s_g = reinterpret_cast<T*>(smem + ((bs * sizeof(int32_t) + 15) / 16) * 16);
    const int64_t c = blockIdx.z, tile_id = (c * th + blockIdx.y) * tw + blockIdx.x;
    const int px = blockIdx.x * blockDim.x + threadIdx.x, py = blockIdx.y * blockDim.y + threadIdx.y;
    const bool inside = px < W && py < H;
    const int64_t n_tiles = (int64_t)gridDim.z * th * tw;
    const int64_t start = off[tile_id], end = tile_id + 1 < n_tiles ? off[tile_id + 1] : M;
    const T pcx = T(px) + T(0.5), pcy = T(py) + T(0.5);
    T trans = T(1), acc[CDIM];
    for (int k = 0; k < CDIM; ++k) acc[k] = T(0);
    int64_t last_i = -1;
    bool done = !inside;
    for (int64_t b0 = start; b0 < end; b0 += bs) {
        if (__syncthreads_count(done) == bs) break;  // also the barrier before reloading shared memory
        if (b0 + tid < end) {
            const int32_t g = ids[b0 + tid];
            s_id[tid] = g;
            load_record(s_g + kG * tid, g, m2d, con, op);
        }
        __syncthreads();
        const int cnt = (int)min((int64_t)bs, end - b0);
        for (int j = 0; j < cnt && !done; ++j) {
            const T* s = s_g + kG * j;
            const T sigma = a3d::splat_sigma(s[0] - pcx, s[1] - pcy, s[2], s[3], s[4]);
            if (sigma > s[6]) continue;
            T alpha, vis;
            if (!a3d::splat_alpha_sigma(sigma, s[5], &alpha, &vis)) continue;
            if (!a3d::blend_fwd(alpha, colors + (int64_t)s_id[j] * CDIM, CDIM, &trans, acc)) {
                done = true;
                break;
            }
            last_i = b0 + j;
        }
    }
    if (!inside) return;
    const int64_t pix = (c * H + py) * W + px;
    for (int k = 0; k < CDIM; ++k) out[pix * CDIM + k] = acc[k];
    T_final[pix] = trans;
    alphas[pix] = T(1) - trans;
    last[pix] = (int32_t)last_i;
}

template <typename T, int CDIM>
__global__ void raster_bwd_kernel(int W, int H, int tw, int th, int64_t M, const T* __restrict__ m2d,
                                  const T* __restrict__ con, const T* __restrict__ colors,
                                  const T* __restrict__ op, const int32_t* __restrict__ ids,
                                  const int32_t* __restrict__ off,
                                  const T* __restrict__ T_final,      // (C, H, W)
                                  const int32_t* __restrict__ last,   // (C, H, W)
                                  const T* __restrict__ v_out,        // (C, H, W, CDIM)
                                  const T* __restrict__ v_alphas,     // (C, H, W)
                                  T* __restrict__ v_m2d,              // (C, N, 2) accumulated
                                  T* __restrict__ v_con,              // (C, N, 3) accumulated
                                  T* __restrict__ v_col,              // (C, N, CDIM) accumulated
                                  T* __restrict__ v_op) {             // (C, N) accumulated
    extern __shared__ unsigned char smem[];
    __shared__ int s_max_last;
    const int bs = blockDim.x * blockDim.y, tid = threadIdx.y * blockDim.x + threadIdx.x;
    const int lane = tid & 31;
    int32_t* s_id = reinterpret_cast<int32_t*>(smem);
    T* s_g = reinterpret_cast<T*>(smem + ((bs * sizeof(int32_t) + 15) / 16) * 16);
    const int64_t c = blockIdx.z, tile_id = (c * th + blockIdx.y) * tw + blockIdx.x;
    const int px = blockIdx.x * blockDim.x + threadIdx.x, py = blockIdx.y * blockDim.y + threadIdx.y;
    const bool inside = px < W && py < H;
    const int64_t n_tiles = (int64_t)gridDim.z * th * tw;
    const int64_t start = off[tile_id], end = tile_id + 1 < n_tiles ? off[tile_id + 1] : M;
    const int64_t pix = inside ? (c * H + py) * W + px : 0;
    const int bin_final = inside ? last[pix] : -1;
    const T pcx = T(px) + T(0.5), pcy = T(py) + T(0.5);
    const T T_fin = inside ? T_final[pix] : T(1), g_a = inside ? v_alphas[pix] : T(0);
    T trans = T_fin, buffer[CDIM], g_out[CDIM];
    for (int k = 0; k < CDIM; ++k) {
        buffer[k] = T(0);
        g_out[k] = inside ? v_out[pix * CDIM + k] : T(0);
    }
    if (tid == 0) s_max_last = -1;
    __syncthreads();
    atomicMax(&s_max_last, bin_final);
    __syncthreads();
    const int64_t hi = min(end - 1, (int64_t)s_max_last);  // no pixel of this tile goes further
    for (int64_t b1 = hi; b1 >= start; b1 -= bs) {  // batch covers [b1 - bs + 1, b1], back to front
        __syncthreads();
        if (b1 - tid >= start) {
            const int32_t g = ids[b1 - tid];
            s_id[tid] = g;
            load_record(s_g + kG * tid, g, m2d, con, op);
        }
        __syncthreads();
        const int cnt = (int)min((int64_t)bs, b1 - start + 1);
        for (int j = 0; j < cnt; ++j) {
            const T* s = s_g + kG * j;
            const int64_t g = s_id[j];
            bool valid = inside && b1 - j <= bin_final;
            T alpha = T(0), vis = T(0);
            const T dx = s[0] - pcx, dy = s[1] - pcy;
            if (valid) {
                const T sigma = a3d::splat_sigma(dx, dy, s[2], s[3], s[4]);
                valid = !(sigma > s[6]) && a3d::splat_alpha_sigma(sigma, s[5], &alpha, &vis);
            }
            if (!__any_sync(0xffffffffu, valid)) continue;  // warp-uniform
            T vxy[2] = {T(0), T(0)}, vc3[3] = {T(0), T(0), T(0)}, vo = T(0), vc[CDIM];
            for (int k = 0; k < CDIM; ++k) vc[k] = T(0);
            if (valid)
                a3d::blend_bwd(alpha, vis, s[5], dx, dy, s[2], s[3], s[4], colors + g * CDIM, CDIM, T_fin,
                               g_out, g_a, &trans, buffer, vc, vxy, vc3, &vo);
            vxy[0] = warp_sum(vxy[0]); vxy[1] = warp_sum(vxy[1]);
            for (int k = 0; k < 3; ++k) vc3[k] = warp_sum(vc3[k]);
            vo = warp_sum(vo);
            for (int k = 0; k < CDIM; ++k) vc[k] = warp_sum(vc[k]);
            if (lane == 0) {
                atomicAdd(v_m2d + 2 * g, vxy[0]); atomicAdd(v_m2d + 2 * g + 1, vxy[1]);
                for (int k = 0; k < 3; ++k) atomicAdd(v_con + 3 * g + k, vc3[k]);
                atomicAdd(v_op + g, vo);
                for (int k = 0; k < CDIM; ++k) atomicAdd(v_col + g * CDIM + k, vc[k]);
            }
        }
    }
}


// ------------------------------------------------------------------ host side
// Channel counts with a compiled kernel; others are zero-padded up to the next one.
#define A3D_FOR_CDIMS(X) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(16) X(32) X(64) X(128) X(256)

int64_t padded_channels(int64_t K) {
    const int64_t dims[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 32, 64, 128, 256};
    for (int64_t d : dims)
        if (K <= d) return d;
    TORCH_CHECK(false, "at most 256 colour channels are supported by the CUDA rasteriser, got ", K);
    return 0;
}

Tensor pad_last(const Tensor& t, int64_t to) {
    return t.size(-1) == to ? t : at::constant_pad_nd(t, {0, to - t.size(-1)}, 0).contiguous();
}

size_t raster_smem(int bs, size_t elem) {  // ids (16-byte aligned), then the (bs, kG) records
    return ((bs * sizeof(int32_t) + 15) / 16) * 16 + (size_t)bs * kG * elem;
}

// CDIM dispatch (outside AT_DISPATCH: a #define cannot sit inside a macro argument)
template <typename T>
void launch_raster_fwd(int64_t Kp, dim3 grid, dim3 block, cudaStream_t stream, int W, int H, int tw, int th,
                       int64_t M, const Tensor& m2d, const Tensor& con, const Tensor& cols, const Tensor& op,
                       const Tensor& ids, const Tensor& off, Tensor& out, Tensor& alphas, Tensor& T_final,
                       Tensor& last) {
    const size_t smem = raster_smem((int)(block.x * block.y), sizeof(T));
#define A3D_FWD_CASE(D)                                                                                      \
    if (Kp == D) {                                                                                           \
        raster_fwd_kernel<T, D><<<grid, block, smem, stream>>>(                                              \
            W, H, tw, th, M, m2d.data_ptr<T>(), con.data_ptr<T>(), cols.data_ptr<T>(), op.data_ptr<T>(),     \
            ids.data_ptr<int32_t>(), off.data_ptr<int32_t>(), out.data_ptr<T>(), alphas.data_ptr<T>(),       \
            T_final.data_ptr<T>(), last.data_ptr<int32_t>());                                                \
        A3D_LAUNCH_CHECK();                                                                                  \
        return;                                                                                              \
    }
    A3D_FOR_CDIMS(A3D_FWD_CASE)
#undef A3D_FWD_CASE
    TORCH_CHECK(false, "no compositing kernel for ", Kp, " channels");
}

template <typename T>
void launch_raster_bwd(int64_t Kp, dim3 grid, dim3 block, cudaStream_t stream, int W, int H, int tw, int th,
                       int64_t M, const Tensor& m2d, const Tensor& con, const Tensor& cols, const Tensor& op,
                       const Tensor& ids, const Tensor& off, const Tensor& T_final, const Tensor& last,
                       const Tensor& g_out, const Tensor& g_a, Tensor& v_m2d, Tensor& v_con, Tensor& v_col,
                       Tensor& v_op) {
    const size_t smem = raster_smem((int)(block.x * block.y), sizeof(T));
#define A3D_BWD_CASE(D)                                                                                      \
    if (Kp == D) {                                                                                           \
        raster_bwd_kernel<T, D><<<grid, block, smem, stream>>>(                                              \
            W, H, tw, th, M, m2d.data_ptr<T>(), con.data_ptr<T>(), cols.data_ptr<T>(), op.data_ptr<T>(),     \
            ids.data_ptr<int32_t>(), off.data_ptr<int32_t>(), T_final.data_ptr<T>(),                         \
            last.data_ptr<int32_t>(), g_out.data_ptr<T>(), g_a.data_ptr<T>(), v_m2d.data_ptr<T>(),           \
            v_con.data_ptr<T>(), v_col.data_ptr<T>(), v_op.data_ptr<T>());                                   \
        A3D_LAUNCH_CHECK();                                                                                  \
        return;                                                                                              \
    }
    A3D_FOR_CDIMS(A3D_BWD_CASE)
#undef A3D_BWD_CASE
    TORCH_CHECK(false, "no compositing kernel for ", Kp, " channels");
}

}  // namespace

namespace a3d::ops {

std::vector<Tensor> project_fwd(const Tensor& means,     // (N, 3)
                                     const Tensor& quats,     // (N, 4)
                                     const Tensor& scales,    // (N, 3)
                                     const Tensor& viewmats,  // (C, 4, 4)
                                     const Tensor& Ks,        // (C, 3, 3)
                                     int64_t W, int64_t H, double near, double far, double eps2d,
                                     int64_t stream_ptr) {
    const auto st = means.scalar_type();
    A3D_CHECK_INPUT(means, st);
    A3D_CHECK_INPUT(quats, st);
    A3D_CHECK_INPUT(scales, st);
    A3D_CHECK_INPUT(viewmats, st);
    A3D_CHECK_INPUT(Ks, st);
    const int64_t N = means.size(0), C = viewmats.size(0);
    auto opt = means.options();
    Tensor means2d = at::empty({C, N, 2}, opt), conics = at::empty({C, N, 3}, opt);
    Tensor depths = at::empty({C, N}, opt), radii = at::empty({C, N, 2}, opt.dtype(at::kInt));
    if (N == 0 || C == 0) return {means2d, conics, depths, radii};
    Tensor cov = at::empty({N, 6}, opt);
    const cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_ptr);
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_fwd_cuda", [&] {
        covars_kernel<scalar_t><<<blocks_for(N), kThreads, 0, stream>>>(
            N, quats.data_ptr<scalar_t>(), scales.data_ptr<scalar_t>(), cov.data_ptr<scalar_t>());
        A3D_LAUNCH_CHECK();
        project_fwd_kernel<scalar_t><<<blocks_for(C * N), kThreads, 0, stream>>>(
            C, N, means.data_ptr<scalar_t>(), cov.data_ptr<scalar_t>(), viewmats.data_ptr<scalar_t>(),
            Ks.data_ptr<scalar_t>(), (int)W, (int)H, (scalar_t)near, (scalar_t)far, (scalar_t)eps2d,
            means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(), depths.data_ptr<scalar_t>(),
            radii.data_ptr<int>());
        A3D_LAUNCH_CHECK();
    });
    return {means2d, conics, depths, radii};
}

std::vector<Tensor> project_bwd(const Tensor& means, const Tensor& quats, const Tensor& scales,
                                     const Tensor& viewmats, const Tensor& Ks, int64_t W, int64_t H,
                                     double near, double far, double eps2d,
                                     const Tensor& v_means2d,  // (C, N, 2)
                                     const Tensor& v_conics,   // (C, N, 3)
                                     const Tensor& v_depths,  // (C, N)
                                     int64_t stream_ptr) {
    const auto st = means.scalar_type();
    A3D_CHECK_INPUT(v_means2d, st);
    A3D_CHECK_INPUT(v_conics, st);
    A3D_CHECK_INPUT(v_depths, st);
    const int64_t N = means.size(0), C = viewmats.size(0);
    auto opt = means.options();
    Tensor v_means = at::zeros({N, 3}, opt), v_cov = at::zeros({N, 6}, opt);
    Tensor v_quats = at::zeros({N, 4}, opt), v_scales = at::zeros({N, 3}, opt);
    if (N == 0 || C == 0) return {v_means, v_quats, v_scales};
    Tensor cov = at::empty({N, 6}, opt);
    const cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_ptr);
    AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "project_bwd_cuda", [&] {
        covars_kernel<scalar_t><<<blocks_for(N), kThreads, 0, stream>>>(
            N, quats.data_ptr<scalar_t>(), scales.data_ptr<scalar_t>(), cov.data_ptr<scalar_t>());
        A3D_LAUNCH_CHECK();
        project_bwd_kernel<scalar_t><<<blocks_for(C * N), kThreads, 0, stream>>>(
            C, N, means.data_ptr<scalar_t>(), cov.data_ptr<scalar_t>(), viewmats.data_ptr<scalar_t>(),
            Ks.data_ptr<scalar_t>(), (int)W, (int)H, (scalar_t)near, (scalar_t)far, (scalar_t)eps2d,
            v_means2d.data_ptr<scalar_t>(), v_conics.data_ptr<scalar_t>(), v_depths.data_ptr<scalar_t>(),
            v_means.data_ptr<scalar_t>(), v_cov.data_ptr<scalar_t>());
        A3D_LAUNCH_CHECK();
        covars_bwd_kernel<scalar_t><<<blocks_for(N), kThreads, 0, stream>>>(
            N, quats.data_ptr<scalar_t>(), scales.data_ptr<scalar_t>(), v_cov.data_ptr<scalar_t>(),
            v_quats.data_ptr<scalar_t>(), v_scales.data_ptr<scalar_t>());
        A3D_LAUNCH_CHECK();
    });
    return {v_means, v_quats, v_scales};
}

std::vector<Tensor> isect_tiles(const Tensor& means2d,  // (C, N, 2)
                                     const Tensor& radii,    // (C, N, 2) int32
                                     const Tensor& depths,   // (C, N)
                                     int64_t W, int64_t H, int64_t tile, int64_t stream_ptr) {
    const auto st = means2d.scalar_type();
    A3D_CHECK_INPUT(means2d, st);
    A3D_CHECK_INPUT(radii, at::kInt);
    A3D_CHECK_INPUT(depths, st);
    const int64_t C = depths.size(0), N = depths.size(1), CN = C * N;
    const int tw = (int)((W + tile - 1) / tile), th = (int)((H + tile - 1) / tile);
    const int64_t n_tiles = C * th * tw;
    TORCH_CHECK(n_tiles < (int64_t(1) << 31) && CN < (int64_t(1) << 31), "too many tiles or Gaussians");
    Tensor offsets = at::zeros({C, th, tw}, radii.options());
    if (CN == 0) return {at::empty({0}, radii.options()), offsets};
    const cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_ptr);
    Tensor counts = at::empty({CN}, radii.options().dtype(at::kLong));
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "isect_count_cuda", [&] {
        isect_count_kernel<scalar_t><<<blocks_for(CN), kThreads, 0, stream>>>(
            CN, means2d.data_ptr<scalar_t>(), radii.data_ptr<int>(), tw, th, (int)tile,
            counts.data_ptr<int64_t>());
        A3D_LAUNCH_CHECK();
    });
    Tensor ends = at::cumsum(counts, 0);
    const int64_t M = ends[CN - 1].item<int64_t>();  // one device -> host sync
    TORCH_CHECK(M < (int64_t(1) << 31), "too many Gaussian/tile intersections: ", M);
    Tensor flat = at::empty({M}, radii.options());
    if (M == 0) return {flat, offsets};
    Tensor keys = at::empty({M}, counts.options()), vals = at::empty({M}, radii.options());
    AT_DISPATCH_FLOATING_TYPES(means2d.scalar_type(), "isect_fill_cuda", [&] {
        isect_fill_kernel<scalar_t><<<blocks_for(CN), kThreads, 0, stream>>>(
            CN, N, means2d.data_ptr<scalar_t>(), radii.data_ptr<int>(), depths.data_ptr<scalar_t>(),
            ends.data_ptr<int64_t>(), tw, th, (int)tile, keys.data_ptr<int64_t>(), vals.data_ptr<int32_t>());
        A3D_LAUNCH_CHECK();
    });
    int tile_bits = 1;
    while ((int64_t(1) << tile_bits) <= n_tiles) ++tile_bits;
    Tensor keys_out = at::empty_like(keys);
    size_t temp_bytes = 0;
    auto* k_in = reinterpret_cast<uint64_t*>(keys.data_ptr<int64_t>());
    auto* k_out = reinterpret_cast<uint64_t*>(keys_out.data_ptr<int64_t>());
    A3D_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, k_in, k_out, vals.data_ptr<int32_t>(),
                                                  flat.data_ptr<int32_t>(), (int)M, 0, 32 + tile_bits,
                                                  stream));
    Tensor temp = at::empty({(int64_t)temp_bytes}, radii.options().dtype(at::kByte));
    A3D_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.data_ptr(), temp_bytes, k_in, k_out,
                                                  vals.data_ptr<int32_t>(), flat.data_ptr<int32_t>(), (int)M,
                                                  0,
                                                  32 + tile_bits, stream));
    isect_offsets_kernel<<<blocks_for(M), kThreads, 0, stream>>>(M, n_tiles, keys_out.data_ptr<int64_t>(),
                                                                 offsets.data_ptr<int32_t>());
    A3D_LAUNCH_CHECK();
    return {flat, offsets};
}

std::vector<Tensor> raster_fwd(const Tensor& means2d,      // (C, N, 2)
                                    const Tensor& conics,       // (C, N, 3)
                                    const Tensor& colors,       // (C, N, K)
                                    const Tensor& opacities,    // (C, N)
                                    const Tensor& flatten_ids,  // (M,) int32
                                    const Tensor& tile_offsets,  // (C, th, tw) int32
                                    int64_t W, int64_t H, int64_t tile, int64_t stream_ptr) {
    const auto st = colors.scalar_type();
    A3D_CHECK_INPUT(means2d, st);
    A3D_CHECK_INPUT(conics, st);
    A3D_CHECK_INPUT(colors, st);
    A3D_CHECK_INPUT(opacities, st);
    A3D_CHECK_INPUT(flatten_ids, at::kInt);
    A3D_CHECK_INPUT(tile_offsets, at::kInt);
    TORCH_CHECK(tile == 8 || tile == 16 || tile == 32, "CUDA rasteriser tile size must be 8, 16 or 32");
    const int64_t C = colors.size(0), K = colors.size(2), Kp = padded_channels(K), M = flatten_ids.numel();
    const int th = (int)tile_offsets.size(1), tw = (int)tile_offsets.size(2);
    Tensor cols = pad_last(colors, Kp);
    Tensor out = at::zeros({C, H, W, Kp}, colors.options());
    Tensor alphas = at::zeros({C, H, W, 1}, colors.options());
    Tensor T_final = at::ones({C, H, W}, colors.options());
    Tensor last = at::full({C, H, W}, -1, flatten_ids.options());
    if (C == 0 || th == 0 || tw == 0) return {out.narrow(-1, 0, K), alphas, T_final, last};
    const dim3 grid(tw, th, C), block(tile, tile);
    const cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_ptr);
    AT_DISPATCH_FLOATING_TYPES(colors.scalar_type(), "raster_fwd_cuda", [&] {
        launch_raster_fwd<scalar_t>(Kp, grid, block, stream, (int)W, (int)H, tw, th, M, means2d, conics, cols,
                                    opacities, flatten_ids, tile_offsets, out, alphas, T_final, last);
    });
    return {Kp == K ? out : out.narrow(-1, 0, K).contiguous(), alphas, T_final, last};
}

std::vector<Tensor> raster_bwd(const Tensor& means2d, const Tensor& conics, const Tensor& colors,
                                    const Tensor& opacities, const Tensor& flatten_ids,
                                    const Tensor& tile_offsets, int64_t W, int64_t H, int64_t tile,
                                    const Tensor& T_final,     // (C, H, W)
                                    const Tensor& last_ids,    // (C, H, W) int32
                                    const Tensor& v_colors,    // (C, H, W, K)
                                    const Tensor& v_alphas,  // (C, H, W, 1)
                                    int64_t stream_ptr) {
    const auto st = colors.scalar_type();
    A3D_CHECK_INPUT(T_final, st);
    A3D_CHECK_INPUT(last_ids, at::kInt);
    A3D_CHECK_INPUT(v_colors, st);
    A3D_CHECK_INPUT(v_alphas, st);
    const int64_t C = colors.size(0), N = colors.size(1), K = colors.size(2), Kp = padded_channels(K);
    const int64_t M = flatten_ids.numel();
    const int th = (int)tile_offsets.size(1), tw = (int)tile_offsets.size(2);
    Tensor cols = pad_last(colors, Kp), g_out = pad_last(v_colors, Kp);
    Tensor v_m2d = at::zeros({C, N, 2}, colors.options()), v_con = at::zeros({C, N, 3}, colors.options());
    Tensor v_col = at::zeros({C, N, Kp}, colors.options()), v_op = at::zeros({C, N}, colors.options());
    if (M > 0) {
        const dim3 grid(tw, th, C), block(tile, tile);
        const cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_ptr);
        AT_DISPATCH_FLOATING_TYPES(colors.scalar_type(), "raster_bwd_cuda", [&] {
            launch_raster_bwd<scalar_t>(Kp, grid, block, stream, (int)W, (int)H, tw, th, M, means2d, conics,
                                        cols, opacities, flatten_ids, tile_offsets, T_final, last_ids, g_out,
                                        v_alphas, v_m2d, v_con, v_col, v_op);
        });
    }
    return {v_m2d, v_con, Kp == K ? v_col : v_col.narrow(-1, 0, K).contiguous(), v_op};
}

}  // namespace a3d::ops
