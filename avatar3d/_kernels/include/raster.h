// Per-element logic of the Gaussian rasteriser, written once for both compilers.
//
// Every function here is a scalar __host__ __device__ inline function templated on the scalar type
// T (float or double). cuda_ext/cpu/raster_cpu.cpp runs them in OpenMP loops and
// cuda_ext/cuda/raster_cuda.cu launches them as CUDA kernels. The PyTorch reference they must
// agree with is avatar3d/render/_torch_impl.py; operation order follows it where it matters
// (alpha, transmittance) so that float32 threshold decisions match.
//
// Conventions: viewmat (16) row-major world->camera [R|t]; K (9) row-major pinhole intrinsics;
// quaternions wxyz (normalised here); symmetric 3x3 matrices stored as (xx, xy, xz, yy, yz, zz);
// conics (a, b, c) = (inv00, inv01, inv11) of the dilated 2D covariance; dx = mean2d - pixel centre.
// Gradients are named v_<name>.
#pragma once

#include <math.h>

#include "constants.h"

#if defined(__CUDACC__)
#define A3D_HD __host__ __device__ __forceinline__
#else
#define A3D_HD inline
#endif

#if !defined(__CUDACC__)
#include <cmath>
#endif

namespace a3d {

// ---------------------------------------------------------------- scalar helpers
A3D_HD float t_exp(float x) { return expf(x); }
A3D_HD double t_exp(double x) { return exp(x); }
A3D_HD float t_sqrt(float x) { return sqrtf(x); }
A3D_HD double t_sqrt(double x) { return sqrt(x); }
A3D_HD float t_ceil(float x) { return ceilf(x); }
A3D_HD double t_ceil(double x) { return ceil(x); }
A3D_HD float t_floor(float x) { return floorf(x); }
A3D_HD double t_floor(double x) { return floor(x); }
template <typename T> A3D_HD T t_min(T a, T b) { return b < a ? b : a; }
template <typename T> A3D_HD T t_max(T a, T b) { return a < b ? b : a; }
template <typename T> A3D_HD bool t_isfinite(T x) {
#if defined(__CUDA_ARCH__)
    return isfinite(x);
#else
    return std::isfinite(x);
#endif
}

// ---------------------------------------------------------------- quaternion, scale -> covariance
// R(q / |q|) as row-major 3x3 (the normalisation mirrors F.normalize with eps 1e-12).
template <typename T>
A3D_HD void quat_to_rotmat(const T* q /*4*/, T* R /*9*/, T* qn /*4, normalised*/, T* inv_norm) {
    T n = t_sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
    T inv = T(1) / t_max(n, T(1e-12));
    T w = q[0] * inv, x = q[1] * inv, y = q[2] * inv, z = q[3] * inv;
    qn[0] = w; qn[1] = x; qn[2] = y; qn[3] = z;
    *inv_norm = inv;
    R[0] = 1 - 2 * (y * y + z * z); R[1] = 2 * (x * y - w * z); R[2] = 2 * (x * z + w * y);
    R[3] = 2 * (x * y + w * z); R[4] = 1 - 2 * (x * x + z * z); R[5] = 2 * (y * z - w * x);
    R[6] = 2 * (x * z - w * y); R[7] = 2 * (y * z + w * x); R[8] = 1 - 2 * (x * x + y * y);
}

// Sigma = M M^T with M = R(q) diag(s).
template <typename T>
A3D_HD void quat_scale_to_covar(const T* q /*4*/, const T* s /*3*/, T* cov /*6*/) {
    T R[9], qn[4], inv;
    quat_to_rotmat(q, R, qn, &inv);
    T M[9];
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) M[i * 3 + j] = R[i * 3 + j] * s[j];
    const int ii[6] = {0, 0, 0, 1, 1, 2}, kk[6] = {0, 1, 2, 1, 2, 2};
    for (int e = 0; e < 6; ++e) {
        const T* a = M + ii[e] * 3;
        const T* b = M + kk[e] * 3;
        cov[e] = a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
    }
}

