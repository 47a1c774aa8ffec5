// vitcuda — fused flash-style attention for ViT: forward (online softmax, logsumexp saved) and
// a deterministic FlashAttention-2 backward (P recomputed per tile from the logsumexp), reading
// q, k, v in place from the packed qkv projection [B, N, 3, H, d] and writing dq, dk, dv in place
// into its packed gradient (no split or merge pass).
//
// Tile shape, and why it is not FlashAttention's. ViT sequences are short and ragged: N = 197
// (224², patch 16, + cls), 50, 65, 145, 257, 577. FA2's 128-row and FA3's 192-row query tiles
// cover 197 rows with 256 or 384 rows of work, and the second CTA of each head holds its 8 (or
// 12) warps' registers and shared memory for the whole key loop while most of its rows are
// padding. Here a CTA is 4 warps × 16 query rows = 64 rows, and every warp owns its 16 rows
// outright (its own online-softmax state, no cross-warp reduction): a warp whose 16 rows all lie
// past N skips the math entirely and only helps load tiles, so the padding costs at most one
// 16-row warp's work per head (208 rows of work for N = 197, 5.6 %), and 4 CTAs per head give
// B·H·4 CTAs — 12288 for ViT-B at batch 256, ~93 waves of one CTA per SM, no tail effect. Key tiles
// are 64 wide (double-buffered with cp.async so the next K/V tile streams in during the math);
// inside the last, ragged key tile the mma work is skipped per 16 keys, so at N = 197 the key
// loop does 208 keys' work, not 256. d = 64 at 64×64 tiles: Q 9 KiB + K,V 2×2×9 KiB = 45 KiB of
// shared memory, two to four CTAs per SM.
//
// Backward, and why dQ has its own kernel. dK and dV of a key need a sum over every query, dQ of
// a query a sum over every key. FA2 gives each CTA a key tile (dK, dV in registers) and adds each
// CTA's dQ part into an fp32 buffer with atomics, whose order depends on block scheduling, so dQ
// is not reproducible. Here the two sums are owned by two kernels, each summing in a fixed order:
//   1. attention_backward_dq: one CTA per (b, h, 64-query tile), the forward's shape (warp w owns
//      16 query rows). Its prologue computes D_i = dO_i·O_i for its rows (kept in registers and
//      written to the fp32 workspace for kernel 2); then over the key tiles in order it recomputes
//      S = Q Kᵀ and dP = dO Vᵀ, forms dS = P ∘ (dP ∘ Z − D) · scale and accumulates dQ += dS K in
//      registers, and writes dQ (bf16) into dqkv.
//   2. attention_backward_dkdv: one CTA per (b, h, 64-key tile), warp w owns 16 keys; over the
//      query tiles in order it recomputes Sᵀ and dPᵀ and accumulates dV += (P∘Z)ᵀ dO and
//      dK += dSᵀ Q in registers, then writes them into dqkv.
// The price is recomputing S and dP in kernel 1: 7 tile GEMMs instead of 5 (1.4× the backward's
// mma work), against no dQ accumulator (4·B·H·N·d bytes of L2 atomics and a workspace of that
// size), no separate D pass and no accumulator-to-bf16 pass.
//
// Registers: kernel 2 holds dK and dV (2·d/8·4 fp32 per thread) for the whole loop plus Sᵀ and
// dPᵀ of one query step of QW rows (2·QW/8·4). With QW = 64 that is 128 accumulators at d = 64
// (ptxas spilled 568 bytes at the 168-register cap of 3 CTAs/SM) and 192 at d = 128; so the
// step is 64 query rows at d = 32, 32 at d = 64 and 80, 16 at d = 128 (96, 112 and 144
// accumulators); __launch_bounds__ asks for 3 CTAs per SM where ptxas then does not spill.
//
// The fp32 path (T = float) uses the same tiling with four threads per query row (forward, dQ)
// or per key (dK, dV), each accumulating d/4 of the columns (so no per-thread array of d or 64
// floats has to live in local memory) and each computing the full dot products itself (the
// operands are shared-memory broadcasts): a correctness reference on the GPU, not a fast path.
#include "kernels/attention.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>

#include "kernels/common.cuh"
#include "kernels/philox.h"
#include "kernels/ptx.cuh"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

namespace {
using bf16 = __nv_bfloat16;

constexpr int kTile = 64;           // query rows per forward / dQ CTA, keys per dK-dV CTA, and the
                                    // width of the forward's and dQ's inner key tiles
constexpr int kWarps = kTile / 16;  // one m16 mma row block per warp
constexpr int kThreads = 32 * kWarps;
constexpr int kF32Split = 4;                    // fp32 path: threads per row / key
constexpr int kF32Threads = kTile * kF32Split;  // 256
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.69314718055994531f;

// Query rows per step of the dK-dV kernel's loop (see the file comment: registers).
template <int D>
constexpr int dkdv_query_step() {
  return D >= 80 ? 16 : D >= 64 ? 32 : 64;
}
// The CTAs per SM __launch_bounds__ asks of the bf16 kernels (ptxas then stays within
// 65536 / (128 · n) registers), chosen per kernel and head dim from ptxas's output (sm_90a):
// 3 (≤ 168 registers, 12 warps per SM) where that compiles without spilling (and for the dQ and
// forward kernels at d = 64, the ViT-B/S head dim, which spill 16 and 48 bytes there since the
// "memory" clobbers of kernels/ptx.cuh: 12 warps per SM judged worth it, unmeasured; the gate
// tables record the spill), else no constraint (ptxas spilled 32-160 bytes at the 168 cap for those; they run 2 CTAs
// per SM). The fp32 kernels say (256, 1): with the thread count alone, ptxas capped the dQ
// kernel at d = 128 to 80 registers and spilled.
template <int D>
constexpr int forward_min_ctas() {
  return D <= 64 ? 3 : 1;  // d = 32 at 4 (≤ 128 registers) spilled 48 bytes
}
template <int D>
constexpr int dq_min_ctas() {
  return D == 64 ? 3 : 1;
}
template <int D>
constexpr int dkdv_min_ctas() {
  return D == 64 || D == 80 ? 3 : 1;
}
}  // namespace

// Dropout on the probabilities, as the reference draws it. The kernels add *stream_offset (device
// memory, when set) to stream before they draw: resolve_stream().
struct AttnDropout {
  uint64_t seed;
  uint64_t stream;
  const uint64_t* stream_offset;
  uint32_t threshold;
  float keep_scale;  // 1 / (1 - p)
  int active;
};

// Where one (b, h) head lives in the packed qkv [B, N, 3, H, D] (and its gradient): row i of q at
// q + i·ld, of k at q + A + i·ld, of v at q + 2A + i·ld.
struct PackedHead {
  size_t q;   // element offset of q row 0 of this head
  size_t o;   // element offset of row 0 of this head in out / dout [B, N, H·D]
  size_t A;   // H·D: offset of k from q, of v from k; the row stride of out / dout
  size_t ld;  // 3·H·D: row stride of qkv
};

// ------------------------------------------------------------------------------------------
// CUDA kernels
// ------------------------------------------------------------------------------------------

__device__ __forceinline__ PackedHead packed_head(int b, int h, int H, int N, int D) {
  PackedHead p;
  p.A = static_cast<size_t>(H) * D;
  p.ld = 3 * p.A;
  p.q = static_cast<size_t>(b) * N * p.ld + static_cast<size_t>(h) * D;
  p.o = static_cast<size_t>(b) * N * p.A + static_cast<size_t>(h) * D;
  return p;
}

