// Gradient checks in double precision: every Backend op with a backward, run through the "cpu"
// backend on F64 tensors, against central finite differences of a scalar loss
// L = sum(out * R) for a fixed random R; then the whole ViT (Model with DType::F64) against
// central differences of its mean cross-entropy loss, for every parameter tensor.
//
// Tolerances. A central difference with step h has truncation error h^2 |f'''| / 6 (~1e-12
// for these O(1) functions) and rounding error ~ eps * |terms of L| / h (~1e-10 here), so the
// finite difference itself is good to ~1e-9; 1e-6 relative (plus a 1e-9 absolute floor for
// entries whose gradient is ~0) leaves three orders of margin, while a real mistake (a missing
// term, a dropped mask, a wrong scale) shows up as an O(1) relative error.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "vitcuda/backend.h"
#include "vitcuda/model.h"

using namespace vitcuda;

namespace {

using Vec = std::vector<double>;

constexpr double kStep = 1e-6;  // finite-difference step
constexpr double kRtol = 1e-6;  // relative tolerance (see the header comment)
constexpr double kAtol = 1e-9;  // absolute floor: the rounding error of the difference quotient
const double kNaN = std::numeric_limits<double>::quiet_NaN();

Tensor f64(Vec& v, std::initializer_list<int64_t> shape) {
  Tensor t = Tensor::view(v.data(), shape, DType::F64);
  EXPECT_EQ(size_t(t.numel()), v.size()) << "test bug: shape does not match the buffer";
  return t;
}

Vec random_vec(size_t n, std::mt19937_64& rng, double lo = -1.0, double hi = 1.0) {
  std::uniform_real_distribution<double> u(lo, hi);
  Vec v(n);
  for (double& x : v) x = u(rng);
  return v;
}

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

Vec minus(const Vec& a, const Vec& b) {
  Vec r(a.size());
  for (size_t i = 0; i < a.size(); ++i) r[i] = a[i] - b[i];
  return r;
}

// Checks g = dL/dx against central differences of `loss` at every element of x (or at the
// given indices). x is restored afterwards.
void expect_grad(const std::string& what, Vec& x, const Vec& g, const std::function<double()>& loss,
                 std::vector<size_t> indices = {}) {
  ASSERT_EQ(x.size(), g.size()) << what;
  if (indices.empty())
    for (size_t i = 0; i < x.size(); ++i) indices.push_back(i);
  // The finite differences run single-threaded: thousands of tiny forwards spend most of
  // their time in OpenMP barriers on a shared machine otherwise. The forward ops give the
  // same values at any thread count (no thread-dependent reductions at these sizes).
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  int bad = 0;
  for (size_t i : indices) {
    const double x0 = x[i];
    x[i] = x0 + kStep;
    const double lp = loss();
    x[i] = x0 - kStep;
    const double lm = loss();
    x[i] = x0;
    const double fd = (lp - lm) / (2 * kStep);
    // Relative 1e-6 of the larger of the two, 1e-9 absolute: see the header comment.
    const double tol = kRtol * std::max(std::fabs(fd), std::fabs(g[i])) + kAtol;
    if (!(std::fabs(g[i] - fd) <= tol) && bad++ < 8)
      ADD_FAILURE() << what << "[" << i << "]: analytic " << g[i] << " vs finite difference " << fd << " (diff "
                    << g[i] - fd << ", tol " << tol << ")";
  }
  omp_set_num_threads(threads);
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << indices.size() << " entries differ";
}

// Accumulating gradients: the result minus the pre-filled value must equal the gradient
// computed into a zeroed buffer. Both are sums of the same terms in the same order plus one
// more addition, so they agree to rounding of the pre-filled value (1e-12 absolute).
void expect_accumulated(const std::string& what, const Vec& got, const Vec& prefill, const Vec& fresh) {
  ASSERT_EQ(got.size(), fresh.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i] - prefill[i], fresh[i], 1e-12) << what << "[" << i << "] does not accumulate";
}

void expect_all_finite(const std::string& what, const Vec& v) {
  for (size_t i = 0; i < v.size(); ++i)
    ASSERT_TRUE(std::isfinite(v[i])) << what << "[" << i << "] was not overwritten (pre-filled with NaN)";
}

class GradCheck : public ::testing::Test {
 protected:
  std::unique_ptr<Backend> be = make_backend("cpu");
  std::mt19937_64 rng{12345};
};

// ---- linear --------------------------------------------------------------------------------
struct LinearCase {
  Act act;
  bool bias;
};

class GradCheckLinear : public GradCheck, public ::testing::WithParamInterface<LinearCase> {};

std::string linear_case_name(const ::testing::TestParamInfo<LinearCase>& info) {
  static const char* const names[] = {"None", "GeluErf", "GeluTanh", "Tanh"};
  return std::string(names[int(info.param.act)]) + (info.param.bias ? "Bias" : "NoBias");
}