// VJP of quat_scale_to_covar. v_cov (6) holds dL/dSigma for the symmetric matrix as
// (G00, G01, G02, G11, G12, G22) with G symmetric, dL = sum_ij G_ij dSigma_ij.
template <typename T>
A3D_HD void quat_scale_to_covar_vjp(const T* q, const T* s, const T* v_cov, T* v_q /*4*/,
                                    T* v_s /*3*/) {
    T R[9], qn[4], inv;
    quat_to_rotmat(q, R, qn, &inv);
    T G[9] = {v_cov[0], v_cov[1], v_cov[2], v_cov[1], v_cov[3], v_cov[4],
              v_cov[2], v_cov[4], v_cov[5]};
    T M[9], vM[9], vR[9];
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) M[i * 3 + j] = R[i * 3 + j] * s[j];
    for (int i = 0; i < 3; ++i)  // v_M = (G + G^T) M = 2 G M
        for (int j = 0; j < 3; ++j)
            vM[i * 3 + j] = 2 * (G[i * 3 + 0] * M[0 * 3 + j] + G[i * 3 + 1] * M[1 * 3 + j] +
                                 G[i * 3 + 2] * M[2 * 3 + j]);
    for (int j = 0; j < 3; ++j) {
        v_s[j] = vM[0 * 3 + j] * R[0 * 3 + j] + vM[1 * 3 + j] * R[1 * 3 + j] +
                 vM[2 * 3 + j] * R[2 * 3 + j];
        for (int i = 0; i < 3; ++i) vR[i * 3 + j] = vM[i * 3 + j] * s[j];
    }
    const T w = qn[0], x = qn[1], y = qn[2], z = qn[3];
    const T* g = vR;
    T vn[4];
    vn[0] = 2 * (-z * g[1] + y * g[2] + z * g[3] - x * g[5] - y * g[6] + x * g[7]);
    vn[1] = 2 * (y * g[1] + z * g[2] + y * g[3] - 2 * x * g[4] - w * g[5] + z * g[6] + w * g[7] -
                 2 * x * g[8]);
    vn[2] = 2 * (-2 * y * g[0] + x * g[1] + w * g[2] + x * g[3] + z * g[5] - w * g[6] + z * g[7] -
                 2 * y * g[8]);
    vn[3] = 2 * (-2 * z * g[0] - w * g[1] + x * g[2] + w * g[3] - 2 * z * g[4] + y * g[5] +
                 x * g[6] + y * g[7]);
    // through q / max(|q|, eps): (I - qn qn^T) / |q| (the eps branch has no projection term)
    T n = t_sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
    T dot = n > T(1e-12) ? vn[0] * w + vn[1] * x + vn[2] * y + vn[3] * z : T(0);
    for (int k = 0; k < 4; ++k) v_q[k] = (vn[k] - qn[k] * dot) * inv;
}

// ---------------------------------------------------------------- EWA projection
// Camera-space quantities shared by the projection and its VJP.
template <typename T>
struct CamSpace {
    T x, y, z;        // camera-space mean
    T cc[9];          // camera-space covariance, full 3x3
    T fx, fy, cx, cy;
    T lim_xn, lim_xp, lim_yn, lim_yp;
    T tx, ty;         // FOV-clamped x, y used by the Jacobian
    T J[6];           // 2x3 Jacobian, row-major
    bool valid_z;
};

