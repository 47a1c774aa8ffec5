// Tests for include/vitcuda/checkpoint.h (safetensors and atomic writes) and the host parts
// of include/vitcuda/tensor.h.
#include <gtest/gtest.h>
#include <fstream>
#include <sys/wait.h>
#include <unistd.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/scratch_dir.h"
#include "vitcuda/checkpoint.h"

namespace fs = std::filesystem;
using namespace vitcuda;
using json = nlohmann::json;

namespace {

template <typename T>
SafeTensor make_tensor(DType dtype, std::vector<int64_t> shape, const std::vector<T>& values) {
  SafeTensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.bytes.resize(values.size() * sizeof(T));
  if (!values.empty()) std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  return t;
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

void write_raw(const std::string& path, const std::vector<uint8_t>& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  if (!bytes.empty()) {
    ASSERT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
  }
  std::fclose(f);
}

// A safetensors file from its parts: the 8-byte little-endian length, the header text as
// given (no padding added), then `data`.
std::vector<uint8_t> safetensors_bytes(const std::string& header, const std::vector<uint8_t>& data,
                                       uint64_t header_len_override = UINT64_MAX) {
  uint64_t n = header_len_override != UINT64_MAX ? header_len_override : header.size();
  std::vector<uint8_t> b;
  for (int i = 0; i < 8; i++) b.push_back(uint8_t(n >> (8 * i)));
  b.insert(b.end(), header.begin(), header.end());
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

class SafetensorsTest : public vitcuda::test::ScratchDirTest {
 protected:
  SafetensorsTest() : ScratchDirTest("st") {}

  // Names of files in the test directory holding a temporary-file marker.
  std::vector<std::string> temp_files() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_))
      if (e.path().filename().string().find(".tmp.") != std::string::npos) out.push_back(e.path().string());
    return out;
  }

  // Writes a file with `header` and 16 data bytes and expects the loader to reject it.
  void expect_rejected(const std::string& name, const std::string& header, const std::string& phrase,
                       size_t data_bytes = 16) {
    write_raw(path(name), safetensors_bytes(header, std::vector<uint8_t>(data_bytes, 0)));
    expect_load_error(path(name), phrase);
  }

  void expect_load_error(const std::string& file, const std::string& phrase) {
    try {
      load_safetensors(file);
      ADD_FAILURE() << "expected vitcuda::Error loading " << file << " (" << phrase << ")";
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(file), std::string::npos) << "message: " << msg;
      EXPECT_NE(msg.find(phrase), std::string::npos) << "message: " << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << "message: " << msg;
    }
  }
};

// Raises RLIMIT_FSIZE back and restores SIGXFSZ when a test ends, even on failure: writes
// past the limit then fail with EFBIG instead of killing the process.
struct FileSizeLimit {
  rlimit old_limit{};
  struct sigaction old_action {};
  explicit FileSizeLimit(rlim_t bytes) {
    getrlimit(RLIMIT_FSIZE, &old_limit);
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigaction(SIGXFSZ, &ignore, &old_action);
    rlimit lim = old_limit;
    lim.rlim_cur = bytes;
    setrlimit(RLIMIT_FSIZE, &lim);
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &old_limit);
    sigaction(SIGXFSZ, &old_action, nullptr);
  }
};

SafeTensorsFile sample_file() {
  SafeTensorsFile f;
  f.tensors["blocks.0.attn.qkv.weight"] = make_tensor<float>(DType::F32, {2, 3}, {1, -2, 3.5f, 0, 1e-8f, -0.0f});
  f.tensors["pos_embed"] = make_tensor<double>(DType::F64, {1, 2, 2}, {3.141592653589793, -1, 2, 1e300});
  f.tensors["cls_token"] = make_tensor<uint16_t>(DType::BF16, {1, 1, 3}, {0x3F80, 0xBF80, 0x7FC0});
  f.tensors["norm.weight"] = make_tensor<uint16_t>(DType::F16, {2}, {0x3C00, 0xC000});
  f.tensors["mask"] = make_tensor<uint8_t>(DType::U8, {5}, {0, 1, 2, 254, 255});
  f.tensors["step"] = make_tensor<int32_t>(DType::I32, {}, {123456});  // a scalar
  f.tensors["empty"] = make_tensor<float>(DType::F32, {0, 4}, {});
  f.tensors["labels"] = make_tensor<int32_t>(DType::I32, {2, 2}, {-1, 0, 7, 2147483647});
  f.metadata["format"] = "pt";
  f.metadata["epoch"] = "3";
  f.metadata["config"] = R"({"model": "vit_tiny_patch16_224", "note": "quotes \" and \\ survive"})";
  return f;
}

