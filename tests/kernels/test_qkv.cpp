// qkv split/merge (kernels/qkv.cu) against vitcuda::ref::qkv_split / qkv_merge: a permutation, so
// results must be bit-exact; with the fused bias, one fp32 add rounded once to T.
#include <cmath>
#include <cstring>

#include "host/cpu/ref_ops.h"
#include "kernel_test.h"
#include "kernels/qkv.h"

namespace vitcuda::test {
namespace {

struct Shape {
  int B, T, H, d;
};
// odd token counts (ViT 197 and small ones), one head, head dims 16..64 and an odd one
const Shape kShapes[] = {{1, 1, 1, 1}, {2, 5, 3, 16}, {3, 17, 2, 7}, {2, 50, 4, 32}, {1, 197, 3, 64}};

std::string describe(const Shape& s) {
  return "B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) + " H=" + std::to_string(s.H) +
         " d=" + std::to_string(s.d);
}

template <typename T>
void check_split(const Shape& s, bool with_bias) {
  SCOPED_TRACE(describe(s) + (with_bias ? " +bias" : ""));
  const size_t n = size_t(s.B) * s.T * 3 * s.H * s.d, part = n / 3;
  const std::vector<float> qkv = to_floats(convert<T>(random_floats(n, -2.f, 2.f, 1 + s.T)));
  const std::vector<float> bias = to_floats(convert<T>(random_floats(3 * s.H * s.d, -1.f, 1.f, 2)));
  rt::DeviceBuffer<T> dqkv(convert<T>(qkv)), dbias(convert<T>(bias)), q(part), k(part), v(part);
  qkv_split<T>(dqkv.get(), with_bias ? dbias.get() : nullptr, q.get(), k.get(), v.get(), s.B, s.T, s.H, s.d, nullptr);
  std::vector<float> in = qkv;
  if (with_bias)
    for (size_t i = 0; i < n; ++i) in[i] += bias[i % bias.size()];  // bias over (s, h, j)
  std::vector<float> qr(part), kr(part), vr(part);
  ref::qkv_split<float>(in.data(), qr.data(), kr.data(), vr.data(), s.B, s.T, s.H, s.d);
  const std::vector<float> got[3] = {to_floats(q.download()), to_floats(k.download()), to_floats(v.download())};
  const std::vector<float>* want[3] = {&qr, &kr, &vr};
  for (int t = 0; t < 3; ++t)
    for (size_t i = 0; i < part; ++i) {
      if (!with_bias) {  // a copy: bit-exact
        ASSERT_EQ(got[t][i], (*want[t])[i]) << "qkv part " << t << " [" << i << "]";
      } else {  // the fp32 sum is exact for these inputs; bf16 storage rounds it once
        const double tol = std::is_same_v<T, __nv_bfloat16> ? kUBf16 * std::fabs((*want[t])[i]) : 0.0;
        ASSERT_NEAR(got[t][i], (*want[t])[i], tol) << "qkv part " << t << " [" << i << "]";
      }
    }
}

template <typename T>
void check_merge(const Shape& s) {
  SCOPED_TRACE(describe(s));
  const size_t n = size_t(s.B) * s.T * 3 * s.H * s.d, part = n / 3;
  const std::vector<float> dq = to_floats(convert<T>(random_floats(part, -1.f, 1.f, 3))),
                           dk = to_floats(convert<T>(random_floats(part, -1.f, 1.f, 4))),
                           dv = to_floats(convert<T>(random_floats(part, -1.f, 1.f, 5)));
  rt::DeviceBuffer<T> ddq(convert<T>(dq)), ddk(convert<T>(dk)), ddv(convert<T>(dv)), dqkv(n);
  qkv_merge<T>(ddq.get(), ddk.get(), ddv.get(), dqkv.get(), s.B, s.T, s.H, s.d, nullptr);
  std::vector<float> want(n);
  ref::qkv_merge<float>(dq.data(), dk.data(), dv.data(), want.data(), s.B, s.T, s.H, s.d);
  const std::vector<float> got = to_floats(dqkv.download());
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(got[i], want[i]) << "dqkv[" << i << "]";
}

class Qkv : public BackendTest {};

TEST_P(Qkv, SplitF32) {
  for (const Shape& s : kShapes) {
    check_split<float>(s, false);
    check_split<float>(s, true);
  }
}
TEST_P(Qkv, SplitBf16) {
  for (const Shape& s : kShapes) {
    check_split<__nv_bfloat16>(s, false);
    check_split<__nv_bfloat16>(s, true);
  }
}
TEST_P(Qkv, MergeF32) {
  for (const Shape& s : kShapes) check_merge<float>(s);
}
TEST_P(Qkv, MergeBf16) {
  for (const Shape& s : kShapes) check_merge<__nv_bfloat16>(s);
}
TEST_P(Qkv, VitBaseShapesNative) {
  if (emulated()) GTEST_SKIP() << "ViT-B shapes run in the native build only";
  check_split<__nv_bfloat16>({16, 197, 12, 64}, true);
  check_merge<__nv_bfloat16>({16, 197, 12, 64});
}

TEST_P(Qkv, RejectsBadArguments) {
  rt::DeviceBuffer<float> a(3 * 8), q(8), k(8), v(8);
  expect_error([&] { qkv_split<float>(nullptr, nullptr, q.get(), k.get(), v.get(), 1, 1, 1, 8, nullptr); },
               {"qkv_split", "qkv"});
  expect_error([&] { qkv_split<float>(a.get(), nullptr, q.get(), nullptr, v.get(), 1, 1, 1, 8, nullptr); },
               {"qkv_split", "k is null"});
  expect_error([&] { qkv_split<float>(a.get(), nullptr, q.get(), k.get(), v.get(), 1, 1, 0, 8, nullptr); },
               {"qkv_split", "H"});
  expect_error([&] { qkv_merge<float>(q.get(), k.get(), v.get(), nullptr, 1, 1, 1, 8, nullptr); },
               {"qkv_merge", "dqkv"});
  expect_error([&] { qkv_merge<float>(q.get(), k.get(), v.get(), a.get(), 1, 1, 1, 0, nullptr); }, {"qkv_merge", "d"});
}

INSTANTIATE_TEST_SUITE_P(Backends, Qkv, ::testing::Values(std::string(rt::backend_name())), backend_param_name);

}  // namespace
}  // namespace vitcuda::test
