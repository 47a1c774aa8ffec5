// vitcuda — splitmix64 (Steele, Lea, Flood 2014): the host's one small seedable generator
// (parameter init, validation split and epoch order, augmentation draws). std::shuffle and the
// std distributions are implementation-defined; this is identical on every standard library,
// so a resumed run sees the same numbers.
#pragma once
#include <cstdint>

namespace vitcuda {

// Advances `state` and returns the next 64-bit output.
inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace vitcuda
