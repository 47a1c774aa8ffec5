// vitcuda — fused AdamW over the parameter arena, and the global sum of squares for clipping.
//
// AdamW is the largest streaming op of a step: per parameter it reads master, grad, m, v (16 B)
// and writes master, m, v and the compute copy (12 B + 2 B bf16), 30 B in all — 2.6 GB for
// ViT-B's 86M parameters, ~0.8 ms at an H100's 3.35 TB/s. Unfused (scale, m, v, update, convert
// as separate passes) it moves about twice that. One kernel does it all: each block owns a
// 4096-element tile of ONE segment, so the weight-decay factor is uniform in the block, and each
// thread moves 16-byte vectors (4 fp32, and 4 bf16 = 8 B of the compute copy).
//
// The segment table (a few dozen runs of the arena after merging neighbours with the same decay
// flag) travels by value in the kernel parameters (< 4 KiB, no upload, nothing to keep alive
// for a CUDA Graph); the block finds its segment by a binary search over the tile prefix sums,
// which is uniform across the block (broadcast reads of the parameter bank).
#include "kernels/adamw.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/common.cuh"
#include "kernels/vec.cuh"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

namespace {
constexpr int kAdamWThreads = 256;
constexpr int kAdamWVecsPerThread = 4;
constexpr int64_t kAdamWTile = int64_t(kAdamWThreads) * 4 * kAdamWVecsPerThread;  // elements
constexpr int kAdamWMaxSegments = 128;  // per launch; the table stays under 2.7 KiB

constexpr int kSumSquaresThreads = 256;
// The block count is a function of n only (so is the summation order): at least 8 items
// (16-byte vectors) per thread, at most 1024 blocks of 256 threads, which fill an H100 (132 SMs
// × 8 blocks) and leave each thread ~80 vectors of ViT-B's gradient arena to stream.
constexpr int kSumSquaresBlocks = 1024;
constexpr int64_t kSumSquaresItemsPerThread = 8;
}  // namespace

struct AdamWScalars {
  float lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, grad_scale;
  float inv_bc1, inv_bc2;  // 1/(1-β^step), from double
  float decay_factor;      // 1 - lr·wd, as the reference computes it (fp32)
};

// Segments of one launch and the first tile of each: tile t belongs to the last segment s with
// first_tile[s] <= t.
struct AdamWTable {
  int num;
  int64_t offset[kAdamWMaxSegments];
  int64_t count[kAdamWMaxSegments];
  int first_tile[kAdamWMaxSegments + 1];
  uint32_t decay_bits[kAdamWMaxSegments / 32];
};

// ------------------------------------------------------------------------------------------
// CUDA kernels
// ------------------------------------------------------------------------------------------

struct AdamWState {
  float p, g, m, v;
};

// The reference's arithmetic, in its order (host/cpu/ref_ops.cpp adamw_update).
__device__ __forceinline__ void adamw_step(AdamWState& e, const AdamWScalars& s, float decay) {
  const float g = e.g * s.grad_scale;
  e.m = s.beta1 * e.m + s.one_minus_beta1 * g;
  e.v = s.beta2 * e.v + s.one_minus_beta2 * g * g;
  const float mhat = e.m * s.inv_bc1, vhat = e.v * s.inv_bc2;
  e.p = e.p * decay - s.lr * mhat / (sqrtf(vhat) + s.eps);
}

template <typename TP>
__device__ __forceinline__ void adamw_one(int64_t i, float* master, const float* grads, float* m, float* v, TP* params,
                                          const AdamWScalars& s, float decay) {
  AdamWState e{master[i], grads[i], m[i], v[i]};
  adamw_step(e, s, decay);
  master[i] = e.p;
  m[i] = e.m;
  v[i] = e.v;
  if (params) params[i] = from_float<TP>(e.p);
}