void expect_same(const SafeTensorsFile& a, const SafeTensorsFile& b) {
  EXPECT_EQ(a.metadata, b.metadata);
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (const auto& [name, t] : a.tensors) {
    auto it = b.tensors.find(name);
    ASSERT_NE(it, b.tensors.end()) << name;
    EXPECT_EQ(int(it->second.dtype), int(t.dtype)) << name;
    EXPECT_EQ(it->second.shape, t.shape) << name;
    EXPECT_EQ(it->second.bytes, t.bytes) << name;
  }
}

}  // namespace

// ---- round trip and layout -----------------------------------------------------------------

TEST_F(SafetensorsTest, RoundTripsEveryDtypeAndMetadata) {
  SafeTensorsFile f = sample_file();
  save_safetensors(path("a.safetensors"), f);
  SafeTensorsFile g = load_safetensors(path("a.safetensors"));
  expect_same(f, g);
  EXPECT_EQ(g.tensors["step"].numel(), 1);
  EXPECT_EQ(g.tensors["empty"].numel(), 0);
  EXPECT_EQ(g.tensors["pos_embed"].numel(), 4);
  EXPECT_TRUE(temp_files().empty());

  // Saving again over the file replaces it.
  f.tensors.erase("mask");
  f.metadata["epoch"] = "4";
  save_safetensors(path("a.safetensors"), f);
  expect_same(f, load_safetensors(path("a.safetensors")));
}

TEST_F(SafetensorsTest, LayoutMatchesTheReferenceLibrary) {
  SafeTensorsFile f = sample_file();
  save_safetensors(path("a.safetensors"), f);
  std::vector<uint8_t> b = read_raw(path("a.safetensors"));
  ASSERT_GE(b.size(), 8u);
  uint64_t n = 0;
  for (int i = 0; i < 8; i++) n |= uint64_t(b[size_t(i)]) << (8 * i);
  EXPECT_EQ(n % 8, 0u) << "header padded to 8 bytes so the data section is aligned";
  std::string text(b.begin() + 8, b.begin() + 8 + long(n));
  EXPECT_EQ(text.find_first_of("\n\t"), std::string::npos) << "compact JSON";
  EXPECT_NE(text.find('{'), std::string::npos);
  json h = json::parse(text);  // trailing spaces are JSON whitespace
  EXPECT_EQ(h["__metadata__"]["format"], "pt");
  EXPECT_EQ(h["pos_embed"]["dtype"], "F64");
  EXPECT_EQ(h["cls_token"]["dtype"], "BF16");
  EXPECT_EQ(h["norm.weight"]["dtype"], "F16");
  EXPECT_EQ(h["mask"]["dtype"], "U8");
  EXPECT_EQ(h["step"]["dtype"], "I32");
  EXPECT_EQ(h["step"]["shape"], json::array());

  // Tensors lie back to back in name order and fill the data section exactly.
  uint64_t expect_begin = 0;
  for (const auto& [name, t] : f.tensors) {
    auto off = h[name]["data_offsets"];
    EXPECT_EQ(off[0].get<uint64_t>(), expect_begin) << name;
    EXPECT_EQ(off[1].get<uint64_t>(), expect_begin + t.bytes.size()) << name;
    expect_begin += t.bytes.size();
  }
  EXPECT_EQ(b.size(), 8 + n + expect_begin);

  // No metadata: no __metadata__ key, as the Python library writes it.
  SafeTensorsFile plain;
  plain.tensors["x"] = make_tensor<float>(DType::F32, {1}, {2.0f});
  save_safetensors(path("plain.safetensors"), plain);
  b = read_raw(path("plain.safetensors"));
  EXPECT_EQ(std::string(b.begin() + 8, b.end()).find("__metadata__"), std::string::npos);
  expect_same(plain, load_safetensors(path("plain.safetensors")));
}