// The call's Philox stream: stream + *stream_offset, read here on the device (one captured graph
// serves every step while the host advances the offset in device memory). Kept in a register of
// its own: writing it into the by-value kernel parameter would copy the struct to local memory.
__device__ __forceinline__ uint64_t resolve_stream(const AttnDropout& dr) {
  return dr.active && dr.stream_offset != nullptr ? dr.stream + *dr.stream_offset : dr.stream;
}

__device__ __forceinline__ float attn_dropout_factor(const AttnDropout& dr, uint64_t stream, uint64_t index) {
  return dropout_keep(dr.seed, stream, index, dr.threshold) ? dr.keep_scale : 0.f;
}

// Two floats rounded to bf16 in one .b32 register, the lower-indexed element in the low half
// (the mma fragment convention).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  return static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16(lo))) |
         (static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16(hi))) << 16);
}

// Shared-memory row stride of a bf16 tile: 16 bytes of padding shift consecutive rows by four
// banks, so the 8 row addresses of an ldmatrix hit 8 different 16-byte bank groups.
template <int D>
constexpr int tile_stride() {
  return D + 8;
}

// Rows [row0, row0 + ROWS) of a matrix whose row r starts at src + r·ld, into a padded tile;
// rows >= N are zero-filled, so the math on them is finite (and masked).
template <int D, int ROWS = kTile>
__device__ __forceinline__ void load_tile_async(SmemPtr<bf16> dst, const bf16* src, size_t ld, int row0, int N) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  for (int c = threadIdx.x; c < ROWS * kChunks; c += kThreads) {
    const int r = c / kChunks, col = (c % kChunks) * 8;
    const bool valid = row0 + r < N;
    const bf16* g = valid ? src + static_cast<size_t>(row0 + r) * ld + col : src;
    ptx::cp_async_zfill<16>(smem_raw(dst + r * tile_stride<D>() + col), g, valid ? 16 : 0);
  }
}

// The key/value pipeline of the forward and dQ kernels, double-buffered one tile ahead: starts the
// loads of key tile kt + 1 into the other buffer (released by the barrier that ended tile kt - 1),
// waits for tile kt's, and synchronises the block. Returns tile kt's buffer (0 or 1).
template <int D>
__device__ __forceinline__ int kv_tile_ready(SmemPtr<bf16> sK, SmemPtr<bf16> sV, const bf16* k, const bf16* v,
                                             size_t ld, int kt, int n_tiles, int N) {
  constexpr int kTileElems = kTile * tile_stride<D>();
  const int buf = kt & 1;
  if (kt + 1 < n_tiles) {
    load_tile_async<D>(sK + (buf ^ 1) * kTileElems, k, ld, (kt + 1) * kTile, N);
    load_tile_async<D>(sV + (buf ^ 1) * kTileElems, v, ld, (kt + 1) * kTile, N);
    ptx::cp_async_commit_group();
    ptx::cp_async_wait_group<1>();
  } else {
    ptx::cp_async_wait_group<0>();
  }
  __syncthreads();
  return buf;
}

// COUNT fp32 values src[row0 + r] (zero past N) by threads [first, first + COUNT).
template <int COUNT>
__device__ __forceinline__ void load_row_floats_async(SmemPtr<float> dst, const float* src, int row0, int N,
                                                      int first) {
  const int r = static_cast<int>(threadIdx.x) - first;
  if (r < 0 || r >= COUNT) return;
  const bool valid = row0 + r < N;
  ptx::cp_async_zfill<4>(smem_raw(dst + r), valid ? src + row0 + r : src, valid ? 4 : 0);
}

