// Dropout and drop-path (kernels/dropout.cu) against the CPU reference (vitcuda::ref::dropout,
// drop_path). The mask is a pure function of (seed, stream, index) through Philox and the kept
// value is one fp32 product x·(1/(1-p)) rounded once to T, on both sides: the results must be
// bit-identical, for fp32 and bf16, vectorised and misaligned (scalar) paths, in place or not.
#include <cmath>
#include <cstring>

#include "host/cpu/ref_ops.h"
#include "kernel_test.h"
#include "kernels/dropout.h"

namespace vitcuda::test {
namespace {

class Dropout : public BackendTest {};

// Index of the first element whose bits differ, or -1.
int64_t first_bit_mismatch(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) return static_cast<int64_t>(i);
  return -1;
}

// The reference on the values T stores, rounded to T as the kernel stores them.
template <typename T>
std::vector<float> ref_dropout(const std::vector<float>& x, const DropoutSpec& spec) {
  std::vector<float> y(x.size());
  ref::dropout<float>(x.data(), y.data(), static_cast<int64_t>(x.size()), spec);
  return to_floats(convert<T>(y));
}
template <typename T>
std::vector<float> ref_drop_path(const std::vector<float>& x, int64_t B, const DropoutSpec& spec) {
  std::vector<float> y(x.size());
  ref::drop_path<float>(x.data(), y.data(), B, static_cast<int64_t>(x.size()) / B, spec);
  return to_floats(convert<T>(y));
}

// offset: elements between the allocation and x (1 makes x and y miss 16-byte alignment, so the
// scalar loop runs instead of the vector one).
template <typename T>
void check_dropout(int64_t n, const DropoutSpec& spec, bool in_place, int offset) {
  SCOPED_TRACE("n=" + std::to_string(n) + " p=" + std::to_string(spec.p) + " seed=" + std::to_string(spec.seed) +
               " stream=" + std::to_string(spec.stream) + (in_place ? " in-place" : "") +
               " offset=" + std::to_string(offset));
  const std::vector<float> x = to_floats(convert<T>(random_floats(n, -3.f, 3.f, 11 + n)));
  rt::DeviceBuffer<T> xb(n + offset), yb(n + offset);
  rt::copy_to_device(xb.get() + offset, convert<T>(x).data(), n * sizeof(T));
  T* y = in_place ? xb.get() + offset : yb.get() + offset;
  dropout<T>(xb.get() + offset, y, n, spec, nullptr);
  std::vector<T> got(n);
  rt::copy_to_host(got.data(), y, n * sizeof(T));
  const int64_t bad = first_bit_mismatch(to_floats(got), ref_dropout<T>(x, spec));
  EXPECT_EQ(bad, -1) << "first differing element";
}

template <typename T>
void check_drop_path(int64_t B, int64_t per_sample, const DropoutSpec& spec, bool in_place, int offset) {
  SCOPED_TRACE("B=" + std::to_string(B) + " per_sample=" + std::to_string(per_sample) + " p=" + std::to_string(spec.p) +
               (in_place ? " in-place" : "") + " offset=" + std::to_string(offset));
  const int64_t n = B * per_sample;
  const std::vector<float> x = to_floats(convert<T>(random_floats(n, -3.f, 3.f, 21 + n)));
  rt::DeviceBuffer<T> xb(n + offset), yb(n + offset);
  rt::copy_to_device(xb.get() + offset, convert<T>(x).data(), n * sizeof(T));
  T* y = in_place ? xb.get() + offset : yb.get() + offset;
  drop_path<T>(xb.get() + offset, y, B, per_sample, spec, nullptr);
  std::vector<T> got(n);
  rt::copy_to_host(got.data(), y, n * sizeof(T));
  const int64_t bad = first_bit_mismatch(to_floats(got), ref_drop_path<T>(x, B, spec));
  EXPECT_EQ(bad, -1) << "first differing element";
}

// Sizes around the vector widths (4 fp32, 8 bf16) and the Philox block of 4; seeds and streams
// with high 32-bit halves so both key words and both stream words matter.
const int64_t kSizes[] = {1, 3, 4, 5, 8, 9, 31, 257, 1029};
const DropoutSpec kSpecs[] = {{0.1f, 1, 0}, {0.5f, 0x123456789abcdefull, 0xfedcba9876543210ull}, {0.9f, 42, 7}};

template <typename T>
void dropout_suite() {
  for (int64_t n : kSizes)
    for (const DropoutSpec& s : kSpecs)
      for (int offset : {0, 1}) {
        check_dropout<T>(n, s, false, offset);
        check_dropout<T>(n, s, true, offset);
      }
}

TEST_P(Dropout, MaskBitIdenticalF32) { dropout_suite<float>(); }
TEST_P(Dropout, MaskBitIdenticalBf16) { dropout_suite<__nv_bfloat16>(); }

TEST_P(Dropout, ZeroProbabilityCopies) {
  check_dropout<float>(37, {0.f, 5, 6}, false, 0);
  check_dropout<__nv_bfloat16>(37, {0.f, 5, 6}, true, 1);
  check_drop_path<float>(3, 7, {0.f, 5, 6}, false, 0);
}

TEST_P(Dropout, KeepsAboutOneMinusP) {
  // 8192 Bernoulli(0.7) draws: sd of the kept fraction is sqrt(0.21/8192) = 0.005; 5 sd allowed.
  const int64_t n = 8192;
  rt::DeviceBuffer<float> x(std::vector<float>(n, 1.f)), y(n);
  dropout<float>(x.get(), y.get(), n, {0.3f, 99, 3}, nullptr);
  int64_t kept = 0;
  for (float v : y.download()) kept += v != 0.f;
  EXPECT_NEAR(double(kept) / n, 0.7, 0.025);
}

TEST_P(Dropout, DropPathBitIdentical) {
  const int64_t shapes[][2] = {{1, 1}, {5, 3}, {7, 8}, {17, 16}, {9, 197}, {4, 2 * 17 * 8}};
  for (const auto& s : shapes)
    for (const DropoutSpec& spec : kSpecs)
      for (int offset : {0, 1}) {
        check_drop_path<float>(s[0], s[1], spec, false, offset);
        check_drop_path<__nv_bfloat16>(s[0], s[1], spec, offset == 0, offset);
      }
}

TEST_P(Dropout, DropPathDropsWholeSamples) {
  const int64_t B = 64, per = 24;
  rt::DeviceBuffer<float> x(std::vector<float>(B * per, 2.f)), y(B * per);
  drop_path<float>(x.get(), y.get(), B, per, {0.5f, 3, 4}, nullptr);
  const std::vector<float> got = y.download();
  int dropped = 0;
  for (int64_t b = 0; b < B; ++b) {
    const float first = got[b * per];
    EXPECT_TRUE(first == 0.f || first == 4.f) << "sample " << b;  // 2 / (1 - 0.5)
    for (int64_t i = 1; i < per; ++i) ASSERT_EQ(got[b * per + i], first) << "sample " << b;
    dropped += first == 0.f;
  }
  EXPECT_GT(dropped, 0);
  EXPECT_LT(dropped, B);
}

TEST_P(Dropout, ArgumentChecks) {
  rt::DeviceBuffer<float> b(64);
  float* p = b.get();
  const DropoutSpec s{0.5f, 1, 2};
  expect_error([&] { dropout<float>(nullptr, p, 8, s, nullptr); }, {"dropout", "x is null"});
  expect_error([&] { dropout<float>(p, nullptr, 8, s, nullptr); }, {"dropout", "y is null"});
  const float* odd = reinterpret_cast<const float*>(reinterpret_cast<const char*>(p) + 2);
  expect_error([&] { dropout<float>(odd, p + 16, 8, s, nullptr); }, {"dropout", "x is not aligned"});
  expect_error([&] { dropout<float>(p, p + 4, 8, s, nullptr); }, {"dropout", "overlaps"});
  expect_error([&] { dropout<float>(p, p, -1, s, nullptr); }, {"dropout", "n must be >= 0"});
  expect_error([&] { dropout<float>(p, p, 8, {1.f, 1, 2}, nullptr); }, {"dropout", "p must lie"});
  expect_error([&] { dropout<float>(p, p, 8, {-0.1f, 1, 2}, nullptr); }, {"dropout", "p must lie"});
  expect_error([&] { dropout<float>(p, p, 8, {std::nanf(""), 1, 2}, nullptr); }, {"dropout", "p must lie"});
  expect_error([&] { drop_path<float>(p, nullptr, 2, 4, s, nullptr); }, {"drop_path", "y is null"});
  expect_error([&] { drop_path<float>(p, p, -2, 4, s, nullptr); }, {"drop_path", "B must be >= 0"});
  dropout<float>(nullptr, nullptr, 0, s, nullptr);  // nothing to do: no pointer needed
}

// ViT-B/16 activations at batch 32 ([32, 197, 768], bf16): the grid-stride loops at full size.
TEST_P(Dropout, NativeViTBShape) {
  if (emulated()) GTEST_SKIP() << "full-size shape: native build only (the emulator is too slow)";
  check_dropout<__nv_bfloat16>(int64_t(32) * 197 * 768, {0.1f, 77, 1ull << 40}, true, 0);
  check_dropout<float>(int64_t(32) * 197 * 768 + 3, {0.1f, 77, 5}, false, 1);
  check_drop_path<__nv_bfloat16>(32, 197 * 768, {0.1f, 77, 9}, true, 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, Dropout, ::testing::Values(std::string(rt::backend_name())), backend_param_name);

}  // namespace
}  // namespace vitcuda::test
