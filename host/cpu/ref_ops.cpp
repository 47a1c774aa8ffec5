// vitcuda — CPU reference ops (see ref_ops.h). Written for clarity first: each op is the
// textbook formula, parallel over independent rows with OpenMP, reductions in double so the
// reference is more accurate than the kernels it judges. GEMMs go through OpenBLAS.
#include "host/cpu/ref_ops.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/activation.h"
#include "kernels/philox.h"

// glibc's libmvec holds SIMD versions of erff, expf and tanhf (AVX2 and AVX-512 variants, within
// 4 ulp). Declaring the scalar functions with GCC's simd attribute, as <math.h> itself does under
// -ffast-math, lets the `omp simd` activation loops below call them 8 or 16 lanes at a time
// without fast-math anywhere else: the fp32 erf-GELU went from 6 ns to 0.7 ns per element
// (measured on this project's 2-core AVX-512 machine; bench_cpu_ops linear_gelu_*).
// VITCUDA_HAVE_LIBMVEC is set by CMakeLists.txt when libmvec links.
#if defined(VITCUDA_HAVE_LIBMVEC) && defined(__GNUC__) && !defined(__clang__)
extern "C" {
__attribute__((simd("notinbranch"))) float erff(float) noexcept;
__attribute__((simd("notinbranch"))) float expf(float) noexcept;
__attribute__((simd("notinbranch"))) float tanhf(float) noexcept;
}
#endif

namespace vitcuda::ref {

// ---- GEMM ------------------------------------------------------------------------------
// OpenBLAS runs single-threaded and the output is split across OpenMP threads (rows or
// columns of C, whichever is longer): one thread pool instead of two pools spinning against
// each other on two cores (measured: the two pools spent ~40% of a training step yielding),
// and results that do not depend on OpenBLAS's own partitioning.
namespace {
void blas_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (blasint)M, (blasint)N,
              (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}
void blas_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
               const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (blasint)M, (blasint)N,
              (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}
struct BlasSingleThreaded {
  BlasSingleThreaded() { openblas_set_num_threads(1); }
};
}  // namespace

template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B, int64_t ldb,
          T beta, T* C, int64_t ldc) {
  static BlasSingleThreaded once;
  (void)once;
  const int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
  const int64_t work = M * N * K;
  if (nt == 1 || work < (1 << 16)) {
    blas_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  const bool split_rows = M >= N;
  const int64_t len = split_rows ? M : N;
  const int64_t chunk = (len + nt - 1) / nt;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int t = 0; t < nt; ++t) {
    const int64_t b = std::min(len, t * chunk), e = std::min(len, b + chunk);
    if (b >= e) continue;
    if (split_rows)  // rows b..e of C = rows b..e of op(A)
      blas_gemm(ta, tb, e - b, N, K, alpha, ta ? A + b : A + b * lda, lda, B, ldb, beta, C + b * ldc, ldc);
    else  // columns b..e of C = columns b..e of op(B)
      blas_gemm(ta, tb, M, e - b, K, alpha, A, lda, tb ? B + b * ldb : B + b, ldb, beta, C + b, ldc);
  }
}
template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                          float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t, const double*,
                           int64_t, double, double*, int64_t);

