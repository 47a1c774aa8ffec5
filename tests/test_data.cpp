// Tests for include/vitcuda/data.h: IDX loading (raw and gzip), every malformed-input error,
// the validation split and the seeded epoch order of BatchLoader.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "tests/scratch_dir.h"
#include "vitcuda/data.h"

namespace fs = std::filesystem;
using namespace vitcuda;

namespace {

std::vector<uint8_t> be32(uint32_t v) { return {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)}; }

// An IDX u8 file: magic 0x000008<ndims>, the dims, then the payload (not checked against
// the dims here, so tests can build inconsistent files).
std::vector<uint8_t> idx_bytes(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& payload,
                               uint32_t magic = 0) {
  std::vector<uint8_t> b = be32(magic ? magic : 0x00000800u | uint32_t(dims.size()));
  for (uint32_t d : dims) {
    auto x = be32(d);
    b.insert(b.end(), x.begin(), x.end());
  }
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

// Pixel k of image i has value (i * 31 + k) mod 256: distinct per image, known everywhere.
uint8_t pixel(int64_t i, int64_t k) { return uint8_t((i * 31 + k) % 256); }

std::vector<uint8_t> image_payload(int n, int h, int w) {
  std::vector<uint8_t> p;
  for (int i = 0; i < n; i++)
    for (int k = 0; k < h * w; k++) p.push_back(pixel(i, k));
  return p;
}

void write_raw(const std::string& path, const std::vector<uint8_t>& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  ASSERT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
  std::fclose(f);
}

void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  ASSERT_EQ(gzwrite(f, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

std::vector<uint8_t> read_raw(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  std::vector<uint8_t> b;
  if (!f) return b;
  int c;
  while ((c = std::fgetc(f)) != EOF) b.push_back(uint8_t(c));
  std::fclose(f);
  return b;
}

// A dataset of n 1x2x3 images, image i filled with byte i, label i % classes.
Dataset numbered_dataset(int n, int classes = 10) {
  Dataset d;
  d.name = "numbered";
  d.channels = 1;
  d.height = 2;
  d.width = 3;
  d.num_classes = classes;
  for (int i = 0; i < n; i++) {
    d.images.insert(d.images.end(), 6, uint8_t(i));
    d.labels.push_back(i % classes);
  }
  return d;
}

// The original index of every example, recovered from its fill byte.
std::vector<int> ids_of(const Dataset& d) {
  std::vector<int> ids;
  for (int64_t i = 0; i < d.size(); i++) ids.push_back(d.image(i)[0]);
  return ids;
}

// Runs one epoch and returns the ids in the order they came, checking labels travel along.
std::vector<int> epoch_ids(BatchLoader& loader, const Dataset& d, int batch, std::vector<int>* sizes = nullptr) {
  std::vector<uint8_t> images(size_t(batch * d.image_bytes()));
  std::vector<int32_t> labels(static_cast<size_t>(batch));
  std::vector<int> ids;
  int got;
  while ((got = loader.next(images.data(), labels.data())) > 0) {
    if (sizes) sizes->push_back(got);
    for (int b = 0; b < got; b++) {
      int id = images[size_t(b * d.image_bytes())];
      ids.push_back(id);
      EXPECT_EQ(labels[size_t(b)], id % d.num_classes);
    }
  }
  return ids;
}

class DataTest : public vitcuda::test::ScratchDirTest {
 protected:
  DataTest() : ScratchDirTest("data") {}

  // Writes n images of h x w and their labels; returns {images path, labels path}.
  std::pair<std::string, std::string> write_set(const std::string& prefix, int n, int h, int w, bool gz_images,
                                                bool gz_labels) {
    std::vector<uint8_t> labels;
    for (int i = 0; i < n; i++) labels.push_back(uint8_t(i % 10));
    std::string ip = path(prefix + "-images-idx3-ubyte" + (gz_images ? ".gz" : ""));
    std::string lp = path(prefix + "-labels-idx1-ubyte" + (gz_labels ? ".gz" : ""));
    auto ib = idx_bytes({uint32_t(n), uint32_t(h), uint32_t(w)}, image_payload(n, h, w));
    auto lb = idx_bytes({uint32_t(n)}, labels);
    gz_images ? write_gz(ip, ib) : write_raw(ip, ib);
    gz_labels ? write_gz(lp, lb) : write_raw(lp, lb);
    return {ip, lp};
  }

  void expect_known_values(const Dataset& d, const std::string& images_path, int n, int h, int w) {
    EXPECT_EQ(d.name, images_path);
    EXPECT_EQ(d.channels, 1);
    EXPECT_EQ(d.height, h);
    EXPECT_EQ(d.width, w);
    EXPECT_EQ(d.num_classes, 10);
    ASSERT_EQ(d.size(), n);
    ASSERT_EQ(d.images.size(), size_t(n * h * w));
    for (int i = 0; i < n; i++) {
      EXPECT_EQ(d.labels[size_t(i)], i % 10);
      for (int k = 0; k < h * w; k++) ASSERT_EQ(d.image(i)[k], pixel(i, k)) << "image " << i << " pixel " << k;
    }
  }
};

// EXPECT_THROW plus: the one-line message names `file` and contains `phrase`.
#define EXPECT_ERROR_MENTIONS(stmt, file, phrase)                           \
  do {                                                                      \
    try {                                                                   \
      stmt;                                                                 \
      ADD_FAILURE() << "expected vitcuda::Error from: " #stmt;              \
    } catch (const Error& e) {                                              \
      std::string msg = e.what();                                           \
      EXPECT_NE(msg.find(file), std::string::npos) << "message: " << msg;   \
      EXPECT_NE(msg.find(phrase), std::string::npos) << "message: " << msg; \
      EXPECT_EQ(msg.find('\n'), std::string::npos) << "message: " << msg;   \
    }                                                                       \
  } while (0)

}  // namespace

// ---- loading ----------------------------------------------------------------------------

TEST_F(DataTest, LoadsRawIdx) {
  auto [ip, lp] = write_set("train", 7, 3, 5, false, false);
  Dataset d = load_idx(ip, lp);
  expect_known_values(d, ip, 7, 3, 5);
}

TEST_F(DataTest, LoadsGzipIdxAndMixedCompression) {
  auto [ip, lp] = write_set("train", 7, 4, 2, true, true);
  expect_known_values(load_idx(ip, lp), ip, 7, 4, 2);
  auto [ip2, lp2] = write_set("t10k", 5, 2, 3, false, true);
  expect_known_values(load_idx(ip2, lp2), ip2, 5, 2, 3);
}

TEST_F(DataTest, GzipIsDetectedByContentNotName) {
  // A gzip file without .gz and a raw file with .gz both load.
  auto ib = idx_bytes({2, 2, 2}, image_payload(2, 2, 2));
  auto lb = idx_bytes({2}, {0, 1});
  write_gz(path("images"), ib);
  write_raw(path("labels.gz"), lb);
  Dataset d = load_idx(path("images"), path("labels.gz"));
  EXPECT_EQ(d.size(), 2);
  EXPECT_EQ(d.image(1)[3], pixel(1, 3));
}

TEST_F(DataTest, LoadsConcatenatedGzipMembers) {
  // `cat a.gz b.gz` is a valid gzip file holding a then b.
  auto ib = idx_bytes({3, 2, 2}, image_payload(3, 2, 2));
  std::vector<uint8_t> first(ib.begin(), ib.begin() + 10), second(ib.begin() + 10, ib.end());
  write_gz(path("a.gz"), first);
  write_gz(path("b.gz"), second);
  auto a = read_raw(path("a.gz")), b = read_raw(path("b.gz"));
  a.insert(a.end(), b.begin(), b.end());
  write_raw(path("images.gz"), a);
  write_raw(path("labels"), idx_bytes({3}, {2, 1, 0}));
  Dataset d = load_idx(path("images.gz"), path("labels"));
  ASSERT_EQ(d.size(), 3);
  EXPECT_EQ(d.image(2)[3], pixel(2, 3));
  EXPECT_EQ(d.labels[0], 2);
}

TEST_F(DataTest, LoadMnistDirFindsBothSplitsWithOrWithoutGz) {
  write_set("train", 12, 4, 4, true, true);
  write_set("t10k", 5, 4, 4, false, false);
  Dataset train = load_mnist_dir(dir_, "train");
  Dataset test = load_mnist_dir(dir_, "test");
  expect_known_values(train, path("train-images-idx3-ubyte.gz"), 12, 4, 4);
  expect_known_values(test, path("t10k-images-idx3-ubyte"), 5, 4, 4);
  EXPECT_ERROR_MENTIONS(load_mnist_dir(dir_, "val"), "'val'", "must be 'train' or 'test'");
}

TEST_F(DataTest, LoadsRealFashionMnistWhenInstalled) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(dir + "/train-images-idx3-ubyte.gz") && !fs::exists(dir + "/train-images-idx3-ubyte"))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << dir << " (Debian package dataset-fashion-mnist)";
  Dataset train = load_mnist_dir(dir, "train");
  Dataset test = load_mnist_dir(dir, "test");
  for (auto* d : {&train, &test}) {
    EXPECT_EQ(d->channels, 1);
    EXPECT_EQ(d->height, 28);
    EXPECT_EQ(d->width, 28);
    EXPECT_EQ(d->images.size(), size_t(d->size()) * 28 * 28);
  }
  ASSERT_EQ(train.size(), 60000);
  ASSERT_EQ(test.size(), 10000);
  // Fashion-MNIST is balanced: 6000 train and 1000 test examples of each of the 10 classes.
  std::vector<int> train_count(10), test_count(10);
  for (int32_t l : train.labels) {
    ASSERT_GE(l, 0);
    ASSERT_LT(l, 10);
    train_count[size_t(l)]++;
  }
  for (int32_t l : test.labels) {
    ASSERT_GE(l, 0);
    ASSERT_LT(l, 10);
    test_count[size_t(l)]++;
  }
  for (int c = 0; c < 10; c++) {
    EXPECT_EQ(train_count[size_t(c)], 6000) << "class " << c;
    EXPECT_EQ(test_count[size_t(c)], 1000) << "class " << c;
  }
}