// ref::adamw_prepare on the device: one thread, before the update of a step with a StepState.
__global__ void adamw_prepare_kernel(StepState* state, float beta1, float beta2, float weight_decay) {
  if (state->skip) return;
  const int64_t step = ++state->adam_step;
  state->inv_bc1 = static_cast<float>(1.0 / (1.0 - pow(static_cast<double>(beta1), static_cast<double>(step))));
  state->inv_bc2 = static_cast<float>(1.0 / (1.0 - pow(static_cast<double>(beta2), static_cast<double>(step))));
  state->decay_factor = 1.f - state->lr * weight_decay;
}

// 5 CTAs (40 warps) per SM: enough 16-byte loads in flight to stream at full bandwidth; the
// StepState reads cost a few registers over the 48 this leaves.
template <typename TP>
__global__ void __launch_bounds__(kAdamWThreads, 5)
    adamw_kernel(float* __restrict__ master, const float* __restrict__ grads, float* __restrict__ m,
                 float* __restrict__ v, TP* __restrict__ params, AdamWScalars s, AdamWTable table,
                 const StepState* __restrict__ state) {
  if (state) {  // this step's scalars, written by adamw_prepare_kernel (uniform loads)
    if (state->skip) return;
    s.lr = state->lr;
    s.grad_scale = state->grad_scale;
    s.inv_bc1 = state->inv_bc1;
    s.inv_bc2 = state->inv_bc2;
    s.decay_factor = state->decay_factor;
  }
  const int tile = static_cast<int>(blockIdx.x);
  int lo = 0, hi = table.num - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (table.first_tile[mid] <= tile)
      lo = mid;
    else
      hi = mid - 1;
  }
  const int64_t seg_end = table.offset[lo] + table.count[lo];
  const int64_t begin = table.offset[lo] + static_cast<int64_t>(tile - table.first_tile[lo]) * kAdamWTile;
  const int64_t end = begin + kAdamWTile < seg_end ? begin + kAdamWTile : seg_end;
  const float decay = (table.decay_bits[lo / 32] >> (lo % 32)) & 1u ? s.decay_factor : 1.f;

  // [begin, vbegin) and [vend, end): the parts of the tile off the 4-element grid (segments
  // need not start or end on it); [vbegin, vend): 16-byte vectors.
  int64_t vbegin = (begin + 3) & ~int64_t(3);
  if (vbegin > end) vbegin = end;
  int64_t vend = end & ~int64_t(3);
  if (vend < vbegin) vend = vbegin;
  VITCUDA_NO_UNROLL  // unrolled, nvcc computes the trip count with a 64-bit division
      for (int64_t i = begin + threadIdx.x; i < vbegin; i += blockDim.x)
          adamw_one(i, master, grads, m, v, params, s, decay);
  VITCUDA_NO_UNROLL
  for (int64_t i = vbegin + 4 * static_cast<int64_t>(threadIdx.x); i < vend; i += 4 * blockDim.x) {
    const float4 p4 = *reinterpret_cast<const float4*>(master + i);
    const float4 g4 = *reinterpret_cast<const float4*>(grads + i);
    float4 m4 = *reinterpret_cast<const float4*>(m + i);
    float4 v4 = *reinterpret_cast<const float4*>(v + i);
    AdamWState e[4] = {
        {p4.x, g4.x, m4.x, v4.x}, {p4.y, g4.y, m4.y, v4.y}, {p4.z, g4.z, m4.z, v4.z}, {p4.w, g4.w, m4.w, v4.w}};
    VITCUDA_UNROLL
    for (int k = 0; k < 4; ++k) adamw_step(e[k], s, decay);
    *reinterpret_cast<float4*>(master + i) = make_float4(e[0].p, e[1].p, e[2].p, e[3].p);
    *reinterpret_cast<float4*>(m + i) = make_float4(e[0].m, e[1].m, e[2].m, e[3].m);
    *reinterpret_cast<float4*>(v + i) = make_float4(e[0].v, e[1].v, e[2].v, e[3].v);
    if (params) {
      Vec4<TP> out;
      VITCUDA_UNROLL
      for (int k = 0; k < 4; ++k) out.v[k] = from_float<TP>(e[k].p);
      store_vec4(params + i, out);
    }
  }
  VITCUDA_NO_UNROLL
  for (int64_t i = vend + threadIdx.x; i < end; i += blockDim.x) adamw_one(i, master, grads, m, v, params, s, decay);
}

