// The Backend ops of DeiT distillation on the "cpu" backend (the reference): distill_loss in f64
// against the textbook formulas and against finite differences of its own loss, tokens with the
// distillation token, Pool::Token of two prefix tokens, add with a scale, and the argument checks
// every backend shares (host/backend.cpp): one Error naming the op and the argument.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "tests/distill_expected.h"
#include "tests/error_of.h"
#include "vitcuda/backend.h"

namespace vitcuda::test {
namespace {

using Vec = std::vector<double>;

Tensor f64(Vec& v, std::initializer_list<int64_t> shape) { return Tensor::view(v.data(), shape, DType::F64); }
Tensor f32(std::vector<float>& v, std::initializer_list<int64_t> shape) {
  return Tensor::view(v.data(), shape, DType::F32);
}

class DistillOps : public ::testing::Test {
 protected:
  std::unique_ptr<Backend> be = make_backend("cpu");
};

const Vec kS = {1.0, 2.0, 0.5, -1.0, 0.0, 3.0};
const Vec kT = {0.25, 1.5, 1.5, 2.0, -1.0, 0.0};  // row 0: a tie at 1 and 2, the argmax is 1

// f64 logits: the gradient is computed in double throughout, so it matches the formulas to
// rounding (1e-12); the losses are f32 by the op's contract, so they match to fp32 rounding.
TEST_F(DistillOps, F64AgainstFormulas) {
  const int B = 2, C = 3;
  const float alpha = 0.75f, dscale = 0.5f;
  for (Distill kind : {Distill::Hard, Distill::Soft})
    for (double tau : {1.0, 3.0, 0.5}) {
      SCOPED_TRACE(std::string(distill_name(kind)) + " tau=" + std::to_string(tau));
      const DistillExpected e = distill_expected(kS, kT, B, C, kind, tau);
      Vec s = kS, t = kT, dl(6, 0.25);
      std::vector<float> losses = {2.f, -1.f};
      be->distill_loss(f64(s, {B, C}), f64(t, {B, C}), kind, float(tau), alpha, dscale, f32(losses, {B}),
                       f64(dl, {B, C}), /*accumulate=*/true);
      for (int b = 0; b < B; ++b) {
        const double want = (1 - alpha) * (b == 0 ? 2.0 : -1.0) + alpha * e.loss[b];
        EXPECT_NEAR(losses[b], want, 4 * 0x1p-24 * (std::fabs(want) + 2)) << "loss[" << b << "]";
      }
      for (int i = 0; i < B * C; ++i) {
        EXPECT_NEAR(dl[i], 0.25 + alpha * dscale * e.grad[i], 1e-12) << "dlogits[" << i << "]";
      }
    }
}

// dlogits (α = 1, dscale = 1) against central differences of the loss it reports. The op's
// losses are f32 (its contract), so the difference quotient carries the loss's rounding,
// |L|·2⁻²⁴/h ≈ 6e-6·|L| for h = 1e-2 (|L| < 10 here), and the truncation error h²·|L'''|/6
// (≈ 2e-5·|L'''|, the third derivatives of these softmaxes being below 1): the tolerance is
// 1e-4 absolute plus 1e-3 relative. The f64 gradient itself is checked to 1e-12 above; this
// checks that it is the derivative of the loss, for every logit of both terms.
TEST_F(DistillOps, GradientIsTheFiniteDifferenceOfTheLoss) {
  const int B = 3, C = 7;
  const double h = 1e-2;
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> u(-3.0, 3.0);
  Vec s(B * C), t(B * C);
  for (double& x : s) x = u(rng);
  for (double& x : t) x = u(rng);
  for (Distill kind : {Distill::Hard, Distill::Soft})
    for (float tau : {1.f, 2.5f}) {
      if (kind == Distill::Hard && tau != 1.f) continue;
      SCOPED_TRACE(std::string(distill_name(kind)) + " tau=" + std::to_string(tau));
      auto loss_of = [&](int b) {
        std::vector<float> losses(B, 0.f);
        be->distill_loss(f64(s, {B, C}), f64(t, {B, C}), kind, tau, 1.f, 1.f, f32(losses, {B}), Tensor{}, false);
        return double(losses[b]);
      };
      Vec dl(B * C, std::numeric_limits<double>::quiet_NaN());
      std::vector<float> losses(B, 0.f);
      be->distill_loss(f64(s, {B, C}), f64(t, {B, C}), kind, tau, 1.f, 1.f, f32(losses, {B}), f64(dl, {B, C}), false);
      for (int b = 0; b < B; ++b)
        for (int j = 0; j < C; ++j) {
          double& x = s[b * C + j];
          const double x0 = x;
          x = x0 + h;
          const double lp = loss_of(b);
          x = x0 - h;
          const double lm = loss_of(b);
          x = x0;
          const double fd = (lp - lm) / (2 * h);
          EXPECT_NEAR(dl[b * C + j], fd, 1e-4 + 1e-3 * std::fabs(fd)) << "dlogits[" << b << "][" << j << "]";
        }
    }
}

TEST_F(DistillOps, BadArgumentsNameTheArgument) {
  std::vector<float> s(6, 0.f), t(6, 0.f), t_wide(8, 0.f), losses(2, 0.f), losses3(3, 0.f), dl(6, 0.f), dl5(5, 0.f);
  Vec t64(6, 0.0);
  const Tensor S = f32(s, {2, 3}), T = f32(t, {2, 3}), L = f32(losses, {2}), D = f32(dl, {2, 3});
  auto call = [&](const Tensor& st, const Tensor& te, float tau, float alpha, float dscale, const Tensor& lo,
                  const Tensor& d) { be->distill_loss(st, te, Distill::Soft, tau, alpha, dscale, lo, d, false); };
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  expect_error([&] { call(S, T, 1.f, 1.5f, 1.f, L, D); }, {"distill_loss", "alpha", "[0, 1]"});
  expect_error([&] { call(S, T, 1.f, -0.25f, 1.f, L, D); }, {"distill_loss", "alpha"});
  expect_error([&] { call(S, T, 1.f, nan, 1.f, L, D); }, {"distill_loss", "alpha"});
  expect_error([&] { call(S, T, 0.f, 0.5f, 1.f, L, D); }, {"distill_loss", "tau"});
  expect_error([&] { call(S, T, -1.f, 0.5f, 1.f, L, D); }, {"distill_loss", "tau"});
  expect_error([&] { call(S, T, inf, 0.5f, 1.f, L, D); }, {"distill_loss", "tau"});
  expect_error([&] { call(S, T, 1.f, 0.5f, nan, L, D); }, {"distill_loss", "dscale"});
  expect_error([&] { call(S, f32(t_wide, {2, 4}), 1.f, 0.5f, 1.f, L, D); }, {"distill_loss", "teacher", "shape"});
  expect_error([&] { call(S, f32(t, {3, 2}), 1.f, 0.5f, 1.f, L, D); }, {"distill_loss", "teacher"});
  expect_error([&] { call(S, f64(t64, {2, 3}), 1.f, 0.5f, 1.f, L, D); }, {"distill_loss", "teacher", "f64"});
  expect_error([&] { call(S, Tensor{}, 1.f, 0.5f, 1.f, L, D); }, {"distill_loss", "teacher is null"});
  expect_error([&] { call(f32(s, {6}), T, 1.f, 0.5f, 1.f, L, D); }, {"distill_loss", "student"});
  expect_error([&] { call(S, T, 1.f, 0.5f, 1.f, f32(losses3, {3}), D); }, {"distill_loss", "losses"});
  expect_error([&] { call(S, T, 1.f, 0.5f, 1.f, Tensor{}, D); }, {"distill_loss", "losses"});
  expect_error([&] { call(S, T, 1.f, 0.5f, 1.f, L, f32(dl5, {5})); }, {"distill_loss", "dlogits"});
  expect_error([&] { be->add(S, T, D, nan); }, {"add", "scale"});
}

// tokens with the distillation token: out[b] = [cls; dist; patches[b]] + pos, exact in f64; the
// backward's dcls and ddist accumulate the batch sums of rows 0 and 1; without dist the op is
// the plain cls one (T = Np + 1).
TEST_F(DistillOps, TokensWithDistillationToken) {
  const int64_t B = 2, Np = 3, D = 4;
  for (bool with_dist : {true, false}) {
    SCOPED_TRACE(with_dist ? "cls + dist" : "cls only");
    const int64_t P = with_dist ? 2 : 1, Tn = Np + P;
    Vec patches(B * Np * D), cls(D), dist(D), pos(Tn * D), out(B * Tn * D, -7.0);
    for (size_t i = 0; i < patches.size(); ++i) patches[i] = 0.5 * double(i);
    for (int64_t d = 0; d < D; ++d) {
      cls[d] = 100.0 + d;
      dist[d] = 200.0 + d;
    }
    for (size_t i = 0; i < pos.size(); ++i) pos[i] = 0.001 * double(i);
    be->tokens_forward(f64(patches, {B, Np, D}), f64(cls, {D}), with_dist ? f64(dist, {D}) : Tensor{},
                       f64(pos, {Tn, D}), f64(out, {B, Tn, D}));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < Tn; ++t)
        for (int64_t d = 0; d < D; ++d) {
          const double src = t == 0 ? cls[d] : t < P ? dist[d] : patches[(b * Np + t - P) * D + d];
          EXPECT_EQ(out[(b * Tn + t) * D + d], src + pos[t * D + d]) << b << " " << t << " " << d;
        }
    Vec dout(B * Tn * D), dpatches(B * Np * D, -1.0), dcls(D, 1.0), ddist(D, 2.0), dpos(Tn * D, 3.0);
    for (size_t i = 0; i < dout.size(); ++i) dout[i] = double(i % 7) - 3.0;
    be->tokens_backward(f64(dout, {B, Tn, D}), f64(dpatches, {B, Np, D}), f64(dcls, {D}),
                        with_dist ? f64(ddist, {D}) : Tensor{}, f64(dpos, {Tn, D}));
    for (int64_t d = 0; d < D; ++d) {
      auto col = [&](int64_t t) { return dout[(0 * Tn + t) * D + d] + dout[(1 * Tn + t) * D + d]; };
      EXPECT_EQ(dcls[d], 1.0 + col(0));
      EXPECT_EQ(ddist[d], with_dist ? 2.0 + col(1) : 2.0);
      for (int64_t t = 0; t < Tn; ++t) EXPECT_EQ(dpos[t * D + d], 3.0 + col(t));
      for (int64_t b = 0; b < B; ++b)
        for (int64_t p = 0; p < Np; ++p) EXPECT_EQ(dpatches[(b * Np + p) * D + d], dout[(b * Tn + p + P) * D + d]);
    }
  }
}

TEST_F(DistillOps, TokensRefuseDistWithoutCls) {
  Vec patches(2 * 3 * 4), dist(4), pos(4 * 4), out(2 * 4 * 4), ddist(4), dpatches(2 * 3 * 4);
  expect_error(
      [&] {
        be->tokens_forward(f64(patches, {2, 3, 4}), Tensor{}, f64(dist, {4}), f64(pos, {4, 4}), f64(out, {2, 4, 4}));
      },
      {"tokens_forward", "dist", "cls"});
  expect_error(
      [&] {
        be->tokens_backward(f64(out, {2, 4, 4}), f64(dpatches, {2, 3, 4}), Tensor{}, f64(ddist, {4}), f64(pos, {4, 4}));
      },
      {"tokens_backward", "ddist", "dcls"});
  // pos sized for one prefix token with two given
  expect_error(
      [&] {
        Vec cls(4), pos5(4 * 4), out5(2 * 5 * 4);
        be->tokens_forward(f64(patches, {2, 3, 4}), f64(cls, {4}), f64(dist, {4}), f64(pos5, {4, 4}),
                           f64(out5, {2, 5, 4}));
      },
      {"tokens_forward", "pos"});
}

// Pool::Token of the two prefix tokens: out[p, b] = x[b, p] (token-major), backward the
// transpose into the prefix rows and zeros elsewhere; one prefix token is the cls row [B, D].
TEST_F(DistillOps, PoolTokenOfTwoPrefixTokens) {
  const int64_t B = 3, T = 5, D = 2;
  Vec x(B * T * D);
  for (size_t i = 0; i < x.size(); ++i) x[i] = double(i);
  Vec out(2 * B * D, -1.0);
  be->pool_forward(f64(x, {B, T, D}), Pool::Token, 2, f64(out, {2 * B, D}));
  for (int64_t p = 0; p < 2; ++p)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t d = 0; d < D; ++d) EXPECT_EQ(out[(p * B + b) * D + d], x[(b * T + p) * D + d]);
  Vec dout(2 * B * D), dx(B * T * D, 99.0);
  for (size_t i = 0; i < dout.size(); ++i) dout[i] = 10.0 + double(i);
  be->pool_backward(f64(dout, {2 * B, D}), Pool::Token, 2, f64(dx, {B, T, D}));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < D; ++d)
        EXPECT_EQ(dx[(b * T + t) * D + d], t < 2 ? dout[(t * B + b) * D + d] : 0.0) << b << " " << t << " " << d;
  Vec out1(B * D);
  be->pool_forward(f64(x, {B, T, D}), Pool::Token, 1, f64(out1, {B, D}));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d < D; ++d) EXPECT_EQ(out1[b * D + d], x[b * T * D + d]);
}