TEST_P(GradCheckLinear, MatchesFiniteDifferences) {
  const Act act = GetParam().act;
  const bool has_bias = GetParam().bias;
  const int64_t R = 6, K = 5, N = 4;
  // Scale 1.5 puts the pre-activations across roughly [-3, 3], the curved part of GELU/tanh.
  Vec x = random_vec(R * K, rng, -1.5, 1.5), w = random_vec(N * K, rng, -1.5, 1.5);
  Vec b = has_bias ? random_vec(N, rng) : Vec{};
  const Vec Rw = random_vec(R * N, rng);
  Vec pre(R * N), y(R * N);
  auto B = [&]() { return has_bias ? f64(b, {N}) : Tensor{}; };
  auto Pre = [&]() { return act == Act::None ? Tensor{} : f64(pre, {R, N}); };
  auto forward = [&]() {
    be->linear_forward(f64(x, {R, K}), f64(w, {N, K}), B(), act, Pre(), f64(y, {R, N}));
    return dot(y, Rw);
  };
  forward();
  const Vec pre0 = pre;

  // Backward: dx overwrites (pre-filled with NaN), dw and db accumulate onto pre-filled values.
  Vec dy = Rw, dx(R * K, kNaN);
  const Vec dw0 = random_vec(N * K, rng), db0 = random_vec(N, rng);
  Vec dw = dw0, db = db0;
  be->linear_backward(f64(dy, {R, N}), f64(x, {R, K}), f64(w, {N, K}), act, Pre(), f64(dx, {R, K}), f64(dw, {N, K}),
                      has_bias ? f64(db, {N}) : Tensor{});
  expect_all_finite("dx", dx);
  const Vec gw = minus(dw, dw0), gb = minus(db, db0);
  expect_grad("dx", x, dx, forward);
  expect_grad("dw", w, gw, forward);
  if (has_bias) expect_grad("db", b, gb, forward);

  // Accumulation is exact: a second backward into zeroed buffers gives the same increments.
  Vec dy2 = Rw, dx2(R * K), dwz(N * K, 0.0), dbz(N, 0.0);
  forward();
  be->linear_backward(f64(dy2, {R, N}), f64(x, {R, K}), f64(w, {N, K}), act, Pre(), f64(dx2, {R, K}), f64(dwz, {N, K}),
                      has_bias ? f64(dbz, {N}) : Tensor{});
  expect_accumulated("dw", dw, dw0, dwz);
  if (has_bias) expect_accumulated("db", db, db0, dbz);

  // With an activation, dy is overwritten with dL/dpre = R * act'(pre). act' is measured by
  // central differences of the op itself: a [R*N, 1] x [1, 1] identity linear computes act(x).
  if (act != Act::None) {
    Vec one{1.0}, in(R * N), out(R * N), scratch(R * N);
    auto act_of = [&](double shift) {
      for (size_t i = 0; i < in.size(); ++i) in[i] = pre0[i] + shift;
      be->linear_forward(f64(in, {R * N, 1}), f64(one, {1, 1}), Tensor{}, act, f64(scratch, {R * N, 1}),
                         f64(out, {R * N, 1}));
      return out;
    };
    const Vec up = act_of(kStep), down = act_of(-kStep);
    for (size_t i = 0; i < dy.size(); ++i) {
      const double expect = Rw[i] * (up[i] - down[i]) / (2 * kStep);
      // Same finite-difference accuracy argument as expect_grad.
      EXPECT_NEAR(dy[i], expect, kRtol * std::fabs(expect) + kAtol) << "d(pre)[" << i << "]";
    }
  } else {
    EXPECT_EQ(dy, Rw) << "without an activation dy is left alone";
  }

  // No dx wanted (the patch embedding): dw and db still right.
  Vec dy3 = Rw, dw3(N * K, 0.0), db3(N, 0.0);
  forward();
  be->linear_backward(f64(dy3, {R, N}), f64(x, {R, K}), f64(w, {N, K}), act, Pre(), Tensor{}, f64(dw3, {N, K}),
                      has_bias ? f64(db3, {N}) : Tensor{});
  for (size_t i = 0; i < dw3.size(); ++i) EXPECT_NEAR(dw3[i], dwz[i], 1e-12);
}

INSTANTIATE_TEST_SUITE_P(GradCheck, GradCheckLinear,
                         ::testing::Values(LinearCase{Act::None, true}, LinearCase{Act::None, false},
                                           LinearCase{Act::GeluErf, true}, LinearCase{Act::GeluErf, false},
                                           LinearCase{Act::GeluTanh, true}, LinearCase{Act::GeluTanh, false},
                                           LinearCase{Act::Tanh, true}, LinearCase{Act::Tanh, false}),
                         linear_case_name);

// Dropout fused into the linear (the fc1 / head-MLP form): y = dropout(act(x·wᵀ + b)); backward
// with the same spec regenerates the mask. Finite differences of that forward check dx, dw, db.
TEST_F(GradCheck, LinearWithFusedDropout) {
  const int64_t R = 6, K = 5, N = 8;  // 48 outputs: at p = 0.5 both kept and dropped ones
  const DropoutSpec spec{0.5f, 11, 12};
  for (Act act : {Act::None, Act::GeluErf}) {
    SCOPED_TRACE(act_name(act));
    Vec x = random_vec(R * K, rng, -1.5, 1.5), w = random_vec(N * K, rng, -1.5, 1.5), b = random_vec(N, rng);
    const Vec Rw = random_vec(R * N, rng);
    Vec pre(R * N), y(R * N);
    auto Pre = [&]() { return act == Act::None ? Tensor{} : f64(pre, {R, N}); };
    auto forward = [&]() {
      be->linear_forward(f64(x, {R, K}), f64(w, {N, K}), f64(b, {N}), act, Pre(), f64(y, {R, N}), spec);
      return dot(y, Rw);
    };
    forward();
    int dropped = 0;
    for (double v : y) dropped += v == 0.0;
    EXPECT_GT(dropped, 0);
    EXPECT_LT(dropped, R * N);
    Vec dy = Rw, dx(R * K, kNaN), dw(N * K, 0.0), db(N, 0.0);
    be->linear_backward(f64(dy, {R, N}), f64(x, {R, K}), f64(w, {N, K}), act, Pre(), f64(dx, {R, K}), f64(dw, {N, K}),
                        f64(db, {N}), spec);
    expect_all_finite("dx", dx);
    expect_grad("dx", x, dx, forward);
    expect_grad("dw", w, dw, forward);
    expect_grad("db", b, db, forward);
  }
}

