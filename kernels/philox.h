// vitcuda — Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
// SC'11; the Random123 reference), identical bits on host and device. Every random
// decision in vitcuda (dropout, attention dropout, drop-path) is a pure function of
// (seed, stream, element index), so masks are regenerated in backward, never stored.
#pragma once
#include <cstdint>

#include "kernels/host_device.h"

namespace vitcuda {

struct Philox4 {
  uint32_t x[4];
};

VITCUDA_HD uint32_t philox_mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

// Philox4x32 with 10 rounds: counter ctr, key (k0, k1).
VITCUDA_HD Philox4 philox4x32_10(Philox4 ctr, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = philox_mulhilo(0xD2511F53u, ctr.x[0], &hi0);
    const uint32_t lo1 = philox_mulhilo(0xCD9E8D57u, ctr.x[2], &hi1);
    Philox4 next;
    next.x[0] = hi1 ^ ctr.x[1] ^ k0;
    next.x[1] = lo1;
    next.x[2] = hi0 ^ ctr.x[3] ^ k1;
    next.x[3] = lo0;
    ctr = next;
    k0 += 0x9E3779B9u;  // golden ratio
    k1 += 0xBB67AE85u;  // sqrt(3) - 1
  }
  return ctr;
}

// The Philox counter of element block `block` (elements 4·block .. 4·block+3) of the call
// identified by (seed, stream): counter = (block as 64 bits, stream as 64 bits), key = seed.
// Returns the 4 words of those 4 elements: word k is element 4·block + k's. The kernels call this
// once per 4 consecutive elements (philox_bits below would call it 4 times for the same words).
VITCUDA_HD Philox4 philox4_block(uint64_t seed, uint64_t stream, uint64_t block) {
  const Philox4 c{{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), static_cast<uint32_t>(stream),
                   static_cast<uint32_t>(stream >> 32)}};
  return philox4x32_10(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Word k (0..3) of r without a run-time array index (r.x[k] with k unknown at compile time puts r
// in local memory on the GPU): two selects on the bits of k.
VITCUDA_HD uint32_t philox_word(const Philox4& r, uint32_t k) {
  const uint32_t lo = (k & 1u) ? r.x[1] : r.x[0];
  const uint32_t hi = (k & 1u) ? r.x[3] : r.x[2];
  return (k & 2u) ? hi : lo;
}

// The 32 random bits for element `index` of the call identified by (seed, stream): word index % 4
// of block index / 4.
VITCUDA_HD uint32_t philox_bits(uint64_t seed, uint64_t stream, uint64_t index) {
  return philox_word(philox4_block(seed, stream, index >> 2), static_cast<uint32_t>(index) & 3u);
}

// Keep threshold: an element is kept iff its bits >= threshold, i.e. with probability 1 - p.
VITCUDA_HD uint32_t dropout_threshold(float p) {
  const double t = static_cast<double>(p) * 4294967296.0;
  return t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(t);
}

VITCUDA_HD bool dropout_keep(uint64_t seed, uint64_t stream, uint64_t index, uint32_t threshold) {
  return philox_bits(seed, stream, index) >= threshold;
}

// What a dropout kernel needs of a DropoutSpec (include/vitcuda/backend.h), passed by value. The
// stream offset is a pointer into device memory, dereferenced by the kernel itself (stream_id()),
// never by the host: one captured CUDA Graph then applies a new mask at every step.
struct DropoutParams {
  uint64_t seed = 0;
  uint64_t stream = 0;
  const uint64_t* stream_offset = nullptr;
  uint32_t threshold = 0;  // dropout_threshold(p)
  float scale = 1.f;       // 1 / (1 - p), applied in fp32
  VITCUDA_HD uint64_t stream_id() const { return stream + (stream_offset ? *stream_offset : 0); }
};

// Keep bits of the kVec (a multiple of 4) consecutive elements first .. first + kVec - 1: bit e for
// element first + e. One Philox call per block of 4 they touch: kVec/4 when first % 4 == 0 (rows of
// a width that is a multiple of 4), kVec/4 + 1 otherwise. Word w of block b is element 4·b + w; the
// loops have constant trip counts, which nvcc unrolls, so r.x[w] is a register, and the run-time
// position e only sets a shift (no pragma here: in a host-device function it would reach the host
// compiler).
template <int kVec>
VITCUDA_HD uint32_t dropout_keep_bits(const DropoutParams& d, uint64_t stream_id, uint64_t first) {
  static_assert(kVec % 4 == 0 && kVec <= 28, "kVec: a multiple of 4, at most 28");
  const uint64_t block0 = first >> 2;
  const int lead = static_cast<int>(first & 3);  // elements of block0 before `first`
  uint32_t bits = 0;
  for (int g = 0; g <= kVec / 4; ++g) {
    if (g == kVec / 4 && lead == 0) break;  // aligned: the kVec/4 blocks cover everything
    const Philox4 r = philox4_block(d.seed, stream_id, block0 + g);
    for (int w = 0; w < 4; ++w) {
      const int e = 4 * g + w - lead;
      if (e >= 0 && e < kVec) bits |= static_cast<uint32_t>(r.x[w] >= d.threshold) << e;
    }
  }
  return bits;
}

}  // namespace vitcuda
