// vitcuda tests — issue #13, class 2 and the special-files part of class 4: every reader of
// untrusted input (IDX, CIFAR, CSV, image files and folders, safetensors checkpoints) checks the
// sizes a header or a file claims against the limits (docs/DESIGN.md, "Input limits") BEFORE
// it allocates or inflates, Model refuses a config or batch whose estimated memory overflows or
// exceeds the host's BEFORE it allocates, vit_train refuses a batch larger than the training
// set before it builds the model, and a FIFO, folder or device given as any input file is
// refused without blocking. Library rows are cheap unit tests; a few rows run the tools (under
// `ulimit -v` where the point is that memory stays bounded, under `timeout` where a regression
// would hang).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/cli_harness.h"
#include "tests/error_of.h"
#include "tests/scratch_dir.h"
#include "vitcuda/backend.h"
#include "vitcuda/checkpoint.h"
#include "vitcuda/data.h"
#include "vitcuda/image.h"
#include "vitcuda/model.h"

namespace vitcuda {
namespace {

using test::error_of;
namespace fs = std::filesystem;

::testing::AssertionResult Mentions(const std::string& msg, const std::vector<std::string>& needles) {
  for (const std::string& n : needles)
    if (msg.find(n) == std::string::npos) return ::testing::AssertionFailure() << "'" << n << "' not in: " << msg;
  return ::testing::AssertionSuccess();
}

void write_raw(const std::string& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  ASSERT_TRUE(f.good()) << p;
}

std::string be32(uint32_t v) { return {char(v >> 24), char(v >> 16), char(v >> 8), char(v)}; }

std::string idx_header(const std::vector<uint32_t>& dims) {
  std::string b = be32(0x00000800u | uint32_t(dims.size()));
  for (uint32_t d : dims) b += be32(d);
  return b;
}

// A sparse file of `size` bytes starting with `head`: claims without the disk or the time.
void write_sparse(const std::string& p, const std::string& head, uint64_t size) {
  write_raw(p, head);
  ASSERT_EQ(::truncate(p.c_str(), off_t(size)), 0) << p;
}

// One gzip member holding `head` then `zeros` zero bytes, deflated in 1 MiB pieces.
std::string gzip_member(const std::string& head, uint64_t zeros) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out;
  std::vector<char> buf(1 << 16);
  const std::vector<char> zero(1 << 20, 0);
  auto pump = [&](const char* p, size_t n, int flush) {
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(p));
    zs.avail_in = uInt(n);
    do {
      zs.next_out = reinterpret_cast<Bytef*>(buf.data());
      zs.avail_out = uInt(buf.size());
      deflate(&zs, flush);
      out.append(buf.data(), buf.size() - zs.avail_out);
    } while (zs.avail_out == 0 || (flush == Z_FINISH && zs.avail_in > 0));
  };
  pump(head.data(), head.size(), Z_NO_FLUSH);
  for (uint64_t left = zeros; left > 0;) {
    const size_t n = size_t(std::min<uint64_t>(left, zero.size()));
    pump(zero.data(), n, Z_NO_FLUSH);
    left -= n;
  }
  int rc;
  do {
    zs.next_out = reinterpret_cast<Bytef*>(buf.data());
    zs.avail_out = uInt(buf.size());
    rc = deflate(&zs, Z_FINISH);
    out.append(buf.data(), buf.size() - zs.avail_out);
  } while (rc == Z_OK);
  EXPECT_EQ(rc, Z_STREAM_END);
  deflateEnd(&zs);
  return out;
}

// A gzip file of `head` then `copies` x 64 MiB of zeros: concatenated members (a valid gzip
// file, as `cat a.gz b.gz`), so gigabytes inflated cost only one 64 MiB deflate to make.
std::string gzip_bomb(const std::string& head, int copies) {
  std::string gz = gzip_member(head, uint64_t(64) << 20);
  const std::string more = gzip_member("", uint64_t(64) << 20);
  for (int i = 1; i < copies; ++i) gz += more;
  return gz;
}