// ldmatrix addresses (lane l supplies a row address of matrix l/8) for the three fragment
// shapes used below, on a tile with row stride S:
//   A 16×16 at (row0, col0), row-major:       a0 = rows 0-7/cols 0-7, a1 = rows 8-15/cols 0-7,
//                                             a2 = rows 0-7/cols 8-15, a3 = rows 8-15/cols 8-15
//   B for two n8 blocks, stored [n][k]:       r0,r1 = b of n 0-7 (k 0-7, 8-15); r2,r3 of n 8-15
//   B for two n8 blocks, stored [k][n] (.trans): same registers, tile rows are k
template <int S>
__device__ __forceinline__ int frag_a_offset(int row0, int col0, int lane) {
  return (row0 + (lane & 7) + ((lane >> 3) & 1) * 8) * S + col0 + (lane >> 4) * 8;
}
template <int S>
__device__ __forceinline__ int frag_b_nk_offset(int n0, int k0, int lane) {
  return (n0 + (lane & 7) + (lane >> 4) * 8) * S + k0 + ((lane >> 3) & 1) * 8;
}
template <int S>
__device__ __forceinline__ int frag_b_kn_offset(int k0, int n0, int lane) {
  return (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * S + n0 + (lane >> 4) * 8;
}

// The A fragment of a 16×16 block (k block kk) of a 16×(8·NB) fp32 accumulator tile: the C layout
// of n8 blocks 2kk and 2kk+1 is the A layout of k 0-15 (FA2's register reuse of P).
template <int NB>
__device__ __forceinline__ void accum_to_a(const float (&c)[NB][4], int kk, uint32_t (&a)[4]) {
  a[0] = pack_bf16(c[2 * kk][0], c[2 * kk][1]);
  a[1] = pack_bf16(c[2 * kk][2], c[2 * kk][3]);
  a[2] = pack_bf16(c[2 * kk + 1][0], c[2 * kk + 1][1]);
  a[3] = pack_bf16(c[2 * kk + 1][2], c[2 * kk + 1][3]);
}

// acc[16 × 8·NB] (+)= A[16 × 16·KS] · B where A is a row-major tile at (row0, 0) of stride S and B
// the [n][k] tile of stride S (rows n = 0 .. 8·NB−1); n blocks of 16 at or past n_valid skipped.
template <int S, int KS, int NB>
__device__ __forceinline__ void mma_a_bnk(float (&acc)[NB][4], SmemPtr<bf16> a_tile, int row0, SmemPtr<bf16> b_tile,
                                          int n_valid, int lane) {
  VITCUDA_UNROLL
  for (int ks = 0; ks < KS; ++ks) {
    uint32_t a[4];
    ptx::ldmatrix_x4(a, smem_raw(a_tile + frag_a_offset<S>(row0, ks * 16, lane)));
    VITCUDA_UNROLL
    for (int np = 0; np < NB / 2; ++np) {
      if (np * 16 >= n_valid) continue;
      uint32_t r[4];
      ptx::ldmatrix_x4(r, smem_raw(b_tile + frag_b_nk_offset<S>(np * 16, ks * 16, lane)));
      const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
      ptx::mma_m16n8k16_bf16(acc[2 * np], a, b0, acc[2 * np]);
      ptx::mma_m16n8k16_bf16(acc[2 * np + 1], a, b1, acc[2 * np + 1]);
    }
  }
}

// acc[16 × D] += P · B where P[16 × 16·KB] is an fp32 accumulator tile (rounded to bf16 as the A
// operand) and B the [k][n] tile of stride S (k rows = P's columns); k blocks at or past k_valid
// skipped.
template <int S, int D, int KB>
__device__ __forceinline__ void mma_accum_bkn(float (&acc)[D / 8][4], const float (&p)[2 * KB][4], SmemPtr<bf16> b_tile,
                                              int k_valid, int lane) {
  VITCUDA_UNROLL
  for (int kk = 0; kk < KB; ++kk) {
    if (kk * 16 >= k_valid) continue;
    uint32_t pa[4];
    accum_to_a(p, kk, pa);
    VITCUDA_UNROLL
    for (int np = 0; np < D / 16; ++np) {
      uint32_t r[4];
      ptx::ldmatrix_x4_trans(r, smem_raw(b_tile + frag_b_kn_offset<S>(kk * 16, np * 16, lane)));
      const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
      ptx::mma_m16n8k16_bf16(acc[2 * np], pa, b0, acc[2 * np]);
      ptx::mma_m16n8k16_bf16(acc[2 * np + 1], pa, b1, acc[2 * np + 1]);
    }
  }
}

// ---- bf16 forward ---------------------------------------------------------------------------
// grid (ceil(N/64), B·H), 128 threads. Shared memory: Q tile, K tile ×2, V tile ×2.
// Warp w computes rows q0 + 16w .. +15: S = Q Kᵀ by mma (Q fragments kept in registers for the
// whole loop), online softmax in the exp2 domain on the accumulator registers, then O += P V
// with P re-packed from the accumulators as the A operand.
template <int D>
__global__ void __launch_bounds__(kThreads, forward_min_ctas<D>())
    attention_forward_bf16_kernel(const bf16* __restrict__ qkv, bf16* __restrict__ out, float* __restrict__ lse, int H,
                                  int N, float scale_log2, AttnDropout drop) {
  constexpr int S = tile_stride<D>();
  constexpr int kTileElems = kTile * S;
  VITCUDA_DYNAMIC_SMEM(bf16, smem);
  const SmemPtr<bf16> sQ = smem;
  const SmemPtr<bf16> sK = smem + kTileElems;      // 2 buffers
  const SmemPtr<bf16> sV = smem + 3 * kTileElems;  // 2 buffers

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int q0 = blockIdx.x * kTile;
  const PackedHead ph = packed_head(b, h, H, N, D);
  const bf16 *q = qkv + ph.q, *k = q + ph.A, *v = k + ph.A;
  const int n_tiles = (N + kTile - 1) / kTile;
  const uint64_t stream = resolve_stream(drop);

  load_tile_async<D>(sQ, q, ph.ld, q0, N);
  load_tile_async<D>(sK, k, ph.ld, 0, N);
  load_tile_async<D>(sV, v, ph.ld, 0, N);
  ptx::cp_async_commit_group();

  const int row_w = q0 + warp * 16;  // first query row of this warp
  const bool active = row_w < N;     // warp-uniform
  uint32_t qa[D / 16][4];
  float o[D / 8][4];
  VITCUDA_UNROLL
  for (int nb = 0; nb < D / 8; ++nb) VITCUDA_UNROLL
  for (int c = 0; c < 4; ++c) o[nb][c] = 0.f;
  float m[2] = {-INFINITY, -INFINITY};  // running max of rows g and g+8 (log2 domain)
  float l[2] = {0.f, 0.f};              // this thread's part of the running sum

  for (int kt = 0; kt < n_tiles; ++kt) {
    const int buf = kv_tile_ready<D>(sK, sV, k, v, ph.ld, kt, n_tiles, N);

    if (active) {
      if (kt == 0) VITCUDA_UNROLL
      for (int ks = 0; ks < D / 16; ++ks)
        ptx::ldmatrix_x4(qa[ks], smem_raw(sQ + frag_a_offset<S>(warp * 16, ks * 16, lane)));
      const SmemPtr<bf16> tK = sK + buf * kTileElems, tV = sV + buf * kTileElems;
      const int kv = min(kTile, N - kt * kTile);  // valid keys in this tile

      float s[8][4];
      VITCUDA_UNROLL
      for (int nb = 0; nb < 8; ++nb) VITCUDA_UNROLL
      for (int c = 0; c < 4; ++c) s[nb][c] = 0.f;
      VITCUDA_UNROLL
      for (int ks = 0; ks < D / 16; ++ks) VITCUDA_UNROLL
      for (int np = 0; np < 4; ++np) {
        if (np * 16 >= kv) continue;  // 16 keys all past N
        uint32_t r[4];
        ptx::ldmatrix_x4(r, smem_raw(tK + frag_b_nk_offset<S>(np * 16, ks * 16, lane)));
        const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
        ptx::mma_m16n8k16_bf16(s[2 * np], qa[ks], b0, s[2 * np]);
        ptx::mma_m16n8k16_bf16(s[2 * np + 1], qa[ks], b1, s[2 * np + 1]);
      }

      // Online softmax. A quad (the 4 lanes sharing g) holds all 64 columns of rows g and g+8;
      // every tile has a valid key, so the new max is finite.
      float mx[2] = {-INFINITY, -INFINITY};
      VITCUDA_UNROLL
      for (int nb = 0; nb < 8; ++nb) VITCUDA_UNROLL
      for (int c = 0; c < 4; ++c) {
        const int key = kt * kTile + nb * 8 + 2 * t + (c & 1);
        s[nb][c] = key < N ? s[nb][c] * scale_log2 : -INFINITY;
        mx[c >> 1] = fmaxf(mx[c >> 1], s[nb][c]);
      }
      VITCUDA_UNROLL
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(kFullWarpMask, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(kFullWarpMask, mx[r], 2));
        const float m_new = fmaxf(m[r], mx[r]);
        const float alpha = exp2f(m[r] - m_new);  // 0 on the first tile (m = -inf)
        m[r] = m_new;
        l[r] *= alpha;
        VITCUDA_UNROLL
        for (int nb = 0; nb < D / 8; ++nb) {
          o[nb][2 * r] *= alpha;
          o[nb][2 * r + 1] *= alpha;
        }
      }
      VITCUDA_UNROLL
      for (int nb = 0; nb < 8; ++nb) VITCUDA_UNROLL
      for (int c = 0; c < 4; ++c) {
        float p = exp2f(s[nb][c] - m[c >> 1]);
        l[c >> 1] += p;  // the softmax denominator is taken before dropout, as in the reference
        if (drop.active) {
          const int i = row_w + g + 8 * (c >> 1), j = kt * kTile + nb * 8 + 2 * t + (c & 1);
          if (i < N && j < N) p *= attn_dropout_factor(drop, stream, (static_cast<uint64_t>(bh) * N + i) * N + j);
        }
        s[nb][c] = p;
      }

      // O += P V: P from the accumulators (bf16), V fragments by ldmatrix.trans ([key][d] tile).
      mma_accum_bkn<S, D, 4>(o, s, tV, kv, lane);
    }
    __syncthreads();  // every warp is done with buffer `buf` before it is refilled
  }
  if (!active) return;

  VITCUDA_UNROLL
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(kFullWarpMask, l[r], 1);
    l[r] += __shfl_xor_sync(kFullWarpMask, l[r], 2);
  }
  VITCUDA_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int i = row_w + g + 8 * r;
    if (i >= N) continue;
    const float inv = 1.f / l[r];
    bf16* dst = out + ph.o + static_cast<size_t>(i) * ph.A;
    VITCUDA_UNROLL
    for (int nb = 0; nb < D / 8; ++nb) {
      dst[nb * 8 + 2 * t] = __float2bfloat16(o[nb][2 * r] * inv);
      dst[nb * 8 + 2 * t + 1] = __float2bfloat16(o[nb][2 * r + 1] * inv);
    }
    if (t == 0) lse[static_cast<size_t>(bh) * N + i] = (m[r] + log2f(l[r])) * kLn2;
  }
}

