// vitcuda — IDX datasets (MNIST, Fashion-MNIST), the validation split and epoch batching.
//
// IDX: a big-endian header, magic 0x00 0x00 <type> <ndims>, then ndims u32 dims, then the
// payload. Images are type 0x08 (u8) with 3 dims [N, H, W]; labels are u8 with 1 dim [N].
// A file is read whole (inflated first when it starts with the gzip magic 1f 8b) and every
// size the header promises is checked against the bytes actually there, so a bad header can
// neither allocate absurd memory nor read past the end.
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

// ---- reading IDX files -----------------------------------------------------------------

static uint32_t read_be32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}

struct IdxFile {
  std::vector<int64_t> dims;
  std::vector<uint8_t> bytes;  // header and payload
  size_t payload_offset = 0;
};

// Reads an IDX file of u8 elements with `ndims` dimensions; `kind` names it in messages.
static IdxFile read_idx(const std::string& path, int ndims, const char* kind) {
  if (!is_file(path)) throw Error("missing IDX " + std::string(kind) + " file " + in_quotes(path));
  IdxFile idx;
  idx.bytes = read_file(path, Gzip::Inflate);

  const std::vector<uint8_t>& b = idx.bytes;
  uint32_t expected_magic = 0x00000800u | uint32_t(ndims);
  if (b.size() < 4)
    throw Error("truncated IDX file " + in_quotes(path) + ": " + std::to_string(b.size()) +
                " bytes, not even the 4-byte magic number");
  uint32_t magic = read_be32(b.data());
  if (magic != expected_magic) {
    char msg[160];
    std::snprintf(msg, sizeof(msg), "bad magic number 0x%08x (expected 0x%08x for an IDX %s file)",
                  magic, expected_magic, kind);
    throw Error("cannot read " + in_quotes(path) + ": " + msg);
  }
  size_t header = 4 + 4 * size_t(ndims);
  if (b.size() < header)
    throw Error("truncated IDX file " + in_quotes(path) + ": " + std::to_string(b.size()) +
                " bytes, the header alone needs " + std::to_string(header));
  // Caps well past any real dataset: they catch garbage headers before the size arithmetic.
  const int64_t kMaxCount = int64_t(1) << 31, kMaxSide = 1 << 14;  // product < 2^63
  int64_t payload = 1;
  for (int i = 0; i < ndims; i++) {
    int64_t d = read_be32(b.data() + 4 + 4 * i);
    int64_t cap = i == 0 ? kMaxCount : kMaxSide;
    if (d == 0 || d > cap)
      throw Error("cannot read " + in_quotes(path) + ": dimension " + std::to_string(i) + " is " +
                  std::to_string(d) + " (must be 1.." + std::to_string(cap) + ")");
    idx.dims.push_back(d);
    payload *= d;
  }
  size_t have = b.size() - header;
  if (have < size_t(payload))
    throw Error("truncated IDX file " + in_quotes(path) + ": header promises " +
                std::to_string(payload) + " data bytes, file has " + std::to_string(have));
  if (have > size_t(payload))
    throw Error("cannot read " + in_quotes(path) + ": " + std::to_string(have - size_t(payload)) +
                " bytes after the " + std::to_string(payload) + " data bytes the header promises");
  idx.payload_offset = header;
  return idx;
}

Dataset load_idx(const std::string& images_path, const std::string& labels_path,
                 int num_classes) {
  if (num_classes < 1 || num_classes > 256)
    throw Error("load_idx: num_classes is " + std::to_string(num_classes) +
                " (IDX labels are bytes: 1..256)");
  IdxFile im = read_idx(images_path, 3, "image");
  IdxFile lb = read_idx(labels_path, 1, "label");
  if (im.dims[0] != lb.dims[0])
    throw Error("image and label counts disagree: " + in_quotes(images_path) + " has " +
                std::to_string(im.dims[0]) + " images, " + in_quotes(labels_path) + " has " +
                std::to_string(lb.dims[0]) + " labels");

  Dataset ds;
  ds.name = images_path;
  ds.channels = 1;
  ds.height = int(im.dims[1]);
  ds.width = int(im.dims[2]);
  ds.num_classes = num_classes;
  for (int c = 0; c < num_classes; c++) ds.class_names.push_back(std::to_string(c));
  ds.images.assign(im.bytes.begin() + im.payload_offset, im.bytes.end());
  ds.labels.resize(size_t(lb.dims[0]));
  const uint8_t* l = lb.bytes.data() + lb.payload_offset;
  for (size_t i = 0; i < ds.labels.size(); i++) {
    if (l[i] >= num_classes)
      throw Error("bad label in " + in_quotes(labels_path) + ": label " + std::to_string(l[i]) +
                  " of example " + std::to_string(i) + " is >= num_classes " +
                  std::to_string(num_classes));
    ds.labels[i] = l[i];
  }
  return ds;
}

// The raw file when present, else its .gz; a missing file is named with both spellings.
static std::string find_idx(const std::string& dir, const std::string& base) {
  std::string raw = dir + "/" + base;
  if (is_file(raw)) return raw;
  if (is_file(raw + ".gz")) return raw + ".gz";
  throw Error("missing IDX file " + in_quotes(raw) + " (nor " + in_quotes(raw + ".gz") + ")");
}

Dataset load_mnist_dir(const std::string& dir, const std::string& split) {
  std::string prefix;
  if (split == "train") prefix = "train";
  else if (split == "test") prefix = "t10k";
  else throw Error("load_mnist_dir: split is '" + split + "', must be 'train' or 'test'");
  std::string images = find_idx(dir, prefix + "-images-idx3-ubyte");
  std::string labels = find_idx(dir, prefix + "-labels-idx1-ubyte");
  return load_idx(images, labels, 10);
}

// ---- validation split --------------------------------------------------------------------

Dataset split_validation(Dataset& train, double fraction, uint64_t seed) {
  if (!(fraction >= 0.0 && fraction <= 1.0))
    throw Error("split_validation: fraction is " + std::to_string(fraction) +
                ", must be in [0, 1]");
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

BatchLoader::BatchLoader(const Dataset& data, int batch_size, bool shuffle, bool drop_last,
                         uint64_t seed)
    : data_(data), batch_size_(batch_size), shuffle_(shuffle), drop_last_(drop_last), seed_(seed) {
  if (batch_size < 1)
    throw Error("BatchLoader: batch_size is " + std::to_string(batch_size) + " for " +
                in_quotes(data.name) + ", must be >= 1");
  if (data.images.size() != size_t(data.size() * data.image_bytes()))
    throw Error("BatchLoader: dataset " + in_quotes(data.name) + " has " +
                std::to_string(data.images.size()) + " image bytes for " +
                std::to_string(data.size()) + " labels of " +
                std::to_string(data.image_bytes()) + " bytes each");
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