// ---- malformed input: every error names the file and the problem ------------------------

TEST_F(DataTest, MissingFile) {
  auto [ip, lp] = write_set("train", 3, 2, 2, false, false);
  EXPECT_ERROR_MENTIONS(load_idx(path("nope-images"), lp), "nope-images", "missing");
  EXPECT_ERROR_MENTIONS(load_idx(ip, path("nope-labels")), "nope-labels", "missing");
  // The directory loader names the file it looked for.
  EXPECT_ERROR_MENTIONS(load_mnist_dir(dir_, "test"), "t10k-images-idx3-ubyte", "missing");
  EXPECT_ERROR_MENTIONS(load_mnist_dir(dir_ + "/no-such-dir", "train"), "no-such-dir", "missing");
}

TEST_F(DataTest, TruncatedFile) {
  // Header promises 4 images of 3x3 = 36 bytes; 35 are there.
  auto payload = image_payload(4, 3, 3);
  payload.pop_back();
  write_raw(path("short-images"), idx_bytes({4, 3, 3}, payload));
  write_gz(path("short-images.gz"), idx_bytes({4, 3, 3}, payload));
  write_raw(path("labels"), idx_bytes({4}, {0, 1, 2, 3}));
  EXPECT_ERROR_MENTIONS(load_idx(path("short-images"), path("labels")), "short-images", "truncated");
  EXPECT_ERROR_MENTIONS(load_idx(path("short-images.gz"), path("labels")), "short-images.gz", "truncated");
  // A header cut short, and a file too small for the magic number.
  write_raw(path("half-header"), {0, 0, 8, 3, 0, 0, 0, 4, 0, 0});
  EXPECT_ERROR_MENTIONS(load_idx(path("half-header"), path("labels")), "half-header", "truncated");
  write_raw(path("tiny"), {0, 0});
  EXPECT_ERROR_MENTIONS(load_idx(path("tiny"), path("labels")), "tiny", "truncated");
  // Labels short by one.
  write_raw(path("images"), idx_bytes({4, 3, 3}, image_payload(4, 3, 3)));
  write_raw(path("short-labels"), idx_bytes({4}, {0, 1, 2}));
  EXPECT_ERROR_MENTIONS(load_idx(path("images"), path("short-labels")), "short-labels", "truncated");
}