template <typename T>
A3D_HD void to_camera(const T* mean, const T* cov, const T* vm, const T* K, int W, int H, T near,
                      T far, CamSpace<T>& o) {
    const T* m = mean;
    o.x = (vm[0] * m[0] + vm[1] * m[1] + vm[2] * m[2]) + vm[3];
    o.y = (vm[4] * m[0] + vm[5] * m[1] + vm[6] * m[2]) + vm[7];
    o.z = (vm[8] * m[0] + vm[9] * m[1] + vm[10] * m[2]) + vm[11];
    T S[9] = {cov[0], cov[1], cov[2], cov[1], cov[3], cov[4], cov[2], cov[4], cov[5]};
    T RS[9];
    for (int i = 0; i < 3; ++i)
        for (int k = 0; k < 3; ++k)
            RS[i * 3 + k] = vm[i * 4 + 0] * S[0 * 3 + k] + vm[i * 4 + 1] * S[1 * 3 + k] +
                            vm[i * 4 + 2] * S[2 * 3 + k];
    for (int i = 0; i < 3; ++i)
        for (int l = 0; l < 3; ++l)
            o.cc[i * 3 + l] = RS[i * 3 + 0] * vm[l * 4 + 0] + RS[i * 3 + 1] * vm[l * 4 + 1] +
                              RS[i * 3 + 2] * vm[l * 4 + 2];
    o.valid_z = (o.z > near) && (o.z < far);
    const T z = o.valid_z ? o.z : T(1);
    o.fx = K[0]; o.fy = K[4]; o.cx = K[2]; o.cy = K[5];
    const T tan_x = T(0.5 * W) / o.fx, tan_y = T(0.5 * H) / o.fy;
    const T ext = T(A3D_FOV_CLAMP - 1.0);
    o.lim_xp = (T(W) - o.cx) / o.fx + ext * tan_x;
    o.lim_xn = o.cx / o.fx + ext * tan_x;
    o.lim_yp = (T(H) - o.cy) / o.fy + ext * tan_y;
    o.lim_yn = o.cy / o.fy + ext * tan_y;
    o.tx = z * t_min(t_max(o.x / z, -o.lim_xn), o.lim_xp);
    o.ty = z * t_min(t_max(o.y / z, -o.lim_yn), o.lim_yp);
    o.J[0] = o.fx / z; o.J[1] = T(0); o.J[2] = -o.fx * o.tx / (z * z);
    o.J[3] = T(0); o.J[4] = o.fy / z; o.J[5] = -o.fy * o.ty / (z * z);
}

// 2D covariance J Sigma_c J^T as (a, b, c) before dilation.
template <typename T>
A3D_HD void cov2d_of(const CamSpace<T>& o, T* a, T* b, T* c) {
    T JC[6];
    for (int i = 0; i < 2; ++i)
        for (int k = 0; k < 3; ++k)
            JC[i * 3 + k] = o.J[i * 3 + 0] * o.cc[0 * 3 + k] + o.J[i * 3 + 1] * o.cc[1 * 3 + k] +
                            o.J[i * 3 + 2] * o.cc[2 * 3 + k];
    *a = JC[0] * o.J[0] + JC[1] * o.J[1] + JC[2] * o.J[2];
    *b = JC[0] * o.J[3] + JC[1] * o.J[4] + JC[2] * o.J[5];
    *c = JC[3] * o.J[3] + JC[4] * o.J[4] + JC[5] * o.J[5];
}

// Projects one Gaussian into one camera. Returns true when means2d/conic are defined (z inside
// (near, far) and det > 0); radii are 0 when culled (also for bboxes outside the image).
template <typename T>
A3D_HD bool project_one(const T* mean /*3*/, const T* cov /*6*/, const T* vm /*16*/, const T* K /*9*/,
                        int W, int H, T near, T far, T eps2d, T* m2d /*2*/, T* conic /*3*/,
                        T* depth, int* radii /*2*/) {
    CamSpace<T> o;
    to_camera(mean, cov, vm, K, W, H, near, far, o);
    *depth = o.z;
    radii[0] = 0; radii[1] = 0;
    m2d[0] = m2d[1] = T(0);
    conic[0] = conic[1] = conic[2] = T(0);
    if (!o.valid_z) return false;
    T a, b, c;
    cov2d_of(o, &a, &b, &c);
    a = a + eps2d;
    c = c + eps2d;
    const T det = a * c - b * b;
    if (!(det > T(0))) return false;
    conic[0] = c / det; conic[1] = -b / det; conic[2] = a / det;
    const T u = o.fx * o.x / o.z + o.cx, v = o.fy * o.y / o.z + o.cy;
    m2d[0] = u; m2d[1] = v;
    const T rx = t_ceil(T(A3D_GAUSSIAN_EXTENT) * t_sqrt(t_max(a, T(0))));
    const T ry = t_ceil(T(A3D_GAUSSIAN_EXTENT) * t_sqrt(t_max(c, T(0))));
    const bool inside = (u + rx > T(0)) && (u - rx < T(W)) && (v + ry > T(0)) && (v - ry < T(H));
    if (inside && t_isfinite(u) && t_isfinite(v)) {
        radii[0] = (int)rx;
        radii[1] = (int)ry;
    }
    return true;
}

