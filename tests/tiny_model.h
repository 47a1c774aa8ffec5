// vitcuda tests — the smallest model and dataset the library tests share: 8x8 one-channel
// images of 4 classes whose brightness depends on the label, and a one-block ViT for them.
#pragma once
#include <cstdint>
#include <random>

#include "vitcuda/config.h"
#include "vitcuda/data.h"

namespace vitcuda::test {

inline Dataset tiny_dataset(int n, uint32_t seed) {
  Dataset d;
  d.name = "tiny";
  d.channels = 1;
  d.height = d.width = 8;
  d.num_classes = 4;
  std::mt19937 rng(seed);
  for (int i = 0; i < n; ++i) {
    const int label = int(rng() % 4);
    d.labels.push_back(label);
    for (int k = 0; k < 64; ++k) d.images.push_back(uint8_t(label * 50 + rng() % 50));
  }
  return d;
}

inline ViTConfig tiny_config() {
  ViTConfig c;
  c.name = "tiny";
  c.img_size = 8;
  c.patch_size = 4;
  c.embed_dim = 8;
  c.depth = 1;
  c.num_heads = 2;
  c.num_classes = 4;
  return c;
}

}  // namespace vitcuda::test