// A valid grayscale PNG of width x height zero pixels, its IDAT deflated row by row: a few
// hundred KB that decode to width * height bytes.
std::string big_png(uint32_t width, uint32_t height) {
  auto chunk = [](const std::string& type, const std::string& data) {
    std::string c = be32(uint32_t(data.size())) + type + data;
    uLong crc = crc32(0, reinterpret_cast<const Bytef*>(c.data() + 4), uInt(c.size() - 4));
    return c + be32(uint32_t(crc));
  };
  const std::string ihdr = be32(width) + be32(height) + std::string{8, 0, 0, 0, 0};  // 8-bit grey
  z_stream zs{};
  EXPECT_EQ(deflateInit(&zs, 9), Z_OK);
  std::string idat;
  std::vector<char> row(size_t(width) + 1, 0), buf(1 << 16);
  for (uint32_t y = 0; y < height; ++y) {
    zs.next_in = reinterpret_cast<Bytef*>(row.data());
    zs.avail_in = uInt(row.size());
    const int flush = y + 1 == height ? Z_FINISH : Z_NO_FLUSH;
    int rc;
    do {
      zs.next_out = reinterpret_cast<Bytef*>(buf.data());
      zs.avail_out = uInt(buf.size());
      rc = deflate(&zs, flush);
      idat.append(buf.data(), buf.size() - zs.avail_out);
    } while (zs.avail_out == 0 || (flush == Z_FINISH && rc != Z_STREAM_END));
  }
  deflateEnd(&zs);
  return std::string("\x89PNG\r\n\x1a\n", 8) + chunk("IHDR", ihdr) + chunk("IDAT", idat) + chunk("IEND", "");
}