TEST_F(DataTest, TrailingBytesAreRejected) {
  auto payload = image_payload(2, 2, 2);
  payload.push_back(7);
  write_raw(path("long-images"), idx_bytes({2, 2, 2}, payload));
  write_raw(path("labels"), idx_bytes({2}, {0, 1}));
  EXPECT_ERROR_MENTIONS(load_idx(path("long-images"), path("labels")), "long-images", "after the 8 data bytes");
}

TEST_F(DataTest, BadMagicNumber) {
  auto [ip, lp] = write_set("train", 3, 2, 2, false, false);
  // Swapped arguments: each file has the other kind's magic.
  EXPECT_ERROR_MENTIONS(load_idx(lp, ip), lp, "bad magic number 0x00000801");
  write_raw(path("float-images"), idx_bytes({1, 1, 1}, {0, 0, 0, 0}, 0x00000D03));  // f32 IDX
  EXPECT_ERROR_MENTIONS(load_idx(path("float-images"), lp), "float-images", "bad magic number");
  write_raw(path("text"), {'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd', '!', '!', '!', '!', '!'});
  EXPECT_ERROR_MENTIONS(load_idx(ip, path("text")), "text", "bad magic number");
}

TEST_F(DataTest, ZeroOrAbsurdDimensions) {
  write_raw(path("labels0"), idx_bytes({0}, {}));
  write_raw(path("images0"), idx_bytes({0, 2, 2}, {}));
  write_raw(path("zero-rows"), idx_bytes({1, 0, 2}, {}));
  write_raw(path("huge-cols"), idx_bytes({1, 2, 1000000}, {1, 2, 3}));
  write_raw(path("huge-count"), idx_bytes({0xFFFFFFFFu, 28, 28}, {1, 2, 3}));
  write_raw(path("labels"), idx_bytes({1}, {0}));
  EXPECT_ERROR_MENTIONS(load_idx(path("images0"), path("labels0")), "images0", "dimension 0 is 0");
  EXPECT_ERROR_MENTIONS(load_idx(path("zero-rows"), path("labels")), "zero-rows", "dimension 1 is 0");
  EXPECT_ERROR_MENTIONS(load_idx(path("huge-cols"), path("labels")), "huge-cols", "dimension 2 is 1000000");
  EXPECT_ERROR_MENTIONS(load_idx(path("huge-count"), path("labels")), "huge-count", "dimension 0 is 4294967295");
}