// ---- activations -------------------------------------------------------------------------
// The formulas are kernels/activation.h's, shared with the kernels; in float they call erff /
// expf / tanhf by name, which the simd declarations at the top turn into libmvec calls inside
// the `omp simd` loops below.
namespace {
using hdmath::exp_;  // also the softmax's exp (vectorised in float, as the activations)

template <typename T>
inline T act_fwd(Act act, T x) {
  switch (act) {
    case Act::None: return act_value<Act::None>(x);
    case Act::GeluErf: return act_value<Act::GeluErf>(x);
    case Act::GeluTanh: return act_value<Act::GeluTanh>(x);
    case Act::Tanh: return act_value<Act::Tanh>(x);
  }
  return x;
}
template <typename T>
inline T act_grad(Act act, T x) {
  switch (act) {
    case Act::None: return act_derivative_value<Act::None>(x);
    case Act::GeluErf: return act_derivative_value<Act::GeluErf>(x);
    case Act::GeluTanh: return act_derivative_value<Act::GeluTanh>(x);
    case Act::Tanh: return act_derivative_value<Act::Tanh>(x);
  }
  return T(1);
}

// y[i] = act(x[i]) and dy[i] *= act'(x[i]) over n values: the switch is outside the loops, so
// each loop is one simd body (called inside the callers' parallel loops).
template <typename T>
void act_forward_n(Act act, const T* x, T* y, int64_t n) {
  switch (act) {
    case Act::None:
      if (y != x) std::copy(x, x + n, y);
      return;
    case Act::GeluErf:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) y[i] = act_value<Act::GeluErf>(x[i]);
      return;
    case Act::GeluTanh:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) y[i] = act_value<Act::GeluTanh>(x[i]);
      return;
    case Act::Tanh:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) y[i] = act_value<Act::Tanh>(x[i]);
      return;
  }
}
template <typename T>
void act_backward_n(Act act, const T* x, T* dy, int64_t n) {
  switch (act) {
    case Act::None: return;
    case Act::GeluErf:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) dy[i] *= act_derivative_value<Act::GeluErf>(x[i]);
      return;
    case Act::GeluTanh:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) dy[i] *= act_derivative_value<Act::GeluTanh>(x[i]);
      return;
    case Act::Tanh:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) dy[i] *= act_derivative_value<Act::Tanh>(x[i]);
      return;
  }
}
}  // namespace

double act_forward(Act act, double x) { return act_fwd<double>(act, x); }
double act_derivative(Act act, double x) { return act_grad<double>(act, x); }

// ---- patch extraction (im2col of Conv2d(kernel = stride = P)) ----------------------------
template <typename T>
void patch_extract(const void* images, bool images_u8, ImageLayout layout, int64_t B, int C, int H, int W, int P,
                   const float* mean, const float* stdev, T* cols) {
  const int gh = H / P, gw = W / P;
  const int64_t np = int64_t(gh) * gw, pd = int64_t(C) * P * P;
  const auto* u8 = static_cast<const uint8_t*>(images);
  const auto* f32 = static_cast<const float*>(images);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t p = 0; p < np; ++p) {
      const int py = int(p / gw), px = int(p % gw);
      T* row = cols + (b * np + p) * pd;
      for (int c = 0; c < C; ++c) {
        const double inv_std = 1.0 / stdev[c];
        for (int ky = 0; ky < P; ++ky) {
          for (int kx = 0; kx < P; ++kx) {
            const int64_t y = int64_t(py) * P + ky, x = int64_t(px) * P + kx;
            const int64_t idx =
                layout == ImageLayout::NCHW ? ((b * C + c) * H + y) * W + x : ((b * H + y) * W + x) * C + c;
            const double v = images_u8 ? u8[idx] / 255.0 : double(f32[idx]);
            row[(c * P + ky) * P + kx] = T((v - mean[c]) * inv_std);
          }
        }
      }
    }
  }
}

// ---- linear ------------------------------------------------------------------------------
template <typename T>
void linear_forward(const T* x, const T* w, const T* b, Act act, T* pre, T* y, int64_t R, int64_t K, int64_t N,
                    const DropoutSpec& drop) {
  T* out = act == Act::None ? y : pre;
  gemm<T>(false, true, R, N, K, T(1), x, K, w, K, T(0), out, N);
  if (b || act != Act::None) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < R; ++r) {
      T* o = out + r * N;  // pre when act != None, else y
      if (b)
        for (int64_t n = 0; n < N; ++n) o[n] += b[n];
      if (act != Act::None) act_forward_n(act, o, y + r * N, N);
    }
  }
  if (drop.active()) dropout<T>(y, y, R * N, drop);
}

