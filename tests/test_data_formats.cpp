// Tests for the dataset readers of host/data_formats.cpp: CIFAR-10/100 binary, MNIST-style CSV,
// image folders (PNG/JPEG written here with stb_image_write), load_dataset, every bad-input
// error, and the Keras CIFAR-100 preset training a few steps on generated CIFAR-100 files.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/error_of.h"
#include "tests/scratch_dir.h"
#include "vitcuda/data.h"

#if defined(VITCUDA_TEST_STB) && __has_include(<stb_image_write.h>)
#define HAVE_STB_WRITE 1
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#pragma GCC diagnostic pop
#else
#define HAVE_STB_WRITE 0
#endif

namespace fs = std::filesystem;
using namespace vitcuda;
using vitcuda::test::error_of;

namespace {

#define EXPECT_ERROR_HAS(stmt, text)                       \
  do {                                                     \
    const std::string msg_ = error_of([&] { stmt; });      \
    EXPECT_NE(msg_.find(text), std::string::npos) << msg_; \
    EXPECT_EQ(msg_.find('\n'), std::string::npos) << msg_; \
  } while (0)

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

void write_text(const std::string& path, const std::string& s) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary);
  f << s;
}

// Pixel k of CIFAR record r of file f.
uint8_t cifar_pixel(int f, int r, int k) { return uint8_t((f * 53 + r * 7 + k * 3) % 256); }

// CIFAR records: `labels` label bytes per record then 3072 pixels.
std::vector<uint8_t> cifar_records(int file, const std::vector<std::vector<uint8_t>>& labels) {
  std::vector<uint8_t> b;
  for (size_t r = 0; r < labels.size(); ++r) {
    b.insert(b.end(), labels[r].begin(), labels[r].end());
    for (int k = 0; k < 3072; ++k) b.push_back(cifar_pixel(file, int(r), k));
  }
  return b;
}

class DataFormats : public vitcuda::test::ScratchDirTest {
 protected:
  DataFormats() : ScratchDirTest("formats") {}

  // CIFAR-10: 5 training files of 3 records (labels (f + r) % 10) and a test file of 2.
  void write_cifar10(const std::string& d) {
    for (int f = 1; f <= 5; ++f)
      write_bytes(d + "/data_batch_" + std::to_string(f) + ".bin",
                  cifar_records(f, {{uint8_t(f % 10)}, {uint8_t((f + 1) % 10)}, {uint8_t((f + 2) % 10)}}));
    write_bytes(d + "/test_batch.bin", cifar_records(0, {{9}, {0}}));
  }
};

// ---- CIFAR -----------------------------------------------------------------------------------
TEST_F(DataFormats, Cifar10ReadsEveryBatchInOrder) {
  write_cifar10(path("c10"));
  const Dataset train = load_cifar10_dir(path("c10"), "train");
  EXPECT_EQ(train.size(), 15);
  EXPECT_EQ(train.channels, 3);
  EXPECT_EQ(train.height, 32);
  EXPECT_EQ(train.width, 32);
  EXPECT_EQ(train.num_classes, 10);
  ASSERT_EQ(train.class_names.size(), 10u);
  EXPECT_EQ(train.class_names[0], "airplane");
  EXPECT_EQ(train.class_names[9], "truck");
  for (int f = 1; f <= 5; ++f)
    for (int r = 0; r < 3; ++r) {
      const int64_t i = (f - 1) * 3 + r;
      EXPECT_EQ(train.labels[size_t(i)], (f + r) % 10);
      for (int k : {0, 1023, 1024, 2047, 2048, 3071}) ASSERT_EQ(train.image(i)[k], cifar_pixel(f, r, k));
    }
  const Dataset test = load_cifar10_dir(path("c10"), "test");
  EXPECT_EQ(test.size(), 2);
  EXPECT_EQ(test.labels, (std::vector<int32_t>{9, 0}));
  // The archive's own subfolder is found too.
  write_cifar10(path("nested/cifar-10-batches-bin"));
  EXPECT_EQ(load_cifar10_dir(path("nested"), "train").size(), 15);
}