TEST_F(DataTest, LabelOutOfRange) {
  write_raw(path("images"), idx_bytes({3, 2, 2}, image_payload(3, 2, 2)));
  write_raw(path("labels"), idx_bytes({3}, {1, 10, 2}));
  EXPECT_ERROR_MENTIONS(load_idx(path("images"), path("labels")), "labels",
                        "label 10 of example 1 is >= num_classes 10");
  // The same labels are fine with 11 classes.
  Dataset d = load_idx(path("images"), path("labels"), 11);
  EXPECT_EQ(d.labels[1], 10);
  EXPECT_EQ(d.num_classes, 11);
  EXPECT_THROW(load_idx(path("images"), path("labels"), 0), Error);
  EXPECT_THROW(load_idx(path("images"), path("labels"), 257), Error);
}

TEST_F(DataTest, ImageAndLabelCountsDisagree) {
  write_raw(path("five-images"), idx_bytes({5, 2, 2}, image_payload(5, 2, 2)));
  write_raw(path("four-labels"), idx_bytes({4}, {0, 1, 2, 3}));
  try {
    load_idx(path("five-images"), path("four-labels"));
    ADD_FAILURE() << "expected Error";
  } catch (const Error& e) {
    std::string msg = e.what();
    for (const char* part : {"five-images", "four-labels", "5 images", "4 labels", "disagree"})
      EXPECT_NE(msg.find(part), std::string::npos) << part << " not in: " << msg;
  }
}