template <typename T>
void linear_backward(T* dy, const T* x, const T* w, Act act, const T* pre, T* dx, T* dw, T* db, int64_t R, int64_t K,
                     int64_t N, const DropoutSpec& drop) {
  if (drop.active()) dropout<T>(dy, dy, R * N, drop);
  if (act != Act::None) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < R; ++r) act_backward_n(act, pre + r * N, dy + r * N, N);
  }
  if (dx) gemm<T>(false, false, R, K, N, T(1), dy, N, w, K, T(0), dx, K);
  if (dw) gemm<T>(true, false, N, K, R, T(1), dy, N, x, K, T(1), dw, K);
  if (db) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      double s = 0;
      for (int64_t r = 0; r < R; ++r) s += dy[r * N + n];
      db[n] += T(s);
    }
  }
}

// ---- tokens: cls (and distillation token) prepend + position embedding ----------------------
template <typename T>
void tokens_forward(const T* patches, const T* cls, const T* dist, const T* pos, T* out, int64_t B, int64_t Np,
                    int64_t D) {
  const int64_t off = (cls ? 1 : 0) + (dist ? 1 : 0), Tn = Np + off;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < Tn; ++t) {
      const T* src = t == 0 && cls ? cls : t < off ? dist : patches + (b * Np + t - off) * D;
      T* dst = out + (b * Tn + t) * D;
      for (int64_t d = 0; d < D; ++d) dst[d] = src[d] + pos[t * D + d];
    }
  }
}

template <typename T>
void tokens_backward(const T* dout, T* dpatches, T* dcls, T* ddist, T* dpos, int64_t B, int64_t Np, int64_t D) {
  const int64_t off = (dcls ? 1 : 0) + (ddist ? 1 : 0), Tn = Np + off;
  if (dpatches) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t p = 0; p < Np; ++p)
        std::memcpy(dpatches + (b * Np + p) * D, dout + (b * Tn + p + off) * D, D * sizeof(T));
  }
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < Tn; ++t) {
    for (int64_t d = 0; d < D; ++d) {
      double s = 0;
      for (int64_t b = 0; b < B; ++b) s += dout[(b * Tn + t) * D + d];
      if (dpos) dpos[t * D + d] += T(s);
      if (t == 0 && dcls) dcls[d] += T(s);
      if (t == 1 && ddist) ddist[d] += T(s);
    }
  }
}

// ---- layernorm ---------------------------------------------------------------------------
template <typename T>
void layernorm_forward(const T* x, const T* residual, T* sum_out, const T* gamma, const T* beta, float eps, T* y,
                       T* mean, T* rstd, int64_t R, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < R; ++r) {
    const T* xr = x + r * C;
    T* sr = sum_out ? sum_out + r * C : nullptr;
    double s = 0;
    for (int64_t c = 0; c < C; ++c) {
      const T v = residual ? T(xr[c] + residual[r * C + c]) : xr[c];
      if (sr) sr[c] = v;
      s += v;
    }
    const T* in = sr ? sr : xr;
    const double mu = s / C;
    double ss = 0;
    for (int64_t c = 0; c < C; ++c) ss += (in[c] - mu) * (in[c] - mu);
    const double rs = 1.0 / std::sqrt(ss / C + eps);
    for (int64_t c = 0; c < C; ++c) y[r * C + c] = T((in[c] - mu) * rs * gamma[c] + beta[c]);
    mean[r] = T(mu);
    rstd[r] = T(rs);
  }
}