TEST_F(DataFormats, Cifar100FineAndCoarse) {
  write_bytes(path("c100/train.bin"), cifar_records(1, {{3, 97}, {19, 0}, {0, 55}}));
  write_bytes(path("c100/test.bin"), cifar_records(2, {{4, 4}}));
  const Dataset fine = load_cifar100_dir(path("c100"), "train", true);
  EXPECT_EQ(fine.num_classes, 100);
  EXPECT_EQ(fine.labels, (std::vector<int32_t>{97, 0, 55}));
  ASSERT_EQ(fine.class_names.size(), 100u);
  EXPECT_EQ(fine.class_names[0], "apple");
  EXPECT_EQ(fine.class_names[99], "worm");
  EXPECT_EQ(fine.image(1)[5], cifar_pixel(1, 1, 5));
  const Dataset coarse = load_cifar100_dir(path("c100"), "train", false);
  EXPECT_EQ(coarse.num_classes, 20);
  EXPECT_EQ(coarse.labels, (std::vector<int32_t>{3, 19, 0}));
  ASSERT_EQ(coarse.class_names.size(), 20u);
  EXPECT_EQ(coarse.class_names[19], "vehicles_2");
  EXPECT_EQ(load_cifar100_dir(path("c100"), "test").size(), 1);
}

TEST_F(DataFormats, CifarErrors) {
  write_cifar10(path("c10"));
  // A truncated file: not a multiple of the record size.
  auto b = cifar_records(3, {{1}, {2}});
  b.resize(b.size() - 100);
  write_bytes(path("c10/data_batch_3.bin"), b);
  EXPECT_ERROR_HAS(
      load_cifar10_dir(path("c10"), "train"),
      "CIFAR file '" + path("c10/data_batch_3.bin") + "': size 6046 bytes is not a multiple of the 3073-byte record");
  fs::remove(path("c10/data_batch_3.bin"));
  EXPECT_ERROR_HAS(load_cifar10_dir(path("c10"), "train"),
                   "missing CIFAR-10 file '" + path("c10/data_batch_3.bin") + "'");
  EXPECT_ERROR_HAS(load_cifar10_dir(path("nowhere"), "train"), "missing CIFAR-10 folder '" + path("nowhere") + "'");
  write_bytes(path("c10/test_batch.bin"), cifar_records(0, {{1}, {10}}));
  EXPECT_ERROR_HAS(load_cifar10_dir(path("c10"), "test"), "record 1 has label 10, must be < 10");
  write_bytes(path("c100/train.bin"), cifar_records(0, {{20, 5}}));
  EXPECT_ERROR_HAS(load_cifar100_dir(path("c100"), "train", false), "record 0 has label 20, must be < 20");
  write_bytes(path("c100/test.bin"), std::vector<uint8_t>(3073, 0));
  EXPECT_ERROR_HAS(load_cifar100_dir(path("c100"), "test"),
                   "size 3073 bytes is not a multiple of the 3074-byte record (2 label bytes + 3072 pixel bytes)");
  write_bytes(path("c100/test.bin"), {});
  EXPECT_ERROR_HAS(load_cifar100_dir(path("c100"), "test"), "' is empty");
  EXPECT_ERROR_HAS(load_cifar100_dir(path("c100"), "val"), "split is 'val'");
}

// ---- CSV -------------------------------------------------------------------------------------
TEST_F(DataFormats, CsvWithAndWithoutHeader) {
  write_text(path("h.csv"), "label,pixel0,pixel1,pixel2,pixel3\r\n3,0,1,2,3\r\n0,255,254,253,252\r\n\r\n");
  write_text(path("n.csv"), "7,10,20,30,40\n1, 5 ,6,7,8");  // no header, no final newline, spaces
  const Dataset h = load_csv(path("h.csv"));
  EXPECT_EQ(h.size(), 2);
  EXPECT_EQ(h.channels, 1);
  EXPECT_EQ(h.height, 2);
  EXPECT_EQ(h.width, 2);
  EXPECT_EQ(h.num_classes, 4);  // max label + 1
  EXPECT_EQ(h.labels, (std::vector<int32_t>{3, 0}));
  EXPECT_EQ(h.images, (std::vector<uint8_t>{0, 1, 2, 3, 255, 254, 253, 252}));
  EXPECT_EQ(h.class_names, (std::vector<std::string>{"0", "1", "2", "3"}));
  const Dataset n = load_csv(path("n.csv"), 10);
  EXPECT_EQ(n.num_classes, 10);
  EXPECT_EQ(n.labels, (std::vector<int32_t>{7, 1}));
  EXPECT_EQ(n.images, (std::vector<uint8_t>{10, 20, 30, 40, 5, 6, 7, 8}));
  // The MNIST-from-CSV layout: 785 fields, 28x28.
  std::string mnist = "label";
  for (int k = 0; k < 784; ++k) mnist += ",pixel" + std::to_string(k);
  mnist += "\n5";
  for (int k = 0; k < 784; ++k) mnist += "," + std::to_string(k % 256);
  write_text(path("mnist_train.csv"), mnist + "\n");
  const Dataset m = load_csv(path("mnist_train.csv"));
  EXPECT_EQ(m.height, 28);
  EXPECT_EQ(m.width, 28);
  EXPECT_EQ(m.image(0)[300], 300 % 256);
}

