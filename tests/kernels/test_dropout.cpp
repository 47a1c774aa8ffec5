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

// Rate 0 moves nothing in place and is exactly one device copy out of place (no kernel).
TEST_P(Dropout, ZeroProbabilityIssuesAtMostOneCopy) {
  rt::DeviceBuffer<float> x(std::vector<float>(96, 1.f)), y(96);
  const DropoutSpec off{0.f, 5, 6};
  rt::reset_counters();
  dropout<float>(x.get(), x.get(), 96, off, nullptr);
  drop_path<float>(x.get(), x.get(), 4, 24, off, nullptr);
  EXPECT_EQ(rt::counters().launches + rt::counters().d2d, 0);
  drop_path<float>(x.get(), y.get(), 4, 24, off, nullptr);
  EXPECT_EQ(rt::counters().launches, 0);
  EXPECT_EQ(rt::counters().d2d, 1);
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

// philox4_block gives the 4 words philox_bits returns for elements 4·block .. 4·block+3, and
// dropout_keep_bits (both forms) the keep decisions dropout_keep makes, over many counters (low and
// high 32-bit halves), streams and seeds. Host code: the same header the kernels compile.
TEST(Philox, FourWideEqualsFourScalarCalls) {
  const uint64_t seeds[] = {0, 1, 0x123456789abcdefull, ~0ull};
  const uint64_t streams[] = {0, 7, 1ull << 32, 0xfedcba9876543210ull};
  // Blocks below 2^62 - 16: element 4·block + 3 must fit in 64 bits.
  const uint64_t bases[] = {0, 1, 1000, (1ull << 32) - 2, (1ull << 40) + 3, (1ull << 62) - 16};
  int checked = 0;
  for (uint64_t seed : seeds)
    for (uint64_t stream : streams)
      for (uint64_t base : bases)
        for (uint64_t blk = base; blk < base + 16; ++blk) {
          const Philox4 r = philox4_block(seed, stream, blk);
          for (uint32_t k = 0; k < 4; ++k) {
            ASSERT_EQ(r.x[k], philox_bits(seed, stream, 4 * blk + k)) << "block " << blk << " word " << k;
            ASSERT_EQ(philox_word(r, k), r.x[k]);
            ++checked;
          }
        }
  EXPECT_EQ(checked, 4 * 4 * 6 * 16 * 4);
}

TEST(Philox, KeepBitsEqualDropoutKeep) {
  DropoutParams d;
  d.seed = 0x0123456789abcdefull;
  d.stream = 99;
  d.threshold = dropout_threshold(0.37f);
  int kept = 0;
  // Every start position modulo 4 (rows of any width start anywhere in a Philox block).
  for (uint64_t first : {uint64_t(0), uint64_t(1), uint64_t(2), uint64_t(3), uint64_t(4), uint64_t(1021),
                         (uint64_t(1) << 33) + 2, (uint64_t(1) << 34) - 1}) {
    for (uint64_t start = first; start < first + 64; start += 7) {
      const uint32_t b8 = dropout_keep_bits<8>(d, d.stream, start), b4 = dropout_keep_bits<4>(d, d.stream, start);
      for (int k = 0; k < 8; ++k) {
        const bool want = dropout_keep(d.seed, d.stream, start + k, d.threshold);
        kept += want;
        ASSERT_EQ(((b8 >> k) & 1u) != 0, want) << start + k;
        if (k < 4) {
          ASSERT_EQ(((b4 >> k) & 1u) != 0, want) << start + k;
        }
      }
      ASSERT_EQ(b8 >> 8, 0u) << "bits past kVec must stay clear";
      ASSERT_EQ(b4 >> 4, 0u) << "bits past kVec must stay clear";
    }
  }
  EXPECT_GT(kept, 0);
}

// DropoutSpec::stream_offset: the kernels read *stream_offset from device memory when they run.
// The mask equals the reference's with the same effective stream (stream + offset), and changing
// the device value alone (same spec) changes the mask to that of the new stream.
TEST_P(Dropout, StreamOffsetIsReadOnTheDevice) {
  const int64_t n = 1029, B = 9, per = 37;
  const uint64_t host_offset[2] = {5, 0x100000003ull};
  rt::DeviceBuffer<uint64_t> dev_offset(std::vector<uint64_t>{host_offset[0]});
  const std::vector<float> x = random_floats(n, -3.f, 3.f, 5);
  const std::vector<float> xp = random_floats(B * per, -3.f, 3.f, 6);
  rt::DeviceBuffer<float> xb(x), yb(n), xpb(xp), ypb(B * per);
  for (int step = 0; step < 2; ++step) {
    SCOPED_TRACE("offset=" + std::to_string(host_offset[step]));
    if (step == 1) dev_offset.upload({host_offset[step]});
    DropoutSpec dev{0.4f, 77, 1000, dev_offset.get()};
    DropoutSpec host{0.4f, 77, 1000, &host_offset[step]};  // the reference reads host memory
    DropoutSpec folded{0.4f, 77, 1000 + host_offset[step]};
    dropout<float>(xb.get(), yb.get(), n, dev, nullptr);
    drop_path<float>(xpb.get(), ypb.get(), B, per, dev, nullptr);
    const std::vector<float> want = ref_dropout<float>(x, host);
    EXPECT_EQ(first_bit_mismatch(yb.download(), want), -1);
    EXPECT_EQ(first_bit_mismatch(want, ref_dropout<float>(x, folded)), -1);
    EXPECT_EQ(first_bit_mismatch(ypb.download(), ref_drop_path<float>(xp, B, host)), -1);
  }
  // The two offsets give different masks (else this test could not fail).
  EXPECT_NE(first_bit_mismatch(ref_dropout<float>(x, {0.4f, 77, 1000 + host_offset[0]}),
                               ref_dropout<float>(x, {0.4f, 77, 1000 + host_offset[1]})),
            -1);
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
