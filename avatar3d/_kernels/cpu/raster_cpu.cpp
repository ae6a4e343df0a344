// CPU build of the avatar3d Gaussian rasteriser: OpenMP loops over the per-element functions of
// include/raster.h, defining the ops declared in include/ops.h. JIT-compiled by
// avatar3d/render/_cuda_ext.py (g++ -O3 -fopenmp).
//
// Stages (same names and shapes as avatar3d/render/_torch_impl.py, plus the fused covariance):
//   project_fwd / project_bwd  over C x N (covariance computed once per Gaussian)
//   isect_tiles                (image, tile, depth)-sorted Gaussian/tile list
//   raster_fwd / raster_bwd    tile-parallel compositing; backward accumulates per-Gaussian grads
//                              in per-thread buffers and reduces them (no data races)
#include <torch/extension.h>

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "../include/ops.h"
#include "../include/raster.h"

namespace a3d::ops {
namespace {

using at::Tensor;

int n_threads() { return std::max(1, at::get_num_threads()); }

// Channel-count dispatch: common counts get a compile-time K (unrolled blend loops); 0 = runtime K.
template <typename F>
void dispatch_channels(int64_t K, F&& f) {
    switch (K) {
        case 1: f(std::integral_constant<int64_t, 1>()); break;
        case 2: f(std::integral_constant<int64_t, 2>()); break;
        case 3: f(std::integral_constant<int64_t, 3>()); break;
        case 4: f(std::integral_constant<int64_t, 4>()); break;
        case 5: f(std::integral_constant<int64_t, 5>()); break;
        default: f(std::integral_constant<int64_t, 0>());
    }
}

constexpr int64_t kMinParallel = 4096;  // smaller per-Gaussian loops run serially (no fork/join cost)

// float / double dispatch with a generic lambda (OpenMP pragmas cannot sit inside the argument of
// a macro such as AT_DISPATCH_FLOATING_TYPES).
template <typename F>
void dispatch_float(at::ScalarType st, const char* name, F&& f) {
    if (st == at::kFloat) f(float(0));
    else if (st == at::kDouble) f(double(0));
    else TORCH_CHECK(false, name, ": unsupported dtype ", st, " (float32 or float64 only)");
}

// ------------------------------------------------------------------ projection
template <typename T>
void covars_cpu(const T* quats, const T* scales, int64_t N, T* cov /*(N, 6)*/) {
#pragma omp parallel for num_threads(n_threads()) schedule(static) if (N > kMinParallel)
    for (int64_t n = 0; n < N; ++n) a3d::quat_scale_to_covar(quats + 4 * n, scales + 3 * n, cov + 6 * n);
}

}  // namespace

std::vector<Tensor> project_fwd(const Tensor& means,     // (N, 3)
                                const Tensor& quats,     // (N, 4)
                                const Tensor& scales,    // (N, 3)
                                const Tensor& viewmats,  // (C, 4, 4)
                                const Tensor& Ks,        // (C, 3, 3)
                                int64_t W, int64_t H, double near, double far, double eps2d) {
    const auto st = means.scalar_type();
    A3D_CHECK_INPUT(means, st);
    A3D_CHECK_INPUT(quats, st);
    A3D_CHECK_INPUT(scales, st);
    A3D_CHECK_INPUT(viewmats, st);
    A3D_CHECK_INPUT(Ks, st);
    const int64_t N = means.size(0), C = viewmats.size(0);
    auto opt = means.options();
    Tensor means2d = at::empty({C, N, 2}, opt);
    Tensor conics = at::empty({C, N, 3}, opt);
    Tensor depths = at::empty({C, N}, opt);
    Tensor radii = at::empty({C, N, 2}, opt.dtype(at::kInt));
    dispatch_float(st, "project_fwd", [&](auto tag) {
        using T = decltype(tag);
        std::vector<T> cov(6 * N);
        covars_cpu(quats.data_ptr<T>(), scales.data_ptr<T>(), N, cov.data());
        const T* m = means.data_ptr<T>();
        const T* vm = viewmats.data_ptr<T>();
        const T* K = Ks.data_ptr<T>();
        T* o_m2d = means2d.data_ptr<T>();
        T* o_con = conics.data_ptr<T>();
        T* o_dep = depths.data_ptr<T>();
        int* o_rad = radii.data_ptr<int>();
#pragma omp parallel for num_threads(n_threads()) schedule(static) if (C * N > kMinParallel)
        for (int64_t i = 0; i < C * N; ++i) {
            const int64_t c = i / N, n = i % N;
            a3d::project_one<T>(m + 3 * n, cov.data() + 6 * n, vm + 16 * c, K + 9 * c, (int)W, (int)H,
                                T(near), T(far), T(eps2d), o_m2d + 2 * i, o_con + 3 * i, o_dep + i,
                                o_rad + 2 * i);
        }
    });
    return {means2d, conics, depths, radii};
}

std::vector<Tensor> project_bwd(const Tensor& means, const Tensor& quats, const Tensor& scales,
                                const Tensor& viewmats, const Tensor& Ks, int64_t W, int64_t H,
                                double near, double far, double eps2d,
                                const Tensor& v_means2d,  // (C, N, 2)
                                const Tensor& v_conics,   // (C, N, 3)
                                const Tensor& v_depths) {  // (C, N)
    const auto st = means.scalar_type();
    A3D_CHECK_INPUT(v_means2d, st);
    A3D_CHECK_INPUT(v_conics, st);
    A3D_CHECK_INPUT(v_depths, st);
    const int64_t N = means.size(0), C = viewmats.size(0);
    Tensor v_means = at::zeros({N, 3}, means.options());
    Tensor v_quats = at::zeros({N, 4}, means.options());
    Tensor v_scales = at::zeros({N, 3}, means.options());
    dispatch_float(st, "project_bwd", [&](auto tag) {
        using T = decltype(tag);
        const T* m = means.data_ptr<T>();
        const T* q = quats.data_ptr<T>();
        const T* s = scales.data_ptr<T>();
        const T* vm = viewmats.data_ptr<T>();
        const T* K = Ks.data_ptr<T>();
        const T* g_m2d = v_means2d.data_ptr<T>();
        const T* g_con = v_conics.data_ptr<T>();
        const T* g_dep = v_depths.data_ptr<T>();
        T* o_m = v_means.data_ptr<T>();
        T* o_q = v_quats.data_ptr<T>();
        T* o_s = v_scales.data_ptr<T>();
#pragma omp parallel for num_threads(n_threads()) schedule(static) if (C * N > kMinParallel)
        for (int64_t n = 0; n < N; ++n) {
            T cov[6], v_cov[6] = {T(0), T(0), T(0), T(0), T(0), T(0)};
            a3d::quat_scale_to_covar(q + 4 * n, s + 3 * n, cov);
            for (int64_t c = 0; c < C; ++c) {
                const int64_t i = c * N + n;
                a3d::project_one_vjp<T>(m + 3 * n, cov, vm + 16 * c, K + 9 * c, (int)W, (int)H, T(near),
                                        T(far), T(eps2d), g_m2d + 2 * i, g_con + 3 * i, g_dep[i],
                                        o_m + 3 * n, v_cov);
            }
            a3d::quat_scale_to_covar_vjp(q + 4 * n, s + 3 * n, v_cov, o_q + 4 * n, o_s + 3 * n);
        }
    });
    return {v_means, v_quats, v_scales};
}

namespace {

// ------------------------------------------------------------------ tile intersection + sort
template <typename T>
struct DepthId {
    T depth;
    int32_t id;
    bool operator<(const DepthId& o) const { return depth < o.depth || (depth == o.depth && id < o.id); }
};

}  // namespace

std::vector<Tensor> isect_tiles(const Tensor& means2d,  // (C, N, 2)
                                const Tensor& radii,    // (C, N, 2) int32
                                const Tensor& depths,   // (C, N)
                                int64_t W, int64_t H, int64_t tile) {
    const auto st = means2d.scalar_type();
    A3D_CHECK_INPUT(means2d, st);
    A3D_CHECK_INPUT(radii, at::kInt);
    A3D_CHECK_INPUT(depths, st);
    const int64_t C = depths.size(0), N = depths.size(1), CN = C * N;
    const int tw = (int)((W + tile - 1) / tile), th = (int)((H + tile - 1) / tile);
    const int64_t n_tiles = C * th * tw;
    TORCH_CHECK(CN < std::numeric_limits<int32_t>::max(), "too many projected Gaussians");
    Tensor offsets = at::zeros({C, th, tw}, radii.options());
    Tensor flat;
    dispatch_float(st, "isect_tiles", [&](auto tag) {
        using T = decltype(tag);
        const T* m2d = means2d.data_ptr<T>();
        const T* dep = depths.data_ptr<T>();
        const int* rad = radii.data_ptr<int>();
        const int nt = n_threads();
        // pass 1: per-part tile histograms over a static partition of the Gaussians into nt parts
        std::vector<int64_t> hist((size_t)nt * n_tiles, 0);
#pragma omp parallel num_threads(nt)
        for (int part = omp_get_thread_num(); part < nt; part += omp_get_num_threads()) {
            int64_t* h = hist.data() + (size_t)part * n_tiles;
            for (int64_t i = CN * part / nt; i < CN * (part + 1) / nt; ++i) {
                int x0, x1, y0, y1;
                if (a3d::tile_rect<T>(m2d + 2 * i, rad + 2 * i, tw, th, (int)tile, &x0, &x1, &y0, &y1) == 0)
                    continue;
                const int64_t base = (i / N) * th * tw;
                for (int y = y0; y < y1; ++y)
                    for (int x = x0; x < x1; ++x) h[base + (int64_t)y * tw + x] += 1;
            }
        }
        // exclusive scan: tile starts, then each thread's cursor inside every tile
        std::vector<int64_t> start(n_tiles + 1, 0);
        for (int64_t j = 0; j < n_tiles; ++j) {
            int64_t s = 0;
            for (int t = 0; t < nt; ++t) s += hist[(size_t)t * n_tiles + j];
            start[j + 1] = start[j] + s;
        }
        const int64_t M = start[n_tiles];
        TORCH_CHECK(M < std::numeric_limits<int32_t>::max(), "too many Gaussian/tile intersections: ", M);
        for (int64_t j = 0; j < n_tiles; ++j) {
            int64_t cur = start[j];
            for (int t = 0; t < nt; ++t) {
                const int64_t c = hist[(size_t)t * n_tiles + j];
                hist[(size_t)t * n_tiles + j] = cur;
                cur += c;
            }
        }
        std::vector<DepthId<T>> entries(M);
        // pass 2: same partition, each part writes into its own slots (deterministic)
#pragma omp parallel num_threads(nt)
        for (int part = omp_get_thread_num(); part < nt; part += omp_get_num_threads()) {
            int64_t* cur = hist.data() + (size_t)part * n_tiles;
            for (int64_t i = CN * part / nt; i < CN * (part + 1) / nt; ++i) {
                int x0, x1, y0, y1;
                if (a3d::tile_rect<T>(m2d + 2 * i, rad + 2 * i, tw, th, (int)tile, &x0, &x1, &y0, &y1) == 0)
                    continue;
                const int64_t base = (i / N) * th * tw;
                for (int y = y0; y < y1; ++y)
                    for (int x = x0; x < x1; ++x)
                        entries[cur[base + (int64_t)y * tw + x]++] = {dep[i], (int32_t)i};
            }
        }
        // pass 3: sort every tile front to back (ties by Gaussian index, like the stable reference)
        flat = at::empty({M}, radii.options());
        int32_t* f = flat.data_ptr<int32_t>();
        int32_t* off = offsets.data_ptr<int32_t>();
#pragma omp parallel for num_threads(nt) schedule(dynamic, 4)
        for (int64_t j = 0; j < n_tiles; ++j) {
            std::sort(entries.begin() + start[j], entries.begin() + start[j + 1]);
            for (int64_t e = start[j]; e < start[j + 1]; ++e) f[e] = entries[e].id;
            off[j] = (int32_t)start[j];
        }
    });
    return {flat, offsets};
}

namespace {

// ------------------------------------------------------------------ compositing
// Each tile is processed row by row. Within a row, the tile's Gaussians are walked in depth order
// (front to back; back to front in the backward pass) and each one updates only the pixels of its
// conservative span on that row (a3d::row_span), with per-pixel state kept for the row. Every
// pixel therefore sees exactly the sequence of (Gaussian, test, blend) steps of a per-pixel loop
// over the whole list, so results are bit-identical to that loop, at a fraction of the work.
template <typename T>
struct TileBatch {
    std::vector<T> x, y, a, b, c, op, cut;  // (cnt,) each; cut = sigma_cutoff(op)
    std::vector<T> col;                     // (cnt, K)
    std::vector<a3d::RowSpan> spans;        // (cnt,)
    void load(const int32_t* ids, int64_t cnt, const T* m2d, const T* con, const T* opac, const T* colors,
              int64_t K) {
        for (auto* v : {&x, &y, &a, &b, &c, &op, &cut}) v->resize(cnt);
        col.resize(cnt * K);
        spans.resize(cnt);
        for (int64_t e = 0; e < cnt; ++e) {
            const int64_t id = ids[e];
            x[e] = m2d[2 * id]; y[e] = m2d[2 * id + 1];
            a[e] = con[3 * id]; b[e] = con[3 * id + 1]; c[e] = con[3 * id + 2];
            op[e] = opac[id];
            cut[e] = a3d::sigma_cutoff(op[e]);
            spans[e] = a3d::row_span_setup(x[e], y[e], a[e], b[e], c[e], cut[e]);
            for (int64_t k = 0; k < K; ++k) col[e * K + k] = colors[id * K + k];
        }
    }
    bool span(int64_t e, T pcy, int x_begin, int x_end, int* lo, int* hi) const {
        return a3d::row_span(spans[e], double(pcy), x_begin, x_end, lo, hi);
    }
    // the exact per-pair test: alpha (and vis) when the pair is composited
    bool alpha_at(int64_t e, T pcx, T pcy, T* alpha, T* vis, T* dx, T* dy) const {
        *dx = x[e] - pcx;
        *dy = y[e] - pcy;
        const T sigma = a3d::splat_sigma(*dx, *dy, a[e], b[e], c[e]);
        if (sigma > cut[e]) return false;  // early reject, cannot change the outcome
        return a3d::splat_alpha_sigma(sigma, op[e], alpha, vis);
    }
};

struct TileRange {
    int64_t c, ty, tx, start, end;
};

TileRange tile_range(int64_t j, const int32_t* off, int64_t n_tiles, int64_t M, int th, int tw) {
    const int64_t c = j / (th * tw), r = j % (th * tw);
    return {c, r / tw, r % tw, off[j], j + 1 < n_tiles ? off[j + 1] : M};
}

}  // namespace

std::vector<Tensor> raster_fwd(const Tensor& means2d,    // (C, N, 2)
                               const Tensor& conics,     // (C, N, 3)
                               const Tensor& colors,     // (C, N, K)
                               const Tensor& opacities,  // (C, N)
                               const Tensor& flatten_ids,  // (M,) int32
                               const Tensor& tile_offsets,  // (C, th, tw) int32
                               int64_t W, int64_t H, int64_t tile) {
    const auto st = means2d.scalar_type();
    A3D_CHECK_INPUT(means2d, st);
    A3D_CHECK_INPUT(conics, st);
    A3D_CHECK_INPUT(colors, st);
    A3D_CHECK_INPUT(opacities, st);
    A3D_CHECK_INPUT(flatten_ids, at::kInt);
    A3D_CHECK_INPUT(tile_offsets, at::kInt);
    const int64_t C = colors.size(0), K = colors.size(2), M = flatten_ids.numel();
    const int th = (int)tile_offsets.size(1), tw = (int)tile_offsets.size(2);
    const int64_t n_tiles = C * th * tw;
    Tensor out = at::zeros({C, H, W, K}, colors.options());
    Tensor alphas = at::empty({C, H, W, 1}, colors.options());
    Tensor T_final = at::empty({C, H, W}, colors.options());
    Tensor last = at::empty({C, H, W}, flatten_ids.options());
    dispatch_float(st, "raster_fwd", [&](auto tag) {
        using T = decltype(tag);
        const T* m2d = means2d.data_ptr<T>();
        const T* con = conics.data_ptr<T>();
        const T* colp = colors.data_ptr<T>();
        const T* opp = opacities.data_ptr<T>();
        const int32_t* ids = flatten_ids.data_ptr<int32_t>();
        const int32_t* off = tile_offsets.data_ptr<int32_t>();
        T* o_col = out.data_ptr<T>();
        T* o_a = alphas.data_ptr<T>();
        T* o_T = T_final.data_ptr<T>();
        int32_t* o_last = last.data_ptr<int32_t>();
        dispatch_channels(K, [&](auto kc) {
            constexpr int64_t KS = decltype(kc)::value;
            const int64_t Kc = KS > 0 ? KS : K;
#pragma omp parallel num_threads(n_threads())
            {
                TileBatch<T> b;
                std::vector<T> trans(tile);
                std::vector<int64_t> last_e(tile);
                std::vector<char> done(tile);
#pragma omp for schedule(dynamic, 1)
                for (int64_t j = 0; j < n_tiles; ++j) {
                    const TileRange tr = tile_range(j, off, n_tiles, M, th, tw);
                    const int64_t cnt = tr.end - tr.start;
                    const int x0 = (int)(tr.tx * tile), nx = (int)std::min<int64_t>(tile, W - x0);
                    b.load(ids + tr.start, cnt, m2d, con, opp, colp, Kc);
                    for (int64_t py = tr.ty * tile; py < std::min<int64_t>((tr.ty + 1) * tile, H); ++py) {
                        const T pcy = T(py) + T(0.5);
                        T* acc = o_col + ((tr.c * H + py) * W + x0) * Kc;  // (nx, Kc), zero-initialised
                        std::fill(trans.begin(), trans.end(), T(1));
                        std::fill(last_e.begin(), last_e.end(), -1);
                        std::fill(done.begin(), done.end(), 0);
                        int n_done = 0;
                        for (int64_t e = 0; e < cnt && n_done < nx; ++e) {
                            int lo, hi;
                            if (!b.span(e, pcy, x0, x0 + nx, &lo, &hi)) continue;
                            for (int px = lo; px <= hi; ++px) {
                                const int l = px - x0;
                                T alpha, vis, dx, dy;
                                if (done[l] || !b.alpha_at(e, T(px) + T(0.5), pcy, &alpha, &vis, &dx, &dy))
                                    continue;
                                const T* col = b.col.data() + e * Kc;
                                if (!a3d::blend_fwd(alpha, col, (int)Kc, &trans[l], acc + l * Kc)) {
                                    done[l] = 1;
                                    ++n_done;
                                    continue;
                                }
                                last_e[l] = e;
                            }
                        }
                        for (int l = 0; l < nx; ++l) {
                            const int64_t pix = (tr.c * H + py) * W + x0 + l;
                            o_T[pix] = trans[l];
                            o_a[pix] = T(1) - trans[l];
                            o_last[pix] = last_e[l] < 0 ? -1 : (int32_t)(tr.start + last_e[l]);
                        }
                    }
                }
            }
        });
    });
    return {out, alphas, T_final, last};
}

std::vector<Tensor> raster_bwd(const Tensor& means2d, const Tensor& conics, const Tensor& colors,
                               const Tensor& opacities, const Tensor& flatten_ids,
                               const Tensor& tile_offsets, int64_t W, int64_t H, int64_t tile,
                               const Tensor& T_final,     // (C, H, W)
                               const Tensor& last_ids,    // (C, H, W) int32
                               const Tensor& v_colors,    // (C, H, W, K)
                               const Tensor& v_alphas) {  // (C, H, W, 1)
    const auto st = means2d.scalar_type();
    A3D_CHECK_INPUT(means2d, st);
    A3D_CHECK_INPUT(conics, st);
    A3D_CHECK_INPUT(colors, st);
    A3D_CHECK_INPUT(opacities, st);
    A3D_CHECK_INPUT(flatten_ids, at::kInt);
    A3D_CHECK_INPUT(tile_offsets, at::kInt);
    A3D_CHECK_INPUT(T_final, st);
    A3D_CHECK_INPUT(last_ids, at::kInt);
    A3D_CHECK_INPUT(v_colors, st);
    A3D_CHECK_INPUT(v_alphas, st);
    const int64_t C = colors.size(0), N = colors.size(1), K = colors.size(2), M = flatten_ids.numel();
    const int64_t CN = C * N, G = 6 + K;  // per-Gaussian grad record: xy(2) conic(3) opacity(1) colour(K)
    const int th = (int)tile_offsets.size(1), tw = (int)tile_offsets.size(2);
    const int64_t n_tiles = C * th * tw;
    Tensor v_m2d = at::empty({C, N, 2}, colors.options());
    Tensor v_con = at::empty({C, N, 3}, colors.options());
    Tensor v_col = at::empty({C, N, K}, colors.options());
    Tensor v_op = at::empty({C, N}, colors.options());
    dispatch_float(st, "raster_bwd", [&](auto tag) {
        using T = decltype(tag);
        // per-thread gradient buffers, capped at ~1 GiB in total
        const int64_t per = std::max<int64_t>(1, CN * G * (int64_t)sizeof(T));
        const int nt = (int)std::max<int64_t>(1, std::min<int64_t>(n_threads(), (int64_t(1) << 30) / per));
        std::vector<T> bufs((size_t)nt * CN * G, T(0));
        const T* m2d = means2d.data_ptr<T>();
        const T* con = conics.data_ptr<T>();
        const T* colp = colors.data_ptr<T>();
        const T* opp = opacities.data_ptr<T>();
        const int32_t* ids = flatten_ids.data_ptr<int32_t>();
        const int32_t* off = tile_offsets.data_ptr<int32_t>();
        const T* Tf = T_final.data_ptr<T>();
        const int32_t* lastp = last_ids.data_ptr<int32_t>();
        const T* g_col = v_colors.data_ptr<T>();
        const T* g_a = v_alphas.data_ptr<T>();
        dispatch_channels(K, [&](auto kc) {
            constexpr int64_t KS = decltype(kc)::value;
            const int64_t Kc = KS > 0 ? KS : K, Gc = 6 + Kc;
#pragma omp parallel num_threads(nt)
            {
                T* mine = bufs.data() + (size_t)omp_get_thread_num() * CN * Gc;
                TileBatch<T> b;
                std::vector<T> loc, trans(tile), buffer(tile * Kc), vc(Kc);
                std::vector<int64_t> last_e(tile);
#pragma omp for schedule(dynamic, 1)
                for (int64_t j = 0; j < n_tiles; ++j) {
                    const TileRange tr = tile_range(j, off, n_tiles, M, th, tw);
                    const int64_t cnt = tr.end - tr.start;
                    if (cnt == 0) continue;
                    const int x0 = (int)(tr.tx * tile), nx = (int)std::min<int64_t>(tile, W - x0);
                    b.load(ids + tr.start, cnt, m2d, con, opp, colp, Kc);
                    loc.assign(cnt * Gc, T(0));
                    for (int64_t py = tr.ty * tile; py < std::min<int64_t>((tr.ty + 1) * tile, H); ++py) {
                        const T pcy = T(py) + T(0.5);
                        const int64_t row = (tr.c * H + py) * W + x0;
                        int64_t e_max = -1;
                        for (int l = 0; l < nx; ++l) {
                            last_e[l] = lastp[row + l] < 0 ? -1 : lastp[row + l] - tr.start;
                            e_max = std::max(e_max, last_e[l]);
                            trans[l] = Tf[row + l];
                        }
                        std::fill(buffer.begin(), buffer.end(), T(0));
                        for (int64_t e = e_max; e >= 0; --e) {
                            int lo, hi;
                            if (!b.span(e, pcy, x0, x0 + nx, &lo, &hi)) continue;
                            T* l_acc = loc.data() + e * Gc;
                            for (int px = lo; px <= hi; ++px) {
                                const int l = px - x0;
                                T alpha, vis, dx, dy;
                                if (e > last_e[l] ||
                                    !b.alpha_at(e, T(px) + T(0.5), pcy, &alpha, &vis, &dx, &dy))
                                    continue;
                                const int64_t pix = row + l;
                                T vxy[2], vconic[3], vop;
                                a3d::blend_bwd(alpha, vis, b.op[e], dx, dy, b.a[e], b.b[e], b.c[e],
                                               b.col.data() + e * Kc, (int)Kc, Tf[pix], g_col + pix * Kc,
                                               g_a[pix], &trans[l], buffer.data() + l * Kc, vc.data(), vxy,
                                               vconic, &vop);
                                l_acc[0] += vxy[0]; l_acc[1] += vxy[1];
                                l_acc[2] += vconic[0]; l_acc[3] += vconic[1]; l_acc[4] += vconic[2];
                                l_acc[5] += vop;
                                for (int64_t k = 0; k < Kc; ++k) l_acc[6 + k] += vc[k];
                            }
                        }
                    }
                    for (int64_t e = 0; e < cnt; ++e) {
                        T* dst = mine + (int64_t)ids[tr.start + e] * Gc;
                        const T* l = loc.data() + e * Gc;
                        for (int64_t k = 0; k < Gc; ++k) dst[k] += l[k];
                    }
                }
            }
        });
        T* o_m2d = v_m2d.data_ptr<T>();
        T* o_con = v_con.data_ptr<T>();
        T* o_col = v_col.data_ptr<T>();
        T* o_op = v_op.data_ptr<T>();
#pragma omp parallel for num_threads(n_threads()) schedule(static) if (CN * nt > kMinParallel)
        for (int64_t i = 0; i < CN; ++i) {
            T* acc = bufs.data() + i * G;  // thread 0's record collects the sum
            for (int t = 1; t < nt; ++t) {
                const T* o = bufs.data() + ((size_t)t * CN + i) * G;
                for (int64_t k = 0; k < G; ++k) acc[k] += o[k];
            }
            o_m2d[2 * i] = acc[0]; o_m2d[2 * i + 1] = acc[1];
            o_con[3 * i] = acc[2]; o_con[3 * i + 1] = acc[3]; o_con[3 * i + 2] = acc[4];
            o_op[i] = acc[5];
            for (int64_t k = 0; k < K; ++k) o_col[i * K + k] = acc[6 + k];
        }
    });
    return {v_m2d, v_con, v_col, v_op};
}

}  // namespace a3d::ops

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { A3D_BIND_OPS(m); }
