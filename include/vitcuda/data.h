// vitcuda — datasets and batching. Images are kept as uint8 [N, C, H, W] on the host;
// normalisation happens in the patch_extract op.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "vitcuda/tensor.h"

namespace vitcuda {

struct Dataset {
  std::string name;  // for messages, e.g. the image file path
  int channels = 0, height = 0, width = 0;
  int num_classes = 0;
  std::vector<uint8_t> images;           // N * C * H * W, NCHW
  std::vector<int32_t> labels;           // N
  std::vector<std::string> class_names;  // num_classes entries, or empty when unknown
  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  int64_t image_bytes() const { return int64_t(channels) * height * width; }
  const uint8_t* image(int64_t i) const { return images.data() + i * image_bytes(); }
};

// IDX files (MNIST, Fashion-MNIST), gzip-compressed or raw, chosen by content.
// Throws Error naming the file: missing, not a regular file (a FIFO, a folder: refused without
// blocking), truncated, bad magic, bad dims, a payload over the dataset limit (checked from the
// header before anything is read or inflated; docs/DESIGN.md, "Input limits"), trailing data,
// label out of range, image and label counts that disagree.
Dataset load_idx(const std::string& images_path, const std::string& labels_path, int num_classes = 10);
// dir holds {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]; split is "train" or "test".
Dataset load_mnist_dir(const std::string& dir, const std::string& split);

// ---- other formats (host/data_formats.cpp) -------------------------------------------------
// Every reader throws Error with one line naming the file and the problem, refuses a path that
// is not a regular file without blocking, and checks sizes against the input limits (file
// sizes, each image's dimensions from its header, the dataset's total bytes) before it
// allocates: docs/DESIGN.md, "Input limits".

// CIFAR-10 binary version: dir (or dir/cifar-10-batches-bin) holds data_batch_1..5.bin
// (split "train") and test_batch.bin ("test"); records of 1 label byte + 3072 pixel bytes
// (3 x 32 x 32, channel-major). Class names airplane .. truck.
Dataset load_cifar10_dir(const std::string& dir, const std::string& split);
// CIFAR-100 binary version: dir (or dir/cifar-100-binary) holds train.bin / test.bin; records
// of 1 coarse + 1 fine label byte + 3072 pixel bytes. fine: the 100 fine labels, else the 20
// coarse (superclass) labels; the standard class names either way.
Dataset load_cifar100_dir(const std::string& dir, const std::string& split, bool fine = true);
// Raw CIFAR binary files: records of `label_bytes` label bytes + 3072 pixel bytes; the label
// is byte `label_index` of the record. Used by the two above.
Dataset load_cifar_files(const std::vector<std::string>& files, int label_bytes, int label_index, int num_classes);

// MNIST-style CSV ("label,p0,p1,..." per row, as mnist_train.csv): an optional header row
// (detected by a non-numeric field in the first row), square grayscale images of side
// sqrt(#pixels), pixels 0..255. num_classes 0: max label + 1.
Dataset load_csv(const std::string& path, int num_classes = 0);

// Image folders: dir/<class>/<image>, classes sorted by name (or `classes`, e.g. the
// training set's, when given: then every subfolder must be one of them). PNG, JPEG, BMP,
// PPM/PGM, GIF, TGA through stb_image (image.h's load_image); each image is converted to
// `channels` (1 or 3) and resized (bilinear) to height x width so they stack. Hidden files and
// files with other extensions are skipped.
Dataset load_image_folder(const std::string& dir, int height, int width, int channels = 3,
                          const std::vector<std::string>& classes = {});
bool image_folder_supported();  // false when built without stb_image (libstb-dev): png_supported()

// Standard class names: "fashion_mnist", "mnist" ("0".."9"), "cifar10", "cifar100",
// "cifar100_coarse". Throws for another name.
std::vector<std::string> standard_class_names(const std::string& dataset);

// One entry point for the tools: kind is fashion_mnist|mnist|cifar10|cifar100|csv|folder.
struct DatasetSpec {
  std::string kind = "fashion_mnist";
  std::string dir;                  // data folder (csv: holds train.csv/test.csv when the paths are empty)
  std::string train_csv, test_csv;  // csv
  bool cifar100_fine = true;        // cifar100: fine (100) or coarse (20) labels
  int image_size = 0;               // folder: images are resized to this (required)
  int channels = 3;                 // folder: 1 or 3
};
// The data folder load_dataset reads: spec.dir, or the default of its kind
// (/usr/share/datasets/fashion-mnist, Debian's dataset-fashion-mnist, for fashion_mnist); "" when
// there is none.
std::string dataset_dir(const DatasetSpec& spec);
// split "train" or "test". For csv and folder the test split takes the number of classes and
// the class names of `train` when given. folder: "test" falls back to dir/val.
Dataset load_dataset(const DatasetSpec& spec, const std::string& split, const Dataset* train = nullptr);

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
  // The example indices of this epoch in batch order.
  const std::vector<int64_t>& order() const { return order_; }

 private:
  const Dataset& data_;
  int batch_size_;
  bool shuffle_, drop_last_;
  uint64_t seed_;
  std::vector<int64_t> order_;
  int64_t cursor_ = 0;
};

}  // namespace vitcuda