// ---- bf16 backward, kernel 1: D and dQ ---------------------------------------------------------
// grid (ceil(N/64) query tiles, B·H), 128 threads. Shared memory: Q, dO (this CTA's queries),
// K ×2, V ×2 (the O tile of the prologue borrows the second K buffer). Warp w owns query rows
// q0 + 16w .. +15: per key tile S = Q Kᵀ and dP = dO Vᵀ (16×64 each, in registers), then
// dS = P ∘ (dP∘Z − D)·scale and dQ += dS K with dS re-packed from the accumulators. The key tiles
// are summed in order: dQ is the same bit for bit from run to run.
template <int D>
__global__ void __launch_bounds__(kThreads, dq_min_ctas<D>())
    attention_backward_dq_bf16_kernel(const bf16* __restrict__ dout, const bf16* __restrict__ qkv,
                                      const bf16* __restrict__ out, const float* __restrict__ lse,
                                      float* __restrict__ delta, bf16* __restrict__ dqkv, int H, int N, float scale,
                                      float scale_log2, AttnDropout drop) {
  constexpr int S = tile_stride<D>();
  constexpr int kTileElems = kTile * S;
  VITCUDA_DYNAMIC_SMEM(bf16, smem);
  const SmemPtr<bf16> sQ = smem;
  const SmemPtr<bf16> sdO = smem + kTileElems;
  const SmemPtr<bf16> sK = smem + 2 * kTileElems;  // 2 buffers
  const SmemPtr<bf16> sV = smem + 4 * kTileElems;  // 2 buffers
  const SmemPtr<bf16> sO = sK + kTileElems;        // the prologue's O tile, in K's second buffer
  // D_i and lse_i·log2(e) of the CTA's 64 rows: read from shared memory where they are used (in
  // registers across the loop they cost ptxas 16 bytes of spill at d = 64, 168 registers).
  const SmemPtr<float> sD = smem_cast<float>(sV + 2 * kTileElems);
  const SmemPtr<float> sL = sD + kTile;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int q0 = blockIdx.x * kTile;
  const PackedHead ph = packed_head(b, h, H, N, D);
  const bf16 *q = qkv + ph.q, *k = q + ph.A, *v = k + ph.A;
  const int n_tiles = (N + kTile - 1) / kTile;
  const uint64_t stream = resolve_stream(drop);

  load_tile_async<D>(sQ, q, ph.ld, q0, N);
  load_tile_async<D>(sdO, dout + ph.o, ph.A, q0, N);
  load_tile_async<D>(sO, out + ph.o, ph.A, q0, N);
  ptx::cp_async_commit_group();
  load_tile_async<D>(sK, k, ph.ld, 0, N);
  load_tile_async<D>(sV, v, ph.ld, 0, N);
  ptx::cp_async_commit_group();
  ptx::cp_async_wait_group<1>();
  __syncthreads();

  // Prologue: D_i = dO_i·O_i in fp32 (the bf16 values, as the reference reads them), two threads
  // per row, into the workspace for the dK-dV kernel and into sD with the rows' lse.
  {
    const int r = threadIdx.x / 2, half = threadIdx.x % 2;
    float s = 0.f;
    VITCUDA_UNROLL
    for (int c = half * (D / 2); c < (half + 1) * (D / 2); ++c)
      s = fmaf(__bfloat162float(sdO[r * S + c]), __bfloat162float(sO[r * S + c]), s);
    s += __shfl_xor_sync(kFullWarpMask, s, 1);
    const int i = q0 + r;
    if (half == 0) {
      if (i < N) delta[static_cast<size_t>(bh) * N + i] = s;
      sD[r] = s;
      sL[r] = i < N ? lse[static_cast<size_t>(bh) * N + i] * kLog2e : 0.f;
    }
  }
  __syncthreads();                   // sD, sL written; sO (K's second buffer) is free for the first prefetch
  const int row_w = q0 + warp * 16;  // first query row of this warp
  const bool active = row_w < N;     // warp-uniform

  float dq[D / 8][4];
  VITCUDA_UNROLL
  for (int nb = 0; nb < D / 8; ++nb) VITCUDA_UNROLL
  for (int c = 0; c < 4; ++c) dq[nb][c] = 0.f;

  for (int kt = 0; kt < n_tiles; ++kt) {
    const int buf = kv_tile_ready<D>(sK, sV, k, v, ph.ld, kt, n_tiles, N);

    if (active) {
      const SmemPtr<bf16> tK = sK + buf * kTileElems, tV = sV + buf * kTileElems;
      const int kv = min(kTile, N - kt * kTile);  // valid keys in this tile
      float s[8][4], dp[8][4];
      VITCUDA_UNROLL
      for (int nb = 0; nb < 8; ++nb) VITCUDA_UNROLL
      for (int c = 0; c < 4; ++c) s[nb][c] = dp[nb][c] = 0.f;
      mma_a_bnk<S, D / 16, 8>(s, sQ, warp * 16, tK, kv, lane);    // S = Q Kᵀ
      mma_a_bnk<S, D / 16, 8>(dp, sdO, warp * 16, tV, kv, lane);  // dP = dO Vᵀ
      VITCUDA_UNROLL
      for (int nb = 0; nb < 8; ++nb) VITCUDA_UNROLL
      for (int c = 0; c < 4; ++c) {
        const int i = row_w + g + 8 * (c >> 1), j = kt * kTile + nb * 8 + 2 * t + (c & 1);
        float ds = 0.f;
        if (i < N && j < N) {
          const int rl = warp * 16 + g + 8 * (c >> 1);  // row within the CTA
          const float p = exp2f(s[nb][c] * scale_log2 - sL[rl]);
          float z = 1.f;
          if (drop.active) z = attn_dropout_factor(drop, stream, (static_cast<uint64_t>(bh) * N + i) * N + j);
          ds = p * (dp[nb][c] * z - sD[rl]) * scale;
        }
        dp[nb][c] = ds;
      }
      mma_accum_bkn<S, D, 4>(dq, dp, tK, kv, lane);  // dQ += dS K
    }
    __syncthreads();  // every warp is done with buffer `buf` before it is refilled
  }
  if (!active) return;

  VITCUDA_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int i = row_w + g + 8 * r;
    if (i >= N) continue;
    bf16* dst = dqkv + ph.q + static_cast<size_t>(i) * ph.ld;
    VITCUDA_UNROLL
    for (int nb = 0; nb < D / 8; ++nb) {
      dst[nb * 8 + 2 * t] = __float2bfloat16(dq[nb][2 * r]);
      dst[nb * 8 + 2 * t + 1] = __float2bfloat16(dq[nb][2 * r + 1]);
    }
  }
}