// ---- tokens --------------------------------------------------------------------------------
// prefix: 0 (no cls), 1 (cls), 2 (cls + DeiT's distillation token).
void check_tokens(Backend& be, std::mt19937_64& rng, int prefix) {
  SCOPED_TRACE(std::to_string(prefix) + " prefix tokens");
  const bool with_cls = prefix >= 1, with_dist = prefix == 2;
  const int64_t B = 3, Np = 4, D = 5, T = Np + prefix;
  Vec patches = random_vec(B * Np * D, rng), cls = random_vec(D, rng), dist = random_vec(D, rng),
      pos = random_vec(T * D, rng);
  const Vec Rw = random_vec(B * T * D, rng);
  Vec out(B * T * D);
  auto forward = [&]() {
    be.tokens_forward(f64(patches, {B, Np, D}), with_cls ? f64(cls, {1, 1, D}) : Tensor{},
                      with_dist ? f64(dist, {1, 1, D}) : Tensor{}, f64(pos, {1, T, D}), f64(out, {B, T, D}));
    return dot(out, Rw);
  };
  forward();
  Vec dout = Rw, dpatches(B * Np * D, kNaN);
  const Vec dcls0 = random_vec(D, rng), ddist0 = random_vec(D, rng), dpos0 = random_vec(T * D, rng);
  Vec dcls = dcls0, ddist = ddist0, dpos = dpos0;
  be.tokens_backward(f64(dout, {B, T, D}), f64(dpatches, {B, Np, D}), with_cls ? f64(dcls, {1, 1, D}) : Tensor{},
                     with_dist ? f64(ddist, {1, 1, D}) : Tensor{}, f64(dpos, {1, T, D}));
  expect_all_finite("dpatches", dpatches);
  expect_grad("dpatches", patches, dpatches, forward);
  expect_grad("dpos", pos, minus(dpos, dpos0), forward);
  if (with_cls) {
    expect_grad("dcls", cls, minus(dcls, dcls0), forward);
  } else {
    EXPECT_EQ(dcls, dcls0) << "no cls: dcls untouched";
  }
  if (with_dist) {
    expect_grad("ddist", dist, minus(ddist, ddist0), forward);
  } else {
    EXPECT_EQ(ddist, ddist0) << "no distillation token: ddist untouched";
  }
}

TEST_F(GradCheck, TokensWithCls) { check_tokens(*be, rng, 1); }
TEST_F(GradCheck, TokensWithoutCls) { check_tokens(*be, rng, 0); }
TEST_F(GradCheck, TokensWithClsAndDistillationToken) { check_tokens(*be, rng, 2); }

// ---- layernorm -----------------------------------------------------------------------------
TEST_F(GradCheck, LayerNorm) {
  const int64_t R = 5, C = 7;
  const float eps = 1e-6f;
  Vec x = random_vec(R * C, rng, -2, 2), gamma = random_vec(C, rng, 0.5, 1.5), beta = random_vec(C, rng);
  const Vec Rw = random_vec(R * C, rng);
  Vec y(R * C), mean(R), rstd(R);
  auto forward = [&]() {
    be->layernorm_forward(f64(x, {R, C}), Tensor{}, Tensor{}, f64(gamma, {C}), f64(beta, {C}), eps, f64(y, {R, C}),
                          f64(mean, {R}), f64(rstd, {R}));
    return dot(y, Rw);
  };
  forward();
  // dx accumulates (into the residual-stream gradient), as do dgamma and dbeta.
  const Vec dx0 = random_vec(R * C, rng), dg0 = random_vec(C, rng), db0 = random_vec(C, rng);
  Vec dy = Rw, dx = dx0, dg = dg0, db = db0;
  be->layernorm_backward(f64(dy, {R, C}), f64(x, {R, C}), f64(gamma, {C}), f64(mean, {R}), f64(rstd, {R}),
                         f64(dx, {R, C}), f64(dg, {C}), f64(db, {C}));
  EXPECT_EQ(dy, Rw) << "dy is an input";
  expect_grad("dx", x, minus(dx, dx0), forward);
  expect_grad("dgamma", gamma, minus(dg, dg0), forward);
  expect_grad("dbeta", beta, minus(db, db0), forward);

  // Accumulation vs a zeroed buffer.
  forward();
  Vec dxz(R * C, 0.0), dgz(C, 0.0), dbz(C, 0.0);
  be->layernorm_backward(f64(dy, {R, C}), f64(x, {R, C}), f64(gamma, {C}), f64(mean, {R}), f64(rstd, {R}),
                         f64(dxz, {R, C}), f64(dgz, {C}), f64(dbz, {C}));
  expect_accumulated("dx", dx, dx0, dxz);
  expect_accumulated("dgamma", dg, dg0, dgz);
  expect_accumulated("dbeta", db, db0, dbz);
}