TEST_F(DataTest, CorruptGzipStream) {
  auto ib = idx_bytes({20, 8, 8}, image_payload(20, 8, 8));
  write_gz(path("good.gz"), ib);
  auto gz = read_raw(path("good.gz"));
  ASSERT_GT(gz.size(), 40u);
  write_raw(path("labels"), idx_bytes({20}, std::vector<uint8_t>(20, 3)));
  ASSERT_EQ(load_idx(path("good.gz"), path("labels")).size(), 20);

  // Flipped bytes in the deflate data: either an invalid block or a CRC mismatch.
  auto bad = gz;
  for (size_t i = 12; i < 24; i++) bad[i] ^= 0x5A;
  write_raw(path("flipped.gz"), bad);
  EXPECT_ERROR_MENTIONS(load_idx(path("flipped.gz"), path("labels")), "flipped.gz", "corrupt gzip stream");

  // A wrong CRC in the trailer, with intact data.
  bad = gz;
  bad[bad.size() - 8] ^= 0xFF;
  write_raw(path("badcrc.gz"), bad);
  EXPECT_ERROR_MENTIONS(load_idx(path("badcrc.gz"), path("labels")), "badcrc.gz", "corrupt gzip stream");

  // The .gz file cut in half (an interrupted download).
  std::vector<uint8_t> half(gz.begin(), gz.begin() + gz.size() / 2);
  write_raw(path("half.gz"), half);
  EXPECT_ERROR_MENTIONS(load_idx(path("half.gz"), path("labels")), "half.gz", "truncated .gz");
}

// ---- split_validation --------------------------------------------------------------------

TEST(SplitValidation, MovesASeededSubsetAndPreservesOrder) {
  Dataset train = numbered_dataset(100);
  Dataset val = split_validation(train, 0.2, 1234);
  EXPECT_EQ(val.size(), 20);
  EXPECT_EQ(train.size(), 80);
  EXPECT_EQ(train.images.size(), size_t(80 * 6));
  EXPECT_EQ(val.images.size(), size_t(20 * 6));
  EXPECT_EQ(val.channels, 1);
  EXPECT_EQ(val.height, 2);
  EXPECT_EQ(val.width, 3);
  EXPECT_EQ(val.num_classes, 10);

  std::vector<int> t = ids_of(train), v = ids_of(val);
  EXPECT_TRUE(std::is_sorted(t.begin(), t.end())) << "remaining order must be preserved";
  EXPECT_TRUE(std::is_sorted(v.begin(), v.end()));
  std::set<int> all(t.begin(), t.end());
  all.insert(v.begin(), v.end());
  EXPECT_EQ(all.size(), 100u) << "the two sets must partition the examples";
  // Labels stay with their images.
  for (int64_t i = 0; i < train.size(); i++) EXPECT_EQ(train.labels[size_t(i)], t[size_t(i)] % 10);
  for (int64_t i = 0; i < val.size(); i++) EXPECT_EQ(val.labels[size_t(i)], v[size_t(i)] % 10);
  // A random subset, not the tail or the head.
  EXPECT_NE(v.front(), 0);
  EXPECT_NE(v.back() - v.front(), 19);
}

TEST(SplitValidation, DeterministicForASeed) {
  Dataset a = numbered_dataset(100), b = numbered_dataset(100), c = numbered_dataset(100);
  Dataset va = split_validation(a, 0.1, 7), vb = split_validation(b, 0.1, 7), vc = split_validation(c, 0.1, 8);
  EXPECT_EQ(ids_of(va), ids_of(vb));
  EXPECT_EQ(ids_of(a), ids_of(b));
  EXPECT_NE(ids_of(va), ids_of(vc));
}

TEST(SplitValidation, EdgeFractions) {
  Dataset a = numbered_dataset(10);
  EXPECT_EQ(split_validation(a, 0.0, 1).size(), 0);
  EXPECT_EQ(a.size(), 10);
  EXPECT_EQ(split_validation(a, 0.25, 1).size(), 3);  // 2.5 rounds to 3
  EXPECT_EQ(a.size(), 7);
  EXPECT_EQ(split_validation(a, 1.0, 1).size(), 7);
  EXPECT_EQ(a.size(), 0);
  Dataset b = numbered_dataset(10);
  EXPECT_THROW(split_validation(b, -0.1, 1), Error);
  EXPECT_THROW(split_validation(b, 1.5, 1), Error);
  EXPECT_EQ(b.size(), 10);
}

