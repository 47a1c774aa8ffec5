// vitcuda — the CPU reference ops: plain C++ over raw pointers, templated on the element
// type (float for the "cpu" backend, double for gradient checks). The CPU backend is a thin
// dtype dispatch over these; kernel tests compare CUDA and emulated kernels against them.
// Conventions are those of include/vitcuda/backend.h (parameter gradients accumulate).
#pragma once
#include <cstdint>

#include "vitcuda/backend.h"

namespace vitcuda::ref {

// C[M, N] = alpha * op(A) · op(B) + beta * C through OpenBLAS (row-major).
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc);

template <typename T>
void patch_extract(const void* images, bool images_u8, ImageLayout layout, int64_t B, int C, int H, int W, int P,
                   const float* mean, const float* stdev, T* cols);

// With drop active: y = dropout(act(...)) over the [R, N] output (ref::dropout's mask and values);
// backward first applies that dropout to dy in place (dy is then overwritten, also for act None).
template <typename T>
void linear_forward(const T* x, const T* w, const T* b, Act act, T* pre, T* y, int64_t R, int64_t K, int64_t N,
                    const DropoutSpec& drop = DropoutSpec{});
template <typename T>
void linear_backward(T* dy, const T* x, const T* w, Act act, const T* pre, T* dx, T* dw, T* db, int64_t R, int64_t K,
                     int64_t N, const DropoutSpec& drop = DropoutSpec{});

// cls and dist (the distillation token, only with cls) may be null; the prefix count of the
// backward is that of its non-null dcls and ddist.
template <typename T>
void tokens_forward(const T* patches, const T* cls, const T* dist, const T* pos, T* out, int64_t B, int64_t Np,
                    int64_t D);
template <typename T>
void tokens_backward(const T* dout, T* dpatches, T* dcls, T* ddist, T* dpos, int64_t B, int64_t Np, int64_t D);

// mean, rstd: [R]. residual and sum_out may be null (then s = x).
template <typename T>
void layernorm_forward(const T* x, const T* residual, T* sum_out, const T* gamma, const T* beta, float eps, T* y,
                       T* mean, T* rstd, int64_t R, int64_t C);
template <typename T>
void layernorm_backward(const T* dy, const T* x, const T* gamma, const T* mean, const T* rstd, T* dx, T* dgamma,
                        T* dbeta, int64_t R, int64_t C);

// Attention on the packed qkv projection [B, N, 3, H, d] (the qkv linear's output [B, N, 3A]):
// out [B, N, H·d], lse [B, H, N]; the backward writes dq, dk, dv in place into dqkv [B, N, 3A]
// (overwritten: every element is written).
template <typename T>
void attention_forward(const T* qkv, float scale, const DropoutSpec& drop, T* out, T* lse, int64_t B, int64_t H,
                       int64_t N, int64_t d);
template <typename T>
void attention_backward(const T* dout, const T* qkv, const T* out, const T* lse, float scale, const DropoutSpec& drop,
                        T* dqkv, int64_t B, int64_t H, int64_t N, int64_t d);

// The Philox stream of a DropoutSpec: stream + *stream_offset (when set; host memory).
uint64_t stream_of(const DropoutSpec& spec);
template <typename T>
void dropout(const T* x, T* y, int64_t n, const DropoutSpec& spec);
template <typename T>
void drop_path(const T* x, T* y, int64_t B, int64_t per_sample, const DropoutSpec& spec);

template <typename T>
void pool_forward(const T* x, Pool pool, int num_prefix, T* out, int64_t B, int64_t T_, int64_t D);
template <typename T>
void pool_backward(const T* dout, Pool pool, int num_prefix, T* dx, int64_t B, int64_t T_, int64_t D);

// losses [B] and hits [B] as in Backend::softmax_xent; dlogits may be null.
template <typename T>
void softmax_xent(const T* logits, const int32_t* labels, float smoothing, float dscale, float* losses, T* dlogits,
                  int32_t* hits, int64_t B, int64_t C);

// Backend::distill_loss: losses [B] in/out, dlogits may be null (written or, with accumulate, added to).
template <typename T>
void distill_loss(const T* student, const T* teacher, Distill kind, float tau, float alpha, float dscale, float* losses,
                  T* dlogits, bool accumulate, int64_t B, int64_t C);

template <typename T>
double sum_squares(const T* x, int64_t n);

void adamw_update(float* master, const float* grads, float* m, float* v, const AdamWHyper& h,
                  const AdamWSegment* segments, int num_segments);

// The StepState ops (vitcuda/backend.h) on a state in host memory; the device kernels follow
// them step for step. step_metrics: Σ losses in fp64 in sample order, hit counts, and commit;
// accumulate: step_loss = old + that Σ (and the counts added), instead of replacing them.
void step_metrics(const float* losses, const int32_t* hits, int64_t B, StepState* state, bool commit,
                  bool accumulate = false);
// From state->grad_sumsq (Σ g²): grad_scale, skip, then commit the step's metrics or count the skip.
void grad_norm_finish(float max_norm, StepState* state);
// adamw_update with h.state: false when the step is skipped; else counts the update
// (adam_step), fills the state's scalars and h's lr, step and grad_scale from the state.
bool adamw_prepare(AdamWHyper& h, StepState* state);

// Activation functions and their derivatives, shared by every backend's reference.
double act_forward(Act act, double x);
double act_derivative(Act act, double x);

}  // namespace vitcuda::ref