TEST_F(DistillOps, PoolArgumentChecks) {
  Vec x(3 * 5 * 2), out(2 * 3 * 2), out1(3 * 2);
  expect_error(
      [&] {
        be->pool_forward(f64(x, {3, 5, 2}), Pool::Token, 0, f64(out1, {3, 2}));
      },
      {"pool_forward", "num_prefix"});
  expect_error(
      [&] {
        be->pool_forward(f64(x, {3, 5, 2}), Pool::Token, 2, f64(out1, {3, 2}));
      },
      {"pool_forward", "out"});
  expect_error(
      [&] {
        be->pool_backward(f64(out1, {3, 2}), Pool::Token, 2, f64(x, {3, 5, 2}));
      },
      {"pool_backward", "dout"});
  expect_error(
      [&] {
        be->pool_backward(f64(out, {6, 2}), Pool::Token, 0, f64(x, {3, 5, 2}));
      },
      {"pool_backward", "num_prefix"});
  expect_error(
      [&] {
        be->pool_forward(f64(x, {3, 5, 2}), Pool::Avg, 5, f64(out1, {3, 2}));
      },
      {"pool_forward", "num_prefix"});
}

// add with a scale: (a + b)·scale in fp32 on f32 tensors; scale 1 is the plain sum bit for bit.
TEST_F(DistillOps, AddWithScale) {
  std::vector<float> a = {1.f, 0.1f, -3.f, 1e-8f}, b = {2.f, 0.2f, 1.f, 1.f}, out(4), out1(4);
  be->add(f32(a, {4}), f32(b, {4}), f32(out, {4}), 0.5f);
  be->add(f32(a, {4}), f32(b, {4}), f32(out1, {4}));
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(out[i], (a[i] + b[i]) * 0.5f);
    const float sum = a[i] + b[i];
    EXPECT_EQ(std::memcmp(&out1[i], &sum, sizeof sum), 0);
  }
  be->add(f32(a, {4}), f32(b, {4}), f32(a, {4}), 1.f / 3.f);  // in place
  EXPECT_EQ(a[0], (1.f + 2.f) * (1.f / 3.f));
}

}  // namespace
}  // namespace vitcuda::test