template <typename T>
void layernorm_backward(const T* dy, const T* x, const T* gamma, const T* mean, const T* rstd, T* dx, T* dgamma,
                        T* dbeta, int64_t R, int64_t C) {
  const int nt = omp_get_max_threads();
  std::vector<double> partial(size_t(nt) * 2 * C, 0.0);  // per-thread dgamma, dbeta
#pragma omp parallel
  {
    double* pg = partial.data() + size_t(omp_get_thread_num()) * 2 * C;
    double* pb = pg + C;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < R; ++r) {
      const T* xr = x + r * C;
      const T* dyr = dy + r * C;
      const double mu = mean[r], rs = rstd[r];
      double mean_g = 0, mean_gx = 0;  // mean(dy*gamma), mean(dy*gamma*xhat)
      for (int64_t c = 0; c < C; ++c) {
        const double xh = (xr[c] - mu) * rs, g = double(dyr[c]) * gamma[c];
        mean_g += g;
        mean_gx += g * xh;
        pg[c] += double(dyr[c]) * xh;
        pb[c] += dyr[c];
      }
      mean_g /= C;
      mean_gx /= C;
      if (dx) {
        for (int64_t c = 0; c < C; ++c) {
          const double xh = (xr[c] - mu) * rs, g = double(dyr[c]) * gamma[c];
          dx[r * C + c] += T(rs * (g - mean_g - xh * mean_gx));
        }
      }
    }
  }
  for (int t = 0; t < nt; ++t) {
    const double* pg = partial.data() + size_t(t) * 2 * C;
    for (int64_t c = 0; c < C; ++c) {
      if (dgamma) dgamma[c] += T(pg[c]);
      if (dbeta) dbeta[c] += T(pg[C + c]);
    }
  }
}

// ---- attention -----------------------------------------------------------------------------
// Row-wise softmax attention per (batch, head), q, k, v read in place from the packed qkv
// [B, N, 3, H, d] (rows at stride 3·H·d) and dq, dk, dv written in place into dqkv. P is never
// kept between calls: backward
// recomputes it from the saved logsumexp, as FlashAttention does, and regenerates the dropout
// mask. Per head the products are single-threaded BLAS calls on [N, N] and [N, d] matrices
// (S = Q Kᵀ, O = P V; dV = P'ᵀ dO, dP' = dO Vᵀ, dQ = dS K, dK = dSᵀ Q) inside one OpenMP loop
// over (batch, head); the softmax rows are simd loops. Accumulation is in T (float rows of
// <= 577 terms lose < 1e-5 relative; double for the gradient checks). The per-row loops over
// j and c of the textbook form ran at ~10 GFLOP/s on two cores; the BLAS form is ~3x faster
// at the fmnist shape (bench_cpu_ops attention_*).
namespace {
inline uint64_t attn_index(int64_t bh, int64_t i, int64_t j, int64_t N) { return (uint64_t(bh) * N + i) * N + j; }
}  // namespace

// The call's Philox stream: spec.stream plus the offset it points to, if any (host memory here).
uint64_t stream_of(const DropoutSpec& spec) { return spec.stream + (spec.stream_offset ? *spec.stream_offset : 0); }

template <typename T>
void attention_forward(const T* qkv, float scale, const DropoutSpec& drop, T* out, T* lse, int64_t B, int64_t H,
                       int64_t N, int64_t d) {
  const uint32_t thr = dropout_threshold(drop.p);
  const T keep_scale = drop.active() ? T(1.0 / (1.0 - drop.p)) : T(1);
#pragma omp parallel
  {
    std::vector<T> P(N * N);
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < H; ++h) {
        const int64_t bh = b * H + h, A = H * d, L = 3 * A;
        const T *Q = qkv + b * N * L + h * d, *K = Q + A, *V = K + A;            // rows at stride L
        gemm<T>(false, true, N, N, d, T(scale), Q, L, K, L, T(0), P.data(), N);  // S = scale·Q Kᵀ
        for (int64_t i = 0; i < N; ++i) {
          T* p = P.data() + i * N;
          const T m = *std::max_element(p, p + N);
          T l = 0;
#pragma omp simd reduction(+ : l)
          for (int64_t j = 0; j < N; ++j) l += (p[j] = exp_(p[j] - m));
          lse[bh * N + i] = m + std::log(l);
#pragma omp simd
          for (int64_t j = 0; j < N; ++j) p[j] /= l;
          if (drop.active())
            for (int64_t j = 0; j < N; ++j)
              p[j] = dropout_keep(drop.seed, stream_of(drop), attn_index(bh, i, j, N), thr) ? p[j] * keep_scale : T(0);
        }
        // O = P' V into out [B, N, H, d]: rows of head h at stride H·d.
        gemm<T>(false, false, N, d, N, T(1), P.data(), N, V, L, T(0), out + (b * N * H + h) * d, H * d);
      }
    }
  }
}

