// vitcuda — fused flash-style attention for ViT: forward (online softmax, logsumexp saved) and
// FlashAttention-2 backward (P recomputed per tile from the logsumexp).
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
// Backward: one CTA per (b, h, 64-key tile), 4 warps × 16 keys, looping over 64-row query tiles
// (Q, dO, lse, D double-buffered). dK and dV of the warp's 16 keys stay in fp32 registers for
// the whole loop; dQ = dS·K needs a sum over all key tiles, which live in different CTAs: each
// CTA writes its dS tile to shared memory, multiplies it by its K tile, and adds the 64×d result
// into an fp32 workspace with atomics (FA2's dQaccum). For N = 197 that is 4 atomic adds per dQ
// element — 4·4·N·d bytes of L2 atomics per head against ~10·N·d bytes of other traffic, cheap
// next to recomputing S and dP in a separate dQ pass (7 instead of 5 GEMMs). A small kernel
// converts the accumulator to T afterwards; another computes D_i = dO_i·O_i first (and zeroes the
// accumulator).
//
// The fp32 path (T = float) uses the same tiling with one thread per query row (forward) or per
// key (backward) and plain FMA: it is a correctness reference on the GPU, not a fast path.
#include "kernels/attention.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>

#include "kernels/common.cuh"
#include "kernels/ptx.cuh"
#include "kernels/philox.h"

namespace vitcuda {
VITCUDA_KERNELS_BEGIN

namespace {
using bf16 = __nv_bfloat16;

constexpr int kTile = 64;           // query rows per forward CTA, keys per backward CTA, and the
                                    // width of the inner key (forward) / query (backward) tiles
constexpr int kWarps = kTile / 16;  // one m16 mma row block per warp
constexpr int kThreads = 32 * kWarps;
constexpr int kF32Threads = kTile;  // fp32 path: one thread per row / key
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.69314718055994531f;
}  // namespace

// Dropout on the probabilities, as the reference draws it.
struct AttnDropout {
  uint64_t seed;
  uint64_t stream;
  uint32_t threshold;
  float keep_scale;  // 1 / (1 - p)
  int active;
};

// ------------------------------------------------------------------------------------------
// CUDA kernels
// ------------------------------------------------------------------------------------------

__device__ __forceinline__ float attn_dropout_factor(const AttnDropout& dr, uint64_t index) {
  return dropout_keep(dr.seed, dr.stream, index, dr.threshold) ? dr.keep_scale : 0.f;
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

// Rows [row0, row0 + kTile) of a matrix whose row r starts at src + r·ld, into a padded tile;
// rows >= N are zero-filled, so the math on them is finite (and masked).
template <int D>
__device__ __forceinline__ void load_tile_async(SmemPtr<bf16> dst, const bf16* src, size_t ld, int row0, int N) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  for (int c = threadIdx.x; c < kTile * kChunks; c += kThreads) {
    const int r = c / kChunks, col = (c % kChunks) * 8;
    const bool valid = row0 + r < N;
    const bf16* g = valid ? src + static_cast<size_t>(row0 + r) * ld + col : src;
    ptx::cp_async_zfill<16>(smem_raw(dst + r * tile_stride<D>() + col), g, valid ? 16 : 0);
  }
}

// 64 fp32 values src[row0 + r] (r < 64, zero past N) by threads [first, first + 64).
__device__ __forceinline__ void load_row_floats_async(SmemPtr<float> dst, const float* src, int row0, int N,
                                                      int first) {
  const int r = static_cast<int>(threadIdx.x) - first;
  if (r < 0 || r >= kTile) return;
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

// The A fragment of a 16×16 block (k block kk) of a 16×64 fp32 accumulator tile: the C layout of
// n8 blocks 2kk and 2kk+1 is the A layout of k 0-15 (FA2's register reuse of P).
__device__ __forceinline__ void accum_to_a(const float (&c)[8][4], int kk, uint32_t (&a)[4]) {
  a[0] = pack_bf16(c[2 * kk][0], c[2 * kk][1]);
  a[1] = pack_bf16(c[2 * kk][2], c[2 * kk][3]);
  a[2] = pack_bf16(c[2 * kk + 1][0], c[2 * kk + 1][1]);
  a[3] = pack_bf16(c[2 * kk + 1][2], c[2 * kk + 1][3]);
}

// ---- bf16 forward ---------------------------------------------------------------------------
// grid (ceil(N/64), B·H), 128 threads. Shared memory: Q tile, K tile ×2, V tile ×2.
// Warp w computes rows q0 + 16w .. +15: S = Q Kᵀ by mma (Q fragments kept in registers for the
// whole loop), online softmax in the exp2 domain on the accumulator registers, then O += P V
// with P re-packed from the accumulators as the A operand.
template <int D>
__global__ void __launch_bounds__(kThreads)
    attention_forward_bf16_kernel(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                                  bf16* __restrict__ out, float* __restrict__ lse, int H, int N, float scale_log2,
                                  AttnDropout drop) {
  constexpr int S = tile_stride<D>();
  constexpr int kTileElems = kTile * S;
  VITCUDA_DYNAMIC_SMEM(bf16, smem);
  const SmemPtr<bf16> sQ = smem;
  const SmemPtr<bf16> sK = smem + kTileElems;      // 2 buffers
  const SmemPtr<bf16> sV = smem + 3 * kTileElems;  // 2 buffers

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int q0 = blockIdx.x * kTile;
  const size_t head = static_cast<size_t>(bh) * N * D;
  const int n_tiles = (N + kTile - 1) / kTile;

  load_tile_async<D>(sQ, q + head, D, q0, N);
  load_tile_async<D>(sK, k + head, D, 0, N);
  load_tile_async<D>(sV, v + head, D, 0, N);
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
    const int buf = kt & 1;
    if (kt + 1 < n_tiles) {  // the buffer it fills was released by the barrier ending kt-1
      load_tile_async<D>(sK + (buf ^ 1) * kTileElems, k + head, D, (kt + 1) * kTile, N);
      load_tile_async<D>(sV + (buf ^ 1) * kTileElems, v + head, D, (kt + 1) * kTile, N);
      ptx::cp_async_commit_group();
      ptx::cp_async_wait_group<1>();
    } else {
      ptx::cp_async_wait_group<0>();
    }
    __syncthreads();

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
          if (i < N && j < N) p *= attn_dropout_factor(drop, (static_cast<uint64_t>(bh) * N + i) * N + j);
        }
        s[nb][c] = p;
      }