TEST_F(SafetensorsTest, LoadsAHandBuiltFile) {
  // Written byte by byte as another implementation might: tensors out of name order,
  // no padding, metadata last.
  std::string header = R"({"w":{"dtype":"I32","shape":[2],"data_offsets":[0,8]},)"
                       R"("a":{"shape":[1,2],"dtype":"F32","data_offsets":[8,16]},)"
                       R"("h":{"dtype":"BF16","shape":[1],"data_offsets":[16,18]},)"
                       R"("__metadata__":{"k":"v"}})";
  std::vector<uint8_t> data = {
      7,    0,    0,    0,    0xFF, 0xFF, 0xFF, 0xFF,  // I32 7, -1
      0,    0,    0xC0, 0x3F, 0,    0,    0,    0xC0,  // F32 1.5 (0x3FC00000), -2.0 (0xC0000000)
      0x80, 0x3F,                                      // BF16 1.0 (0x3F80)
  };
  write_raw(path("hand.safetensors"), safetensors_bytes(header, data));
  SafeTensorsFile f = load_safetensors(path("hand.safetensors"));
  ASSERT_EQ(f.tensors.size(), 3u);
  EXPECT_EQ(f.metadata.at("k"), "v");

  const SafeTensor& w = f.tensors.at("w");
  EXPECT_EQ(int(w.dtype), int(DType::I32));
  EXPECT_EQ(w.shape, (std::vector<int64_t>{2}));
  int32_t wi[2];
  std::memcpy(wi, w.bytes.data(), 8);
  EXPECT_EQ(wi[0], 7);
  EXPECT_EQ(wi[1], -1);

  const SafeTensor& a = f.tensors.at("a");
  EXPECT_EQ(int(a.dtype), int(DType::F32));
  EXPECT_EQ(a.shape, (std::vector<int64_t>{1, 2}));
  float af[2];
  std::memcpy(af, a.bytes.data(), 8);
  EXPECT_EQ(af[0], 1.5f);
  EXPECT_EQ(af[1], -2.0f);

  const SafeTensor& h = f.tensors.at("h");
  EXPECT_EQ(int(h.dtype), int(DType::BF16));
  EXPECT_EQ(h.bytes, (std::vector<uint8_t>{0x80, 0x3F}));
}

TEST_F(SafetensorsTest, SaveRejectsInconsistentTensors) {
  SafeTensorsFile f;
  f.tensors["short"] = make_tensor<float>(DType::F32, {3}, {1, 2});
  write_file_atomic(path("a.safetensors"), "old");
  try {
    save_safetensors(path("a.safetensors"), f);
    ADD_FAILURE() << "expected Error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(path("a.safetensors")), std::string::npos) << msg;
    EXPECT_NE(msg.find("'short'"), std::string::npos) << msg;
  }
  EXPECT_EQ(read_raw(path("a.safetensors")), (std::vector<uint8_t>{'o', 'l', 'd'}));
  SafeTensorsFile g;
  g.tensors["__metadata__"] = make_tensor<float>(DType::F32, {1}, {1});
  EXPECT_THROW(save_safetensors(path("b.safetensors"), g), Error);
  EXPECT_TRUE(temp_files().empty());
}

// ---- the loader rejects every malformed file, naming it ------------------------------------