// A FIFO at `path` and, should the code under test block on it (the regression), a writer that
// opens and closes it after a while so the test fails instead of hanging.
class FifoGuard {
 public:
  explicit FifoGuard(std::string path) : path_(std::move(path)) {
    EXPECT_EQ(::mkfifo(path_.c_str(), 0600), 0) << path_;
    thread_ = std::thread([this] {
      std::unique_lock<std::mutex> lock(m_);
      if (cv_.wait_for(lock, std::chrono::seconds(20), [this] { return done_; })) return;
      blocked_ = true;
      const int fd = ::open(path_.c_str(), O_WRONLY);  // unblocks a reader's open; then EOF
      if (fd >= 0) ::close(fd);
    });
  }
  ~FifoGuard() {
    {
      std::lock_guard<std::mutex> lock(m_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
    EXPECT_FALSE(blocked_) << "the reader blocked on the FIFO " << path_;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::thread thread_;
  std::mutex m_;
  std::condition_variable cv_;
  bool done_ = false, blocked_ = false;
};

class BoundedInput : public test::ScratchDirTest {
 protected:
  BoundedInput() : ScratchDirTest("bounded") {}
};

// ---- IDX: the header's claim is checked before reading or inflating the payload ----------------

TEST_F(BoundedInput, IdxHeaderClaimingTerabytesIsRefusedBeforeReading) {
  // 2^31 images of 16384 x 16384: within the per-dimension caps, 2^59 bytes in all.
  write_raw(path("images"), idx_header({0x80000000u, 16384, 16384}) + "xyz");
  write_raw(path("labels"), idx_header({1}) + std::string(1, '\0'));
  EXPECT_TRUE(Mentions(error_of([&] { load_idx(path("images"), path("labels")); }),
                       {path("images"), "2147483648 x 16384 x 16384", "more than the limit"}));
}

TEST_F(BoundedInput, RawIdxShorterThanItsHeaderIsRefusedBeforeAllocating) {
  // A sparse-free check: 1000000 x 28 x 28 claimed, 16 bytes there; refused from the file size.
  write_raw(path("images"), idx_header({1000000, 28, 28}) + "abcd");
  write_raw(path("labels"), idx_header({1}) + std::string(1, '\0'));
  EXPECT_TRUE(Mentions(error_of([&] { load_idx(path("images"), path("labels")); }),
                       {path("images"), "truncated", "784000000 data bytes", "file has 4"}));
}

TEST_F(BoundedInput, GzipThatInflatesPastTheHeaderClaimStopsThere) {
  // 64 MiB of zeros after a header that claims 10 images of 28 x 28: the reader inflates 7840
  // bytes and one more, and names the trailing data.
  write_raw(path("images.gz"), gzip_bomb(idx_header({10, 28, 28}), 1));
  write_raw(path("labels"), idx_header({10}) + std::string(10, '\0'));
  EXPECT_TRUE(Mentions(error_of([&] { load_idx(path("images.gz"), path("labels")); }),
                       {path("images.gz"), "bytes after the 7840 data bytes"}));
}

TEST_F(BoundedInput, GzipShorterThanItsHeaderClaimIsTruncated) {
  write_raw(path("images.gz"), gzip_member(idx_header({1000000, 28, 28}), 100));
  write_raw(path("labels"), idx_header({1}) + std::string(1, '\0'));
  EXPECT_TRUE(Mentions(error_of([&] { load_idx(path("images.gz"), path("labels")); }),
                       {path("images.gz"), "truncated IDX file", "784000000 data bytes", "file has 100"}));
}

// ---- CIFAR, CSV: the file size is checked before the file is read ----------------------------

TEST_F(BoundedInput, HugeCifarAndCsvFilesAreRefusedBeforeReading) {
  const uint64_t huge = uint64_t(40) << 30;  // sparse: over the 32 GiB limit, no disk used
  write_sparse(path("data_batch_1.bin"), std::string(3073, '\0'), huge);
  EXPECT_TRUE(Mentions(error_of([&] { load_cifar_files({path("data_batch_1.bin")}, 1, 0, 10); }),
                       {path("data_batch_1.bin"), "more than the limit"}));
  write_sparse(path("train.csv"), "label,p0\n1,2\n", huge);
  EXPECT_TRUE(Mentions(error_of([&] { load_csv(path("train.csv")); }), {path("train.csv"), "more than the limit"}));
}

// ---- images: dimensions from the header, before decoding --------------------------------------

TEST_F(BoundedInput, ImageOverThePixelLimitIsRefusedBeforeDecoding) {
  if (!png_supported()) GTEST_SKIP() << "built without stb_image";
  // 16000 x 16000 grey: 256 MB decoded, about 250 KB as a file.
  write_raw(path("big.png"), big_png(16000, 16000));
  EXPECT_LT(fs::file_size(path("big.png")), 2u << 20);
  EXPECT_TRUE(Mentions(error_of([&] { load_image(path("big.png")); }),
                       {path("big.png"), "16000x16000", "more than the limit of 67108864 pixels"}));
  // 8192 x 8192 is the largest square allowed: its header passes (a 1-row image decodes fine).
  write_raw(path("wide.png"), big_png(8192, 1));
  EXPECT_EQ(load_image(path("wide.png")).width, 8192);
  EXPECT_NO_THROW(check_image_size("x", 8192, 8192));
  EXPECT_THROW(check_image_size("x", 8193, 8192), Error);
  EXPECT_THROW(check_image_size("x", 65537, 1), Error);
  // In an image folder the error names the file as well.
  fs::create_directories(path("folder/a"));
  fs::copy_file(path("big.png"), path("folder/a/big.png"));
  EXPECT_TRUE(Mentions(error_of([&] { load_image_folder(path("folder"), 8, 8, 1); }),
                       {path("folder") + "/a/big.png", "more than the limit"}));
}

TEST_F(BoundedInput, ImageFolderOverTheDatasetLimitIsRefusedBeforeAllocating) {
  if (!image_folder_supported()) GTEST_SKIP() << "built without stb_image";
  fs::create_directories(path("folder/a"));
  for (const char* n : {"1.png", "2.png", "3.png"}) write_raw(path("folder/a/") + n, "not decoded");
  // 3 images resized to 3 x 65536 x 65536: 38.7 GB, over the 32 GiB limit.
  EXPECT_TRUE(Mentions(error_of([&] { load_image_folder(path("folder"), 65536, 65536, 3); }),
                       {path("folder"), "3 images", "more than the limit"}));
}

// ---- safetensors: the header's length, entries and values are capped --------------------------

std::string safetensors_head(const std::string& json) {
  std::string b(8, '\0');
  for (int i = 0; i < 8; ++i) b[size_t(i)] = char(uint64_t(json.size()) >> (8 * i));
  return b + json;
}

TEST_F(BoundedInput, SafetensorsHeaderOverTheLengthCapIsRefusedBeforeReading) {
  // A 150 MB (sparse) file whose header length claims 120 MB: within the file, over the cap.
  std::string len(8, '\0');
  const uint64_t n = 120'000'000;
  for (int i = 0; i < 8; ++i) len[size_t(i)] = char(n >> (8 * i));
  write_sparse(path("big.safetensors"), len + "{", 150'000'000);
  for (auto f :
       {+[](const std::string& p) { load_safetensors(p); }, +[](const std::string& p) { read_safetensors_header(p); }})
    EXPECT_TRUE(Mentions(error_of([&] { f(path("big.safetensors")); }),
                         {path("big.safetensors"), "header length 120000000", "limit of 100000000 bytes"}));
}

TEST_F(BoundedInput, SafetensorsWithTooManyTensorsOrValuesIsRefusedWhileParsing) {
  std::string json = "{";
  for (size_t i = 0; i <= kMaxSafetensorsTensors; ++i)
    json += (i ? "," : "") + std::string("\"t") + std::to_string(i) +
            "\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}";
  json += "}";
  write_raw(path("many.safetensors"), safetensors_head(json));
  EXPECT_TRUE(Mentions(error_of([&] { load_safetensors(path("many.safetensors")); }),
                       {path("many.safetensors"), "more than 65536 tensors"}));
  // One tensor, a shape of 2^20 + 1 ones: too many JSON values.
  std::string shape = "1";
  for (size_t i = 0; i < kMaxSafetensorsJsonValues; ++i) shape += ",1";
  write_raw(path("values.safetensors"),
            safetensors_head("{\"a\":{\"dtype\":\"F32\",\"shape\":[" + shape + "],\"data_offsets\":[0,4]}}") +
                std::string(4, '\0'));
  EXPECT_TRUE(Mentions(error_of([&] { read_safetensors_header(path("values.safetensors")); }),
                       {path("values.safetensors"), "JSON values"}));
  // Exactly at the tensor cap is fine.
  json = "{";
  for (size_t i = 0; i < kMaxSafetensorsTensors; ++i)
    json += (i ? "," : "") + std::string("\"t") + std::to_string(i) +
            "\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}";
  write_raw(path("cap.safetensors"), safetensors_head(json + "}"));
  EXPECT_EQ(read_safetensors_header(path("cap.safetensors")).tensors.size(), kMaxSafetensorsTensors);
}

TEST_F(BoundedInput, SafetensorsTensorsLargerThanMemoryAreRefusedBeforeAllocating) {
  // A sparse file whose one tensor spans more bytes than this host has.
  const uint64_t n = (uint64_t(::sysconf(_SC_PHYS_PAGES)) * uint64_t(::sysconf(_SC_PAGESIZE))) + (uint64_t(1) << 30);
  const std::string head =
      safetensors_head("{\"a\":{\"dtype\":\"U8\",\"shape\":[" + std::to_string(n) + "],\"data_offsets\":[0," +
                       std::to_string(n) + "]},\"__metadata__\":{\"k\":\"v\"}}");
  write_sparse(path("sparse.safetensors"), head, head.size() + n);
  EXPECT_TRUE(Mentions(error_of([&] { load_safetensors(path("sparse.safetensors")); }),
                       {path("sparse.safetensors"), "more than this host's memory"}));
  // The header alone reads fine: vit_infer's metadata.
  const SafeTensorsHeader h = read_safetensors_header(path("sparse.safetensors"));
  ASSERT_EQ(h.tensors.size(), 1u);
  EXPECT_EQ(h.tensors[0].end, n);
  EXPECT_EQ(h.metadata.at("k"), "v");
  EXPECT_EQ(h.data_bytes, n);
}

// ---- special files: refused without blocking, naming what they are ----------------------------

TEST_F(BoundedInput, EveryReaderRefusesAFifoWithoutBlocking) {
  FifoGuard fifo(path("fifo"));
  const std::string p = fifo.path();
  const std::vector<std::string> needles = {p, "is a FIFO, not a regular file"};
  EXPECT_TRUE(Mentions(error_of([&] { load_safetensors(p); }), needles));
  EXPECT_TRUE(Mentions(error_of([&] { read_safetensors_header(p); }), needles));
  EXPECT_TRUE(Mentions(error_of([&] { load_idx(p, p); }), needles));
  EXPECT_TRUE(Mentions(error_of([&] { load_cifar_files({p}, 1, 0, 10); }), needles));
  EXPECT_TRUE(Mentions(error_of([&] { load_csv(p); }), needles));
  if (png_supported()) {
    EXPECT_TRUE(Mentions(error_of([&] { load_image(p); }), needles));
  }
  // As an IDX file found in a data folder.
  fs::create_directories(path("mnist"));
  FifoGuard in_folder(path("mnist/train-images-idx3-ubyte"));
  write_raw(path("mnist/train-labels-idx1-ubyte"), idx_header({1}) + std::string(1, '\0'));
  EXPECT_TRUE(Mentions(error_of([&] { load_mnist_dir(path("mnist"), "train"); }),
                       {path("mnist/train-images-idx3-ubyte"), "is a FIFO"}));
}

TEST_F(BoundedInput, FoldersAndDevicesAreRefusedAsFiles) {
  fs::create_directories(path("dir.safetensors"));
  EXPECT_TRUE(Mentions(error_of([&] { load_safetensors(path("dir.safetensors")); }),
                       {path("dir.safetensors"), "is a directory, not a regular file"}));
  EXPECT_TRUE(Mentions(error_of([&] { load_csv("/dev/zero"); }), {"/dev/zero", "is a character device"}));
  if (png_supported()) {
    EXPECT_TRUE(Mentions(error_of([&] { load_image("/dev/zero"); }), {"/dev/zero", "is a character device"}));
  }
}

// ---- Model: sizes in 64 bits, the estimate against the host's memory, before allocating -------

ViTConfig small_config() {
  ViTConfig c;
  c.img_size = 28;
  c.patch_size = 7;
  c.in_chans = 1;
  c.embed_dim = 16;
  c.depth = 1;
  c.num_heads = 2;
  c.num_classes = 10;
  return c;
}

TEST(BoundedModel, HugeConfigsAndBatchesAreRefusedNamingTheFields) {
  // The needles name the field and its value only, so that a per-field limit in
  // ViTConfig::validate that catches a row first passes it too; the last two rows have fields
  // no per-field limit refuses, and reach the byte counts whatever validate allows.
  auto be = make_backend("cpu");
  {  // the num_classes 2e9: 2e9 x 768 head weights
    ViTConfig c = small_config();
    c.embed_dim = 768;
    c.num_heads = 12;
    c.num_classes = 2000000000;
    EXPECT_TRUE(Mentions(error_of([&] { Model m(c, *be, 8); }), {"num_classes", "2000000000"}));
  }
  {  // the embed_dim 2^30: qkv alone is 3 x 2^60 elements
    ViTConfig c = small_config();
    c.embed_dim = 1 << 30;
    c.mlp_hidden = 64;
    EXPECT_TRUE(Mentions(error_of([&] { Model m(c, *be, 8); }), {"embed_dim", "1073741824"}));
  }
  {  // (2^30)^2 patches: more than the ops' int
    ViTConfig c = small_config();
    c.img_size = 1 << 30;
    c.patch_size = 1;
    EXPECT_TRUE(Mentions(error_of([&] { Model m(c, *be, 8); }), {"img_size", "1073741824"}));
  }
  {  // fields within every per-field limit (a 128 x 128 grid, ViT-L width) at the largest int
     // batch: the activations' bytes overflow int64
    ViTConfig c = small_config();
    c.img_size = 256;
    c.patch_size = 2;
    c.in_chans = 3;
    c.embed_dim = 1024;
    c.num_heads = 16;
    c.depth = 24;
    EXPECT_TRUE(Mentions(error_of([&] { Model m(c, *be, 2147483647); }),
                         {"img_size 256", "patch_size 2", "embed_dim 1024", "depth 24", "batch size 2147483647",
                          "activations overflows 64 bits"}));
  }
  {  // a tiny model at a batch whose activations exceed the host's memory
    const ViTConfig c = small_config();
    EXPECT_TRUE(Mentions(error_of([&] { Model m(c, *be, 2000000000); }),
                         {"embed_dim 16", "batch size 2000000000", "needs an estimated", "backend's memory of"}));
    EXPECT_NO_THROW(Model(c, *be, 64));  // and the same model at batch 64 is fine
  }
}

// ---- end to end: the examples through the tools ----------------------------------------

using namespace cli_test;

class BoundedCli : public CliTest {
 protected:
  // The tool under bash: `ulimit -v` (KiB, 0: none) and `timeout 60` around it.
  RunResult run_limited(const char* exe, const Args& args, uint64_t vmem_kib) {
    std::string cmd =
        (vmem_kib ? "ulimit -v " + std::to_string(vmem_kib) + "; " : std::string()) + "exec timeout 60 '" + exe + "'";
    for (const std::string& a : args) cmd += " '" + a + "'";
    return run_tool("/bin/bash", {"-c", cmd}, dir_);
  }
};

TEST_F(BoundedCli, GzipBombInATrainingSetCostsNoMoreThanItsHeaderClaims) {
  // 1.5 GiB of zeros behind a header that claims 256 images of 28 x 28, under a 1 GiB address
  // space limit: inflating it whole cannot fit; stopping at the claim does.
  const fs::path d = data_copy();
  fs::remove(d / "train-images-idx3-ubyte");
  write_raw((d / "train-images-idx3-ubyte.gz").string(), gzip_bomb(idx_header({256, 28, 28}), 24));
  const RunResult r = run_limited(kVitTrain, with(tiny_flags(), {{"--data-dir", d.string()}}), 1u << 20);
  EXPECT_TRUE(CleanError(r, {(d / "train-images-idx3-ubyte.gz").string(), "bytes after the 200704 data bytes"}));
}

TEST_F(BoundedCli, HugeImagesInAnImageFolderAreRefusedFromTheirHeaders) {
  if (!image_folder_supported()) GTEST_SKIP() << "built without stb_image";
  // The example: two 16000 x 16000 PNGs of a few hundred KB, under a 1 GiB address
  // space limit; each is refused from its header, naming the first in sorted order.
  const fs::path d = dir_ / "folder";
  fs::create_directories(d / "train" / "a");
  fs::create_directories(d / "train" / "b");
  fs::create_directories(d / "test" / "a");
  write_raw((d / "train" / "a" / "big.png").string(), big_png(16000, 16000));
  fs::copy_file(d / "train" / "a" / "big.png", d / "train" / "b" / "big.png");
  fs::copy_file(d / "train" / "a" / "big.png", d / "test" / "a" / "big.png");
  const RunResult r =
      run_limited(kVitTrain, with(tiny_flags(), {{"--dataset", "folder"}, {"--data-dir", d.string()}}), 1u << 20);
  EXPECT_TRUE(CleanError(r, {(d / "train" / "a" / "big.png").string(), "16000x16000", "more than the limit"}));
}

TEST_F(BoundedCli, BatchLargerThanTheTrainingSetIsRefusedBeforeTheModel) {
  // 256 images, 64 of them for validation: -b 65536 would take gigabytes of activations.
  const RunResult r = run_limited(kVitTrain, with(tiny_flags(), {{"-b", "65536"}}), 1u << 20);
  EXPECT_TRUE(CleanError(r, {"192 images", "fewer than one batch of 65536"}));
  // Exactly one batch is fine (one step per epoch).
  const RunResult ok = run_vit_train(
      with(tiny_flags(), {{"-b", "192"}, {"--epochs", "1"}, {"--output", (dir_ / "out").string()}}), dir_);
  EXPECT_EQ(ok.exit_code, 0) << ok.describe();
  if (kVitInfer) {
    // vit_infer clamps -b to what there is to classify (64 test images): it runs under the limit.
    const RunResult inf = run_limited(kVitInfer,
                                      {"-c", (dir_ / "out").string(), "--dataset", "mnist", "--data-dir",
                                       data_dir().string(), "-b", "65536", "--device", "cpu", "--no-progress"},
                                      1u << 20);
    EXPECT_EQ(inf.exit_code, 0) << inf.describe();
    EXPECT_NE(inf.out.find("64 images"), std::string::npos) << inf.describe();
  }
}

TEST_F(BoundedCli, ResumeFromAFifoOrAHugeHeaderIsOneErrorLine) {
  const fs::path fifo = dir_ / "last.safetensors";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  RunResult r = run_limited(kVitTrain, with(tiny_flags(), {{"--resume", fifo.string()}}), 0);
  EXPECT_TRUE(CleanError(r, {fifo.string(), "is a FIFO, not a regular file"}));
  r = run_limited(kVitTrain, with(tiny_flags(), {{"--initial-checkpoint", fifo.string()}}), 0);
  EXPECT_TRUE(CleanError(r, {fifo.string(), "is a FIFO, not a regular file"}));
  if (kVitInfer) {
    r = run_limited(kVitInfer, {"-c", fifo.string(), "--dataset", "mnist", "--data-dir", data_dir().string()}, 0);
    EXPECT_TRUE(CleanError(r, {fifo.string(), "is a FIFO, not a regular file"}, "vit_infer"));
  }
  // 65537 empty tensors: refused while the header is parsed.
  std::string json = "{";
  for (size_t i = 0; i <= kMaxSafetensorsTensors; ++i)
    json += (i ? "," : "") + std::string("\"t") + std::to_string(i) +
            "\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}";
  const fs::path many = dir_ / "many.safetensors";
  write_raw(many.string(), safetensors_head(json + "}"));
  r = run_limited(kVitTrain, with(tiny_flags(), {{"--resume", many.string()}}), 0);
  EXPECT_TRUE(CleanError(r, {many.string(), "more than 65536 tensors"}));
  if (kVitInfer) {
    r = run_limited(kVitInfer, {"-c", many.string(), "--dataset", "mnist", "--data-dir", data_dir().string()}, 0);
    EXPECT_TRUE(CleanError(r, {many.string(), "more than 65536 tensors"}, "vit_infer"));
  }
}

TEST_F(BoundedCli, FifoAsDataOrImageIsOneErrorLine) {
  const fs::path d = data_copy();
  fs::remove(d / "t10k-labels-idx1-ubyte");
  ASSERT_EQ(::mkfifo((d / "t10k-labels-idx1-ubyte").c_str(), 0600), 0);
  RunResult r = run_limited(kVitTrain, with(tiny_flags(), {{"--data-dir", d.string()}}), 0);
  EXPECT_TRUE(CleanError(r, {(d / "t10k-labels-idx1-ubyte").string(), "is a FIFO"}));
  if (kVitInfer && png_supported()) {
    const fs::path img = dir_ / "image.png";
    ASSERT_EQ(::mkfifo(img.c_str(), 0600), 0);
    r = run_limited(kVitInfer, {"-c", good_checkpoint().string(), img.string(), "--device", "cpu"}, 0);
    EXPECT_TRUE(CleanError(r, {img.string(), "is a FIFO"}, "vit_infer"));
  }
}

}  // namespace
}  // namespace vitcuda