template <typename T>
void attention_backward(const T* dout, const T* qkv, const T* out, const T* lse, float scale, const DropoutSpec& drop,
                        T* dqkv, int64_t B, int64_t H, int64_t N, int64_t d) {
  const uint32_t thr = dropout_threshold(drop.p);
  const T keep_scale = drop.active() ? T(1.0 / (1.0 - drop.p)) : T(1);
#pragma omp parallel
  {
    // P, then dP' overwritten by dS; Pz = P∘Z (only with dropout: otherwise P itself).
    std::vector<T> P(N * N), dP(N * N), Pz(drop.active() ? N * N : 0), D(N);
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < H; ++h) {
        const int64_t bh = b * H + h, ld = H * d, A = H * d, L = 3 * A;
        const T *Q = qkv + b * N * L + h * d, *K = Q + A, *V = K + A;              // rows at stride L
        const T *dO = dout + (b * N * H + h) * d, *O = out + (b * N * H + h) * d;  // rows at stride H·d
        T *dQ = dqkv + b * N * L + h * d, *dK = dQ + A, *dV = dK + A;
        gemm<T>(false, true, N, N, d, T(scale), Q, L, K, L, T(0), P.data(), N);  // S
        for (int64_t i = 0; i < N; ++i) {
          T Di = 0;  // rowsum(dP' ∘ P') = dO_i · O_i, also with dropout
          for (int64_t c = 0; c < d; ++c) Di += dO[i * ld + c] * O[i * ld + c];
          D[i] = Di;
          T* p = P.data() + i * N;
          const T li = lse[bh * N + i];
#pragma omp simd
          for (int64_t j = 0; j < N; ++j) p[j] = exp_(p[j] - li);
          if (drop.active())
            for (int64_t j = 0; j < N; ++j)
              Pz[i * N + j] =
                  dropout_keep(drop.seed, stream_of(drop), attn_index(bh, i, j, N), thr) ? p[j] * keep_scale : T(0);
        }
        const T* Pd = drop.active() ? Pz.data() : P.data();
        gemm<T>(true, false, N, d, N, T(1), Pd, N, dO, ld, T(0), dV, L);        // dV = P'ᵀ dO
        gemm<T>(false, true, N, N, d, T(1), dO, ld, V, L, T(0), dP.data(), N);  // dP' = dO Vᵀ
        // dS = P ∘ (dP'∘Z − D)·scale = (P'∘dP' − P·D)·scale.
        for (int64_t i = 0; i < N; ++i) {
          const T* p = P.data() + i * N;
          const T* pz = Pd + i * N;
          T* ds = dP.data() + i * N;
          const T Di = D[i];
#pragma omp simd
          for (int64_t j = 0; j < N; ++j) ds[j] = (pz[j] * ds[j] - p[j] * Di) * T(scale);
        }
        gemm<T>(false, false, N, d, N, T(1), dP.data(), N, K, L, T(0), dQ, L);  // dQ = dS K
        gemm<T>(true, false, N, d, N, T(1), dP.data(), N, Q, L, T(0), dK, L);   // dK = dSᵀ Q
      }
    }
  }
}

// ---- dropout and drop-path -----------------------------------------------------------------
template <typename T>
void dropout(const T* x, T* y, int64_t n, const DropoutSpec& spec) {
  if (!spec.active()) {
    if (x != y) std::memcpy(y, x, n * sizeof(T));
    return;
  }
  const uint32_t thr = dropout_threshold(spec.p);
  const T scale = T(1.0 / (1.0 - spec.p));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i)
    y[i] = dropout_keep(spec.seed, stream_of(spec), uint64_t(i), thr) ? x[i] * scale : T(0);
}