TEST_F(SafetensorsTest, RejectsMissingAndShortFiles) {
  expect_load_error(path("missing.safetensors"), "No such file");
  write_raw(path("empty.safetensors"), {});
  expect_load_error(path("empty.safetensors"), "shorter than the 8-byte header length");
  write_raw(path("seven.safetensors"), {1, 0, 0, 0, 0, 0, 0});
  expect_load_error(path("seven.safetensors"), "shorter than the 8-byte header length");
  write_raw(path("long.safetensors"), safetensors_bytes("{}", {}, 1000));
  expect_load_error(path("long.safetensors"), "header length 1000 is larger than the file");
  write_raw(path("huge.safetensors"), safetensors_bytes("{}", {}, UINT64_MAX - 1));
  expect_load_error(path("huge.safetensors"), "is larger than the file");
  // The smallest valid file: an empty header object.
  write_raw(path("ok.safetensors"), safetensors_bytes("{}", {}));
  EXPECT_TRUE(load_safetensors(path("ok.safetensors")).tensors.empty());
}

TEST_F(SafetensorsTest, RejectsBadJson) {
  expect_rejected("syntax.safetensors", R"({"a": {"dtype": "F32",)", "invalid JSON header");
  expect_rejected("array.safetensors", R"([1, 2])", "not an object");
  expect_rejected("entry.safetensors", R"({"a": 5})", "tensor 'a' is not an object");
  expect_rejected("meta.safetensors", R"({"__metadata__": {"epoch": 3}})", "'epoch' is not a string");
}

TEST_F(SafetensorsTest, RejectsEntriesMissingFields) {
  expect_rejected("nodtype.safetensors", R"({"a":{"shape":[4],"data_offsets":[0,16]}})", "tensor 'a' has no dtype");
  expect_rejected("noshape.safetensors", R"({"a":{"dtype":"F32","data_offsets":[0,16]}})", "tensor 'a' has no shape");
  expect_rejected("nooffsets.safetensors", R"({"a":{"dtype":"F32","shape":[4]}})", "tensor 'a' has no data_offsets");
}

TEST_F(SafetensorsTest, RejectsBadDtypeShapeAndOffsets) {
  expect_rejected("dtype.safetensors", R"({"a":{"dtype":"Q4","shape":[4],"data_offsets":[0,16]}})",
                  "unknown dtype 'Q4'");
  expect_rejected("negshape.safetensors", R"({"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})",
                  "negative shape");
  expect_rejected("floatshape.safetensors", R"({"a":{"dtype":"F32","shape":[4.5],"data_offsets":[0,16]}})",
                  "non-integer");
  expect_rejected("bigshape.safetensors",
                  R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,16]}})", "too large");
  expect_rejected("outside.safetensors", R"({"a":{"dtype":"F32","shape":[5],"data_offsets":[0,20]}})",
                  "not within the data section");
  expect_rejected("backwards.safetensors", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})",
                  "end before begin");
  expect_rejected("negoffset.safetensors", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})",
                  "not two non-negative integers");
  expect_rejected("oneoffset.safetensors", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4]}})",
                  "not two non-negative integers");
  expect_rejected("size.safetensors", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})",
                  "span 16 bytes, shape [3] F32 needs 12");
  expect_rejected("size16.safetensors", R"({"a":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,16]}})", "needs 8");
}

TEST_F(SafetensorsTest, RejectsOverlappingTensors) {
  expect_rejected("overlap.safetensors",
                  R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                  "tensors 'a' and 'b' overlap");
  expect_rejected("same.safetensors",
                  R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                  R"("b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})",
                  "overlap");
  // One range inside another that began earlier.
  expect_rejected("nested.safetensors",
                  R"({"a":{"dtype":"U8","shape":[16],"data_offsets":[0,16]},)"
                  R"("b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})",
                  "overlap");
  // Adjacent ranges and empty tensors are fine.
  write_raw(path("adjacent.safetensors"), safetensors_bytes(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},)"
                                                            R"("e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                                                            R"("b":{"dtype":"U8","shape":[8],"data_offsets":[8,16]}})",
                                                            std::vector<uint8_t>(16, 1)));
  EXPECT_EQ(load_safetensors(path("adjacent.safetensors")).tensors.size(), 3u);
}

// ---- atomic writes -------------------------------------------------------------------------