// ---- bf16 backward, kernel 2: dK and dV --------------------------------------------------------
// grid (ceil(N/64) key tiles, B·H), 128 threads. Shared memory: K, V (this CTA's keys), Q and dO
// ×2 (QW query rows each), lse and D ×2. Warp w owns keys k0 + 16w .. +15 and computes, per
// query step, Sᵀ = K_w Qᵀ and dPᵀ = V_w dOᵀ (16×QW each, transposed so that the warp's keys are
// the mma rows), Pᵀ = exp(Sᵀ·scale − lse), then dV_w += (P∘Z)ᵀ dO, dK_w += dSᵀ Q from the
// accumulator registers. D comes from kernel 1 (the workspace).
template <int D>
__global__ void __launch_bounds__(kThreads, dkdv_min_ctas<D>())
    attention_backward_dkdv_bf16_kernel(const bf16* __restrict__ dout, const bf16* __restrict__ qkv,
                                        const float* __restrict__ lse, const float* __restrict__ delta,
                                        bf16* __restrict__ dqkv, int H, int N, float scale, float scale_log2,
                                        AttnDropout drop) {
  constexpr int S = tile_stride<D>();
  constexpr int QW = dkdv_query_step<D>();
  constexpr int kKeyElems = kTile * S, kStepElems = QW * S;
  VITCUDA_DYNAMIC_SMEM(bf16, smem);
  const SmemPtr<bf16> sK = smem;
  const SmemPtr<bf16> sV = smem + kKeyElems;
  const SmemPtr<bf16> sQ = smem + 2 * kKeyElems;                       // 2 buffers
  const SmemPtr<bf16> sdO = sQ + 2 * kStepElems;                       // 2 buffers
  const SmemPtr<float> sLse = smem_cast<float>(sdO + 2 * kStepElems);  // 2 buffers of QW
  const SmemPtr<float> sDelta = sLse + 2 * QW;                         // 2 buffers of QW

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int k0 = blockIdx.x * kTile;
  const PackedHead ph = packed_head(b, h, H, N, D);
  const bf16 *q = qkv + ph.q, *k = q + ph.A, *v = k + ph.A, *dO = dout + ph.o;
  const float* lse_head = lse + static_cast<size_t>(bh) * N;
  const float* delta_head = delta + static_cast<size_t>(bh) * N;
  const int n_steps = (N + QW - 1) / QW;
  const uint64_t stream = resolve_stream(drop);

  load_tile_async<D>(sK, k, ph.ld, k0, N);
  load_tile_async<D>(sV, v, ph.ld, k0, N);
  load_tile_async<D, QW>(sQ, q, ph.ld, 0, N);
  load_tile_async<D, QW>(sdO, dO, ph.A, 0, N);
  load_row_floats_async<QW>(sLse, lse_head, 0, N, 0);
  load_row_floats_async<QW>(sDelta, delta_head, 0, N, QW);
  ptx::cp_async_commit_group();

  const int key_w = k0 + warp * 16;
  const bool active = key_w < N;
  float dk_acc[D / 8][4], dv_acc[D / 8][4];
  VITCUDA_UNROLL
  for (int nb = 0; nb < D / 8; ++nb) VITCUDA_UNROLL
  for (int c = 0; c < 4; ++c) dk_acc[nb][c] = dv_acc[nb][c] = 0.f;

  for (int qt = 0; qt < n_steps; ++qt) {
    const int buf = qt & 1;
    if (qt + 1 < n_steps) {
      const int row0 = (qt + 1) * QW;
      load_tile_async<D, QW>(sQ + (buf ^ 1) * kStepElems, q, ph.ld, row0, N);
      load_tile_async<D, QW>(sdO + (buf ^ 1) * kStepElems, dO, ph.A, row0, N);
      load_row_floats_async<QW>(sLse + (buf ^ 1) * QW, lse_head, row0, N, 0);
      load_row_floats_async<QW>(sDelta + (buf ^ 1) * QW, delta_head, row0, N, QW);
      ptx::cp_async_commit_group();
      ptx::cp_async_wait_group<1>();
    } else {
      ptx::cp_async_wait_group<0>();
    }
    __syncthreads();

    if (active) {
      const SmemPtr<bf16> tQ = sQ + buf * kStepElems, tdO = sdO + buf * kStepElems;
      const SmemPtr<float> tL = sLse + buf * QW, tD = sDelta + buf * QW;
      const int qv = min(QW, N - qt * QW);  // valid queries in this step
      float st[QW / 8][4], dpt[QW / 8][4];
      VITCUDA_UNROLL
      for (int nb = 0; nb < QW / 8; ++nb) VITCUDA_UNROLL
      for (int c = 0; c < 4; ++c) st[nb][c] = dpt[nb][c] = 0.f;
      mma_a_bnk<S, D / 16, QW / 8>(st, sK, warp * 16, tQ, qv, lane);    // Sᵀ = K Qᵀ
      mma_a_bnk<S, D / 16, QW / 8>(dpt, sV, warp * 16, tdO, qv, lane);  // dPᵀ = V dOᵀ
      // st becomes (P∘Z)ᵀ, dpt becomes dSᵀ; entries with a key or query past N are 0.
      VITCUDA_UNROLL
      for (int nb = 0; nb < QW / 8; ++nb) VITCUDA_UNROLL
      for (int c = 0; c < 4; ++c) {
        const int qi = nb * 8 + 2 * t + (c & 1);
        const int query = qt * QW + qi, key = key_w + g + 8 * (c >> 1);
        float pz = 0.f, ds = 0.f;
        if (query < N && key < N) {
          const float p = exp2f(st[nb][c] * scale_log2 - tL[qi] * kLog2e);
          float z = 1.f;
          if (drop.active) z = attn_dropout_factor(drop, stream, (static_cast<uint64_t>(bh) * N + query) * N + key);
          pz = p * z;
          ds = p * (dpt[nb][c] * z - tD[qi]) * scale;
        }
        st[nb][c] = pz;
        dpt[nb][c] = ds;
      }
      mma_accum_bkn<S, D, QW / 16>(dv_acc, st, tdO, qv, lane);  // dV += (P∘Z)ᵀ dO
      mma_accum_bkn<S, D, QW / 16>(dk_acc, dpt, tQ, qv, lane);  // dK += dSᵀ Q
    }
    __syncthreads();  // buffer `buf` is refilled by the next step
  }
  if (!active) return;

  VITCUDA_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int key = key_w + g + 8 * r;
    if (key >= N) continue;
    bf16* dk = dqkv + ph.q + ph.A + static_cast<size_t>(key) * ph.ld;
    bf16* dv = dk + ph.A;
    VITCUDA_UNROLL
    for (int nb = 0; nb < D / 8; ++nb) {
      dk[nb * 8 + 2 * t] = __float2bfloat16(dk_acc[nb][2 * r]);
      dk[nb * 8 + 2 * t + 1] = __float2bfloat16(dk_acc[nb][2 * r + 1]);
      dv[nb * 8 + 2 * t] = __float2bfloat16(dv_acc[nb][2 * r]);
      dv[nb * 8 + 2 * t + 1] = __float2bfloat16(dv_acc[nb][2 * r + 1]);
    }
  }
}

// ---- fp32 kernels ----------------------------------------------------------------------------
// 256 threads: thread (r, u) = (tid / 4, tid % 4) serves row r of the CTA's 64 (query row for
// the forward and dQ, key for dK-dV) and accumulates the columns c = 4·cc + u, cc < D/4. Tiles in
// shared memory at the odd row stride D+1; each thread computes the dot products it needs in
// full (the four threads of a row read the same words: broadcasts), so no shuffles are needed.

// Rows [row0, row0 + 64) of a matrix with row stride ld, into an fp32 tile (zeros past N).
template <int D>
__device__ __forceinline__ void load_tile_f32(SmemPtr<float> dst, const float* src, size_t ld, int row0, int N) {
  for (int e = threadIdx.x; e < kTile * D; e += kF32Threads) {
    const int r = e / D, c = e % D;
    dst[r * (D + 1) + c] = row0 + r < N ? src[static_cast<size_t>(row0 + r) * ld + c] : 0.f;
  }
}