      // O += P V: P from the accumulators (bf16), V fragments by ldmatrix.trans ([key][d] tile).
      VITCUDA_UNROLL
      for (int kk = 0; kk < 4; ++kk) {
        if (kk * 16 >= kv) continue;
        uint32_t pa[4];
        accum_to_a(s, kk, pa);
        VITCUDA_UNROLL
        for (int np = 0; np < D / 16; ++np) {
          uint32_t r[4];
          ptx::ldmatrix_x4_trans(r, smem_raw(tV + frag_b_kn_offset<S>(kk * 16, np * 16, lane)));
          const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
          ptx::mma_m16n8k16_bf16(o[2 * np], pa, b0, o[2 * np]);
          ptx::mma_m16n8k16_bf16(o[2 * np + 1], pa, b1, o[2 * np + 1]);
        }
      }
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
    bf16* dst = out + (static_cast<size_t>(b) * N + i) * H * D + static_cast<size_t>(h) * D;
    VITCUDA_UNROLL
    for (int nb = 0; nb < D / 8; ++nb) {
      dst[nb * 8 + 2 * t] = __float2bfloat16(o[nb][2 * r] * inv);
      dst[nb * 8 + 2 * t + 1] = __float2bfloat16(o[nb][2 * r + 1] * inv);
    }
    if (t == 0) lse[static_cast<size_t>(bh) * N + i] = (m[r] + log2f(l[r])) * kLn2;
  }
}