TEST_F(DataFormats, CsvErrors) {
  const std::string p = path("bad.csv");
  write_text(p, "label,a,b,c,d\n1,2,3,4,5\n2,3,4,5\n");
  EXPECT_ERROR_HAS(load_csv(p), "CSV file '" + p + "' line 3: 4 fields, expected 5 (a label and 4 pixels)");
  write_text(p, "1,2,3,4,5\n2,3,x4,5,6\n");
  EXPECT_ERROR_HAS(load_csv(p), "CSV file '" + p + "' line 2, field 3: 'x4' is not a number");
  write_text(p, "1,2,3,4,5\n\n2,3,4,256,6\n");
  EXPECT_ERROR_HAS(load_csv(p), "line 3, field 4: pixel value 256 is not an integer in 0..255");
  write_text(p, "1,2,3,4,-1\n");
  EXPECT_ERROR_HAS(load_csv(p), "line 1, field 5: pixel value -1 is not an integer in 0..255");
  write_text(p, "1,2.5,3,4,5\n");
  EXPECT_ERROR_HAS(load_csv(p), "pixel value 2.5 is not an integer in 0..255");
  write_text(p, "1,2,3,4,5,6\n");
  EXPECT_ERROR_HAS(load_csv(p), "line 1: 5 pixels per row is not a square image");
  write_text(p, "12,2,3,4,5\n");
  EXPECT_ERROR_HAS(load_csv(p, 10), "line 1: label 12 is >= the number of classes 10");
  write_text(p, "-3,2,3,4,5\n");
  EXPECT_ERROR_HAS(load_csv(p), "line 1: label -3 is not a class index");
  write_text(p, "label,p0,p1,p2,p3\n");
  EXPECT_ERROR_HAS(load_csv(p), "CSV file '" + p + "' has no data rows");
  write_text(p, "");
  EXPECT_ERROR_HAS(load_csv(p), "has no data rows");
  EXPECT_ERROR_HAS(load_csv(path("none.csv")), "missing CSV file '" + path("none.csv") + "'");
}

// ---- image folders ---------------------------------------------------------------------------
#if HAVE_STB_WRITE
// An RGB w x h image whose pixel (x, y) channel c is 40 c + 10 y + x (HWC for stb).
std::vector<uint8_t> rgb_hwc(int w, int h) {
  std::vector<uint8_t> p;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) p.push_back(uint8_t(40 * c + 10 * y + x));
  return p;
}

void write_png(const std::string& path, int w, int h, int c, const std::vector<uint8_t>& hwc) {
  fs::create_directories(fs::path(path).parent_path());
  ASSERT_NE(stbi_write_png(path.c_str(), w, h, c, hwc.data(), w * c), 0) << path;
}

void write_jpg(const std::string& path, int w, int h, int c, const std::vector<uint8_t>& hwc) {
  fs::create_directories(fs::path(path).parent_path());
  ASSERT_NE(stbi_write_jpg(path.c_str(), w, h, c, hwc.data(), 100), 0) << path;
}