// Unrolled by 4, not fully: fully unrolled, nvcc keeps a thread's own (loop-invariant) row in
// registers across the whole key loop — 2·d registers in the dK-dV kernel, 249 at d = 64 (and by
// 8, the dQ kernel spilled 20 bytes at d = 128).
#if defined(__CUDACC__)
#define VITCUDA_ATTN_UNROLL_4 _Pragma("unroll 4")
#else
#define VITCUDA_ATTN_UNROLL_4
#endif
template <int D>
__device__ __forceinline__ float dot_f32(SmemPtr<float> a, SmemPtr<float> b) {
  float s = 0.f;
  VITCUDA_ATTN_UNROLL_4
  for (int c = 0; c < D; ++c) s = fmaf(a[c], b[c], s);
  return s;
}
// a·b and c·e in one pass.
template <int D>
__device__ __forceinline__ void dot2_f32(SmemPtr<float> a, SmemPtr<float> b, SmemPtr<float> c, SmemPtr<float> e,
                                         float& ab, float& ce) {
  float s = 0.f, t = 0.f;
  VITCUDA_ATTN_UNROLL_4
  for (int x = 0; x < D; ++x) {
    s = fmaf(a[x], b[x], s);
    t = fmaf(c[x], e[x], t);
  }
  ab = s;
  ce = t;
}

// grid (ceil(N/64), B·H). Online softmax one key at a time (no per-thread array of scores).
template <int D>
__global__ void __launch_bounds__(kF32Threads, 1)
    attention_forward_f32_kernel(const float* __restrict__ qkv, float* __restrict__ out, float* __restrict__ lse, int H,
                                 int N, float scale_log2, AttnDropout drop) {
  constexpr int SF = D + 1, CW = D / kF32Split;
  VITCUDA_DYNAMIC_SMEM(float, smem);
  const SmemPtr<float> sQ = smem, sK = smem + kTile * SF, sV = smem + 2 * kTile * SF;
  const int r = threadIdx.x / kF32Split, u = threadIdx.x % kF32Split;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int q0 = blockIdx.x * kTile, i = q0 + r;
  const PackedHead ph = packed_head(b, h, H, N, D);
  const float *q = qkv + ph.q, *k = q + ph.A, *v = k + ph.A;
  const int n_tiles = (N + kTile - 1) / kTile;
  const uint64_t stream = resolve_stream(drop);

  load_tile_f32<D>(sQ, q, ph.ld, q0, N);
  float o[CW];
  VITCUDA_UNROLL
  for (int cc = 0; cc < CW; ++cc) o[cc] = 0.f;
  float m = -INFINITY, l = 0.f;
  for (int kt = 0; kt < n_tiles; ++kt) {
    __syncthreads();  // the previous K/V tile is consumed
    load_tile_f32<D>(sK, k, ph.ld, kt * kTile, N);
    load_tile_f32<D>(sV, v, ph.ld, kt * kTile, N);
    __syncthreads();
    const int kv = min(kTile, N - kt * kTile);
    for (int j = 0; j < kv; ++j) {
      const float s = dot_f32<D>(sQ + r * SF, sK + j * SF) * scale_log2;
      if (s > m) {  // a new running max: rescale what was summed so far
        const float alpha = exp2f(m - s);
        l *= alpha;
        VITCUDA_UNROLL
        for (int cc = 0; cc < CW; ++cc) o[cc] *= alpha;
        m = s;
      }
      float p = exp2f(s - m);
      l += p;
      if (drop.active && i < N)
        p *= attn_dropout_factor(drop, stream, (static_cast<uint64_t>(bh) * N + i) * N + kt * kTile + j);
      VITCUDA_UNROLL
      for (int cc = 0; cc < CW; ++cc) o[cc] = fmaf(p, sV[j * SF + cc * kF32Split + u], o[cc]);
    }
  }
  if (i >= N) return;
  const float inv = 1.f / l;
  float* dst = out + ph.o + static_cast<size_t>(i) * ph.A;
  VITCUDA_UNROLL
  for (int cc = 0; cc < CW; ++cc) dst[cc * kF32Split + u] = o[cc] * inv;
  if (u == 0) lse[static_cast<size_t>(bh) * N + i] = (m + log2f(l)) * kLn2;
}

// Kernel 1: grid (ceil(N/64) query tiles, B·H). D_i = dO_i·O_i in the prologue (into the
// workspace), then dQ_i = Σ_j dS_ij K_j over the key tiles in order.
template <int D>
__global__ void __launch_bounds__(kF32Threads, 1)
    attention_backward_dq_f32_kernel(const float* __restrict__ dout, const float* __restrict__ qkv,
                                     const float* __restrict__ out, const float* __restrict__ lse,
                                     float* __restrict__ delta, float* __restrict__ dqkv, int H, int N, float scale,
                                     float scale_log2, AttnDropout drop) {
  constexpr int SF = D + 1, CW = D / kF32Split;
  VITCUDA_DYNAMIC_SMEM(float, smem);
  const SmemPtr<float> sQ = smem, sdO = smem + kTile * SF, sK = smem + 2 * kTile * SF, sV = smem + 3 * kTile * SF;
  const int r = threadIdx.x / kF32Split, u = threadIdx.x % kF32Split;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int q0 = blockIdx.x * kTile, i = q0 + r;
  const PackedHead ph = packed_head(b, h, H, N, D);
  const float *q = qkv + ph.q, *k = q + ph.A, *v = k + ph.A;
  const int n_tiles = (N + kTile - 1) / kTile;
  const uint64_t stream = resolve_stream(drop);

  load_tile_f32<D>(sQ, q, ph.ld, q0, N);
  load_tile_f32<D>(sdO, dout + ph.o, ph.A, q0, N);
  load_tile_f32<D>(sK, out + ph.o, ph.A, q0, N);  // O, for the prologue only
  __syncthreads();
  const float d_i = dot_f32<D>(sdO + r * SF, sK + r * SF);
  if (u == 0 && i < N) delta[static_cast<size_t>(bh) * N + i] = d_i;
  const float lse_log2 = i < N ? lse[static_cast<size_t>(bh) * N + i] * kLog2e : 0.f;
  float dq[CW];
  VITCUDA_UNROLL
  for (int cc = 0; cc < CW; ++cc) dq[cc] = 0.f;
  for (int kt = 0; kt < n_tiles; ++kt) {
    __syncthreads();  // the previous K/V tile (or O) is consumed
    load_tile_f32<D>(sK, k, ph.ld, kt * kTile, N);
    load_tile_f32<D>(sV, v, ph.ld, kt * kTile, N);
    __syncthreads();
    if (i >= N) continue;
    const int kv = min(kTile, N - kt * kTile);
    for (int j = 0; j < kv; ++j) {
      float s, dp;
      dot2_f32<D>(sQ + r * SF, sK + j * SF, sdO + r * SF, sV + j * SF, s, dp);
      const float p = exp2f(s * scale_log2 - lse_log2);
      float z = 1.f;
      if (drop.active) z = attn_dropout_factor(drop, stream, (static_cast<uint64_t>(bh) * N + i) * N + kt * kTile + j);
      const float ds = p * (dp * z - d_i) * scale;
      VITCUDA_UNROLL
      for (int cc = 0; cc < CW; ++cc) dq[cc] = fmaf(ds, sK[j * SF + cc * kF32Split + u], dq[cc]);
    }
  }
  if (i >= N) return;
  float* dst = dqkv + ph.q + static_cast<size_t>(i) * ph.ld;
  VITCUDA_UNROLL
  for (int cc = 0; cc < CW; ++cc) dst[cc * kF32Split + u] = dq[cc];
}