// With the fused residual: s = x + residual goes to sum_out and is normalised. The model uses
// s downstream too (the residual stream), so the loss reads both outputs:
// L = sum(y * R1) + sum(s * R2). Then dL/dx = dL/dresidual = R2 + LN-backward, which is
// exactly layernorm_backward accumulating onto a dx pre-filled with R2.
TEST_F(GradCheck, LayerNormFusedResidual) {
  const int64_t R = 4, C = 6;
  const float eps = 1e-6f;
  Vec x = random_vec(R * C, rng, -2, 2), res = random_vec(R * C, rng, -2, 2);
  Vec gamma = random_vec(C, rng, 0.5, 1.5), beta = random_vec(C, rng);
  const Vec R1 = random_vec(R * C, rng), R2 = random_vec(R * C, rng);
  Vec s(R * C), y(R * C), mean(R), rstd(R);
  auto forward = [&]() {
    be->layernorm_forward(f64(x, {R, C}), f64(res, {R, C}), f64(s, {R, C}), f64(gamma, {C}), f64(beta, {C}), eps,
                          f64(y, {R, C}), f64(mean, {R}), f64(rstd, {R}));
    return dot(y, R1) + dot(s, R2);
  };
  forward();
  for (size_t i = 0; i < s.size(); ++i) ASSERT_EQ(s[i], x[i] + res[i]) << "sum_out";
  Vec dy = R1, ds = R2, dg(C, 0.0), db(C, 0.0);
  be->layernorm_backward(f64(dy, {R, C}), f64(s, {R, C}), f64(gamma, {C}), f64(mean, {R}), f64(rstd, {R}),
                         f64(ds, {R, C}), f64(dg, {C}), f64(db, {C}));
  expect_grad("d x", x, ds, forward);
  expect_grad("d residual", res, ds, forward);
  expect_grad("dgamma", gamma, dg, forward);
  expect_grad("dbeta", beta, db, forward);
}

// ---- attention on the packed qkv ------------------------------------------------------------
// The packed layout is timm's: qkv(x).reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4) gives q, k, v;
// the attention output, computed here by hand from that indexing, matches.
TEST_F(GradCheck, PackedQkvLayoutIsTimms) {
  const int64_t B = 2, N = 3, H = 2, d = 2, A = H * d;
  const double scale = 0.7;
  Vec qkv = random_vec(B * N * 3 * A, rng), out(B * N * A), lse(B * H * N);
  be->attention_forward(f64(qkv, {B, N, 3 * A}), int(H), float(scale), DropoutSpec{}, f64(out, {B, N, A}),
                        f64(lse, {B, H, N}));
  auto at = [&](int64_t b, int64_t t, int s, int64_t h, int64_t c) {
    return qkv[(((b * N + t) * 3 + s) * H + h) * d + c];
  };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < N; ++i) {
        std::vector<double> p(N);
        double m = -1e300, sum = 0;
        for (int64_t j = 0; j < N; ++j) {
          p[j] = 0;
          for (int64_t c = 0; c < d; ++c) p[j] += at(b, i, 0, h, c) * at(b, j, 1, h, c) * double(float(scale));
          m = std::max(m, p[j]);
        }
        for (int64_t j = 0; j < N; ++j) sum += (p[j] = std::exp(p[j] - m));
        for (int64_t c = 0; c < d; ++c) {
          double o = 0;
          for (int64_t j = 0; j < N; ++j) o += p[j] / sum * at(b, j, 2, h, c);
          EXPECT_NEAR(out[((b * N + i) * H + h) * d + c], o, 1e-12);  // out [B, N, H, d]
        }
      }
}

// ---- attention -----------------------------------------------------------------------------
struct AttnCase {
  int64_t N, d;
  float p;
};

class GradCheckAttention : public GradCheck, public ::testing::WithParamInterface<AttnCase> {};

TEST_P(GradCheckAttention, MatchesFiniteDifferences) {
  const int64_t B = 2, H = 2, N = GetParam().N, d = GetParam().d;
  const float scale = 1.f / std::sqrt(float(d));
  // The mask is a pure function of the DropoutSpec, so with a fixed spec the op is a smooth
  // function of q, k, v and has an ordinary gradient.
  const DropoutSpec drop{GetParam().p, 777, 31};
  const int64_t A = H * d;
  // The packed projection [B, N, 3, H, d]: q and k in [-1.5, 1.5], v in the default range.
  Vec qkv(B * N * 3 * A);
  {
    const Vec qk = random_vec(2 * B * N * A, rng, -1.5, 1.5), v = random_vec(B * N * A, rng);
    size_t e = 0, f = 0;
    for (size_t r = 0; r < size_t(B * N); ++r)
      for (int s = 0; s < 3; ++s)
        for (int64_t c = 0; c < A; ++c) qkv[(r * 3 + s) * A + c] = s < 2 ? qk[e++] : v[f++];
  }
  const Vec Rw = random_vec(B * N * H * d, rng);
  Vec out(B * N * H * d), lse(B * H * N);
  auto forward = [&]() {
    be->attention_forward(f64(qkv, {B, N, 3 * A}), int(H), scale, drop, f64(out, {B, N, H * d}), f64(lse, {B, H, N}));
    return dot(out, Rw);
  };
  forward();
  // lse is the log-sum-exp of the scaled scores (checked for head 0 of sample 0, row 0).
  {
    double m = -1e300, s = 0;
    std::vector<double> sc(N);
    for (int64_t j = 0; j < N; ++j) {
      sc[j] = 0;
      for (int64_t c = 0; c < d; ++c) sc[j] += qkv[c] * qkv[j * 3 * A + A + c] * double(scale);  // q_0 · k_j
      m = std::max(m, sc[j]);
    }
    for (int64_t j = 0; j < N; ++j) s += std::exp(sc[j] - m);
    EXPECT_NEAR(lse[0], m + std::log(s), 1e-12);
  }
  Vec dout = Rw, dqkv(qkv.size(), kNaN);  // NaN: every element must be overwritten
  be->attention_backward(f64(dout, {B, N, H * d}), f64(qkv, {B, N, 3 * A}), f64(out, {B, N, H * d}),
                         f64(lse, {B, H, N}), int(H), scale, drop, f64(dqkv, {B, N, 3 * A}));
  expect_all_finite("dqkv", dqkv);
  expect_grad("dqkv", qkv, dqkv, forward);

  if (drop.active()) {  // the mask really changes the output
    Vec out0(out.size()), lse0(lse.size());
    be->attention_forward(f64(qkv, {B, N, 3 * A}), int(H), scale, DropoutSpec{}, f64(out0, {B, N, H * d}),
                          f64(lse0, {B, H, N}));
    EXPECT_NE(out0, out);
    EXPECT_EQ(lse0, lse) << "lse is taken before dropout";
  }
}

