// vitcuda — the optimizer kernels (kernels/adamw.cu): one fused AdamW pass over the fp32 master
// arena, and the global sum of squares behind gradient-norm clipping. Semantics of
// vitcuda::ref::adamw_update / ref::sum_squares and Backend::adamw_update / sum_squares.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>

#include "kernels/runtime.h"
#include "vitcuda/backend.h"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

// AdamW with decoupled weight decay, PyTorch's order of operations, for every element i of
// every segment (master, grads, m, v: fp32 [n], 16-byte aligned):
//   g = grads[i]·grad_scale;  m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g·g
//   master = master·(1 - lr·wd if segment.decay else 1) - lr·m̂/(sqrt(v̂) + eps)
// with m̂ = m/(1-β1^step), v̂ = v/(1-β2^step) (bias corrections computed in double on the host),
// and params[i] = TP(master[i]) in the same pass: the compute copy (bf16, or fp32) of the
// weights. params may be null (no copy) or, for TP = float, master itself. Elements outside
// every segment are not touched (the CPU backend copies the whole master arena to params; the
// two agree when the segments cover the arena, as AdamW builds them). Segments must lie in
// [0, n) and not overlap; any order, any count (more than one launch past 128 after merging
// adjacent segments with the same decay flag). params must be aligned to 4 elements.
// With h.state (device memory): a one-thread kernel first applies the state's rules
// (ref::adamw_prepare: nothing when state->skip; else adam_step += 1 and this update's scalars
// from lr and adam_step), then the update reads lr, grad_scale and the scalars from the state.
template <typename TP>
void adamw_update(float* master, const float* grads, float* m, float* v, TP* params, int64_t n, const AdamWHyper& h,
                  const AdamWSegment* segments, int num_segments, rt::Stream stream);

// Device scratch (doubles) that sum_squares needs: per-block partials and the result.
size_t sum_squares_scratch_doubles();

// Σ x[i]² over n elements, in double, in a fixed order that depends only on n and on x's
// 16-byte alignment (a block count computed from n, a fixed grid-stride pattern per block, then
// one block over the partials in block order): bitwise reproducible run to run and across GPUs.
// The result is left in scratch[0] (device memory): a CUDA Graph or a device-side clip can read
// it there.
template <typename T>
void sum_squares_async(const T* x, int64_t n, double* scratch, rt::Stream stream);

// The same, copied to the host after synchronising `stream`.
template <typename T>
double sum_squares(const T* x, int64_t n, double* scratch, rt::Stream stream);

// The StepState ops of Backend (vitcuda/backend.h), on a state in device memory, never
// synchronising. step_metrics: one block sums the batch's losses in fp64 in a fixed order;
// accumulate adds the block's total to state->step_loss (and the counts to theirs) instead of
// replacing them.
void step_metrics(const float* losses, const int32_t* hits, int64_t B, StepState* state, bool commit, bool accumulate,
                  rt::Stream stream);
// state->grad_sumsq = Σ g² (sum_squares_async's kernels and order, the result written straight
// into the state). scratch: sum_squares_scratch_doubles() (the per-block partials).
template <typename T>
void grad_sumsq(const T* grads, int64_t n, StepState* state, double* scratch, rt::Stream stream);
// One thread, from state->grad_sumsq: grad_scale, skip, commit or count (ref::grad_norm_finish).
void grad_norm_finish(float max_norm, StepState* state, rt::Stream stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