TEST_F(SafetensorsTest, FailedWriteKeepsTheOldFileAndLeavesNoTemp) {
  // Root ignores permission bits, so fail the write itself: a file-size limit makes the
  // write of the new (larger) file fail with EFBIG after the temp file was created.
  SafeTensorsFile old_file;
  old_file.tensors["x"] = make_tensor<float>(DType::F32, {2}, {1, 2});
  save_safetensors(path("last.safetensors"), old_file);
  std::vector<uint8_t> before = read_raw(path("last.safetensors"));

  SafeTensorsFile big;
  big.tensors["x"] = make_tensor<float>(DType::F32, {65536}, std::vector<float>(65536, 3.0f));
  {
    FileSizeLimit limit(4096);
    try {
      save_safetensors(path("last.safetensors"), big);
      ADD_FAILURE() << "expected the write to fail";
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("cannot write checkpoint '" + path("last.safetensors") + "'"), std::string::npos) << msg;
      EXPECT_NE(msg.find(std::strerror(EFBIG)), std::string::npos) << msg;
    }
    try {
      write_file_atomic(path("history.csv"), std::string(10000, 'x'));
      ADD_FAILURE() << "expected the write to fail";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path("history.csv")), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(read_raw(path("last.safetensors")), before);
  expect_same(old_file, load_safetensors(path("last.safetensors")));
  EXPECT_FALSE(fs::exists(path("history.csv")));
  EXPECT_TRUE(temp_files().empty());
}

TEST_F(SafetensorsTest, FailedRenameLeavesNoTemp) {
  // The target is a directory: the temp file is written, and the rename over it fails.
  fs::create_directories(path("ckpt.safetensors"));
  SafeTensorsFile f = sample_file();
  try {
    save_safetensors(path("ckpt.safetensors"), f);
    ADD_FAILURE() << "expected Error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("cannot write checkpoint '" + path("ckpt.safetensors") + "': "), std::string::npos) << msg;
    EXPECT_NE(msg.find(std::strerror(EISDIR)), std::string::npos) << msg;
  }
  EXPECT_TRUE(fs::is_directory(path("ckpt.safetensors")));
  EXPECT_TRUE(temp_files().empty());

  // The parent directory does not exist: nothing can be created.
  std::string nowhere = path("no/such/dir/last.safetensors");
  try {
    save_safetensors(nowhere, f);
    ADD_FAILURE() << "expected Error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("'" + nowhere + "': No such file or directory"), std::string::npos) << msg;
  }
  EXPECT_THROW(write_file_atomic(path("ckpt.safetensors"), "text"), Error);
  EXPECT_TRUE(temp_files().empty());
}

TEST_F(SafetensorsTest, SaveRemovesTemporariesOfDeadWritersOnly) {
  // A writer killed mid-save leaves <file>.tmp.<pid>. The next save removes those whose
  // process is gone, and keeps a live process's (here: our parent's) and other files'.
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);  // reaped: this pid now names no process
  const std::string dead = path("ckpt.safetensors.tmp." + std::to_string(child));
  const std::string live = path("ckpt.safetensors.tmp." + std::to_string(::getppid()));
  const std::string other = path("other.safetensors.tmp." + std::to_string(child));
  for (const std::string& p : {dead, live, other}) std::ofstream(p) << "partial";
  save_safetensors(path("ckpt.safetensors"), sample_file());
  EXPECT_FALSE(fs::exists(dead)) << "a dead writer's temporary file is removed";
  EXPECT_TRUE(fs::exists(live)) << "a live writer's temporary file is kept";
  EXPECT_TRUE(fs::exists(other)) << "another file's temporaries are not touched";
  EXPECT_NO_THROW(load_safetensors(path("ckpt.safetensors")));
}

TEST_F(SafetensorsTest, WriteFileAtomicReplacesContents) {
  write_file_atomic(path("config.json"), "{\"a\": 1}\n");
  EXPECT_EQ(read_raw(path("config.json")), (std::vector<uint8_t>{'{', '"', 'a', '"', ':', ' ', '1', '}', '\n'}));
  write_file_atomic(path("config.json"), "");
  EXPECT_TRUE(read_raw(path("config.json")).empty());
  EXPECT_TRUE(fs::exists(path("config.json")));
  write_file_atomic(path("config.json"), "epoch,loss\n1,0.5\n");
  std::vector<uint8_t> b = read_raw(path("config.json"));
  EXPECT_EQ(std::string(b.begin(), b.end()), "epoch,loss\n1,0.5\n");
  EXPECT_TRUE(temp_files().empty());

  // A bare file name goes to the current directory.
  fs::path cwd = fs::current_path();
  fs::current_path(dir_);
  write_file_atomic("bare.txt", "hi");
  fs::current_path(cwd);
  EXPECT_TRUE(fs::exists(path("bare.txt")));
}