INSTANTIATE_TEST_SUITE_P(GradCheck, GradCheckAttention,
                         ::testing::Values(AttnCase{5, 3, 0.f}, AttnCase{7, 8, 0.f}, AttnCase{5, 3, 0.3f},
                                           AttnCase{7, 8, 0.25f}, AttnCase{1, 4, 0.f}),
                         [](const ::testing::TestParamInfo<AttnCase>& info) {
                           return "N" + std::to_string(info.param.N) + "_d" + std::to_string(info.param.d) +
                                  (info.param.p > 0 ? "_dropout" : "");
                         });

// ---- dropout and drop-path -----------------------------------------------------------------
TEST_F(GradCheck, Dropout) {
  const int64_t n = 200;
  const DropoutSpec spec{0.4f, 99, 5};
  Vec x = random_vec(n, rng), y(n);
  const Vec Rw = random_vec(n, rng);
  auto forward = [&]() {
    be->dropout(f64(x, {n}), f64(y, {n}), spec);
    return dot(y, Rw);
  };
  forward();
  // Kept elements are scaled by 1 / (1 - p) with p the float in the spec (0.4f, not 0.4).
  const double keep_scale = 1.0 / (1.0 - double(spec.p));
  int dropped = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (y[i] == 0)
      ++dropped;
    else
      EXPECT_NEAR(y[i], x[i] * keep_scale, 1e-15);
  }
  EXPECT_GT(dropped, 40);  // Binomial(200, 0.4): mean 80, sd 7
  EXPECT_LT(dropped, 120);
  // The backward is the same call on the gradient.
  Vec dy = Rw, dx(n, kNaN);
  be->dropout(f64(dy, {n}), f64(dx, {n}), spec);
  expect_grad("dx", x, dx, forward);
  // In place (y aliases x) gives the same values.
  forward();  // y at the unperturbed x again
  Vec inplace = x;
  be->dropout(f64(inplace, {n}), f64(inplace, {n}), spec);
  EXPECT_EQ(inplace, y);
  // p == 0 copies.
  Vec copy(n);
  be->dropout(f64(x, {n}), f64(copy, {n}), DropoutSpec{});
  EXPECT_EQ(copy, x);
}

TEST_F(GradCheck, DropPath) {
  const int64_t B = 16, S = 3, C = 4;
  const DropoutSpec spec{0.5f, 4242, 17};
  Vec x = random_vec(B * S * C, rng), y(x.size());
  const Vec Rw = random_vec(x.size(), rng);
  auto forward = [&]() {
    be->drop_path(f64(x, {B, S, C}), f64(y, {B, S, C}), spec);
    return dot(y, Rw);
  };
  forward();
  const double keep_scale = 1.0 / (1.0 - double(spec.p));
  int dropped = 0;
  for (int64_t b = 0; b < B; ++b) {  // one decision per sample
    const bool drop = y[b * S * C] == 0;
    dropped += drop;
    for (int64_t i = 0; i < S * C; ++i)
      EXPECT_NEAR(y[b * S * C + i], drop ? 0.0 : x[b * S * C + i] * keep_scale, 1e-15) << "sample " << b;
  }
  EXPECT_GT(dropped, 0);
  EXPECT_LT(dropped, B);
  Vec dy = Rw, dx(x.size(), kNaN);
  be->drop_path(f64(dy, {B, S, C}), f64(dx, {B, S, C}), spec);
  expect_grad("dx", x, dx, forward);
}

// ---- pooling -------------------------------------------------------------------------------
// Token: the num_prefix prefix rows, token-major (out[p, b] = x[b, p]); Avg: the mean over the
// tokens after the first num_prefix (timm's global_pool='avg' skips the cls token).
void check_pool(Backend& be, std::mt19937_64& rng, Pool pool, int num_prefix) {
  SCOPED_TRACE(std::string(pool_name(pool)) + " num_prefix " + std::to_string(num_prefix));
  const int64_t B = 3, T = 5, D = 4, P = pool == Pool::Token ? num_prefix : 1;
  Vec x = random_vec(B * T * D, rng), out(P * B * D);
  const Vec Rw = random_vec(P * B * D, rng);
  auto forward = [&]() {
    be.pool_forward(f64(x, {B, T, D}), pool, num_prefix, f64(out, {P * B, D}));
    return dot(out, Rw);
  };
  forward();
  for (int64_t p = 0; p < P; ++p)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < D; ++c) {
        double ref = 0;
        if (pool == Pool::Token) {
          ref = x[(b * T + p) * D + c];
        } else {
          for (int64_t t = num_prefix; t < T; ++t) ref += x[(b * T + t) * D + c];
          ref /= double(T - num_prefix);
        }
        EXPECT_NEAR(out[(p * B + b) * D + c], ref, 1e-15) << "pooled[" << p << ", " << b << ", " << c << "]";
      }
  Vec dout = Rw, dx(x.size(), kNaN);
  be.pool_backward(f64(dout, {P * B, D}), pool, num_prefix, f64(dx, {B, T, D}));
  expect_all_finite("dx", dx);
  expect_grad("dx", x, dx, forward);
}