template <typename T>
void drop_path(const T* x, T* y, int64_t B, int64_t per_sample, const DropoutSpec& spec) {
  if (!spec.active()) {
    if (x != y) std::memcpy(y, x, B * per_sample * sizeof(T));
    return;
  }
  const uint32_t thr = dropout_threshold(spec.p);
  const T scale = T(1.0 / (1.0 - spec.p));
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    const T f = dropout_keep(spec.seed, stream_of(spec), uint64_t(b), thr) ? scale : T(0);
    for (int64_t i = 0; i < per_sample; ++i) y[b * per_sample + i] = x[b * per_sample + i] * f;
  }
}

// ---- pooling -------------------------------------------------------------------------------
// Token: out[p, b, :] = x[b, p, :] for the num_prefix prefix rows (token-major); Avg: the mean of
// the rows t >= num_prefix.
template <typename T>
void pool_forward(const T* x, Pool pool, int num_prefix, T* out, int64_t B, int64_t N, int64_t D) {
  if (pool == Pool::Token) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t p = 0; p < num_prefix; ++p)
      for (int64_t b = 0; b < B; ++b) std::memcpy(out + (p * B + b) * D, x + (b * N + p) * D, D * sizeof(T));
    return;
  }
  const int64_t n_avg = N - num_prefix;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t c = 0; c < D; ++c) {
      double s = 0;
      for (int64_t t = num_prefix; t < N; ++t) s += x[(b * N + t) * D + c];
      out[b * D + c] = T(s / n_avg);
    }
  }
}

template <typename T>
void pool_backward(const T* dout, Pool pool, int num_prefix, T* dx, int64_t B, int64_t N, int64_t D) {
  const double inv = 1.0 / double(N - num_prefix);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < N; ++t)
      for (int64_t c = 0; c < D; ++c)
        dx[(b * N + t) * D + c] = pool == Pool::Token ? (t < num_prefix ? dout[(t * B + b) * D + c] : T(0))
                                                      : (t < num_prefix ? T(0) : T(dout[b * D + c] * inv));
}

// ---- softmax cross-entropy with label smoothing ------------------------------------------
// loss = (1 - eps) * (-log p_y) + eps * mean_j(-log p_j)   (timm's LabelSmoothingCrossEntropy)
template <typename T>
void softmax_xent(const T* logits, const int32_t* labels, float smoothing, float dscale, float* losses, T* dlogits,
                  int32_t* hits, int64_t B, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    const T* z = logits + b * C;
    const int32_t y = labels[b];
    double m = z[0];
    for (int64_t j = 1; j < C; ++j) m = std::max(m, double(z[j]));
    double sum = 0, sum_z = 0;
    int rank = 0;  // classes scoring strictly above the label
    for (int64_t j = 0; j < C; ++j) {
      sum += std::exp(z[j] - m);
      sum_z += z[j];
      rank += z[j] > z[y];
    }
    const double lse = m + std::log(sum);
    const double nll = lse - z[y];
    const double smooth = lse - sum_z / C;  // mean_j(-log p_j)
    losses[b] = float((1.0 - smoothing) * nll + smoothing * smooth);
    hits[b] = (rank == 0 ? 1 : 0) | (rank < 5 ? 2 : 0);
    if (dlogits) {
      for (int64_t j = 0; j < C; ++j) {
        const double target = (j == y ? 1.0 - smoothing : 0.0) + smoothing / C;
        dlogits[b * C + j] = T((std::exp(z[j] - lse) - target) * dscale);
      }
    }
  }
}

