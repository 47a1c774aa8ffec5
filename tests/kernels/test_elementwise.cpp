// Element-wise add and dtype conversion (kernels/elementwise.cu). Both are one fp32 operation
// (or none) followed by one rounding to the destination type, the same on host and device, so
// the results must be bit-identical to the host computation: fp32 (a + b)·scale, and __float2bfloat16
// (round to nearest even) for the conversion, checked on ties, NaN, infinities and subnormals.
#include <cmath>
#include <cstring>
#include <limits>

#include "kernel_test.h"
#include "kernels/elementwise.h"

namespace vitcuda::test {
namespace {

class Elementwise : public BackendTest {};

template <typename T>
uint32_t bits_of(T v) {
  uint32_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}

template <typename T>
void expect_bits_equal(const std::vector<T>& got, const std::vector<T>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(bits_of(got[i]), bits_of(want[i])) << what << "[" << i << "]";
}

// offset shifts every operand by one element off 16-byte alignment (the scalar loop);
// alias: 0 none, 1 out == a, 2 out == b. scale 1 calls add without it (the default).
template <typename T>
void check_add(int64_t n, int offset, int alias, float scale = 1.f) {
  SCOPED_TRACE("n=" + std::to_string(n) + " offset=" + std::to_string(offset) + " alias=" + std::to_string(alias) +
               " scale=" + std::to_string(scale));
  const std::vector<T> a = convert<T>(random_floats(n, -4.f, 4.f, 3 + n));
  const std::vector<T> b = convert<T>(random_floats(n, -4.f, 4.f, 5 + n));
  std::vector<T> want(n);
  for (int64_t i = 0; i < n; ++i) {
    const float sum = to_float(a[i]) + to_float(b[i]);  // the fp32 sum, then the fp32 product
    want[i] = from_float<T>(scale == 1.f ? sum : sum * scale);
  }
  rt::DeviceBuffer<T> da(n + offset), db(n + offset), dout(n + offset);
  rt::copy_to_device(da.get() + offset, a.data(), n * sizeof(T));
  rt::copy_to_device(db.get() + offset, b.data(), n * sizeof(T));
  T* out = alias == 1 ? da.get() + offset : alias == 2 ? db.get() + offset : dout.get() + offset;
  if (scale == 1.f)
    add<T>(da.get() + offset, db.get() + offset, out, n, nullptr);
  else
    add<T>(da.get() + offset, db.get() + offset, out, n, nullptr, scale);
  std::vector<T> got(n);
  rt::copy_to_host(got.data(), out, n * sizeof(T));
  expect_bits_equal(got, want, "out");
}

const int64_t kSizes[] = {1, 3, 4, 7, 8, 9, 17, 100, 1031};

TEST_P(Elementwise, AddF32) {
  for (int64_t n : kSizes)
    for (int offset : {0, 1})
      for (int alias : {0, 1, 2}) check_add<float>(n, offset, alias);
}

TEST_P(Elementwise, AddBf16) {
  for (int64_t n : kSizes)
    for (int offset : {0, 1})
      for (int alias : {0, 1, 2}) check_add<__nv_bfloat16>(n, offset, alias);
}

// (a + b)·scale: the mean of two heads' logits (scale 0.5), and scales that round (1/3, 0.1).
TEST_P(Elementwise, AddScaled) {
  for (int64_t n : {int64_t(1), int64_t(9), int64_t(1031)})
    for (int offset : {0, 1})
      for (float scale : {0.5f, 1.f / 3.f, -0.1f, 0.f}) {
        check_add<float>(n, offset, 1, scale);
        check_add<__nv_bfloat16>(n, offset, 0, scale);
      }
}

// Random values plus the cases where rounding is decided: ties to even both ways, the largest
// finite values (overflow to inf), infinities, NaN, subnormals, signed zeros.
std::vector<float> conversion_inputs(int64_t n) {
  std::vector<float> v = random_floats(n, -1e3f, 1e3f, 17 + n);
  const float special[] = {1.f + 0x1p-8f,
                           1.f + 0x3p-8f,
                           -(1.f + 0x1p-8f),
                           1.f + 0x1p-8f + 0x1p-20f,
                           3.3895314e38f,
                           std::numeric_limits<float>::max(),
                           std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::quiet_NaN(),
                           1e-40f,
                           -1e-42f,
                           0.f,
                           -0.f};
  for (size_t i = 0; i < std::size(special) && i < v.size(); ++i) v[i * 3 % v.size()] = special[i];
  return v;
}

void check_convert(int64_t n, int offset) {
  SCOPED_TRACE("n=" + std::to_string(n) + " offset=" + std::to_string(offset));
  const std::vector<float> f = conversion_inputs(n);
  std::vector<__nv_bfloat16> want_b(n);
  for (int64_t i = 0; i < n; ++i) want_b[i] = __float2bfloat16(f[i]);  // host: round to nearest even

  rt::DeviceBuffer<float> df(n + offset), df2(n + offset), df3(n + offset);
  rt::DeviceBuffer<__nv_bfloat16> dbf(n + offset), dbf2(n + offset);
  rt::copy_to_device(df.get() + offset, f.data(), n * sizeof(float));
  convert_dtype<float, __nv_bfloat16>(df.get() + offset, dbf.get() + offset, n, nullptr);
  std::vector<__nv_bfloat16> got_b(n);
  rt::copy_to_host(got_b.data(), dbf.get() + offset, n * sizeof(__nv_bfloat16));
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(f[i])) {  // any NaN will do; its payload is not specified
      ASSERT_TRUE(std::isnan(__bfloat162float(got_b[i]))) << "bf16[" << i << "]";
      got_b[i] = want_b[i];
    }
  }
  expect_bits_equal(got_b, want_b, "bf16");