TEST_F(GradCheck, PoolToken) { check_pool(*be, rng, Pool::Token, 1); }
TEST_F(GradCheck, PoolTokenClsAndDistillationToken) { check_pool(*be, rng, Pool::Token, 2); }
TEST_F(GradCheck, PoolAvg) { check_pool(*be, rng, Pool::Avg, 0); }
TEST_F(GradCheck, PoolAvgSkipsClsToken) { check_pool(*be, rng, Pool::Avg, 1); }

// ---- softmax cross-entropy ---------------------------------------------------------------
// The op reports per-sample losses in f32, too coarse for a 1e-6 finite difference, so the
// loss is evaluated here in double from timm's LabelSmoothingCrossEntropy formula:
// (1 - s) * (-log p_y) + s * mean_j(-log p_j). The op's f32 losses are checked against it.
double xent(const double* z, int32_t y, int64_t C, double s) {
  double m = z[0];
  for (int64_t j = 1; j < C; ++j) m = std::max(m, z[j]);
  double sum = 0, sum_z = 0;
  for (int64_t j = 0; j < C; ++j) sum += std::exp(z[j] - m), sum_z += z[j];
  const double lse = m + std::log(sum);
  return (1 - s) * (lse - z[y]) + s * (lse - sum_z / C);
}

double mean_xent(const Vec& logits, const std::vector<int32_t>& labels, int64_t C, double s) {
  double total = 0;
  for (size_t b = 0; b < labels.size(); ++b) total += xent(logits.data() + b * C, labels[b], C, s);
  return total / double(labels.size());
}

void check_xent(Backend& be, std::mt19937_64& rng, float smoothing) {
  SCOPED_TRACE("smoothing " + std::to_string(smoothing));
  const int64_t B = 4, C = 6;
  Vec z = random_vec(B * C, rng, -3, 3);
  std::vector<int32_t> labels = {0, 5, 2, 2};
  std::vector<float> losses(B);
  std::vector<int32_t> hits(B);
  Vec dz(B * C, kNaN);
  be.softmax_xent(f64(z, {B, C}), Tensor::view(labels.data(), {B}, DType::I32), smoothing, 1.f / B,
                  Tensor::view(losses.data(), {B}, DType::F32), f64(dz, {B, C}),
                  Tensor::view(hits.data(), {B}, DType::I32));
  for (int64_t b = 0; b < B; ++b) {
    const double ref = xent(z.data() + b * C, labels[b], C, smoothing);
    // f32 output: rounding of the stored value, 2^-24 relative.
    EXPECT_NEAR(losses[b], ref, 1e-6 * std::fabs(ref)) << "loss of sample " << b;
    int rank = 0;
    for (int64_t j = 0; j < C; ++j) rank += z[b * C + j] > z[b * C + labels[b]];
    EXPECT_EQ(hits[b], (rank == 0 ? 1 : 0) | (rank < 5 ? 2 : 0)) << "hits of sample " << b;
  }
  // dscale = 1/B makes dlogits the gradient of the mean loss.
  expect_grad("dlogits", z, dz, [&]() { return mean_xent(z, labels, C, smoothing); });

  // Without dlogits: losses only.
  std::vector<float> losses2(B);
  be.softmax_xent(f64(z, {B, C}), Tensor::view(labels.data(), {B}, DType::I32), smoothing, 1.f / B,
                  Tensor::view(losses2.data(), {B}, DType::F32), Tensor{}, Tensor::view(hits.data(), {B}, DType::I32));
  EXPECT_EQ(losses2, losses);
}

TEST_F(GradCheck, SoftmaxXent) { check_xent(*be, rng, 0.f); }
TEST_F(GradCheck, SoftmaxXentLabelSmoothing) { check_xent(*be, rng, 0.1f); }

// ---- the whole model -----------------------------------------------------------------------
ViTConfig tiny_config() {
  ViTConfig c;
  c.name = "gradcheck";
  c.img_size = 8;
  c.patch_size = 4;
  c.in_chans = 1;
  c.embed_dim = 8;
  c.depth = 2;
  c.num_heads = 2;
  c.mlp_hidden = 16;
  c.num_classes = 3;
  c.pixel_mean = {0.45f, 0.f, 0.f, 0.f};
  c.pixel_std = {0.3f, 1.f, 1.f, 1.f};
  return c;
}

struct ModelCheck {
  bool train = false;
  float smoothing = 0.f;
  int batch = 3;
  int spare = 0;  // max_batch - batch: a partial batch (the last batch of an epoch)
  // Distilled training: the DistillTarget loss against fixed random teacher logits.
  bool distill = false;
  Distill kind = Distill::Hard;
  float alpha = 0.5f, tau = 1.f;
};

// The distillation term of one sample in double, from the formulas of DeiT / timm's
// DistillationLoss (written here independently of the op): hard: CE(s, argmax t) (first
// maximum); soft: τ² Σ q (log q − log p), p = softmax(s/τ), q = softmax(t/τ).
double log_softmax_at(const double* z, int64_t C, double tau, int64_t j) {
  double m = z[0] / tau;
  for (int64_t k = 1; k < C; ++k) m = std::max(m, z[k] / tau);
  double sum = 0;
  for (int64_t k = 0; k < C; ++k) sum += std::exp(z[k] / tau - m);
  return z[j] / tau - m - std::log(sum);
}
double distill_term(const double* s, const double* t, int64_t C, Distill kind, double tau) {
  if (kind == Distill::Hard) {
    int64_t y = 0;
    for (int64_t j = 1; j < C; ++j)
      if (t[j] > t[y]) y = j;
    return -log_softmax_at(s, C, 1.0, y);
  }
  double kl = 0;
  for (int64_t j = 0; j < C; ++j) {
    const double lq = log_softmax_at(t, C, tau, j);
    kl += std::exp(lq) * (lq - log_softmax_at(s, C, tau, j));
  }
  return tau * tau * kl;
}