// ---- bf16 backward --------------------------------------------------------------------------
// grid (ceil(N/64) key tiles, B·H), 128 threads. Shared memory: K, V (this CTA's keys), Q and dO
// ×2, dSᵀ [64 keys][64 queries], lse and D ×2. Warp w owns keys k0 + 16w .. +15 and computes,
// per query tile, Sᵀ = K_w Qᵀ and dPᵀ = V_w dOᵀ (16×64 each, transposed so that the warp's keys
// are the mma rows), Pᵀ = exp(Sᵀ·scale − lse), then dV_w += (P∘Z)ᵀ dO, dK_w += dSᵀ Q from the
// accumulator registers. dQ = dS K for the query tile is shared out by query rows after a barrier.
template <int D>
__global__ void __launch_bounds__(kThreads)
    attention_backward_bf16_kernel(const bf16* __restrict__ dout, const bf16* __restrict__ q,
                                   const bf16* __restrict__ k, const bf16* __restrict__ v,
                                   const float* __restrict__ lse, const float* __restrict__ delta,
                                   float* __restrict__ dq_accum, bf16* __restrict__ dk, bf16* __restrict__ dv, int H,
                                   int N, float scale, float scale_log2, AttnDropout drop) {
  constexpr int S = tile_stride<D>();
  constexpr int kTileElems = kTile * S;
  constexpr int SD = kTile + 8;  // dSᵀ row stride
  VITCUDA_DYNAMIC_SMEM(bf16, smem);
  const SmemPtr<bf16> sK = smem;
  const SmemPtr<bf16> sV = smem + kTileElems;
  const SmemPtr<bf16> sQ = smem + 2 * kTileElems;   // 2 buffers
  const SmemPtr<bf16> sdO = smem + 4 * kTileElems;  // 2 buffers
  const SmemPtr<bf16> sdS = smem + 6 * kTileElems;
  const SmemPtr<float> sLse = smem_cast<float>(sdS + kTile * SD);  // 2 buffers of 64
  const SmemPtr<float> sDelta = sLse + 2 * kTile;                  // 2 buffers of 64

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int k0 = blockIdx.x * kTile;
  const size_t head = static_cast<size_t>(bh) * N * D;
  const size_t ld_o = static_cast<size_t>(H) * D;  // row stride of dout [B, N, H*D]
  const bf16* dO_head = dout + static_cast<size_t>(b) * N * ld_o + static_cast<size_t>(h) * D;
  const float* lse_head = lse + static_cast<size_t>(bh) * N;
  const float* delta_head = delta + static_cast<size_t>(bh) * N;
  const int n_tiles = (N + kTile - 1) / kTile;

  load_tile_async<D>(sK, k + head, D, k0, N);
  load_tile_async<D>(sV, v + head, D, k0, N);
  load_tile_async<D>(sQ, q + head, D, 0, N);
  load_tile_async<D>(sdO, dO_head, ld_o, 0, N);
  load_row_floats_async(sLse, lse_head, 0, N, 0);
  load_row_floats_async(sDelta, delta_head, 0, N, kTile);
  ptx::cp_async_commit_group();

  const int key_w = k0 + warp * 16;
  const bool active = key_w < N;
  const int kv = min(kTile, N - k0);  // valid keys of this CTA
  float dk_acc[D / 8][4], dv_acc[D / 8][4];
  VITCUDA_UNROLL
  for (int nb = 0; nb < D / 8; ++nb) VITCUDA_UNROLL
  for (int c = 0; c < 4; ++c) dk_acc[nb][c] = dv_acc[nb][c] = 0.f;

  for (int qt = 0; qt < n_tiles; ++qt) {
    const int buf = qt & 1;
    if (qt + 1 < n_tiles) {
      const int row0 = (qt + 1) * kTile;
      load_tile_async<D>(sQ + (buf ^ 1) * kTileElems, q + head, D, row0, N);
      load_tile_async<D>(sdO + (buf ^ 1) * kTileElems, dO_head, ld_o, row0, N);
      load_row_floats_async(sLse + (buf ^ 1) * kTile, lse_head, row0, N, 0);
      load_row_floats_async(sDelta + (buf ^ 1) * kTile, delta_head, row0, N, kTile);
      ptx::cp_async_commit_group();
      ptx::cp_async_wait_group<1>();
    } else {
      ptx::cp_async_wait_group<0>();
    }
    __syncthreads();
    const SmemPtr<bf16> tQ = sQ + buf * kTileElems, tdO = sdO + buf * kTileElems;
    const SmemPtr<float> tL = sLse + buf * kTile, tD = sDelta + buf * kTile;
    const int qv = min(kTile, N - qt * kTile);  // valid queries in this tile

    if (active) {
      float st[8][4], dpt[8][4];
      VITCUDA_UNROLL
      for (int nb = 0; nb < 8; ++nb) VITCUDA_UNROLL
      for (int c = 0; c < 4; ++c) st[nb][c] = dpt[nb][c] = 0.f;
      VITCUDA_UNROLL
      for (int ks = 0; ks < D / 16; ++ks) {
        uint32_t ka[4], va[4];
        ptx::ldmatrix_x4(ka, smem_raw(sK + frag_a_offset<S>(warp * 16, ks * 16, lane)));
        ptx::ldmatrix_x4(va, smem_raw(sV + frag_a_offset<S>(warp * 16, ks * 16, lane)));
        VITCUDA_UNROLL
        for (int np = 0; np < 4; ++np) {
          if (np * 16 >= qv) continue;
          uint32_t r[4];
          ptx::ldmatrix_x4(r, smem_raw(tQ + frag_b_nk_offset<S>(np * 16, ks * 16, lane)));
          const uint32_t q0f[2] = {r[0], r[1]}, q1f[2] = {r[2], r[3]};
          ptx::mma_m16n8k16_bf16(st[2 * np], ka, q0f, st[2 * np]);
          ptx::mma_m16n8k16_bf16(st[2 * np + 1], ka, q1f, st[2 * np + 1]);
          ptx::ldmatrix_x4(r, smem_raw(tdO + frag_b_nk_offset<S>(np * 16, ks * 16, lane)));
          const uint32_t o0f[2] = {r[0], r[1]}, o1f[2] = {r[2], r[3]};
          ptx::mma_m16n8k16_bf16(dpt[2 * np], va, o0f, dpt[2 * np]);
          ptx::mma_m16n8k16_bf16(dpt[2 * np + 1], va, o1f, dpt[2 * np + 1]);
        }
      }
      // st becomes (P∘Z)ᵀ, dpt becomes dSᵀ; entries with a key or query past N are 0.
      VITCUDA_UNROLL
      for (int nb = 0; nb < 8; ++nb) VITCUDA_UNROLL
      for (int c = 0; c < 4; ++c) {
        const int qi = nb * 8 + 2 * t + (c & 1);
        const int query = qt * kTile + qi, key = key_w + g + 8 * (c >> 1);
        float pz = 0.f, ds = 0.f;
        if (query < N && key < N) {
          const float p = exp2f(st[nb][c] * scale_log2 - tL[qi] * kLog2e);
          float z = 1.f;
          if (drop.active) z = attn_dropout_factor(drop, (static_cast<uint64_t>(bh) * N + query) * N + key);
          pz = p * z;
          ds = p * (dpt[nb][c] * z - tD[qi]) * scale;
        }
        st[nb][c] = pz;
        dpt[nb][c] = ds;
      }
      VITCUDA_UNROLL
      for (int kk = 0; kk < 4; ++kk) {
        if (kk * 16 >= qv) continue;
        uint32_t pa[4], da[4];
        accum_to_a(st, kk, pa);
        accum_to_a(dpt, kk, da);
        VITCUDA_UNROLL
        for (int np = 0; np < D / 16; ++np) {
          uint32_t r[4];
          ptx::ldmatrix_x4_trans(r, smem_raw(tdO + frag_b_kn_offset<S>(kk * 16, np * 16, lane)));
          const uint32_t o0f[2] = {r[0], r[1]}, o1f[2] = {r[2], r[3]};
          ptx::mma_m16n8k16_bf16(dv_acc[2 * np], pa, o0f, dv_acc[2 * np]);
          ptx::mma_m16n8k16_bf16(dv_acc[2 * np + 1], pa, o1f, dv_acc[2 * np + 1]);
          ptx::ldmatrix_x4_trans(r, smem_raw(tQ + frag_b_kn_offset<S>(kk * 16, np * 16, lane)));
          const uint32_t q0f[2] = {r[0], r[1]}, q1f[2] = {r[2], r[3]};
          ptx::mma_m16n8k16_bf16(dk_acc[2 * np], da, q0f, dk_acc[2 * np]);
          ptx::mma_m16n8k16_bf16(dk_acc[2 * np + 1], da, q1f, dk_acc[2 * np + 1]);
        }
      }
      VITCUDA_UNROLL
      for (int nb = 0; nb < 8; ++nb) VITCUDA_UNROLL
      for (int r = 0; r < 2; ++r)
        *smem_cast<uint32_t>(sdS + (warp * 16 + g + 8 * r) * SD + nb * 8 + 2 * t) =
            pack_bf16(dpt[nb][2 * r], dpt[nb][2 * r + 1]);
    }
    __syncthreads();

    // dQ[query tile] += dS K: warp w takes query rows 16w..16w+15 of the tile; the k dimension
    // runs over this CTA's valid keys (the dSᵀ rows of warps past N were never written).
    const int qrow_w = qt * kTile + warp * 16;
    if (qrow_w < N) {
      float acc[D / 8][4];
      VITCUDA_UNROLL
      for (int nb = 0; nb < D / 8; ++nb) VITCUDA_UNROLL
      for (int c = 0; c < 4; ++c) acc[nb][c] = 0.f;
      VITCUDA_UNROLL
      for (int kk = 0; kk < 4; ++kk) {
        if (kk * 16 >= kv) continue;
        uint32_t a[4];  // A[query][key] = dSᵀ[key][query]: .trans of the [key][query] tile
        ptx::ldmatrix_x4_trans(
            a, smem_raw(sdS + (kk * 16 + (lane & 7) + (lane >> 4) * 8) * SD + warp * 16 + ((lane >> 3) & 1) * 8));
        VITCUDA_UNROLL
        for (int np = 0; np < D / 16; ++np) {
          uint32_t r[4];
          ptx::ldmatrix_x4_trans(r, smem_raw(sK + frag_b_kn_offset<S>(kk * 16, np * 16, lane)));
          const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
          ptx::mma_m16n8k16_bf16(acc[2 * np], a, b0, acc[2 * np]);
          ptx::mma_m16n8k16_bf16(acc[2 * np + 1], a, b1, acc[2 * np + 1]);
        }
      }
      VITCUDA_UNROLL
      for (int r = 0; r < 2; ++r) {
        const int row = qrow_w + g + 8 * r;
        if (row >= N) continue;
        float* dst = dq_accum + (static_cast<size_t>(bh) * N + row) * D;
        VITCUDA_UNROLL
        for (int nb = 0; nb < D / 8; ++nb) {
          atomicAdd(dst + nb * 8 + 2 * t, acc[nb][2 * r]);
          atomicAdd(dst + nb * 8 + 2 * t + 1, acc[nb][2 * r + 1]);
        }
      }
    }
    __syncthreads();  // dSᵀ and buffer `buf` are reused by the next query tile
  }
  if (!active) return;

  VITCUDA_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int key = key_w + g + 8 * r;
    if (key >= N) continue;
    const size_t base = head + static_cast<size_t>(key) * D;
    VITCUDA_UNROLL
    for (int nb = 0; nb < D / 8; ++nb) {
      dk[base + nb * 8 + 2 * t] = __float2bfloat16(dk_acc[nb][2 * r]);
      dk[base + nb * 8 + 2 * t + 1] = __float2bfloat16(dk_acc[nb][2 * r + 1]);
      dv[base + nb * 8 + 2 * t] = __float2bfloat16(dv_acc[nb][2 * r]);
      dv[base + nb * 8 + 2 * t + 1] = __float2bfloat16(dv_acc[nb][2 * r + 1]);
    }
  }
}

