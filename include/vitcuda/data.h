// vitcuda — datasets and batching. Images are kept as uint8 [N, C, H, W] on the host;
// normalisation happens in the patch_extract op.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "vitcuda/tensor.h"

namespace vitcuda {

struct Dataset {
  std::string name;                  // for messages, e.g. the image file path
  int channels = 0, height = 0, width = 0;
  int num_classes = 0;
  std::vector<uint8_t> images;       // N * C * H * W, NCHW
  std::vector<int32_t> labels;       // N
  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  int64_t image_bytes() const { return int64_t(channels) * height * width; }
  const uint8_t* image(int64_t i) const { return images.data() + i * image_bytes(); }
};

// IDX files (MNIST, Fashion-MNIST), gzip-compressed or raw, chosen by content.
// Throws Error naming the file: missing, truncated, bad magic, bad dims, label out of range,
// image and label counts that disagree.
Dataset load_idx(const std::string& images_path, const std::string& labels_path,
                 int num_classes = 10);
// dir holds {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]; split is "train" or "test".
Dataset load_mnist_dir(const std::string& dir, const std::string& split);

// Moves a seeded random `fraction` of `train` into the returned validation set
// (deterministic for a seed; the remaining order is preserved).
Dataset split_validation(Dataset& train, double fraction, uint64_t seed);

// Epoch-wise batching: the order of epoch e is a seeded permutation that depends only on
// (seed, e), so a resumed run sees the same batches as an uninterrupted one.
class BatchLoader {
 public:
  BatchLoader(const Dataset& data, int batch_size, bool shuffle, bool drop_last, uint64_t seed);
  void start_epoch(int64_t epoch);
  int64_t num_batches() const;
  // Fills images [B, C, H, W] u8 and labels [B] i32 for the next batch; returns its size
  // (0 at the end of the epoch). The buffers must hold batch_size entries.
  int next(uint8_t* images, int32_t* labels);

 private:
  const Dataset& data_;
  int batch_size_;
  bool shuffle_, drop_last_;
  uint64_t seed_;
  std::vector<int64_t> order_;
  int64_t cursor_ = 0;
};

}  // namespace vitcuda