// Gradient check of Model::backward. The loss is recomputed in double from the F64 logits
// that forward() returns (Model::loss reports the mean in f32, see check_xent); forward
// is re-run with the same (seed, step), so every dropout / drop-path mask is the same.
void check_model(const ViTConfig& cfg, const ModelCheck& mc) {
  auto be = make_backend("cpu");
  const int B = mc.batch;
  Model model(cfg, *be, B + mc.spare, DType::F64);
  model.init(7);
  // timm's init (tiny weights, zero biases, unit norms) leaves the network almost linear
  // and many gradients ~0. Move every parameter to a generic point: weights and biases
  // uniform in [-0.4, 0.4], norm weights in [0.8, 1.2]. The F64 arena is written directly
  // (the f32 master is not used again).
  std::mt19937_64 rng(2024);
  std::uniform_real_distribution<double> u(-1, 1);
  for (const ParamSpec& s : model.params()) {
    double* p = model.param(s.name).ptr<double>();
    const bool norm_weight = s.name.find("norm") != std::string::npos && s.name.find(".weight") != std::string::npos;
    for (int64_t i = 0; i < s.numel; ++i) p[i] = norm_weight ? 1.0 + 0.2 * u(rng) : 0.4 * u(rng);
  }
  std::vector<uint8_t> pixels(size_t(B) * cfg.in_chans * cfg.img_size * cfg.img_size);
  for (uint8_t& px : pixels) px = uint8_t(rng() & 0xFF);
  const Tensor images = Tensor::view(pixels.data(), {B, cfg.in_chans, cfg.img_size, cfg.img_size}, DType::U8);
  std::vector<int32_t> labels(B);
  for (int b = 0; b < B; ++b) labels[b] = b % cfg.num_classes;
  const uint64_t seed = 99, step = 3;

  // The teacher's logits (distilled training): fixed, with a tie in sample 0's maximum.
  const int64_t C = cfg.num_classes;
  Vec teacher = random_vec(size_t(B * C), rng, -2, 2);
  teacher[1] = teacher[0] = 3.0;
  DistillTarget target{mc.kind, mc.alpha, mc.tau, f64(teacher, {B, C})};
  const DistillTarget* distill = mc.distill ? &target : nullptr;
  auto host = [](const Tensor& t) { return Vec(t.ptr<double>(), t.ptr<double>() + t.numel()); };

  auto loss_of = [&]() {
    const Tensor logits = model.forward(images, mc.train, seed, step);
    EXPECT_EQ(logits.dtype(), DType::F64);
    if (!mc.distill) return mean_xent(host(logits), labels, C, mc.smoothing);
    // (1 − α)·CE(cls head) + α·term(distillation head): head / head_dist on a distilled model,
    // both on the one head otherwise.
    const Vec cls = host(cfg.distilled ? model.activation("head.logits") : logits);
    const Vec kd = host(cfg.distilled ? model.activation("head_dist.logits") : logits);
    double term = 0;
    for (int b = 0; b < B; ++b) term += distill_term(kd.data() + b * C, teacher.data() + b * C, C, mc.kind, mc.tau);
    return (1 - double(mc.alpha)) * mean_xent(cls, labels, C, mc.smoothing) + double(mc.alpha) * term / B;
  };

  const double L = loss_of();
  if (cfg.distilled) {  // the model's logits are the mean of its two heads'
    const Vec z = host(model.activation("logits")), h = host(model.activation("head.logits")),
              hd = host(model.activation("head_dist.logits"));
    for (size_t i = 0; i < z.size(); ++i) ASSERT_NEAR(z[i], 0.5 * (h[i] + hd[i]), 1e-15 * (1 + std::fabs(z[i])));
  }
  const StepStats st = model.loss(labels.data(), mc.smoothing, true, distill);
  EXPECT_NEAR(st.loss, L, 1e-6 * std::fabs(L)) << "Model::loss (f32 per-sample losses) vs the double loss";
  model.zero_grad();
  model.backward();

  if (mc.train) {  // the masks must do something, else this is not a test of them
    const Tensor logits = model.forward(images, false);
    EXPECT_GT(std::fabs(mean_xent(host(logits), labels, C, mc.smoothing) - L), 1e-6)
        << "train-mode masks left the loss unchanged";
  }

  // Grads for every parameter tensor, copied before any further forward.
  std::vector<std::pair<std::string, Vec>> grads;
  for (const ParamSpec& s : model.params()) {
    const double* g = model.grad(s.name).ptr<double>();
    grads.emplace_back(s.name, Vec(g, g + s.numel));
  }
  int checked = 0;
  for (const auto& [name, g] : grads) {
    const ParamSpec& s = model.param_spec(name);
    // 4 entries per tensor: the first, the last and two in between (fixed by the name).
    std::vector<size_t> idx = {0, size_t(s.numel - 1)};
    std::mt19937_64 pick(std::hash<std::string>{}(name));
    for (int r = 0; r < 2; ++r) idx.push_back(size_t(pick() % uint64_t(s.numel)));
    double* p = model.param(name).ptr<double>();
    Vec view(p, p + s.numel);  // expect_grad perturbs `view`; mirror it into the arena
    auto loss_view = [&]() {
      std::copy(view.begin(), view.end(), p);
      return loss_of();
    };
    expect_grad(name, view, g, loss_view, idx);
    std::copy(view.begin(), view.end(), p);
    checked += int(idx.size());
  }
  EXPECT_GT(checked, 0);

  // Model::backward accumulates: a second backward without zero_grad doubles every gradient.
  loss_of();
  model.loss(labels.data(), mc.smoothing, true, distill);
  model.backward();
  for (const auto& [name, g] : grads) {
    const double* g2 = model.grad(name).ptr<double>();
    for (size_t i = 0; i < g.size(); ++i) ASSERT_NEAR(g2[i], 2 * g[i], 1e-12 * (1 + std::fabs(g[i]))) << name;
  }
}