// ---- fp32 forward ---------------------------------------------------------------------------
// grid (ceil(N/64), B·H), 64 threads, thread r computes query row q0 + r against K/V tiles in
// shared memory (odd row stride D+1: a thread's own Q row is conflict-free, K/V rows are
// broadcast).
template <int D>
__global__ void __launch_bounds__(kF32Threads)
    attention_forward_f32_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                                 float* __restrict__ out, float* __restrict__ lse, int H, int N, float scale_log2,
                                 AttnDropout drop) {
  constexpr int SF = D + 1;
  VITCUDA_DYNAMIC_SMEM(float, smem);
  const SmemPtr<float> sQ = smem, sK = smem + kTile * SF, sV = smem + 2 * kTile * SF;
  const int tid = threadIdx.x;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int q0 = blockIdx.x * kTile, i = q0 + tid;
  const size_t head = static_cast<size_t>(bh) * N * D;
  const int n_tiles = (N + kTile - 1) / kTile;

  for (int e = tid; e < kTile * D; e += kF32Threads) {
    const int r = e / D, c = e % D;
    sQ[r * SF + c] = q0 + r < N ? q[head + static_cast<size_t>(q0 + r) * D + c] : 0.f;
  }
  float o[D];
  for (int c = 0; c < D; ++c) o[c] = 0.f;
  float m = -INFINITY, l = 0.f;
  float s[kTile];
  for (int kt = 0; kt < n_tiles; ++kt) {
    __syncthreads();  // the previous K/V tile is consumed
    for (int e = tid; e < kTile * D; e += kF32Threads) {
      const int r = e / D, c = e % D, j = kt * kTile + r;
      sK[r * SF + c] = j < N ? k[head + static_cast<size_t>(j) * D + c] : 0.f;
      sV[r * SF + c] = j < N ? v[head + static_cast<size_t>(j) * D + c] : 0.f;
    }
    __syncthreads();
    const int kv = min(kTile, N - kt * kTile);
    float mx = -INFINITY;
    for (int j = 0; j < kv; ++j) {
      float acc = 0.f;
      for (int c = 0; c < D; ++c) acc = fmaf(sQ[tid * SF + c], sK[j * SF + c], acc);
      s[j] = acc * scale_log2;
      mx = fmaxf(mx, s[j]);
    }
    const float m_new = fmaxf(m, mx);
    const float alpha = exp2f(m - m_new);
    m = m_new;
    l *= alpha;
    for (int c = 0; c < D; ++c) o[c] *= alpha;
    for (int j = 0; j < kv; ++j) {
      float p = exp2f(s[j] - m);
      l += p;
      if (drop.active && i < N)
        p *= attn_dropout_factor(drop, (static_cast<uint64_t>(bh) * N + i) * N + kt * kTile + j);
      for (int c = 0; c < D; ++c) o[c] = fmaf(p, sV[j * SF + c], o[c]);
    }
  }
  if (i >= N) return;
  const float inv = 1.f / l;
  float* dst = out + (static_cast<size_t>(b) * N + i) * H * D + static_cast<size_t>(h) * D;
  for (int c = 0; c < D; ++c) dst[c] = o[c] * inv;
  lse[static_cast<size_t>(bh) * N + i] = (m + log2f(l)) * kLn2;
}