// ---- distillation (DeiT) ------------------------------------------------------------------
// In double for every T (the reference). hard: L = lse(s) - s[y], y the teacher's first argmax;
// soft: L = tau^2 * sum_c q_c (log q_c - log p_c) with log-sum-exp for both log-softmaxes.
template <typename T>
void distill_loss(const T* student, const T* teacher, Distill kind, float tau, float alpha, float dscale, float* losses,
                  T* dlogits, bool accumulate, int64_t B, int64_t C) {
  const double a = alpha, g = double(alpha) * double(dscale), tau_d = tau;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    const T* s = student + b * C;
    const T* t = teacher + b * C;
    T* dl = dlogits ? dlogits + b * C : nullptr;
    double L = 0;
    if (kind == Distill::Hard) {
      int64_t y = 0;
      for (int64_t j = 1; j < C; ++j)
        if (t[j] > t[y]) y = j;  // strictly greater: the first index of the maximum
      double m = s[0];
      for (int64_t j = 1; j < C; ++j) m = std::max(m, double(s[j]));
      double sum = 0;
      for (int64_t j = 0; j < C; ++j) sum += std::exp(double(s[j]) - m);
      const double lse = m + std::log(sum);
      L = lse - double(s[y]);
      if (dl) {
        for (int64_t j = 0; j < C; ++j) {
          const double d = g * (std::exp(double(s[j]) - lse) - (j == y ? 1.0 : 0.0));
          dl[j] = accumulate ? T(double(dl[j]) + d) : T(d);
        }
      }
    } else {
      double ms = double(s[0]) / tau_d, mt = double(t[0]) / tau_d;
      for (int64_t j = 1; j < C; ++j) {
        ms = std::max(ms, double(s[j]) / tau_d);
        mt = std::max(mt, double(t[j]) / tau_d);
      }
      double sum_s = 0, sum_t = 0;
      for (int64_t j = 0; j < C; ++j) {
        sum_s += std::exp(double(s[j]) / tau_d - ms);
        sum_t += std::exp(double(t[j]) / tau_d - mt);
      }
      const double lse_s = ms + std::log(sum_s), lse_t = mt + std::log(sum_t);
      double kl = 0;
      for (int64_t j = 0; j < C; ++j) {
        const double log_p = double(s[j]) / tau_d - lse_s, log_q = double(t[j]) / tau_d - lse_t;
        kl += std::exp(log_q) * (log_q - log_p);
      }
      L = tau_d * tau_d * kl;
      if (dl) {
        for (int64_t j = 0; j < C; ++j) {
          const double p = std::exp(double(s[j]) / tau_d - lse_s), q = std::exp(double(t[j]) / tau_d - lse_t);
          const double d = g * tau_d * (p - q);
          dl[j] = accumulate ? T(double(dl[j]) + d) : T(d);
        }
      }
    }
    losses[b] = float((1.0 - a) * double(losses[b]) + a * L);
  }
}

template <typename T>
double sum_squares(const T* x, int64_t n) {
  double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static)
  for (int64_t i = 0; i < n; ++i) s += double(x[i]) * x[i];
  return s;
}

// ---- AdamW (decoupled weight decay, PyTorch's order of operations) -------------------------
void adamw_update(float* master, const float* grads, float* m, float* v, const AdamWHyper& h,
                  const AdamWSegment* segments, int num_segments) {
  const double bc1 = 1.0 - std::pow(double(h.beta1), double(h.step));
  const double bc2 = 1.0 - std::pow(double(h.beta2), double(h.step));
  for (int s = 0; s < num_segments; ++s) {
    const AdamWSegment& seg = segments[s];
    const float decay = seg.decay ? 1.f - h.lr * h.weight_decay : 1.f;
#pragma omp parallel for schedule(static)
    for (int64_t i = seg.offset; i < seg.offset + seg.count; ++i) {
      const float g = grads[i] * h.grad_scale;
      m[i] = h.beta1 * m[i] + (1.f - h.beta1) * g;
      v[i] = h.beta2 * v[i] + (1.f - h.beta2) * g * g;
      const float mhat = float(m[i] / bc1), vhat = float(v[i] / bc2);
      master[i] = master[i] * decay - h.lr * mhat / (std::sqrt(vhat) + h.eps);
    }
  }
}