// VJP of project_one for one camera. Adds to v_mean (3) and v_cov (6, symmetric convention as in
// quat_scale_to_covar_vjp). The depth gradient always flows; means2d/conic grads only where
// project_one returned true.
template <typename T>
A3D_HD void project_one_vjp(const T* mean, const T* cov, const T* vm, const T* K, int W, int H,
                            T near, T far, T eps2d, const T* v_m2d /*2*/, const T* v_conic /*3*/,
                            T v_depth, T* v_mean /*3*/, T* v_cov /*6*/) {
    CamSpace<T> o;
    to_camera(mean, cov, vm, K, W, H, near, far, o);
    T vx = T(0), vy = T(0), vz = v_depth;
    T Gc[9] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};  // dL/dSigma_cam
    bool ok = o.valid_z;
    T a, b, c, det = T(0);
    if (ok) {
        cov2d_of(o, &a, &b, &c);
        a = a + eps2d;
        c = c + eps2d;
        det = a * c - b * b;
        ok = det > T(0);
    }
    if (ok) {
        const T x = o.x, y = o.y, z = o.z;
        // conic = (c, -b, a) / det
        const T id = T(1) / det;
        const T v_det = -(v_conic[0] * c - v_conic[1] * b + v_conic[2] * a) * id * id;
        const T va = v_conic[2] * id + v_det * c;
        const T vb = -v_conic[1] * id - T(2) * v_det * b;
        const T vc = v_conic[0] * id + v_det * a;
        const T G2[4] = {va, T(0.5) * vb, T(0.5) * vb, vc};  // symmetric dL/dcov2d
        // Gc = J^T G2 J
        T GJ[6];
        for (int i = 0; i < 2; ++i)
            for (int k = 0; k < 3; ++k)
                GJ[i * 3 + k] = G2[i * 2 + 0] * o.J[0 * 3 + k] + G2[i * 2 + 1] * o.J[1 * 3 + k];
        for (int k = 0; k < 3; ++k)
            for (int l = 0; l < 3; ++l)
                Gc[k * 3 + l] = o.J[0 * 3 + k] * GJ[0 * 3 + l] + o.J[1 * 3 + k] * GJ[1 * 3 + l];
        // v_J = 2 G2 J Sigma_c
        T vJ[6];
        for (int i = 0; i < 2; ++i)
            for (int l = 0; l < 3; ++l)
                vJ[i * 3 + l] = T(2) * (GJ[i * 3 + 0] * o.cc[0 * 3 + l] +
                                        GJ[i * 3 + 1] * o.cc[1 * 3 + l] +
                                        GJ[i * 3 + 2] * o.cc[2 * 3 + l]);
        const T z2 = z * z, z3 = z2 * z;
        vz += -o.fx * vJ[0] / z2 + T(2) * o.fx * o.tx * vJ[2] / z3 - o.fy * vJ[4] / z2 +
              T(2) * o.fy * o.ty * vJ[5] / z3;
        const T v_tx = -o.fx * vJ[2] / z2, v_ty = -o.fy * vJ[5] / z2;
        const T rx = x / z, ry = y / z;
        if (rx < -o.lim_xn) vz += -o.lim_xn * v_tx;
        else if (rx > o.lim_xp) vz += o.lim_xp * v_tx;
        else vx += v_tx;
        if (ry < -o.lim_yn) vz += -o.lim_yn * v_ty;
        else if (ry > o.lim_yp) vz += o.lim_yp * v_ty;
        else vy += v_ty;
        // means2d = (fx x / z + cx, fy y / z + cy)
        vx += v_m2d[0] * o.fx / z;
        vy += v_m2d[1] * o.fy / z;
        vz -= (v_m2d[0] * o.fx * x + v_m2d[1] * o.fy * y) / z2;
    }
    // world <- camera: v_mean += R^T v_mc ; v_Sigma += R^T Gc R
    for (int j = 0; j < 3; ++j) v_mean[j] += vm[0 * 4 + j] * vx + vm[1 * 4 + j] * vy + vm[2 * 4 + j] * vz;
    if (ok) {
        T GR[9];
        for (int i = 0; i < 3; ++i)
            for (int l = 0; l < 3; ++l)
                GR[i * 3 + l] = Gc[i * 3 + 0] * vm[0 * 4 + l] + Gc[i * 3 + 1] * vm[1 * 4 + l] +
                                Gc[i * 3 + 2] * vm[2 * 4 + l];
        const int ii[6] = {0, 0, 0, 1, 1, 2}, kk[6] = {0, 1, 2, 1, 2, 2};
        for (int e = 0; e < 6; ++e) {
            const int k = ii[e], l = kk[e];
            v_cov[e] += vm[0 * 4 + k] * GR[0 * 3 + l] + vm[1 * 4 + k] * GR[1 * 3 + l] +
                        vm[2 * 4 + k] * GR[2 * 3 + l];
        }
    }
}