// ---- Tensor --------------------------------------------------------------------------------

TEST(Tensor, DtypeSizesAndNames) {
  EXPECT_EQ(dtype_size(DType::F32), 4u);
  EXPECT_EQ(dtype_size(DType::F64), 8u);
  EXPECT_EQ(dtype_size(DType::BF16), 2u);
  EXPECT_EQ(dtype_size(DType::F16), 2u);
  EXPECT_EQ(dtype_size(DType::U8), 1u);
  EXPECT_EQ(dtype_size(DType::I32), 4u);
  EXPECT_STREQ(dtype_name(DType::F32), "f32");
  EXPECT_STREQ(dtype_name(DType::BF16), "bf16");
  EXPECT_STREQ(dtype_name(DType::I32), "i32");
}

TEST(Tensor, EmptyOwnsZeroedMemory) {
  Tensor t = Tensor::empty({2, 50, 64}, DType::F32);
  EXPECT_TRUE(t.defined());
  EXPECT_TRUE(t.owning());
  EXPECT_EQ(t.ndim(), 3);
  EXPECT_EQ(t.size(0), 2);
  EXPECT_EQ(t.size(-1), 64);
  EXPECT_EQ(t.numel(), 6400);
  EXPECT_EQ(t.nbytes(), 25600u);
  EXPECT_EQ(t.shape_str(), "[2, 50, 64] f32");
  for (int64_t i = 0; i < t.numel(); i++) ASSERT_EQ(t.ptr<float>()[i], 0.0f);

  // Copies share the memory and keep it alive.
  Tensor copy;
  {
    Tensor u = Tensor::empty({3}, DType::I32);
    u.ptr<int32_t>()[2] = 42;
    copy = u;
  }
  EXPECT_EQ(copy.ptr<int32_t>()[2], 42);

  Tensor zero = Tensor::empty({0, 5}, DType::BF16);
  EXPECT_TRUE(zero.defined());
  EXPECT_EQ(zero.numel(), 0);
  EXPECT_EQ(zero.shape_str(), "[0, 5] bf16");
  EXPECT_THROW(Tensor::empty({1, 2, 3, 4, 5}, DType::F32), Error);
  EXPECT_THROW(Tensor::empty({-1}, DType::F32), Error);
}

TEST(Tensor, ViewBorrowsAndReshapeShares) {
  float buf[12] = {};
  Tensor v = Tensor::view(buf, {3, 4}, DType::F32);
  EXPECT_FALSE(v.owning());
  EXPECT_EQ(v.data(), buf);
  EXPECT_EQ(v.device(), Device::CPU);
  int64_t dims[2] = {2, 6};
  Tensor w = Tensor::view(buf, dims, 2, DType::F32, Device::CUDA);
  EXPECT_EQ(w.device(), Device::CUDA);
  EXPECT_EQ(w.shape_str(), "[2, 6] f32");

  Tensor r = v.reshape({2, 2, 3});
  EXPECT_EQ(r.data(), buf);
  EXPECT_EQ(r.shape_str(), "[2, 2, 3] f32");
  EXPECT_THROW(v.reshape({5, 2}), Error);

  Tensor owned = Tensor::empty({4, 4}, DType::U8);
  Tensor flat = owned.reshape({16});
  EXPECT_TRUE(flat.owning());
  EXPECT_EQ(flat.data(), owned.data());

  Tensor none;
  EXPECT_FALSE(none.defined());
  EXPECT_EQ(none.numel(), 0);
  EXPECT_EQ(none.shape_str(), "[] f32");
}