// Kernel 2: grid (ceil(N/64) key tiles, B·H). Thread row r is key k0 + r: dV_j = Σ_i P'_ij dO_i,
// dK_j = Σ_i dS_ij Q_i over the query tiles in order; D from kernel 1.
template <int D>
__global__ void __launch_bounds__(kF32Threads, 1)
    attention_backward_dkdv_f32_kernel(const float* __restrict__ dout, const float* __restrict__ qkv,
                                       const float* __restrict__ lse, const float* __restrict__ delta,
                                       float* __restrict__ dqkv, int H, int N, float scale, float scale_log2,
                                       AttnDropout drop) {
  constexpr int SF = D + 1, CW = D / kF32Split;
  VITCUDA_DYNAMIC_SMEM(float, smem);
  const SmemPtr<float> sK = smem, sV = smem + kTile * SF, sQ = smem + 2 * kTile * SF, sdO = smem + 3 * kTile * SF,
                       sL = smem + 4 * kTile * SF, sDl = sL + kTile;
  const int r = threadIdx.x / kF32Split, u = threadIdx.x % kF32Split;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int k0 = blockIdx.x * kTile, key = k0 + r;
  const PackedHead ph = packed_head(b, h, H, N, D);
  const float *q = qkv + ph.q, *k = q + ph.A, *v = k + ph.A, *dO = dout + ph.o;
  const int n_tiles = (N + kTile - 1) / kTile;
  const uint64_t stream = resolve_stream(drop);

  load_tile_f32<D>(sK, k, ph.ld, k0, N);
  load_tile_f32<D>(sV, v, ph.ld, k0, N);
  float dk[CW], dv[CW];
  VITCUDA_UNROLL
  for (int cc = 0; cc < CW; ++cc) dk[cc] = dv[cc] = 0.f;

  for (int qt = 0; qt < n_tiles; ++qt) {
    const int row0 = qt * kTile;
    __syncthreads();  // the previous tile is consumed
    load_tile_f32<D>(sQ, q, ph.ld, row0, N);
    load_tile_f32<D>(sdO, dO, ph.A, row0, N);
    if (threadIdx.x < kTile) {
      const int qi = row0 + threadIdx.x;
      sL[threadIdx.x] = qi < N ? lse[static_cast<size_t>(bh) * N + qi] * kLog2e : 0.f;
      sDl[threadIdx.x] = qi < N ? delta[static_cast<size_t>(bh) * N + qi] : 0.f;
    }
    __syncthreads();
    if (key >= N) continue;
    const int qv = min(kTile, N - row0);
    for (int rr = 0; rr < qv; ++rr) {
      float s, dp;
      dot2_f32<D>(sQ + rr * SF, sK + r * SF, sdO + rr * SF, sV + r * SF, s, dp);
      const float p = exp2f(s * scale_log2 - sL[rr]);
      float z = 1.f;
      if (drop.active) z = attn_dropout_factor(drop, stream, (static_cast<uint64_t>(bh) * N + row0 + rr) * N + key);
      const float pz = p * z, ds = p * (dp * z - sDl[rr]) * scale;
      VITCUDA_UNROLL
      for (int cc = 0; cc < CW; ++cc) {
        dv[cc] = fmaf(pz, sdO[rr * SF + cc * kF32Split + u], dv[cc]);
        dk[cc] = fmaf(ds, sQ[rr * SF + cc * kF32Split + u], dk[cc]);
      }
    }
  }
  if (key >= N) return;
  float* dst_k = dqkv + ph.q + ph.A + static_cast<size_t>(key) * ph.ld;
  float* dst_v = dst_k + ph.A;
  VITCUDA_UNROLL
  for (int cc = 0; cc < CW; ++cc) {
    dst_k[cc * kF32Split + u] = dk[cc];
    dst_v[cc * kF32Split + u] = dv[cc];
  }
}

// ------------------------------------------------------------------------------------------
// kernel launchers
// ------------------------------------------------------------------------------------------