// ---------------------------------------------------------------- tile binning
// Tile rectangle [x0, x1) x [y0, y1) covered by a projected Gaussian (empty when culled).
template <typename T>
A3D_HD int tile_rect(const T* m2d, const int* radii, int tw, int th, int tile, int* x0, int* x1,
                     int* y0, int* y1) {
    *x0 = *x1 = *y0 = *y1 = 0;
    if (radii[0] <= 0 || radii[1] <= 0) return 0;
    const T ts = T(tile), rx = T(radii[0]), ry = T(radii[1]);
    *x0 = (int)t_min(t_max(t_floor((m2d[0] - rx) / ts), T(0)), T(tw));
    *x1 = (int)t_min(t_max(t_ceil((m2d[0] + rx) / ts), T(0)), T(tw));
    *y0 = (int)t_min(t_max(t_floor((m2d[1] - ry) / ts), T(0)), T(th));
    *y1 = (int)t_min(t_max(t_ceil((m2d[1] + ry) / ts), T(0)), T(th));
    const int nx = t_max(*x1 - *x0, 0), ny = t_max(*y1 - *y0, 0);
    return nx * ny;
}

// ---------------------------------------------------------------- per (pixel, Gaussian) blending
// Gaussian "power" at offset (dx, dy) = mean2d - pixel centre: sigma = d^T conic d / 2.
template <typename T>
A3D_HD T splat_sigma(T dx, T dy, T ca, T cb, T cc) {
    return T(0.5) * (ca * dx * dx + cc * dy * dy) + cb * dx * dy;
}

// Alpha from sigma. Returns false when the pair is skipped, exactly like the reference's
// ok = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD) (NaN is skipped too). vis = exp(-sigma).
template <typename T>
A3D_HD bool splat_alpha_sigma(T sigma, T opac, T* alpha, T* vis) {
    *vis = t_exp(-sigma);
    *alpha = t_min(opac * *vis, T(A3D_MAX_ALPHA));
    return sigma >= T(0) && *alpha >= T(A3D_ALPHA_THRESHOLD);
}

template <typename T>
A3D_HD bool splat_alpha(T dx, T dy, T ca, T cb, T cc, T opac, T* alpha, T* vis) {
    return splat_alpha_sigma(splat_sigma(dx, dy, ca, cb, cc), opac, alpha, vis);
}

// Conservative early reject, a pure speed-up: a pair with sigma > sigma_cutoff(opac) has
// opac exp(-sigma) < 0.999 / 255, so splat_alpha_sigma would skip it whatever the rounding.
// Pairs at or below the cutoff (and NaN sigmas) go through splat_alpha_sigma.
template <typename T>
A3D_HD T sigma_cutoff(T opac) {
    return opac > T(0) ? T(log(double(opac) * 255.0) + 1e-3) : T(-1);
}

// Conservative pixel spans of a splat, row by row: a pure speed-up for row-wise loops. On a pixel row
// with centre height pcy, row_span() returns the columns [*lo, *hi] (clipped to [x_begin, x_end))
// outside which splat_alpha_sigma cannot pass (sigma > cut there). The ellipse sigma <= cut is solved
// in double with a sigma margin far above the float rounding of splat_sigma (|error| <~ 6u sigma /
// (1 - e), e = |b| / sqrt(ac) < 1 for a positive-definite conic) and widened by 1e-3 px. Conics that
// are not positive definite (or non-finite) give whole rows, leaving the decision to the exact test.
struct RowSpan {
    double mx, my, b_over_a, inv_a, P, det;  // disc(dy) = P - det dy^2; centre mx + b_over_a dy
    int mode;                                 // 0: never passes, 1: whole rows, 2: ellipse
};