  // bf16 -> fp32 is exact; fp32 -> fp32 and bf16 -> bf16 are copies.
  convert_dtype<__nv_bfloat16, float>(dbf.get() + offset, df2.get() + offset, n, nullptr);
  std::vector<float> got_f(n), want_f(n);
  rt::copy_to_host(got_f.data(), df2.get() + offset, n * sizeof(float));
  for (int64_t i = 0; i < n; ++i) want_f[i] = __bfloat162float(got_b[i]);
  expect_bits_equal(got_f, want_f, "fp32");
  convert_dtype<float, float>(df.get() + offset, df3.get() + offset, n, nullptr);
  rt::copy_to_host(got_f.data(), df3.get() + offset, n * sizeof(float));
  expect_bits_equal(got_f, f, "copy fp32");
  convert_dtype<__nv_bfloat16, __nv_bfloat16>(dbf.get() + offset, dbf2.get() + offset, n, nullptr);
  std::vector<__nv_bfloat16> got_b2(n);
  rt::copy_to_host(got_b2.data(), dbf2.get() + offset, n * sizeof(__nv_bfloat16));
  expect_bits_equal(got_b2, got_b, "copy bf16");
}

TEST_P(Elementwise, ConvertRoundsToNearestEven) {
  for (int64_t n : {int64_t(13), int64_t(16), int64_t(40), int64_t(1029)})
    for (int offset : {0, 1}) check_convert(n, offset);
}

TEST_P(Elementwise, ArgumentChecks) {
  rt::DeviceBuffer<float> buf(64);
  rt::DeviceBuffer<__nv_bfloat16> hb(64);
  float* p = buf.get();
  const float* odd = reinterpret_cast<const float*>(reinterpret_cast<const char*>(p) + 1);
  expect_error([&] { add<float>(nullptr, p, p, 4, nullptr); }, {"add", "a is null"});
  expect_error([&] { add<float>(p, nullptr, p, 4, nullptr); }, {"add", "b is null"});
  expect_error([&] { add<float>(p, p, nullptr, 4, nullptr); }, {"add", "out is null"});
  expect_error([&] { add<float>(odd, p, p + 8, 4, nullptr); }, {"add", "a is not aligned"});
  expect_error([&] { add<float>(p, p + 8, p + 2, 4, nullptr); }, {"add", "out overlaps"});
  expect_error([&] { add<float>(p, p, p, -1, nullptr); }, {"add", "n must be >= 0"});
  expect_error([&] { convert_dtype<float, __nv_bfloat16>(nullptr, hb.get(), 4, nullptr); },
               {"convert_dtype", "src is null"});
  expect_error([&] { convert_dtype<float, __nv_bfloat16>(p, nullptr, 4, nullptr); }, {"convert_dtype", "dst is null"});
  expect_error([&] { convert_dtype<float, float>(p, p + 1, 4, nullptr); }, {"convert_dtype", "dst overlaps src"});
  add<float>(nullptr, nullptr, nullptr, 0, nullptr);  // nothing to do
}

TEST_P(Elementwise, NativeViTBShape) {
  if (emulated()) GTEST_SKIP() << "full-size shape: native build only (the emulator is too slow)";
  check_add<__nv_bfloat16>(int64_t(64) * 197 * 768, 0, 1);
  check_add<float>(int64_t(64) * 197 * 768 + 5, 1, 0);
  check_convert(int64_t(86) * 1000 * 1000 + 3, 0);  // a ViT-B parameter arena's worth
}

INSTANTIATE_TEST_SUITE_P(Backends, Elementwise, ::testing::Values(std::string(rt::backend_name())), backend_param_name);

}  // namespace
}  // namespace vitcuda::test
