// vitcuda — linear layers (kernels/linear.cu) over the project GEMM (kernels/gemm.h), with exactly
// the semantics of vitcuda::Backend::linear_forward / linear_backward (include/vitcuda/backend.h)
// and vitcuda::ref::linear_forward / linear_backward (host/cpu/ref_ops.h):
//   forward:  y[R, N] = act(x[R, K] · w[N, K]ᵀ + b[N]); pre (required when act != None) keeps
//             x·wᵀ + b (rounded to T, and act is applied to the stored value);
//   with drop active, y = dropout(act(...)) in the same pass (the mask of Backend::dropout with
//   that spec over the [R, N] output, element r·N + n);
//   backward: when act != None or drop is active, dy is OVERWRITTEN with the gradient of pre,
//             act'(pre) ⊙ dropout(dy) (the same regenerated mask);
//             dx = dy·w (overwrite), dw += dyᵀ·x, db += Σ_rows dy (ACCUMULATE).
// T (activations, weights) is float or bf16; TG (dw, db) is float — fp32 parameter gradients with
// bf16 activations — or T. Every pointer is device memory; b, pre (act None), dx, dw, db may be
// null. All math is fp32; db is reduced in a fixed order (deterministic).
#pragma once
#include <cstddef>

#include "kernels/gemm.h"
#include "kernels/runtime.h"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

// Workspace (device memory, 256-byte aligned) that linear_forward and linear_backward need for
// these sizes; one buffer of this size serves both.
size_t linear_workspace_bytes(int R, int K, int N);

template <typename T>
void linear_forward(const T* x, const T* w, const T* b, Act act, T* pre, T* y, int R, int K, int N, void* workspace,
                    size_t workspace_bytes, rt::Stream stream, const DropoutSpec& drop = DropoutSpec{});

template <typename T, typename TG>
void linear_backward(T* dy, const T* x, const T* w, Act act, const T* pre, T* dx, TG* dw, TG* db, int R, int K, int N,
                     void* workspace, size_t workspace_bytes, rt::Stream stream,
                     const DropoutSpec& drop = DropoutSpec{});

VITCUDA_KERNELS_END
}  // namespace vitcuda