TEST_F(DataFormats, ImageFolderReadsPngJpegAndSortsClasses) {
  ASSERT_TRUE(image_folder_supported());
  const std::string root = path("imgs/train");
  write_png(root + "/dog/b.png", 6, 4, 3, rgb_hwc(6, 4));
  write_png(root + "/dog/a.png", 6, 4, 1, std::vector<uint8_t>(24, 77));   // grayscale
  write_jpg(root + "/cat/x.JPG", 6, 4, 3, std::vector<uint8_t>(72, 120));  // constant colour
  write_text(root + "/cat/readme.txt", "not an image");                    // skipped
  write_text(root + "/.cache/y.png", "hidden");                            // skipped
  const Dataset d = load_image_folder(root, 4, 6, 3);
  EXPECT_EQ(d.class_names, (std::vector<std::string>{"cat", "dog"}));
  EXPECT_EQ(d.num_classes, 2);
  EXPECT_EQ(d.labels, (std::vector<int32_t>{0, 1, 1}));  // cat/x, dog/a, dog/b
  EXPECT_EQ(d.channels, 3);
  EXPECT_EQ(d.height, 4);
  EXPECT_EQ(d.width, 6);
  for (int k = 0; k < 72; ++k) EXPECT_NEAR(d.image(0)[k], 120, 2) << k;  // JPEG: near
  for (int k = 0; k < 72; ++k) EXPECT_EQ(d.image(1)[k], 77);             // gray to RGB
  for (int c = 0; c < 3; ++c)                                            // PNG: exact, CHW
    for (int y = 0; y < 4; ++y)
      for (int x = 0; x < 6; ++x) ASSERT_EQ(d.image(2)[(c * 4 + y) * 6 + x], 40 * c + 10 * y + x);
  // Resized so they stack; a constant image stays constant; one channel on request.
  const Dataset r = load_image_folder(root, 9, 9, 1);
  EXPECT_EQ(r.channels, 1);
  EXPECT_EQ(r.images.size(), 3u * 81);
  for (int k = 0; k < 81; ++k) EXPECT_EQ(r.image(1)[k], 77);
  // A test split uses the training classes (a class may be absent from it).
  write_png(path("imgs/val/dog/z.png"), 2, 2, 3, std::vector<uint8_t>(12, 9));
  const Dataset v = load_image_folder(path("imgs/val"), 4, 4, 3, d.class_names);
  EXPECT_EQ(v.labels, (std::vector<int32_t>{1}));
  EXPECT_EQ(v.class_names, d.class_names);
  // load_dataset: test falls back to val.
  DatasetSpec spec;
  spec.kind = "folder";
  spec.dir = path("imgs");
  spec.image_size = 5;
  const Dataset t = load_dataset(spec, "train");
  const Dataset te = load_dataset(spec, "test", &t);
  EXPECT_EQ(te.size(), 1);
  EXPECT_EQ(te.height, 5);
  EXPECT_EQ(te.labels[0], 1);
}

