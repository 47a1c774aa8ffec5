// vitcuda — shared helpers of the kernel tests (tests/kernels/*.cpp). The same sources build twice:
// vitcuda_emu_tests (g++, -DVITCUDA_EMU, the "cuda-emu" backend) and vitcuda_kernel_tests_cuda
// (nvcc, the "cuda" backend, skipped when no GPU is present). Tests parameterised by backend name
// instantiate with the one backend their binary is built for.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/common.cuh"
#include "tests/error_of.h"   // expect_error
#include "vitcuda/backend.h"  // Act
#include "vitcuda/config.h"

namespace vitcuda::test {

inline bool emulated() {
#if defined(VITCUDA_EMU)
  return true;
#else
  return false;
#endif
}

// Why a test of the native build cannot run here, or "" when it can.
inline std::string skip_reason() {
  if (emulated()) return "";
  if (rt::device_count() == 0)
    return "no CUDA GPU is present: the native kernel tests need one (the same tests run in "
           "vitcuda_emu_tests on the CPU emulator)";
  return "";
}

#define VITCUDA_SKIP_WITHOUT_DEVICE()                           \
  do {                                                          \
    const std::string reason_ = ::vitcuda::test::skip_reason(); \
    if (!reason_.empty()) GTEST_SKIP() << reason_;              \
  } while (0)

#define VITCUDA_EMU_ONLY()                                                                  \
  do {                                                                                      \
    if (!::vitcuda::test::emulated())                                                       \
      GTEST_SKIP() << "misuse detection is a feature of the emulator; on a GPU run "        \
                      "tools/sanitize.sh (compute-sanitizer memcheck/racecheck/synccheck)"; \
  } while (0)

// A fixture for tests that launch kernels.
class KernelTest : public ::testing::Test {
 protected:
  void SetUp() override { VITCUDA_SKIP_WITHOUT_DEVICE(); }
};

// Parameterised by the backend this binary drives ("cuda-emu" or "cuda").
class BackendTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { VITCUDA_SKIP_WITHOUT_DEVICE(); }
};

inline std::string backend_param_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string s = info.param;
  for (char& c : s)
    if (c == '-') c = '_';
  return s;
}

// A tiny ViT exercising every op of a step (the whole-model tests, the pinned step trace): cls token, dropout,
// attention dropout and drop-path in train mode, tanh-free erf GELU, pre-logits. Head dim 32 (the attention kernel's
// smallest).
inline ViTConfig tiny_vit_config() {
  ViTConfig c = preset("vit_fmnist");
  c.img_size = 8;
  c.patch_size = 4;  // 4 patches + cls = 5 tokens
  c.embed_dim = 64;
  c.num_heads = 2;
  c.depth = 2;
  c.mlp_hidden = 96;
  c.drop_rate = 0.1f;
  c.attn_drop_rate = 0.1f;
  c.drop_path_rate = 0.2f;
  c.pre_logits = 16;
  c.num_classes = 5;
  return c;
}

constexpr double kU32 = 0x1p-24;   // fp32 unit roundoff
constexpr double kUBf16 = 0x1p-8;  // bf16 unit roundoff (8 significant bits)
constexpr Act kActs[] = {Act::None, Act::GeluErf, Act::GeluTanh, Act::Tanh};

template <typename T>
constexpr bool kIsBf16 = std::is_same_v<T, __nv_bfloat16>;

inline float bf16_round(float v) { return __bfloat162float(__float2bfloat16(v)); }

inline std::vector<float> random_floats(size_t n, float lo, float hi, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

inline std::vector<float> random_ints(size_t n, int lo, int hi, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(dist(gen));
  return v;
}

template <typename T>
std::vector<T> convert(const std::vector<float>& v) {
  std::vector<T> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = from_float<T>(v[i]);
  return out;
}
template <typename T>
std::vector<float> to_floats(const std::vector<T>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = to_float(v[i]);
  return out;
}

}  // namespace vitcuda::test
