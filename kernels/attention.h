// vitcuda — fused scaled-dot-product softmax attention (kernels/attention.cu), forward and
// backward, with the semantics of the CPU reference (host/cpu/ref_ops.h,
// vitcuda::ref::attention_forward / attention_backward) and of Backend::attention_*:
//   qkv       [B, N, 3, H, d]  T storage: the qkv projection's output as linear_forward writes it
//                              ([B, N, 3A], A = H·d); q, k, v of head h are read in place, rows
//                              at stride 3A, q at column h·d, k at A + h·d, v at 2A + h·d
//   out       [B, N, H·d]      T storage (the layout the output projection reads)
//   lse       [B, H, N]        fp32: logsumexp_j(scale · q_i·k_j), natural log, saved for backward
//   dqkv      [B, N, 3, H, d]  the packed gradient linear_backward consumes (dq, dk, dv in place)
// P = softmax(q kᵀ · scale) row-wise; with attention dropout P'_ij = P_ij · Z_ij where
// Z_ij = keep ? 1/(1-p) : 0 and keep = dropout_keep(seed, stream, ((b·H + h)·N + i)·N + j,
// dropout_threshold(p)) (kernels/philox.h), stream = drop.stream + *drop.stream_offset when the
// offset is set (a device pointer, read by the kernels): the same mask as the reference, bit for
// bit. out_i = Σ_j P'_ij v_j.
//
// T = __nv_bfloat16: tensor-core kernels (mma.sync m16n8k16, bf16 operands, fp32 accumulation,
// sm_80+). T = float: plain fp32 FMA kernels (a debugging / reference mode, correctness first).
// Head dims 32, 64, 80 and 128; any N >= 1.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>

#include "kernels/runtime.h"
#include "vitcuda/backend.h"  // DropoutSpec

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

// True for the head dims the kernels are instantiated for (32, 64, 80, 128). With these, every
// row of q, k, v inside the packed qkv starts 16-byte aligned in bf16 (row stride 3·H·d·2 bytes,
// head offsets h·d·2 bytes are multiples of 16 when d is a multiple of 8), as cp.async needs.
bool attention_head_dim_supported(int d);

// Throws vitcuda::Error (naming the op and the argument) for null or misaligned pointers (bf16:
// qkv, out, dout 16-byte aligned, they are read with cp.async), an unsupported head dim,
// B·H > 65535, or a dropout probability outside [0, 1).
template <typename T>
void attention_forward(const T* qkv, float scale, const DropoutSpec& drop, T* out, float* lse, int B, int H, int N,
                       int d, rt::Stream stream);

// Device scratch attention_backward needs: D_i = dO_i·O_i, fp32 [B·H·N] (4·B·H·N bytes: 1.2 MB
// for ViT-B at batch 128). It need not be zeroed; it may be reused across calls and layers.
size_t attention_backward_workspace_bytes(int B, int H, int N, int d);

// FlashAttention-2 backward, deterministic: P is recomputed per tile from q, k and lse;
// D_i = dO_i·O_i; dP = dO vᵀ, dS = P ∘ (dP ∘ Z − D) · scale, dV = (P∘Z)ᵀ dO, dK = dSᵀ q,
// dQ = dS k. Two kernels: one CTA per query tile computes D for its rows (its prologue) and dQ
// over all key tiles in a fixed order; then one CTA per key tile computes dK and dV. No atomics:
// dqkv is bitwise the same from run to run. dqkv is OVERWRITTEN (an activation gradient); dout
// and out are [B, N, H·d]; lse is the forward's. `drop` must be the forward's DropoutSpec (the
// mask is regenerated, never stored).
template <typename T>
void attention_backward(const T* dout, const T* qkv, const T* out, const float* lse, float scale,
                        const DropoutSpec& drop, T* dqkv, void* workspace, size_t workspace_bytes, int B, int H, int N,
                        int d, rt::Stream stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