namespace {

constexpr int kMaxGridY = 65535;

void require(bool ok, const char* op, const std::string& what) {
  if (!ok) throw Error(std::string(op) + ": " + what);
}

template <typename T>
void check_pointer(const char* op, const char* name, const void* p) {
  require(p != nullptr, op, std::string(name) + " is null");
  // bf16 tiles are read with 16-byte cp.async; fp32 with plain loads.
  const size_t align = std::is_same_v<T, bf16> ? 16 : alignof(T);
  require(reinterpret_cast<uintptr_t>(p) % align == 0, op,
          std::string(name) + " must be " + std::to_string(align) + "-byte aligned");
}

void check_sizes(const char* op, int B, int H, int N, int d) {
  require(B >= 0 && H >= 0 && N >= 0, op,
          "B, H, N must be >= 0 (got B=" + std::to_string(B) + ", H=" + std::to_string(H) + ", N=" + std::to_string(N) +
              ")");
  require(attention_head_dim_supported(d), op,
          "head dim d=" + std::to_string(d) +
              " is not supported (32, 64, 80 or 128: q, k, v rows inside the packed qkv must start 16-byte aligned "
              "for cp.async)");
  require(static_cast<int64_t>(B) * H <= kMaxGridY, op,
          "B*H=" + std::to_string(static_cast<int64_t>(B) * H) + " exceeds 65535");
  require(static_cast<int64_t>(B) * H * N <= INT_MAX, op, "B*H*N exceeds 2^31 - 1");
  require(static_cast<int64_t>(N) * 3 * H * d <= INT_MAX, op,
          "N*3*H*d exceeds 2^31 - 1 (the in-head offsets are 32-bit)");
}

AttnDropout make_dropout(const char* op, const DropoutSpec& drop) {
  require(drop.p >= 0.f && drop.p < 1.f, op, "dropout p=" + std::to_string(drop.p) + " must lie in [0, 1)");
  AttnDropout d{};
  d.seed = drop.seed;
  d.stream = drop.stream;
  d.stream_offset = drop.stream_offset;  // device memory: read by the kernels, never here
  d.threshold = dropout_threshold(drop.p);
  d.keep_scale = drop.active() ? static_cast<float>(1.0 / (1.0 - drop.p)) : 1.f;
  d.active = drop.active() ? 1 : 0;
  return d;
}

template <int D>
constexpr size_t forward_bf16_smem() {
  return 5ull * kTile * tile_stride<D>() * sizeof(bf16);
}
template <int D>
constexpr size_t backward_dq_bf16_smem() {
  return 6ull * kTile * tile_stride<D>() * sizeof(bf16) + 2ull * kTile * sizeof(float);
}
template <int D>
constexpr size_t backward_dkdv_bf16_smem() {
  constexpr size_t qw = dkdv_query_step<D>();
  return (2ull * kTile + 4 * qw) * tile_stride<D>() * sizeof(bf16) + 4 * qw * sizeof(float);
}
template <int D>
constexpr size_t forward_f32_smem() {
  return 3ull * kTile * (D + 1) * sizeof(float);
}
template <int D>
constexpr size_t backward_dq_f32_smem() {
  return 4ull * kTile * (D + 1) * sizeof(float);
}
template <int D>
constexpr size_t backward_dkdv_f32_smem() {
  return (4ull * kTile * (D + 1) + 2 * kTile) * sizeof(float);
}

template <typename T, int D>
void forward_impl(const T* qkv, float scale_log2, const AttnDropout& drop, T* out, float* lse, int B, int H, int N,
                  rt::Stream stream) {
  const dim3 grid(ceil_div(N, kTile), B * H);
  const std::string why = "d=" + std::to_string(D);
  if constexpr (std::is_same_v<T, bf16>) {
    constexpr size_t smem = forward_bf16_smem<D>();
    reserve_dynamic_smem("attention_forward", attention_forward_bf16_kernel<D>, smem, why);
    launch(attention_forward_bf16_kernel<D>, grid, dim3(kThreads), smem, stream, qkv, out, lse, H, N, scale_log2, drop);
  } else {
    constexpr size_t smem = forward_f32_smem<D>();
    reserve_dynamic_smem("attention_forward", attention_forward_f32_kernel<D>, smem, why);
    launch(attention_forward_f32_kernel<D>, grid, dim3(kF32Threads), smem, stream, qkv, out, lse, H, N, scale_log2,
           drop);
  }
}

template <typename T, int D>
void backward_impl(const T* dout, const T* qkv, const T* out, const float* lse, float* delta, float scale,
                   const AttnDropout& drop, T* dqkv, int B, int H, int N, rt::Stream stream) {
  const dim3 grid(ceil_div(N, kTile), B * H);
  const float scale_log2 = scale * kLog2e;
  const std::string why = "d=" + std::to_string(D);
  const char* op = "attention_backward";
  if constexpr (std::is_same_v<T, bf16>) {
    constexpr size_t smem_dq = backward_dq_bf16_smem<D>(), smem_dkdv = backward_dkdv_bf16_smem<D>();
    reserve_dynamic_smem(op, attention_backward_dq_bf16_kernel<D>, smem_dq, why);
    reserve_dynamic_smem(op, attention_backward_dkdv_bf16_kernel<D>, smem_dkdv, why);
    launch(attention_backward_dq_bf16_kernel<D>, grid, dim3(kThreads), smem_dq, stream, dout, qkv, out, lse, delta,
           dqkv, H, N, scale, scale_log2, drop);
    launch(attention_backward_dkdv_bf16_kernel<D>, grid, dim3(kThreads), smem_dkdv, stream, dout, qkv,
           static_cast<const float*>(lse), static_cast<const float*>(delta), dqkv, H, N, scale, scale_log2, drop);
  } else {
    constexpr size_t smem_dq = backward_dq_f32_smem<D>(), smem_dkdv = backward_dkdv_f32_smem<D>();
    reserve_dynamic_smem(op, attention_backward_dq_f32_kernel<D>, smem_dq, why);
    reserve_dynamic_smem(op, attention_backward_dkdv_f32_kernel<D>, smem_dkdv, why);
    launch(attention_backward_dq_f32_kernel<D>, grid, dim3(kF32Threads), smem_dq, stream, dout, qkv, out, lse, delta,
           dqkv, H, N, scale, scale_log2, drop);
    launch(attention_backward_dkdv_f32_kernel<D>, grid, dim3(kF32Threads), smem_dkdv, stream, dout, qkv,
           static_cast<const float*>(lse), static_cast<const float*>(delta), dqkv, H, N, scale, scale_log2, drop);
  }
}

// Calls f(std::integral_constant<int, D>{}) for the supported head dims.
template <typename F>
void dispatch_head_dim(int d, F&& f) {
  switch (d) {
    case 32: f(std::integral_constant<int, 32>{}); break;
    case 64: f(std::integral_constant<int, 64>{}); break;
    case 80: f(std::integral_constant<int, 80>{}); break;
    case 128: f(std::integral_constant<int, 128>{}); break;
    default: throw Error("attention: head dim " + std::to_string(d) + " is not supported");
  }
}

}  // namespace

bool attention_head_dim_supported(int d) { return d == 32 || d == 64 || d == 80 || d == 128; }

template <typename T>
void attention_forward(const T* qkv, float scale, const DropoutSpec& drop, T* out, float* lse, int B, int H, int N,
                       int d, rt::Stream stream) {
  constexpr const char* op = "attention_forward";
  check_sizes(op, B, H, N, d);
  require(std::isfinite(scale), op, "scale must be finite");
  const AttnDropout dr = make_dropout(op, drop);
  if (static_cast<int64_t>(B) * H * N == 0) return;
  check_pointer<T>(op, "qkv", qkv);
  check_pointer<T>(op, "out", out);
  check_pointer<float>(op, "lse", lse);
  const float scale_log2 = scale * kLog2e;
  dispatch_head_dim(
      d, [&](auto dim) { forward_impl<T, decltype(dim)::value>(qkv, scale_log2, dr, out, lse, B, H, N, stream); });
}

size_t attention_backward_workspace_bytes(int B, int H, int N, int d) {
  check_sizes("attention_backward_workspace_bytes", B, H, N, d);
  return static_cast<size_t>(B) * H * N * sizeof(float);
}

template <typename T>
void attention_backward(const T* dout, const T* qkv, const T* out, const float* lse, float scale,
                        const DropoutSpec& drop, T* dqkv, void* workspace, size_t workspace_bytes, int B, int H, int N,
                        int d, rt::Stream stream) {
  constexpr const char* op = "attention_backward";
  check_sizes(op, B, H, N, d);
  require(std::isfinite(scale), op, "scale must be finite");
  const AttnDropout dr = make_dropout(op, drop);
  if (static_cast<int64_t>(B) * H * N == 0) return;
  check_pointer<T>(op, "dout", dout);
  check_pointer<T>(op, "qkv", qkv);
  check_pointer<T>(op, "out", out);
  check_pointer<float>(op, "lse", lse);
  check_pointer<T>(op, "dqkv", dqkv);
  check_pointer<float>(op, "workspace", workspace);
  const size_t need = attention_backward_workspace_bytes(B, H, N, d);
  require(workspace_bytes >= need, op,
          "workspace of " + std::to_string(workspace_bytes) + " bytes is too small (" + std::to_string(need) +
              " needed: attention_backward_workspace_bytes)");
  require(dqkv != qkv, op, "dqkv must not alias qkv (the backward reads qkv while it writes dqkv)");
  float* delta = static_cast<float*>(workspace);
  dispatch_head_dim(d, [&](auto dim) {
    backward_impl<T, decltype(dim)::value>(dout, qkv, out, lse, delta, scale, dr, dqkv, B, H, N, stream);
  });
}

// ---- instantiations ---------------------------------------------------------------------------
template void attention_forward<float>(const float*, float, const DropoutSpec&, float*, float*, int, int, int, int,
                                       rt::Stream);
template void attention_forward<bf16>(const bf16*, float, const DropoutSpec&, bf16*, float*, int, int, int, int,
                                      rt::Stream);
template void attention_backward<float>(const float*, const float*, const float*, const float*, float,
                                        const DropoutSpec&, float*, void*, size_t, int, int, int, int, rt::Stream);
template void attention_backward<bf16>(const bf16*, const bf16*, const bf16*, const float*, float, const DropoutSpec&,
                                       bf16*, void*, size_t, int, int, int, int, rt::Stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