// ---- fp32 backward --------------------------------------------------------------------------
// grid (ceil(N/64) key tiles, B·H), 64 threads. Per query tile: thread j (key k0 + j) computes
// its column of P, dP, dS, accumulating dK_j and dV_j in registers and writing dS to shared
// memory; after a barrier thread r computes dQ row r of the tile (dS·K over this CTA's keys) and
// adds it to the fp32 accumulator with atomics.
template <int D>
__global__ void __launch_bounds__(kF32Threads)
    attention_backward_f32_kernel(const float* __restrict__ dout, const float* __restrict__ q,
                                  const float* __restrict__ k, const float* __restrict__ v,
                                  const float* __restrict__ lse, const float* __restrict__ delta,
                                  float* __restrict__ dq_accum, float* __restrict__ dk, float* __restrict__ dv, int H,
                                  int N, float scale, float scale_log2, AttnDropout drop) {
  constexpr int SF = D + 1;
  constexpr int SS = kTile + 1;
  VITCUDA_DYNAMIC_SMEM(float, smem);
  const SmemPtr<float> sK = smem, sV = smem + kTile * SF, sQ = smem + 2 * kTile * SF, sdO = smem + 3 * kTile * SF,
                       sdS = smem + 4 * kTile * SF, sL = sdS + kTile * SS, sDl = sL + kTile;
  const int tid = threadIdx.x;
  const int bh = blockIdx.y, b = bh / H, h = bh % H;
  const int k0 = blockIdx.x * kTile, key = k0 + tid;
  const size_t head = static_cast<size_t>(bh) * N * D;
  const size_t ld_o = static_cast<size_t>(H) * D;
  const float* dO_head = dout + static_cast<size_t>(b) * N * ld_o + static_cast<size_t>(h) * D;
  const int n_tiles = (N + kTile - 1) / kTile;
  const int kv = min(kTile, N - k0);

  for (int e = tid; e < kTile * D; e += kF32Threads) {
    const int r = e / D, c = e % D, j = k0 + r;
    sK[r * SF + c] = j < N ? k[head + static_cast<size_t>(j) * D + c] : 0.f;
    sV[r * SF + c] = j < N ? v[head + static_cast<size_t>(j) * D + c] : 0.f;
  }
  float dk_acc[D], dv_acc[D];
  for (int c = 0; c < D; ++c) dk_acc[c] = dv_acc[c] = 0.f;

  for (int qt = 0; qt < n_tiles; ++qt) {
    const int row0 = qt * kTile;
    __syncthreads();  // the previous tile (and dS) is consumed
    for (int e = tid; e < kTile * D; e += kF32Threads) {
      const int r = e / D, c = e % D, i = row0 + r;
      sQ[r * SF + c] = i < N ? q[head + static_cast<size_t>(i) * D + c] : 0.f;
      sdO[r * SF + c] = i < N ? dO_head[static_cast<size_t>(i) * ld_o + c] : 0.f;
    }
    {
      const int i = row0 + tid;
      sL[tid] = i < N ? lse[static_cast<size_t>(bh) * N + i] : 0.f;
      sDl[tid] = i < N ? delta[static_cast<size_t>(bh) * N + i] : 0.f;
    }
    __syncthreads();
    const int qv = min(kTile, N - row0);
    if (key < N) {
      for (int r = 0; r < qv; ++r) {
        float s = 0.f, dp = 0.f;
        for (int c = 0; c < D; ++c) {
          s = fmaf(sQ[r * SF + c], sK[tid * SF + c], s);
          dp = fmaf(sdO[r * SF + c], sV[tid * SF + c], dp);
        }
        const float p = exp2f(s * scale_log2 - sL[r] * kLog2e);
        float z = 1.f;
        if (drop.active) z = attn_dropout_factor(drop, (static_cast<uint64_t>(bh) * N + row0 + r) * N + key);
        const float pz = p * z, ds = p * (dp * z - sDl[r]) * scale;
        for (int c = 0; c < D; ++c) {
          dv_acc[c] = fmaf(pz, sdO[r * SF + c], dv_acc[c]);
          dk_acc[c] = fmaf(ds, sQ[r * SF + c], dk_acc[c]);
        }
        sdS[r * SS + tid] = ds;
      }
    }
    __syncthreads();
    if (tid < qv) {
      float* dst = dq_accum + (static_cast<size_t>(bh) * N + row0 + tid) * D;
      for (int c = 0; c < D; ++c) {
        float acc = 0.f;
        for (int j = 0; j < kv; ++j) acc = fmaf(sdS[tid * SS + j], sK[j * SF + c], acc);
        atomicAdd(dst + c, acc);
      }
    }
  }
  if (key >= N) return;
  const size_t base = head + static_cast<size_t>(key) * D;
  for (int c = 0; c < D; ++c) {
    dk[base + c] = dk_acc[c];
    dv[base + c] = dv_acc[c];
  }
}

