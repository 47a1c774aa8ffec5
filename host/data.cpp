// vitcuda — the validation split and epoch batching (the dataset readers are in data_formats.cpp).
#include "vitcuda/data.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "host/file_io.h"
#include "host/random.h"

namespace vitcuda {

// ---- deterministic randomness ----------------------------------------------------------
// splitmix64 (host/random.h) and our own Fisher–Yates: std::shuffle and the std
// distributions are implementation-defined, and a resumed run must see the same batches on
// any standard library.

// Uniform in [0, n) without modulo bias: reject the lowest (2^64 mod n) values.
static uint64_t uniform_below(uint64_t& state, uint64_t n) {
  uint64_t threshold = (0 - n) % n;
  for (;;) {
    uint64_t r = splitmix64(state);
    if (r >= threshold) return r % n;
  }
}

static void fisher_yates(std::vector<int64_t>& v, uint64_t& state) {
  for (size_t i = v.size(); i > 1; i--) {
    size_t j = size_t(uniform_below(state, i));
    std::swap(v[i - 1], v[j]);
  }
}

// Distinct stream tags so that one user seed drives the validation split and the epoch
// orders without the two permutations being the same sequence.
static constexpr uint64_t kSplitStream = 0x7370'6c69'7476'616cull;  // "splitval"
static constexpr uint64_t kEpochStream = 0x6570'6f63'686f'7264ull;  // "epochord"

static uint64_t stream_state(uint64_t seed, uint64_t stream, uint64_t index) {
  uint64_t s = seed ^ stream;
  uint64_t a = splitmix64(s);
  uint64_t t = a ^ (index * 0xD1B54A32D192ED03ull);
  return splitmix64(t);
}

// ---- validation split --------------------------------------------------------------------

Dataset split_validation(Dataset& train, double fraction, uint64_t seed) {
  if (!(fraction >= 0.0 && fraction <= 1.0))
    throw Error("split_validation: fraction is " + std::to_string(fraction) + ", must be in [0, 1]");
  int64_t n = train.size();
  int64_t n_val = int64_t(fraction * double(n) + 0.5);  // round to nearest
  if (n_val > n) n_val = n;

  // The first n_val entries of a seeded permutation go to validation.
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; i++) perm[size_t(i)] = i;
  uint64_t state = stream_state(seed, kSplitStream, 0);
  fisher_yates(perm, state);
  std::vector<bool> is_val(static_cast<size_t>(n), false);
  for (int64_t i = 0; i < n_val; i++) is_val[size_t(perm[size_t(i)])] = true;

  Dataset val;
  val.name = train.name + " (validation split)";
  val.channels = train.channels;
  val.height = train.height;
  val.width = train.width;
  val.num_classes = train.num_classes;
  val.class_names = train.class_names;
  val.images.reserve(size_t(n_val * train.image_bytes()));
  val.labels.reserve(size_t(n_val));

  // One pass in index order: both sets keep the original relative order, and the kept
  // training examples are compacted in place.
  size_t ib = size_t(train.image_bytes());
  int64_t kept = 0;
  for (int64_t i = 0; i < n; i++) {
    const uint8_t* src = train.images.data() + size_t(i) * ib;
    if (is_val[size_t(i)]) {
      val.images.insert(val.images.end(), src, src + ib);
      val.labels.push_back(train.labels[size_t(i)]);
    } else {
      if (kept != i) {
        std::memmove(train.images.data() + size_t(kept) * ib, src, ib);
        train.labels[size_t(kept)] = train.labels[size_t(i)];
      }
      kept++;
    }
  }
  train.images.resize(size_t(kept) * ib);
  train.labels.resize(size_t(kept));
  return val;
}

// ---- batching ----------------------------------------------------------------------------

BatchLoader::BatchLoader(const Dataset& data, int batch_size, bool shuffle, bool drop_last, uint64_t seed)
    : data_(data), batch_size_(batch_size), shuffle_(shuffle), drop_last_(drop_last), seed_(seed) {
  if (batch_size < 1)
    throw Error("BatchLoader: batch_size is " + std::to_string(batch_size) + " for " + in_quotes(data.name) +
                ", must be >= 1");
  if (data.images.size() != size_t(data.size() * data.image_bytes()))
    throw Error("BatchLoader: dataset " + in_quotes(data.name) + " has " + std::to_string(data.images.size()) +
                " image bytes for " + std::to_string(data.size()) + " labels of " + std::to_string(data.image_bytes()) +
                " bytes each");
  start_epoch(0);
}

void BatchLoader::start_epoch(int64_t epoch) {
  // Rebuilt from the identity each epoch so the order depends only on (seed, epoch),
  // never on how many epochs came before.
  order_.resize(size_t(data_.size()));
  for (size_t i = 0; i < order_.size(); i++) order_[i] = int64_t(i);
  if (shuffle_) {
    uint64_t state = stream_state(seed_, kEpochStream, uint64_t(epoch));
    fisher_yates(order_, state);
  }
  cursor_ = 0;
}

int64_t BatchLoader::num_batches() const {
  int64_t n = data_.size();
  return drop_last_ ? n / batch_size_ : (n + batch_size_ - 1) / batch_size_;
}

int BatchLoader::next(uint8_t* images, int32_t* labels) {
  int64_t n = data_.size();
  int64_t end = drop_last_ ? num_batches() * batch_size_ : n;
  if (cursor_ >= end) return 0;
  int count = int(std::min<int64_t>(batch_size_, end - cursor_));
  size_t ib = size_t(data_.image_bytes());
  for (int b = 0; b < count; b++) {
    int64_t i = order_[size_t(cursor_ + b)];
    std::memcpy(images + size_t(b) * ib, data_.image(i), ib);
    labels[b] = data_.labels[size_t(i)];
  }
  cursor_ += count;
  return count;
}

}  // namespace vitcuda