// ---- BatchLoader -------------------------------------------------------------------------

TEST(BatchLoader, BatchSizesWithAndWithoutDropLast) {
  Dataset d = numbered_dataset(10);
  BatchLoader keep(d, 4, false, false, 0);
  EXPECT_EQ(keep.num_batches(), 3);
  std::vector<int> sizes;
  std::vector<int> ids = epoch_ids(keep, d, 4, &sizes);
  EXPECT_EQ(sizes, (std::vector<int>{4, 4, 2}));
  std::vector<int> identity(10);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_EQ(ids, identity) << "without shuffle the order is the dataset order";

  BatchLoader drop(d, 4, false, true, 0);
  EXPECT_EQ(drop.num_batches(), 2);
  sizes.clear();
  EXPECT_EQ(epoch_ids(drop, d, 4, &sizes).size(), 8u);
  EXPECT_EQ(sizes, (std::vector<int>{4, 4}));

  BatchLoader exact(d, 5, true, true, 0);
  EXPECT_EQ(exact.num_batches(), 2);
  BatchLoader too_big(d, 16, true, true, 0);
  EXPECT_EQ(too_big.num_batches(), 0);
  EXPECT_TRUE(epoch_ids(too_big, d, 16).empty());
  EXPECT_THROW(BatchLoader(d, 0, true, false, 0), Error);
}

TEST(BatchLoader, EpochOrderDependsOnlyOnSeedAndEpoch) {
  Dataset d = numbered_dataset(50);
  BatchLoader a(d, 8, true, false, 99);
  std::vector<int> a0 = epoch_ids(a, d, 8);  // epoch 0 starts at construction
  a.start_epoch(1);
  std::vector<int> a1 = epoch_ids(a, d, 8);
  a.start_epoch(2);
  std::vector<int> a2 = epoch_ids(a, d, 8);

  // Every epoch is a permutation of all examples.
  for (auto* ids : {&a0, &a1, &a2}) {
    std::vector<int> sorted = *ids;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int> identity(50);
    std::iota(identity.begin(), identity.end(), 0);
    EXPECT_EQ(sorted, identity);
  }
  EXPECT_NE(a0, a1);
  EXPECT_NE(a1, a2);

  // A resumed run: a fresh loader jumping straight to epoch 2 sees what `a` saw,
  // and an epoch restarted midway begins again from its first batch.
  BatchLoader b(d, 8, true, false, 99);
  b.start_epoch(2);
  EXPECT_EQ(epoch_ids(b, d, 8), a2);
  std::vector<uint8_t> im(8 * 6);
  std::vector<int32_t> lb(8);
  b.start_epoch(0);
  b.next(im.data(), lb.data());
  b.start_epoch(0);
  EXPECT_EQ(epoch_ids(b, d, 8), a0);

  // Another seed, another order.
  BatchLoader c(d, 8, true, false, 100);
  EXPECT_NE(epoch_ids(c, d, 8), a0);
}

TEST(BatchLoader, ShuffleOrderIsPinned) {
  // The generator is ours (splitmix64 + Fisher–Yates), so the order is the same on every
  // platform and standard library; changing it would change resumed runs. If this fails
  // after an intended change to the generator, update the constants and say so.
  Dataset d = numbered_dataset(10);
  BatchLoader loader(d, 10, true, false, 42);
  std::vector<int> e0 = epoch_ids(loader, d, 10);
  loader.start_epoch(1);
  std::vector<int> e1 = epoch_ids(loader, d, 10);
  EXPECT_EQ(e0, (std::vector<int>{0, 4, 9, 2, 5, 1, 3, 7, 8, 6}));
  EXPECT_EQ(e1, (std::vector<int>{7, 9, 3, 1, 6, 0, 4, 5, 8, 2}));
  Dataset t = numbered_dataset(10);
  EXPECT_EQ(ids_of(split_validation(t, 0.3, 42)), (std::vector<int>{4, 7, 9}));
}