// ---- backward helpers -----------------------------------------------------------------------
// One warp per row (b, h, i): delta = dO_i·O_i in fp32, and the row of the dQ accumulator zeroed.
template <typename T>
__global__ void attention_backward_delta_kernel(const T* __restrict__ dout, const T* __restrict__ out,
                                                float* __restrict__ delta, float* __restrict__ dq_accum, int H, int N,
                                                int D, int rows) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= rows) return;  // whole warps
  const int bh = row / N, i = row % N, b = bh / H, h = bh % H;
  const size_t o = (static_cast<size_t>(b) * N + i) * H * D + static_cast<size_t>(h) * D;
  float s = 0.f;
  for (int c = lane; c < D; c += 32) {
    s = fmaf(to_float(dout[o + c]), to_float(out[o + c]), s);
    dq_accum[static_cast<size_t>(row) * D + c] = 0.f;
  }
  s = warp_reduce_sum(s);
  if (lane == 0) delta[row] = s;
}

template <typename T>
__global__ void attention_dq_convert_kernel(const float* __restrict__ acc, T* __restrict__ dq, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    dq[i] = from_float<T>(acc[i]);
}

// ------------------------------------------------------------------------------------------
// kernel launchers
// ------------------------------------------------------------------------------------------

namespace {

constexpr int kMaxGridY = 65535;

size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

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
          "head dim d=" + std::to_string(d) + " is not supported (32, 64, 80 or 128)");
  require(static_cast<int64_t>(B) * H <= kMaxGridY, op,
          "B*H=" + std::to_string(static_cast<int64_t>(B) * H) + " exceeds 65535");
  require(static_cast<int64_t>(B) * H * N <= INT_MAX, op, "B*H*N exceeds 2^31 - 1");
}