// Block sum in a fixed order: butterfly within each warp, then warp totals in warp order.
__device__ __forceinline__ double block_sum_fixed_order(double acc) {
  __shared__ double warp_sums[kSumSquaresThreads / 32];
  for (int offset = 16; offset > 0; offset >>= 1) acc += __shfl_xor_sync(kFullWarpMask, acc, offset);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = acc;
  __syncthreads();
  double total = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) total += warp_sums[w];
  return total;  // valid in thread 0
}

// Squares in double (a float squared is exact in double), summed per thread over a fixed
// grid-stride pattern: vectors [0, n_vec), then the remaining elements.
template <typename T>
__global__ void __launch_bounds__(kSumSquaresThreads)
    sum_squares_partial_kernel(const T* __restrict__ x, int64_t n, int64_t n_vec, double* __restrict__ partials) {
  constexpr int kVec = Vec16<T>::kVec;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  double acc = 0;
  VITCUDA_NO_UNROLL
  for (int64_t i = tid; i < n_vec; i += stride) {
    const Vec16<T> val = load_vec16(x + i * kVec);
    for (int k = 0; k < kVec; ++k) {
      const double e = to_float(val.v[k]);
      acc += e * e;
    }
  }
  VITCUDA_NO_UNROLL
  for (int64_t i = n_vec * kVec + tid; i < n; i += stride) {
    const double e = to_float(x[i]);
    acc += e * e;
  }
  const double total = block_sum_fixed_order(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

__global__ void __launch_bounds__(kSumSquaresThreads)
    sum_squares_final_kernel(const double* __restrict__ partials, int count, double* __restrict__ result) {
  double acc = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
  const double total = block_sum_fixed_order(acc);
  if (threadIdx.x == 0) *result = total;
}

// ref::step_metrics: one block; per-thread fp64 sums over a fixed stride, then the block's fixed order.
__global__ void __launch_bounds__(kSumSquaresThreads)
    step_metrics_kernel(const float* __restrict__ losses, const int32_t* __restrict__ hits, int B,
                        StepState* __restrict__ state, bool commit, bool accumulate) {
  double loss = 0;
  int top1 = 0, top5 = 0;
  for (int b = threadIdx.x; b < B; b += blockDim.x) {
    loss += static_cast<double>(losses[b]);
    top1 += hits[b] & 1;
    top5 += (hits[b] >> 1) & 1;
  }
  const double total = block_sum_fixed_order(loss);
  __shared__ int counts[2];
  if (threadIdx.x == 0) counts[0] = counts[1] = 0;
  __syncthreads();
  atomicAdd(&counts[0], top1);  // integer sums: exact in any order
  atomicAdd(&counts[1], top5);
  __syncthreads();
  if (threadIdx.x == 0) {
    if (accumulate) {  // old + this block's total, as ref::step_metrics
      state->step_loss = state->step_loss + total;
      state->step_samples += B;
      state->step_top1 += counts[0];
      state->step_top5 += counts[1];
    } else {
      state->step_loss = total;
      state->step_samples = B;
      state->step_top1 = counts[0];
      state->step_top5 = counts[1];
    }
    if (commit) {
      state->loss_sum += total;
      state->samples += B;
      state->top1 += counts[0];
      state->top5 += counts[1];
    }
  }
}

// ref::grad_norm_finish on the device (one thread; double arithmetic as the reference), from the
// Σ g² in the state (grad_sumsq's, or what a data-parallel all-reduce left there).
__global__ void grad_norm_finish_kernel(float max_norm, StepState* __restrict__ state) {
  const double sumsq = state->grad_sumsq;
  const double norm = sqrt(sumsq);
  state->grad_scale = (max_norm > 0.f && norm > max_norm) ? static_cast<float>(max_norm / (norm + 1e-6)) : 1.f;
  const bool skip = !(std::isfinite(sumsq) && std::isfinite(state->step_loss));
  state->skip = skip ? 1 : 0;
  if (skip) {
    ++state->skipped_steps;
    return;
  }
  state->loss_sum += state->step_loss;
  state->samples += state->step_samples;
  state->top1 += state->step_top1;
  state->top5 += state->step_top5;
}

// ------------------------------------------------------------------------------------------
// kernel launchers
// ------------------------------------------------------------------------------------------

namespace {

void check_hyper(const AdamWHyper& h) {
  auto bad = [](const std::string& what) { throw Error("adamw_update: " + what); };
  if (h.state) require_pointer("adamw_update", "h.state", h.state, alignof(StepState));
  if (!h.state && !(std::isfinite(h.lr) && h.lr >= 0.f))
    bad("h.lr must be finite and >= 0, got " + std::to_string(h.lr));
  if (!(h.beta1 >= 0.f && h.beta1 < 1.f)) bad("h.beta1 must lie in [0, 1), got " + std::to_string(h.beta1));
  if (!(h.beta2 >= 0.f && h.beta2 < 1.f)) bad("h.beta2 must lie in [0, 1), got " + std::to_string(h.beta2));
  if (!(std::isfinite(h.eps) && h.eps >= 0.f)) bad("h.eps must be finite and >= 0, got " + std::to_string(h.eps));
  if (!std::isfinite(h.weight_decay)) bad("h.weight_decay must be finite");
  if (h.state) return;  // lr, step and grad_scale come from the state
  if (!std::isfinite(h.grad_scale)) bad("h.grad_scale must be finite");
  if (h.step < 1) bad("h.step must be >= 1 (1-based), got " + std::to_string(h.step));
}

// Validated, non-empty segments sorted by offset, neighbours with the same flag merged.
std::vector<AdamWSegment> plan_segments(const AdamWSegment* segments, int num_segments, int64_t n) {
  if (num_segments < 0) throw Error("adamw_update: num_segments must be >= 0, got " + std::to_string(num_segments));
  if (num_segments > 0 && !segments) throw Error("adamw_update: segments is null");
  std::vector<AdamWSegment> segs;
  for (int i = 0; i < num_segments; ++i) {
    const AdamWSegment& s = segments[i];
    if (s.offset < 0 || s.count < 0 || s.count > n || s.offset > n - s.count)
      throw Error("adamw_update: segments[" + std::to_string(i) + "] (offset " + std::to_string(s.offset) + ", count " +
                  std::to_string(s.count) + ") lies outside the parameter arena of " + std::to_string(n));
    if (s.count > 0) segs.push_back(s);
  }
  std::sort(segs.begin(), segs.end(), [](const AdamWSegment& a, const AdamWSegment& b) { return a.offset < b.offset; });
  std::vector<AdamWSegment> merged;
  for (const AdamWSegment& s : segs) {
    if (!merged.empty()) {
      AdamWSegment& last = merged.back();
      if (s.offset < last.offset + last.count)
        throw Error("adamw_update: segments overlap (at element " + std::to_string(s.offset) +
                    "): each parameter must be updated once");
      if (s.offset == last.offset + last.count && s.decay == last.decay) {
        last.count += s.count;
        continue;
      }
    }
    merged.push_back(s);
  }
  return merged;
}

bool overlaps(const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
  const auto x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
  return x < y + b_bytes && y < x + a_bytes;
}

}  // namespace

template <typename TP>
void adamw_update(float* master, const float* grads, float* m, float* v, TP* params, int64_t n, const AdamWHyper& h,
                  const AdamWSegment* segments, int num_segments, rt::Stream stream) {
  const char* op = "adamw_update";
  require_nonnegative(op, "n", n);
  check_hyper(h);
  const std::vector<AdamWSegment> segs = plan_segments(segments, num_segments, n);
  if (segs.empty()) return;
  require_pointer(op, "master", master, 16);
  require_pointer(op, "grads", grads, 16);
  require_pointer(op, "m", m, 16);
  require_pointer(op, "v", v, 16);
  if (std::is_same_v<TP, float> && static_cast<void*>(params) == static_cast<void*>(master))
    params = nullptr;  // fp32 compute: the master arena is the weights
  if (params) require_pointer(op, "params", params, 4 * sizeof(TP));
  const size_t bytes = static_cast<size_t>(n) * sizeof(float);
  const std::pair<const char*, const void*> arenas[] = {{"master", master}, {"grads", grads}, {"m", m}, {"v", v}};
  for (size_t a = 0; a < 4; ++a) {
    for (size_t b = a + 1; b < 4; ++b)
      if (overlaps(arenas[a].second, bytes, arenas[b].second, bytes))
        throw Error(std::string(op) + ": " + arenas[a].first + " and " + arenas[b].first + " overlap");
    if (params && overlaps(arenas[a].second, bytes, params, static_cast<size_t>(n) * sizeof(TP)))
      throw Error(std::string(op) + ": params overlaps " + arenas[a].first);
  }

  AdamWScalars s{};
  s.lr = h.lr;
  s.beta1 = h.beta1;
  s.one_minus_beta1 = 1.f - h.beta1;
  s.beta2 = h.beta2;
  s.one_minus_beta2 = 1.f - h.beta2;
  s.eps = h.eps;
  s.grad_scale = h.grad_scale;
  if (h.state) launch(adamw_prepare_kernel, dim3(1), dim3(1), 0, stream, h.state, h.beta1, h.beta2, h.weight_decay);
  s.inv_bc1 = static_cast<float>(1.0 / (1.0 - std::pow(double(h.beta1), double(h.step))));
  s.inv_bc2 = static_cast<float>(1.0 / (1.0 - std::pow(double(h.beta2), double(h.step))));
  s.decay_factor = 1.f - h.lr * h.weight_decay;

  for (size_t first = 0; first < segs.size(); first += kAdamWMaxSegments) {
    AdamWTable table{};
    table.num = static_cast<int>(std::min<size_t>(kAdamWMaxSegments, segs.size() - first));
    int64_t tiles = 0;
    for (int i = 0; i < table.num; ++i) {
      const AdamWSegment& seg = segs[first + i];
      table.offset[i] = seg.offset;
      table.count[i] = seg.count;
      table.first_tile[i] = static_cast<int>(tiles);
      if (seg.decay) table.decay_bits[i / 32] |= 1u << (i % 32);
      tiles += (seg.count + kAdamWTile - 1) / kAdamWTile;
      if (tiles > 0x7fffffff) throw Error(std::string(op) + ": n is too large for one grid");
    }
    table.first_tile[table.num] = static_cast<int>(tiles);
    launch(adamw_kernel<TP>, dim3(static_cast<unsigned>(tiles)), dim3(kAdamWThreads), 0, stream, master, grads, m, v,
           params, s, table, static_cast<const StepState*>(h.state));
  }
}

size_t sum_squares_scratch_doubles() { return 1 + kSumSquaresBlocks; }

namespace {

// sum_squares_async's kernels with the result written to `result` (device memory): scratch[0] for
// sum_squares, the StepState's grad_sumsq for grad_sumsq. partials: kSumSquaresBlocks doubles.
template <typename T>
void sum_squares_into(const char* op, const T* x, int64_t n, double* partials, double* result, rt::Stream stream) {
  if (n == 0) {
    rt::memset_device(result, 0, sizeof(double), stream);  // +0.0
    return;
  }
  require_pointer(op, "x", x, sizeof(T));
  constexpr int kVec = Vec16<T>::kVec;
  const int64_t n_vec = aligned_to(x, 16) ? n / kVec : 0;
  const int64_t items = n_vec + (n - n_vec * kVec);
  const int blocks = static_cast<int>(std::clamp<int64_t>(
      (items + kSumSquaresThreads * kSumSquaresItemsPerThread - 1) / (kSumSquaresThreads * kSumSquaresItemsPerThread),
      1, kSumSquaresBlocks));
  launch(sum_squares_partial_kernel<T>, dim3(blocks), dim3(kSumSquaresThreads), 0, stream, x, n, n_vec, partials);
  launch(sum_squares_final_kernel, dim3(1), dim3(kSumSquaresThreads), 0, stream, static_cast<const double*>(partials),
         blocks, result);
}

}  // namespace

template <typename T>
void sum_squares_async(const T* x, int64_t n, double* scratch, rt::Stream stream) {
  const char* op = "sum_squares";
  require_nonnegative(op, "n", n);
  require_pointer(op, "scratch", scratch, sizeof(double));
  sum_squares_into(op, x, n, scratch + 1, scratch, stream);
}

template <typename T>
double sum_squares(const T* x, int64_t n, double* scratch, rt::Stream stream) {
  sum_squares_async(x, n, scratch, stream);
  double result = 0;
  rt::copy_to_host(&result, scratch, sizeof(double), stream);  // synchronises the stream
  return result;
}

void step_metrics(const float* losses, const int32_t* hits, int64_t B, StepState* state, bool commit, bool accumulate,
                  rt::Stream stream) {
  const char* op = "step_metrics";
  require_nonnegative(op, "B", B);
  if (B > INT32_MAX) throw Error("step_metrics: B = " + std::to_string(B) + " does not fit an int");
  require_pointer(op, "state", state, alignof(StepState));
  if (B > 0) {
    require_pointer(op, "losses", losses, sizeof(float));
    require_pointer(op, "hits", hits, sizeof(int32_t));
  }
  launch(step_metrics_kernel, dim3(1), dim3(kSumSquaresThreads), 0, stream, losses, hits, static_cast<int>(B), state,
         commit, accumulate);
}

template <typename T>
void grad_sumsq(const T* grads, int64_t n, StepState* state, double* scratch, rt::Stream stream) {
  const char* op = "grad_sumsq";
  require_nonnegative(op, "n", n);
  require_pointer(op, "state", state, alignof(StepState));
  require_pointer(op, "scratch", scratch, sizeof(double));
  sum_squares_into(op, grads, n, scratch + 1, &state->grad_sumsq, stream);
}

void grad_norm_finish(float max_norm, StepState* state, rt::Stream stream) {
  require_pointer("grad_norm_finish", "state", state, alignof(StepState));
  launch(grad_norm_finish_kernel, dim3(1), dim3(1), 0, stream, max_norm, state);
}

template void grad_sumsq<float>(const float*, int64_t, StepState*, double*, rt::Stream);
template void adamw_update<float>(float*, const float*, float*, float*, float*, int64_t, const AdamWHyper&,
                                  const AdamWSegment*, int, rt::Stream);
template void adamw_update<__nv_bfloat16>(float*, const float*, float*, float*, __nv_bfloat16*, int64_t,
                                          const AdamWHyper&, const AdamWSegment*, int, rt::Stream);
template void sum_squares_async<float>(const float*, int64_t, double*, rt::Stream);
template void sum_squares_async<__nv_bfloat16>(const __nv_bfloat16*, int64_t, double*, rt::Stream);
template double sum_squares<float>(const float*, int64_t, double*, rt::Stream);
template double sum_squares<__nv_bfloat16>(const __nv_bfloat16*, int64_t, double*, rt::Stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