void step_metrics(const float* losses, const int32_t* hits, int64_t B, StepState* state, bool commit, bool accumulate) {
  double loss = 0;
  int64_t top1 = 0, top5 = 0;
  for (int64_t b = 0; b < B; ++b) {
    loss += double(losses[b]);
    top1 += hits[b] & 1;
    top5 += (hits[b] >> 1) & 1;
  }
  if (accumulate) {
    state->step_loss = state->step_loss + loss;
    state->step_samples += B;
    state->step_top1 += top1;
    state->step_top5 += top5;
  } else {
    state->step_loss = loss;
    state->step_samples = B;
    state->step_top1 = top1;
    state->step_top5 = top5;
  }
  if (commit) {
    state->loss_sum += loss;
    state->samples += B;
    state->top1 += top1;
    state->top5 += top5;
  }
}

void grad_norm_finish(float max_norm, StepState* state) {
  const double sumsq = state->grad_sumsq;
  const double norm = std::sqrt(sumsq);
  state->grad_scale = (max_norm > 0.f && norm > max_norm) ? float(max_norm / (norm + 1e-6)) : 1.f;
  state->skip = !(std::isfinite(sumsq) && std::isfinite(state->step_loss));
  if (state->skip) {
    ++state->skipped_steps;
    return;
  }
  state->loss_sum += state->step_loss;
  state->samples += state->step_samples;
  state->top1 += state->step_top1;
  state->top5 += state->step_top5;
}

bool adamw_prepare(AdamWHyper& h, StepState* state) {
  if (state->skip) return false;
  h.step = ++state->adam_step;
  h.lr = state->lr;
  h.grad_scale = state->grad_scale;
  state->inv_bc1 = float(1.0 / (1.0 - std::pow(double(h.beta1), double(h.step))));
  state->inv_bc2 = float(1.0 / (1.0 - std::pow(double(h.beta2), double(h.step))));
  state->decay_factor = 1.f - h.lr * h.weight_decay;
  return true;
}

// ---- explicit instantiations: float (the cpu backend) and double (gradient checks) ------
#define VITCUDA_REF_INSTANTIATE(T)                                                                                     \
  template void patch_extract<T>(const void*, bool, ImageLayout, int64_t, int, int, int, int, const float*,            \
                                 const float*, T*);                                                                    \
  template void linear_forward<T>(const T*, const T*, const T*, Act, T*, T*, int64_t, int64_t, int64_t,                \
                                  const DropoutSpec&);                                                                 \
  template void linear_backward<T>(T*, const T*, const T*, Act, const T*, T*, T*, T*, int64_t, int64_t, int64_t,       \
                                   const DropoutSpec&);                                                                \
  template void tokens_forward<T>(const T*, const T*, const T*, const T*, T*, int64_t, int64_t, int64_t);              \
  template void tokens_backward<T>(const T*, T*, T*, T*, T*, int64_t, int64_t, int64_t);                               \
  template void layernorm_forward<T>(const T*, const T*, T*, const T*, const T*, float, T*, T*, T*, int64_t, int64_t); \
  template void layernorm_backward<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, T*, int64_t, int64_t); \
  template void attention_forward<T>(const T*, float, const DropoutSpec&, T*, T*, int64_t, int64_t, int64_t, int64_t); \
  template void attention_backward<T>(const T*, const T*, const T*, const T*, float, const DropoutSpec&, T*, int64_t,  \
                                      int64_t, int64_t, int64_t);                                                      \
  template void dropout<T>(const T*, T*, int64_t, const DropoutSpec&);                                                 \
  template void drop_path<T>(const T*, T*, int64_t, int64_t, const DropoutSpec&);                                      \
  template void pool_forward<T>(const T*, Pool, int, T*, int64_t, int64_t, int64_t);                                   \
  template void pool_backward<T>(const T*, Pool, int, T*, int64_t, int64_t, int64_t);                                  \
  template void softmax_xent<T>(const T*, const int32_t*, float, float, float*, T*, int32_t*, int64_t, int64_t);       \
  template void distill_loss<T>(const T*, const T*, Distill, float, float, float, float*, T*, bool, int64_t, int64_t); \
  template double sum_squares<T>(const T*, int64_t);

VITCUDA_REF_INSTANTIATE(float)
VITCUDA_REF_INSTANTIATE(double)
#undef VITCUDA_REF_INSTANTIATE

}  // namespace vitcuda::ref
