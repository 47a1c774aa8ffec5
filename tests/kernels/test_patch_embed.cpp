// Patch extraction (kernels/patch_embed.cu) against vitcuda::ref::patch_extract: uint8 and float
// images, NCHW and NHWC, odd patch sizes and images that do not divide into whole patches, 1 and 3
// channels, fp32 and bf16 columns.
#include <cmath>

#include "host/cpu/ref_ops.h"
#include "kernel_test.h"
#include "kernels/patch_embed.h"

namespace vitcuda::test {
namespace {

struct Shape {
  int B, C, H, W, P;
};
// MNIST-like 28² with P = 4 and 7, CIFAR 32² with P = 4, an image with a remainder (Conv2d drops
// it), a 1×1 patch, a whole-image patch, and kPatchMaxChannels = 8 channels (the kernel picks a
// channel's mean and 1/std with compile-time indices: every one of them is taken), with a row of
// C·P² = 392 columns that spans two blocks of 256.
const Shape kShapes[] = {{2, 1, 28, 28, 4}, {1, 1, 28, 28, 7},  {2, 3, 32, 32, 4}, {3, 3, 13, 18, 5},
                         {1, 3, 3, 2, 1},   {2, 2, 16, 16, 16}, {2, 8, 14, 15, 7}};

std::string describe(const Shape& s, bool u8, ImageLayout l) {
  return "B=" + std::to_string(s.B) + " C=" + std::to_string(s.C) + " H=" + std::to_string(s.H) +
         " W=" + std::to_string(s.W) + " P=" + std::to_string(s.P) + (u8 ? " uint8" : " float") +
         (l == ImageLayout::NCHW ? " NCHW" : " NHWC");
}

template <typename T>
void check(const Shape& s, bool u8, ImageLayout layout) {
  SCOPED_TRACE(describe(s, u8, layout));
  const size_t n = size_t(s.B) * s.C * s.H * s.W;
  const int np = (s.H / s.P) * (s.W / s.P), pd = s.C * s.P * s.P;
  const float mean[8] = {0.485f, 0.456f, 0.406f, 0.5f, 0.1f, 0.9f, 0.3f, 0.7f};
  const float stdev[8] = {0.229f, 0.224f, 0.225f, 0.25f, 0.3f, 0.2f, 0.27f, 0.21f};
  static_assert(kPatchMaxChannels == 8);
  std::vector<uint8_t> img8(n);
  std::vector<float> imgf = random_floats(n, -0.5f, 1.5f, 3 + s.H);
  const std::vector<float> r = random_ints(n, 0, 255, 4 + s.W);
  for (size_t i = 0; i < n; ++i) img8[i] = static_cast<uint8_t>(r[i]);
  rt::DeviceBuffer<uint8_t> d8(img8);
  rt::DeviceBuffer<float> df(imgf);
  rt::DeviceBuffer<T> cols(size_t(s.B) * np * pd);
  const void* images = u8 ? static_cast<const void*>(d8.get()) : static_cast<const void*>(df.get());
  patch_extract<T>(images, u8, layout, s.B, s.C, s.H, s.W, s.P, mean, stdev, cols.get(), nullptr);
  std::vector<float> want(cols.size());
  ref::patch_extract<float>(u8 ? static_cast<const void*>(img8.data()) : static_cast<const void*>(imgf.data()), u8,
                            layout, s.B, s.C, s.H, s.W, s.P, mean, stdev, want.data());
  const std::vector<float> got = to_floats(cols.download());
  for (size_t i = 0; i < got.size(); ++i) {
    // The reference computes (v − mean)/std in double; the kernel (v·(1/255) − mean)·(1/std) in
    // fp32: a few roundings of terms of size |v| + |mean|, scaled by 1/std (≤ 5 here); bf16
    // columns then round once.
    const double terms = (2.0 + 1.0) / 0.2;
    const double tol = 8 * kU32 * terms + (std::is_same_v<T, __nv_bfloat16> ? kUBf16 * std::fabs(want[i]) : 0.0);
    ASSERT_NEAR(got[i], want[i], tol) << "cols[" << i / pd << "][" << i % pd << "]";
  }
}

class PatchEmbed : public BackendTest {};

TEST_P(PatchEmbed, ExtractF32) {
  for (const Shape& s : kShapes)
    for (bool u8 : {true, false})
      for (ImageLayout l : {ImageLayout::NCHW, ImageLayout::NHWC}) check<float>(s, u8, l);
}
TEST_P(PatchEmbed, ExtractBf16) {
  for (const Shape& s : kShapes)
    for (bool u8 : {true, false})
      for (ImageLayout l : {ImageLayout::NCHW, ImageLayout::NHWC}) check<__nv_bfloat16>(s, u8, l);
}
TEST_P(PatchEmbed, VitBaseShapesNative) {
  if (emulated()) GTEST_SKIP() << "ViT-B shapes run in the native build only";
  check<__nv_bfloat16>({8, 3, 224, 224, 16}, true, ImageLayout::NCHW);
  check<__nv_bfloat16>({8, 3, 224, 224, 16}, false, ImageLayout::NHWC);
}

TEST_P(PatchEmbed, RejectsBadArguments) {
  rt::DeviceBuffer<float> img(3 * 16 * 16), cols(3 * 16 * 16);
  const float mean[9] = {0}, stdev[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, bad_std[3] = {1, 0, 1};
  auto expect = [](auto fn, const char* arg) { expect_error(fn, {"patch_extract", arg}); };
  auto run = [&](const void* im, int C, int H, int P, const float* sd, float* out) {
    return [=] { patch_extract<float>(im, false, ImageLayout::NCHW, 1, C, H, 16, P, mean, sd, out, nullptr); };
  };
  run(img.get(), 3, 16, 4, stdev, cols.get())();  // accepted
  expect(run(nullptr, 3, 16, 4, stdev, cols.get()), "images is null");
  expect(run(img.get(), 3, 16, 4, stdev, nullptr), "cols is null");
  expect(run(img.get(), 3, 16, 0, stdev, cols.get()), "P");
  expect(run(img.get(), 3, 8, 9, stdev, cols.get()), "smaller than one patch");
  expect(run(img.get(), 9, 16, 4, stdev, cols.get()), "C must be");
  expect(run(img.get(), 3, 16, 4, bad_std, cols.get()), "stdev[1]");
}

INSTANTIATE_TEST_SUITE_P(Backends, PatchEmbed, ::testing::Values(std::string(rt::backend_name())), backend_param_name);

}  // namespace
}  // namespace vitcuda::test