AttnDropout make_dropout(const char* op, const DropoutSpec& drop) {
  require(drop.p >= 0.f && drop.p < 1.f, op, "dropout p=" + std::to_string(drop.p) + " must lie in [0, 1)");
  AttnDropout d{};
  d.seed = drop.seed;
  d.stream = drop.stream;
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
constexpr size_t backward_bf16_smem() {
  return (6ull * kTile * tile_stride<D>() + kTile * (kTile + 8)) * sizeof(bf16) + 4ull * kTile * sizeof(float);
}
template <int D>
constexpr size_t forward_f32_smem() {
  return 3ull * kTile * (D + 1) * sizeof(float);
}
template <int D>
constexpr size_t backward_f32_smem() {
  return (4ull * kTile * (D + 1) + kTile * (kTile + 1) + 2 * kTile) * sizeof(float);
}

template <typename T, int D>
void forward_impl(const T* q, const T* k, const T* v, float scale_log2, const AttnDropout& drop, T* out, float* lse,
                  int B, int H, int N, rt::Stream stream) {
  const dim3 grid(ceil_div(N, kTile), B * H);
  if constexpr (std::is_same_v<T, bf16>) {
    constexpr size_t smem = forward_bf16_smem<D>();
    reserve_dynamic_smem("attention_forward", attention_forward_bf16_kernel<D>, smem, "d=" + std::to_string(D));
    launch(attention_forward_bf16_kernel<D>, grid, dim3(kThreads), smem, stream, q, k, v, out, lse, H, N, scale_log2,
           drop);
  } else {
    constexpr size_t smem = forward_f32_smem<D>();
    reserve_dynamic_smem("attention_forward", attention_forward_f32_kernel<D>, smem, "d=" + std::to_string(D));
    launch(attention_forward_f32_kernel<D>, grid, dim3(kF32Threads), smem, stream, q, k, v, out, lse, H, N, scale_log2,
           drop);
  }
}

template <typename T, int D>
void backward_impl(const T* dout, const T* q, const T* k, const T* v, const float* lse, const float* delta,
                   float* dq_accum, float scale, const AttnDropout& drop, T* dk, T* dv, int B, int H, int N,
                   rt::Stream stream) {
  const dim3 grid(ceil_div(N, kTile), B * H);
  const float scale_log2 = scale * kLog2e;
  if constexpr (std::is_same_v<T, bf16>) {
    constexpr size_t smem = backward_bf16_smem<D>();
    reserve_dynamic_smem("attention_backward", attention_backward_bf16_kernel<D>, smem, "d=" + std::to_string(D));
    launch(attention_backward_bf16_kernel<D>, grid, dim3(kThreads), smem, stream, dout, q, k, v, lse, delta, dq_accum,
           dk, dv, H, N, scale, scale_log2, drop);
  } else {
    constexpr size_t smem = backward_f32_smem<D>();
    reserve_dynamic_smem("attention_backward", attention_backward_f32_kernel<D>, smem, "d=" + std::to_string(D));
    launch(attention_backward_f32_kernel<D>, grid, dim3(kF32Threads), smem, stream, dout, q, k, v, lse, delta, dq_accum,
           dk, dv, H, N, scale, scale_log2, drop);
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
void attention_forward(const T* q, const T* k, const T* v, float scale, const DropoutSpec& drop, T* out, float* lse,
                       int B, int H, int N, int d, rt::Stream stream) {
  constexpr const char* op = "attention_forward";
  check_sizes(op, B, H, N, d);
  require(std::isfinite(scale), op, "scale must be finite");
  const AttnDropout dr = make_dropout(op, drop);
  if (static_cast<int64_t>(B) * H * N == 0) return;
  check_pointer<T>(op, "q", q);
  check_pointer<T>(op, "k", k);
  check_pointer<T>(op, "v", v);
  check_pointer<T>(op, "out", out);
  check_pointer<float>(op, "lse", lse);
  const float scale_log2 = scale * kLog2e;
  dispatch_head_dim(
      d, [&](auto dim) { forward_impl<T, decltype(dim)::value>(q, k, v, scale_log2, dr, out, lse, B, H, N, stream); });
}

size_t attention_backward_workspace_bytes(int B, int H, int N, int d) {
  check_sizes("attention_backward_workspace_bytes", B, H, N, d);
  const size_t rows = static_cast<size_t>(B) * H * N;
  return align_up(rows * sizeof(float), 256) + rows * d * sizeof(float);
}

template <typename T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* out, const float* lse, float scale,
                        const DropoutSpec& drop, T* dq, T* dk, T* dv, void* workspace, size_t workspace_bytes, int B,
                        int H, int N, int d, rt::Stream stream) {
  constexpr const char* op = "attention_backward";
  check_sizes(op, B, H, N, d);
  require(std::isfinite(scale), op, "scale must be finite");
  const AttnDropout dr = make_dropout(op, drop);
  if (static_cast<int64_t>(B) * H * N == 0) return;
  check_pointer<T>(op, "dout", dout);
  check_pointer<T>(op, "q", q);
  check_pointer<T>(op, "k", k);
  check_pointer<T>(op, "v", v);
  check_pointer<T>(op, "out", out);
  check_pointer<float>(op, "lse", lse);
  check_pointer<T>(op, "dq", dq);
  check_pointer<T>(op, "dk", dk);
  check_pointer<T>(op, "dv", dv);
  check_pointer<float>(op, "workspace", workspace);
  const size_t need = attention_backward_workspace_bytes(B, H, N, d);
  require(workspace_bytes >= need, op,
          "workspace of " + std::to_string(workspace_bytes) + " bytes is too small (" + std::to_string(need) +
              " needed: attention_backward_workspace_bytes)");

  const int rows = B * H * N;
  float* delta = static_cast<float*>(workspace);
  float* dq_accum = reinterpret_cast<float*>(static_cast<char*>(workspace) +
                                             align_up(static_cast<size_t>(rows) * sizeof(float), 256));
  constexpr int kRowsPerBlock = 8;  // one warp each
  launch(attention_backward_delta_kernel<T>, dim3(ceil_div(rows, kRowsPerBlock)), dim3(32 * kRowsPerBlock), 0, stream,
         dout, out, delta, dq_accum, H, N, d, rows);
  dispatch_head_dim(d, [&](auto dim) {
    backward_impl<T, decltype(dim)::value>(dout, q, k, v, lse, delta, dq_accum, scale, dr, dk, dv, B, H, N, stream);
  });
  const size_t n = static_cast<size_t>(rows) * d;
  constexpr int kConvertThreads = 256;
  const int blocks = static_cast<int>(std::min<size_t>((n + kConvertThreads - 1) / kConvertThreads, 4096));
  launch(attention_dq_convert_kernel<T>, dim3(blocks), dim3(kConvertThreads), 0, stream,
         static_cast<const float*>(dq_accum), dq, n);
}

// ---- instantiations ---------------------------------------------------------------------------
template void attention_forward<float>(const float*, const float*, const float*, float, const DropoutSpec&, float*,
                                       float*, int, int, int, int, rt::Stream);
template void attention_forward<bf16>(const bf16*, const bf16*, const bf16*, float, const DropoutSpec&, bf16*, float*,
                                      int, int, int, int, rt::Stream);
template void attention_backward<float>(const float*, const float*, const float*, const float*, const float*,
                                        const float*, float, const DropoutSpec&, float*, float*, float*, void*, size_t,
                                        int, int, int, int, rt::Stream);
template void attention_backward<bf16>(const bf16*, const bf16*, const bf16*, const bf16*, const bf16*, const float*,
                                       float, const DropoutSpec&, bf16*, bf16*, bf16*, void*, size_t, int, int, int,
                                       int, rt::Stream);

VITCUDA_KERNELS_END
}  // namespace vitcuda