TEST_F(DataFormats, ImageFolderErrors) {
  const std::string root = path("imgs");
  EXPECT_ERROR_HAS(load_image_folder(root, 4, 4), "missing image folder '" + root + "'");
  fs::create_directories(root);
  EXPECT_ERROR_HAS(load_image_folder(root, 4, 4), "image folder '" + root + "' has no class subfolders");
  write_png(root + "/a/1.png", 2, 2, 3, std::vector<uint8_t>(12, 1));
  fs::create_directories(root + "/b");
  write_text(root + "/b/notes.txt", "x");
  EXPECT_ERROR_HAS(load_image_folder(root, 4, 4), "class folder '" + root + "/b' has no images");
  write_text(root + "/b/broken.png", "this is not a PNG file at all");
  EXPECT_ERROR_HAS(load_image_folder(root, 4, 4), "cannot decode image '" + root + "/b/broken.png': ");
  write_png(root + "/b/broken.png", 8, 8, 3, rgb_hwc(8, 8));
  {  // a truncated PNG
    std::ifstream f(root + "/b/broken.png", std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    write_bytes(root + "/b/broken.png", std::vector<uint8_t>(bytes.begin(), bytes.begin() + long(bytes.size() / 2)));
  }
  EXPECT_ERROR_HAS(load_image_folder(root, 4, 4), "cannot decode image '" + root + "/b/broken.png'");
  fs::remove(root + "/b/broken.png");
  write_png(root + "/b/ok.png", 2, 2, 3, std::vector<uint8_t>(12, 1));
  EXPECT_ERROR_HAS(load_image_folder(root, 4, 4, 3, {"a"}),
                   "class folder '" + root + "/b' is not one of the 1 training classes");
  EXPECT_ERROR_HAS(load_image_folder(root, 4, 4, 2), "channels is 2, must be 1 or 3");
}
#endif

// ---- names and load_dataset ------------------------------------------------------------------
TEST_F(DataFormats, StandardNamesAndLoadDataset) {
  EXPECT_EQ(standard_class_names("fashion_mnist")[0], "T-shirt/top");
  EXPECT_EQ(standard_class_names("fashion_mnist")[9], "Ankle boot");
  EXPECT_EQ(standard_class_names("cifar100").size(), 100u);
  EXPECT_EQ(standard_class_names("cifar100_coarse").size(), 20u);
  EXPECT_EQ(standard_class_names("mnist")[3], "3");
  EXPECT_ERROR_HAS(standard_class_names("svhn"), "unknown dataset 'svhn'");

  write_text(path("csv/train.csv"), "1,0,0,0,0\n4,1,1,1,1\n");
  write_text(path("csv/test.csv"), "2,0,0,0,0\n");
  DatasetSpec spec;
  spec.kind = "csv";
  spec.dir = path("csv");
  const Dataset train = load_dataset(spec, "train");
  const Dataset test = load_dataset(spec, "test", &train);
  EXPECT_EQ(train.num_classes, 5);
  EXPECT_EQ(test.num_classes, 5);  // the training set's
  write_text(path("csv/test.csv"), "7,0,0,0,0\n");
  EXPECT_ERROR_HAS(load_dataset(spec, "test", &train), "label 7 is >= the number of classes 5");
  spec.kind = "imagenet";
  EXPECT_ERROR_HAS(load_dataset(spec, "train"), "unknown dataset 'imagenet'");
  spec.kind = "cifar10";
  spec.dir.clear();
  EXPECT_ERROR_HAS(load_dataset(spec, "train"), "no data folder given for dataset 'cifar10'");
  write_cifar10(path("c10"));
  spec.dir = path("c10");
  EXPECT_EQ(load_dataset(spec, "test").size(), 2);
}

// ---- the Keras CIFAR-100 preset on generated CIFAR-100 files ----------------------------------
#ifdef VIT_TRAIN_EXE
// The first number after `key` in `log` (NaN when absent).
double number_after(const std::string& log, const std::string& key) {
  const size_t at = log.find(key);
  return at == std::string::npos ? std::nan("") : std::strtod(log.c_str() + at + key.size(), nullptr);
}

TEST_F(DataFormats, KerasCifar100PresetTrainsOnGeneratedData) {
  // A tiny train.bin / test.bin of random-ish pixels with fine labels 0..99. The preset is
  // 21.8 M parameters at 72x72 on the CPU, so few images: 9 train (2 steps of 4), 3 val, 4 test;
  // no --output (each checkpoint would be 260 MB).
  auto records = [](int n, int salt) {
    std::vector<uint8_t> b;
    uint32_t s = 12345u + uint32_t(salt);
    for (int r = 0; r < n; ++r) {
      b.push_back(uint8_t(r % 20));
      b.push_back(uint8_t((r * 7 + salt) % 100));
      for (int k = 0; k < 3072; ++k) {
        s = s * 1664525u + 1013904223u;
        b.push_back(uint8_t(s >> 24));
      }
    }
    return b;
  };
  write_bytes(path("c100/train.bin"), records(12, 0));
  write_bytes(path("c100/test.bin"), records(4, 1));
  const std::string cmd = std::string(VIT_TRAIN_EXE) + " --model vit_keras_cifar100 --dataset cifar100 --data-dir " +
                          path("c100") + " --epochs 1 -b 4 --val-split 0.25 --no-progress --device cpu 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string log;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) log.append(buf, n);
  const int status = pclose(pipe);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << log;
  // The tutorial's pipeline is on by default for this preset, the statistics adapted.
  EXPECT_NE(log.find("100 classes, 32x32x3 images, resize 32x32 -> 72x72"), std::string::npos) << log;
  EXPECT_NE(log.find("augment: hflip 0.5, rotation 0.02, zoom 0.2"), std::string::npos) << log;
  const double mean0 = number_after(log, "normalize adapted mean [");
  EXPECT_NEAR(mean0, 0.5, 0.05) << log;  // uniform random bytes
  EXPECT_NE(log.find("9 train / 3 val / 4 test images"), std::string::npos) << log;
  EXPECT_TRUE(std::isfinite(number_after(log, "train loss "))) << log;
  EXPECT_TRUE(std::isfinite(number_after(log, "test (best = last, epoch 1): loss "))) << log;
}
#endif

}  // namespace
