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

// The 32 random bits for element `index` of the call identified by (seed, stream):
// counter = (index / 4 as 64 bits, stream as 64 bits), key = seed, word index % 4.
VITCUDA_HD uint32_t philox_bits(uint64_t seed, uint64_t stream, uint64_t index) {
  const uint64_t block = index >> 2;
  Philox4 c{{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), static_cast<uint32_t>(stream),
             static_cast<uint32_t>(stream >> 32)}};
  const Philox4 r = philox4x32_10(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return r.x[index & 3];
}

// Keep threshold: an element is kept iff its bits >= threshold, i.e. with probability 1 - p.
VITCUDA_HD uint32_t dropout_threshold(float p) {
  const double t = static_cast<double>(p) * 4294967296.0;
  return t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(t);
}

VITCUDA_HD bool dropout_keep(uint64_t seed, uint64_t stream, uint64_t index, uint32_t threshold) {
  return philox_bits(seed, stream, index) >= threshold;
}

}  // namespace vitcuda