template <typename T>
A3D_HD RowSpan row_span_setup(T mx, T my, T ca, T cb, T cc, T cut) {
    RowSpan r{double(mx), double(my), 0.0, 0.0, 0.0, 0.0, 2};
    if (!(cut >= T(0))) {  // cut < 0 (opacity <= 1/255, or NaN): no pixel reaches ALPHA_THRESHOLD
        r.mode = 0;
        return r;
    }
    const double a = ca, b = cb, c = cc;
    r.det = a * c - b * b;
    if (!(a > 0.0) || !(c > 0.0) || !(r.det > 0.0) || !t_isfinite(r.det) || !t_isfinite(r.mx) ||
        !t_isfinite(r.my)) {
        r.mode = 1;
        return r;
    }
    const double ecc = t_min(fabs(b) / sqrt(a * c), 1.0 - 1e-12);
    const double s = double(cut) + 1e-3 + 1e-5 * (double(cut) + 1.0) / (1.0 - ecc);
    r.inv_a = 1.0 / a;
    r.b_over_a = b / a;
    r.P = 2.0 * a * s;  // 0.5 a dx^2 + b dy dx + 0.5 c dy^2 - s <= 0  <=>  (a dx + b dy)^2 <= P - det dy^2
    return r;
}

A3D_HD bool row_span(const RowSpan& r, double pcy, int x_begin, int x_end, int* lo, int* hi) {
    if (r.mode == 0 || x_end <= x_begin) return false;
    if (r.mode == 1) {
        *lo = x_begin;
        *hi = x_end - 1;
        return true;
    }
    const double dy = r.my - pcy, disc = r.P - r.det * dy * dy;
    if (!(disc >= 0.0)) return false;
    const double half = sqrt(disc) * r.inv_a, centre = r.mx + r.b_over_a * dy - 0.5;  // in px index units
    const double p_lo = ceil(centre - half - 1e-3), p_hi = floor(centre + half + 1e-3);
    if (!(p_hi >= double(x_begin)) || !(p_lo <= double(x_end - 1))) return false;  // also catches NaN
    *lo = (int)t_max(p_lo, double(x_begin));
    *hi = (int)t_min(p_hi, double(x_end - 1));
    return true;
}

// Front-to-back step. Returns false (and composites nothing) when the pixel saturates:
// T_next = T (1 - alpha) <= TRANSMITTANCE_THRESHOLD.
template <typename T>
A3D_HD bool blend_fwd(T alpha, const T* col, int K, T* trans, T* acc) {
    const T next = *trans * (T(1) - alpha);
    if (next <= T(A3D_TRANSMITTANCE_THRESHOLD)) return false;
    const T w = alpha * *trans;
    for (int k = 0; k < K; ++k) acc[k] += w * col[k];
    *trans = next;
    return true;
}

// Back-to-front step for one composited pair. On entry *trans is the transmittance behind this
// Gaussian, on exit the one in front of it (recovered by division). buffer (K) accumulates
// sum_{j behind} c_j a_j T_j. Writes v_col (K), v_xy (2), v_conic (3), v_opac.
template <typename T>
A3D_HD void blend_bwd(T alpha, T vis, T opac, T dx, T dy, T ca, T cb, T cc, const T* col, int K,
                      T T_final, const T* v_out /*K*/, T v_alpha_pix, T* trans, T* buffer,
                      T* v_col, T* v_xy, T* v_conic, T* v_opac) {
    const T ra = T(1) / (T(1) - alpha);
    *trans = *trans * ra;
    const T Ti = *trans;
    const T fac = alpha * Ti;
    T v_alpha = T(0);
    for (int k = 0; k < K; ++k) {
        v_col[k] = fac * v_out[k];
        v_alpha += (col[k] * Ti - buffer[k] * ra) * v_out[k];
        buffer[k] += col[k] * fac;
    }
    v_alpha += T_final * ra * v_alpha_pix;
    if (opac * vis <= T(A3D_MAX_ALPHA)) {
        const T v_sigma = -opac * vis * v_alpha;
        v_conic[0] = T(0.5) * v_sigma * dx * dx;
        v_conic[1] = v_sigma * dx * dy;
        v_conic[2] = T(0.5) * v_sigma * dy * dy;
        v_xy[0] = v_sigma * (ca * dx + cb * dy);
        v_xy[1] = v_sigma * (cb * dx + cc * dy);
        *v_opac = vis * v_alpha;
    } else {
        v_conic[0] = v_conic[1] = v_conic[2] = T(0);
        v_xy[0] = v_xy[1] = T(0);
        *v_opac = T(0);
    }
}

}  // namespace a3d