TEST(GradCheckModel, ClsTokenPool) {
  ViTConfig c = tiny_config();
  check_model(c, {});
}

TEST(GradCheckModel, ClsTokenPoolLabelSmoothing) {
  ViTConfig c = tiny_config();
  check_model(c, {false, 0.1f, 3});
}

// A batch smaller than the arenas' max_batch: every activation view covers the first B rows.
TEST(GradCheckModel, PartialBatch) {
  ViTConfig c = tiny_config();
  c.drop_rate = 0.1f;
  c.drop_path_rate = 0.3f;
  check_model(c, {true, 0.f, 3, 2});
}

TEST(GradCheckModel, MeanPool) {
  ViTConfig c = tiny_config();
  c.class_token = false;
  c.pool = Pool::Avg;
  check_model(c, {});
}

// timm's global_pool='avg' with a class token: the cls row is carried but not averaged.
TEST(GradCheckModel, MeanPoolWithClsToken) {
  ViTConfig c = tiny_config();
  c.class_token = true;
  c.pool = Pool::Avg;
  check_model(c, {});
}

TEST(GradCheckModel, FlattenHeadMlpWithDropout) {
  ViTConfig c = tiny_config();
  c.class_token = false;
  c.pool = Pool::Flatten;
  c.head_mlp = {6};
  c.head_drop_rate = 0.3f;
  check_model(c, {true, 0.1f, 3});
}

TEST(GradCheckModel, PreLogits) {
  ViTConfig c = tiny_config();
  c.pre_logits = 5;
  check_model(c, {});
}

TEST(GradCheckModel, TanhGeluAndMlpGeluOut) {
  ViTConfig c = tiny_config();
  c.gelu = Gelu::Tanh;
  c.mlp_gelu_out = true;
  check_model(c, {});
}

TEST(GradCheckModel, DropoutAttnDropDropPathTrain) {
  ViTConfig c = tiny_config();
  c.drop_rate = 0.1f;
  c.attn_drop_rate = 0.2f;
  c.drop_path_rate = 0.5f;
  check_model(c, {true, 0.f, 4});
}

// DeiT's distillation token (timm's VisionTransformerDistilled): dist_token, pos_embed over both
// prefix tokens, head_dist; trained without a teacher on the mean of the two heads' logits.
TEST(GradCheckModel, DistillationToken) {
  ViTConfig c = tiny_config();
  c.distilled = true;
  check_model(c, {false, 0.1f, 3});
}

TEST(GradCheckModel, DistillationTokenWithDropoutPartialBatch) {
  ViTConfig c = tiny_config();
  c.distilled = true;
  c.drop_rate = 0.1f;
  c.head_drop_rate = 0.2f;
  c.drop_path_rate = 0.3f;
  check_model(c, {true, 0.f, 3, 2});
}

// Distilled training (a ModelCheck with the DistillTarget loss).
ModelCheck distilling(ModelCheck mc, Distill kind, float alpha, float tau) {
  mc.distill = true;
  mc.kind = kind;
  mc.alpha = alpha;
  mc.tau = tau;
  return mc;
}

// The cls head learns the labels, head_dist the teacher (hard and soft).
TEST(GradCheckModel, DistilledHardTarget) {
  ViTConfig c = tiny_config();
  c.distilled = true;
  check_model(c, distilling({false, 0.1f, 3}, Distill::Hard, 0.3f, 1.f));
}

TEST(GradCheckModel, DistilledSoftTarget) {
  ViTConfig c = tiny_config();
  c.distilled = true;
  c.drop_rate = 0.1f;
  check_model(c, distilling({true, 0.f, 4}, Distill::Soft, 0.6f, 2.5f));
}

// A student without the distillation token: both terms on its one head (Hinton's KD).
TEST(GradCheckModel, OneHeadSoftDistillation) {
  check_model(tiny_config(), distilling({false, 0.1f, 3}, Distill::Soft, 0.5f, 3.f));
}

TEST(GradCheckModel, OneHeadHardDistillation) {
  ViTConfig c = tiny_config();
  c.class_token = false;
  c.pool = Pool::Avg;
  check_model(c, distilling({false, 0.f, 3}, Distill::Hard, 1.f, 1.f));
}

// Everything at once: Keras-style head (flatten, head MLP, dropout), pre-logits, tanh GELU,
// GELU after fc2, explicit head_dim, no qkv bias, all dropout kinds, label smoothing.
TEST(GradCheckModel, KitchenSink) {
  ViTConfig c = tiny_config();
  c.class_token = true;
  c.pool = Pool::Flatten;
  c.head_mlp = {7, 5};
  c.head_drop_rate = 0.2f;
  c.pre_logits = 4;
  c.gelu = Gelu::Tanh;
  c.mlp_gelu_out = true;
  c.head_dim = 3;
  c.qkv_bias = false;
  c.drop_rate = 0.1f;
  c.attn_drop_rate = 0.15f;
  c.drop_path_rate = 0.3f;
  check_model(c, {true, 0.1f, 4, 1});
}

}  // namespace
