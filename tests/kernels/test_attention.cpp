// Fused attention forward and backward (kernels/attention.cu) on the packed qkv projection
// [B, N, 3, H, d] against the CPU reference (vitcuda::ref::attention_forward / attention_backward
// <float>, run on float copies of the T-rounded inputs), fp32 and bf16 storage, head dims
// 32/64/80/128, ragged N up to 257, H > 1 (the packed strides), with and without attention
// dropout; the dropout mask bit for bit (also with a device stream offset); the backward bitwise
// reproducible; argument validation.
#include <cmath>
#include <cstring>
#include <functional>

#include "host/cpu/ref_ops.h"
#include "kernel_test.h"
#include "kernels/attention.h"
#include "kernels/philox.h"

namespace vitcuda::test {
namespace {

using bf16 = __nv_bfloat16;

struct Case {
  int B, H, N, d;
  float p;  // attention dropout
};

std::string name(const Case& c) {
  return "B=" + std::to_string(c.B) + " H=" + std::to_string(c.H) + " N=" + std::to_string(c.N) +
         " d=" + std::to_string(c.d) + " p=" + std::to_string(c.p);
}

// N = 1 (a single key), 17 (one ragged tile, an odd number of keys in a 16-key mma block), 50 and
// 65 (ViT sequence lengths: one tile, and one full tile plus one key), 130 (three tiles: the
// double buffers are reused), 197 (ViT-B/16 at 224²) and 257 (ViT-H/14: five tiles, one key in
// the last); every head dim; H = 2 so that the packed strides (q, k, v of two heads interleaved
// in every row) are exercised; B·H small because the emulator runs each mma as a 32-fiber
// rendezvous.
std::vector<Case> cases(float p) {
  std::vector<Case> out;
  for (int d : {32, 64, 80, 128})
    for (int N : {1, 17, 50, 65}) out.push_back({N % 2 ? 2 : 1, 2, N, d, p});
  out.push_back({1, 2, 130, 64, p});
  out.push_back({1, 1, 130, 80, p});
  out.push_back({1, 2, 197, 64, p});
  out.push_back({1, 1, 257, 128, p});
  return out;
}

DropoutSpec dropout_for(const Case& c) { return {c.p, 0x5eedull + c.N, 3ull + c.d}; }
float scale_for(const Case& c) { return 1.f / std::sqrt(static_cast<float>(c.d)); }

struct Inputs {
  std::vector<float> qkv, dout;  // [B, N, 3, H, d] and [B, N, H·d], exactly representable in T
};

size_t qkv_index(const Case& c, int b, int i, int s, int h, int x) {
  return ((((size_t(b) * c.N + i) * 3 + s) * c.H + h) * c.d) + x;
}
size_t out_index(const Case& c, int b, int h, int i, int x) { return ((size_t(b) * c.N + i) * c.H + h) * c.d + x; }

template <typename T>
Inputs make_inputs(const Case& c, uint32_t seed) {
  auto round = [](const std::vector<float>& v) { return to_floats(convert<T>(v)); };
  const size_t n = static_cast<size_t>(c.B) * c.H * c.N * c.d;
  Inputs in;
  // |q|, |k| up to 2: scores of a few units at scale 1/sqrt(d), so rows range from peaked to flat;
  // |v| up to 1.
  const std::vector<float> qk = random_floats(2 * n, -2.f, 2.f, seed), v = random_floats(n, -1.f, 1.f, seed + 2);
  in.qkv.resize(3 * n);
  size_t e = 0, f = 0;
  for (int b = 0; b < c.B; ++b)
    for (int i = 0; i < c.N; ++i)
      for (int s = 0; s < 3; ++s)
        for (int h = 0; h < c.H; ++h)
          for (int x = 0; x < c.d; ++x) in.qkv[qkv_index(c, b, i, s, h, x)] = s < 2 ? qk[e++] : v[f++];
  in.qkv = round(in.qkv);
  in.dout = round(random_floats(n, -1.f, 1.f, seed + 3));  // [B, N, H*d]
  return in;
}

// Per head (b, h): the reference probabilities P_ij = exp(scale·q_i·k_j − lse_i) and dropout
// multipliers Z_ij in double, and A = max_ij scale·Σ_c |q_ic·k_jc|, the largest score magnitude
// any fp32 dot product had to resolve.
struct Head {
  std::vector<double> P, Z;
  double A = 0;
};

Head head_stats(const Case& c, const Inputs& in, const std::vector<float>& lse, int bh) {
  const int N = c.N, d = c.d, b = bh / c.H, h = bh % c.H;
  const double scale = scale_for(c);
  const DropoutSpec drop = dropout_for(c);
  const uint32_t thr = dropout_threshold(drop.p);
  const double keep = drop.active() ? 1.0 / (1.0 - drop.p) : 1.0;
  Head hd;
  hd.P.resize(size_t(N) * N);
  hd.Z.resize(size_t(N) * N);
  for (int i = 0; i < N; ++i)
    for (int j = 0; j < N; ++j) {
      double s = 0, a = 0;
      for (int x = 0; x < d; ++x) {
        const double t = double(in.qkv[qkv_index(c, b, i, 0, h, x)]) * in.qkv[qkv_index(c, b, j, 1, h, x)];
        s += t;
        a += std::fabs(t);
      }
      hd.A = std::max(hd.A, a * scale);
      hd.P[size_t(i) * N + j] = std::exp(s * scale - lse[size_t(bh) * N + i]);
      hd.Z[size_t(i) * N + j] =
          drop.active() ? (dropout_keep(drop.seed, drop.stream, (uint64_t(bh) * N + i) * N + j, thr) ? keep : 0) : 1.0;
    }
  return hd;
}

// Relative error of a recomputed fp32 probability: the score's dot product of d terms is off by
// up to d·u·A (A bounds Σ|terms|), exp2 of an argument of magnitude ~A adds ~4·A·u, the row sum
// of N terms N·u; a factor 2 for the handful of further roundings (scale, max shift, 1/l).
double prob_rel_error(const Case& c, double A) { return 2.0 * ((c.d + 4) * A + c.N + 8) * kU32; }

template <typename T>
void check_forward(const Case& c) {
  SCOPED_TRACE(name(c));
  const bool bf16_io = std::is_same_v<T, bf16>;
  const Inputs in = make_inputs<T>(c, 1000u + c.N * 7u + c.d);
  const size_t n = in.dout.size(), rows = size_t(c.B) * c.H * c.N;
  const float scale = scale_for(c);
  const DropoutSpec drop = dropout_for(c);
  rt::DeviceBuffer<T> qkv(convert<T>(in.qkv)), out(n);
  rt::DeviceBuffer<float> lse(rows);
  attention_forward<T>(qkv.get(), scale, drop, out.get(), lse.get(), c.B, c.H, c.N, c.d, nullptr);
  std::vector<float> out_ref(n), lse_ref(rows);
  ref::attention_forward<float>(in.qkv.data(), scale, drop, out_ref.data(), lse_ref.data(), c.B, c.H, c.N, c.d);
  const std::vector<float> got = to_floats(out.download()), got_lse = lse.download();

  for (int b = 0; b < c.B; ++b)
    for (int h = 0; h < c.H; ++h) {
      const int bh = b * c.H + h;
      const Head hd = head_stats(c, in, lse_ref, bh);
      const double eps = prob_rel_error(c, hd.A);
      for (int i = 0; i < c.N; ++i) {
        // lse = max + log(l): the max carries the score error d·u·A, log(l) the relative error of
        // l; both are inside eps. fp32 in both builds (bf16 does not touch the statistics).
        const double lr = lse_ref[size_t(bh) * c.N + i];
        ASSERT_NEAR(got_lse[size_t(bh) * c.N + i], lr, eps + 2 * kU32 * std::fabs(lr))
            << "lse[" << bh << "][" << i << "]";
        for (int x = 0; x < c.d; ++x) {
          // out = Σ_j P_ij Z_ij v_j / 1: every term is off by eps relative; bf16 rounds each
          // P_ij·Z_ij to 8 bits before the mma (u_bf16 per term, |terms| summed in W) and the
          // result once more on store (u_bf16·|out|).
          double W = 0;
          for (int j = 0; j < c.N; ++j)
            W += hd.P[size_t(i) * c.N + j] * hd.Z[size_t(i) * c.N + j] * std::fabs(in.qkv[qkv_index(c, b, j, 2, h, x)]);
          const size_t o = out_index(c, b, h, i, x);
          const double tol = (eps + (bf16_io ? kUBf16 : 0)) * W + (bf16_io ? kUBf16 * std::fabs(out_ref[o]) : 0) + 1e-6;
          ASSERT_NEAR(got[o], out_ref[o], tol) << "out[b=" << b << "][i=" << i << "][h=" << h << "][" << x << "]";
        }
      }
    }
}

template <typename T>
void check_backward(const Case& c) {
  SCOPED_TRACE(name(c));
  const bool bf16_io = std::is_same_v<T, bf16>;
  const double ub = bf16_io ? kUBf16 : 0;
  const Inputs in = make_inputs<T>(c, 2000u + c.N * 7u + c.d);
  const size_t n = in.dout.size(), rows = size_t(c.B) * c.H * c.N;
  const float scale = scale_for(c);
  const DropoutSpec drop = dropout_for(c);
  // out and lse from the reference forward (out rounded to T, as the model stores it), given to
  // both backwards, so forward errors do not enter this comparison.
  std::vector<float> out_ref(n), lse_ref(rows);
  ref::attention_forward<float>(in.qkv.data(), scale, drop, out_ref.data(), lse_ref.data(), c.B, c.H, c.N, c.d);
  const std::vector<float> out_t = to_floats(convert<T>(out_ref));

  rt::DeviceBuffer<T> qkv(convert<T>(in.qkv)), dout(convert<T>(in.dout)), out(convert<T>(out_t)), dqkv(3 * n);
  rt::DeviceBuffer<float> lse(lse_ref);
  const size_t ws_bytes = attention_backward_workspace_bytes(c.B, c.H, c.N, c.d);
  rt::DeviceBuffer<unsigned char> ws(ws_bytes);
  rt::memset_device(ws.get(), 0xff, ws_bytes);             // it need not be zeroed: prove it
  rt::memset_device(dqkv.get(), 0xff, 3 * n * sizeof(T));  // NaN: every element must be written
  attention_backward<T>(dout.get(), qkv.get(), out.get(), lse.get(), scale, drop, dqkv.get(), ws.get(), ws_bytes, c.B,
                        c.H, c.N, c.d, nullptr);
  std::vector<float> dqkv_ref(3 * n);
  ref::attention_backward<float>(in.dout.data(), in.qkv.data(), out_t.data(), lse_ref.data(), scale, drop,
                                 dqkv_ref.data(), c.B, c.H, c.N, c.d);
  const std::vector<float> got = to_floats(dqkv.download());

  const int N = c.N, d = c.d;
  for (int b = 0; b < c.B; ++b)
    for (int h = 0; h < c.H; ++h) {
      const int bh = b * c.H + h;
      const Head hd = head_stats(c, in, lse_ref, bh);
      const double eps = prob_rel_error(c, hd.A);
      auto Q = [&](int i, int x) { return double(in.qkv[qkv_index(c, b, i, 0, h, x)]); };
      auto K = [&](int j, int x) { return double(in.qkv[qkv_index(c, b, j, 1, h, x)]); };
      auto V = [&](int j, int x) { return double(in.qkv[qkv_index(c, b, j, 2, h, x)]); };
      // M_ij bounds the terms of dS_ij = P_ij (dP_ij Z_ij − D_i) scale with dP_ij = dO_i·v_j and
      // D_i = dO_i·O_i taken term by term: the fp32 dot products and the cancellation in the
      // bracket leave dS off by eps·M_ij, and bf16 rounds dS to 8 bits (u_bf16·M_ij) before the
      // dK and dQ mma.
      std::vector<double> M(size_t(N) * N);
      for (int i = 0; i < N; ++i) {
        double dO_O = 0;
        for (int x = 0; x < d; ++x)
          dO_O += std::fabs(double(in.dout[out_index(c, b, h, i, x)]) * out_t[out_index(c, b, h, i, x)]);
        for (int j = 0; j < N; ++j) {
          double dO_v = 0;
          for (int x = 0; x < d; ++x) dO_v += std::fabs(double(in.dout[out_index(c, b, h, i, x)]) * V(j, x));
          M[size_t(i) * N + j] = hd.P[size_t(i) * N + j] * scale * (hd.Z[size_t(i) * N + j] * dO_v + dO_O);
        }
      }
      for (int j = 0; j < N; ++j)
        for (int x = 0; x < d; ++x) {
          // dV_j = Σ_i P_ij Z_ij dO_i (P rounded to bf16 per term); dK_j = Σ_i dS_ij q_i.
          double v_terms = 0, k_terms = 0;
          for (int i = 0; i < N; ++i) {
            v_terms += hd.P[size_t(i) * N + j] * hd.Z[size_t(i) * N + j] * std::fabs(in.dout[out_index(c, b, h, i, x)]);
            k_terms += M[size_t(i) * N + j] * std::fabs(Q(i, x));
          }
          const size_t ov = qkv_index(c, b, j, 2, h, x), ok = qkv_index(c, b, j, 1, h, x);
          ASSERT_NEAR(got[ov], dqkv_ref[ov], (eps + ub) * v_terms + ub * std::fabs(dqkv_ref[ov]) + 1e-6)
              << "dv[" << bh << "][" << j << "][" << x << "]";
          ASSERT_NEAR(got[ok], dqkv_ref[ok], (eps + ub) * k_terms + ub * std::fabs(dqkv_ref[ok]) + 1e-6)
              << "dk[" << bh << "][" << j << "][" << x << "]";
        }
      for (int i = 0; i < N; ++i)
        for (int x = 0; x < d; ++x) {
          // dQ_i = Σ_j dS_ij k_j, summed over the key tiles in order in fp32 registers (eps has
          // the N·u of the sum).
          double q_terms = 0;
          for (int j = 0; j < N; ++j) q_terms += M[size_t(i) * N + j] * std::fabs(K(j, x));
          const size_t o = qkv_index(c, b, i, 0, h, x);
          ASSERT_NEAR(got[o], dqkv_ref[o], (eps + ub) * q_terms + ub * std::fabs(dqkv_ref[o]) + 1e-6)
              << "dq[" << bh << "][" << i << "][" << x << "]";
        }
    }
}

class Attention : public BackendTest {};

TEST_P(Attention, ForwardF32) {
  for (const Case& c : cases(0.f)) check_forward<float>(c);
}
TEST_P(Attention, ForwardF32Dropout) {
  for (const Case& c : cases(0.2f)) check_forward<float>(c);
}
TEST_P(Attention, ForwardBf16) {
  for (const Case& c : cases(0.f)) check_forward<bf16>(c);
}
TEST_P(Attention, ForwardBf16Dropout) {
  for (const Case& c : cases(0.2f)) check_forward<bf16>(c);
}
TEST_P(Attention, BackwardF32) {
  for (const Case& c : cases(0.f)) check_backward<float>(c);
}
TEST_P(Attention, BackwardF32Dropout) {
  for (const Case& c : cases(0.2f)) check_backward<float>(c);
}
TEST_P(Attention, BackwardBf16) {
  for (const Case& c : cases(0.f)) check_backward<bf16>(c);
}
TEST_P(Attention, BackwardBf16Dropout) {
  for (const Case& c : cases(0.2f)) check_backward<bf16>(c);
}

// ViT-B/16 at 224²: B=2, H=12, N=197, d=64 (too slow for the emulator; natively it is a few ms).
TEST_P(Attention, VitBaseShapeBf16) {
  if (emulated()) GTEST_SKIP() << "ViT-B shape runs natively only (the emulator takes minutes)";
  for (float p : {0.f, 0.1f}) {
    check_forward<bf16>({2, 12, 197, 64, p});
    check_backward<bf16>({2, 12, 197, 64, p});
  }
  check_forward<float>({2, 12, 197, 64, 0.1f});
  check_backward<float>({2, 12, 197, 64, 0.1f});
}

// The mask itself, exactly: with q = k = 0 every P_ij = 1/N, and v_j = e_j makes
// out_ic = Z_ic / N, so out reveals every keep decision of the forward; dO_i = e_i makes
// dV_jc = P_cj Z_cj = Z_cj / N, the backward's (query, key) indexing. With `offset` the spec
// carries a stream offset in device memory: the kernels must draw from stream + offset.
template <typename T>
void check_mask(uint64_t offset) {
  const int B = 1, H = 2, N = 32, d = 32;
  const Case c{B, H, N, d, 0.25f};
  const uint64_t seed = 99, stream = 5;
  rt::DeviceBuffer<uint64_t> offset_dev(std::vector<uint64_t>{offset});
  const DropoutSpec drop{0.25f, seed, stream, offset ? offset_dev.get() : nullptr};
  const uint32_t thr = dropout_threshold(drop.p);
  const size_t n = size_t(B) * H * N * d;
  std::vector<float> qkv(3 * n, 0.f), dout(n, 0.f);
  for (int h = 0; h < H; ++h)
    for (int j = 0; j < N; ++j) qkv[qkv_index(c, 0, j, 2, h, j)] = 1.f;  // v_j = e_j
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < N; ++i) dout[out_index(c, 0, h, i, i)] = 1.f;
  rt::DeviceBuffer<T> qkv_d(convert<T>(qkv)), out(n), dO(convert<T>(dout)), dqkv(3 * n);
  rt::DeviceBuffer<float> lse(size_t(B) * H * N);
  const float scale = 0.125f;
  attention_forward<T>(qkv_d.get(), scale, drop, out.get(), lse.get(), B, H, N, d, nullptr);
  const size_t ws_bytes = attention_backward_workspace_bytes(B, H, N, d);
  rt::DeviceBuffer<unsigned char> ws(ws_bytes);
  attention_backward<T>(dO.get(), qkv_d.get(), out.get(), lse.get(), scale, drop, dqkv.get(), ws.get(), ws_bytes, B, H,
                        N, d, nullptr);
  const std::vector<float> got_out = to_floats(out.download()), got_dqkv = to_floats(dqkv.download());
  const float kept = to_float(from_float<T>(1.f / (1.f - drop.p) / N));
  int dropped = 0, differs_from_no_offset = 0;
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < N; ++i)
      for (int j = 0; j < N; ++j) {
        const uint64_t index = (uint64_t(h) * N + i) * N + j;
        const bool keep = dropout_keep(seed, stream + offset, index, thr);
        dropped += !keep;
        differs_from_no_offset += keep != dropout_keep(seed, stream, index, thr);
        // fp32: exact up to the rounding of 1/(1-p)/N; bf16: that value rounded to 8 bits.
        ASSERT_NEAR(got_out[out_index(c, 0, h, i, j)], keep ? kept : 0.f, 1e-6f)
            << "out h=" << h << " i=" << i << " j=" << j;
        ASSERT_NEAR(got_dqkv[qkv_index(c, 0, j, 2, h, i)], keep ? kept : 0.f, 1e-6f)
            << "dv h=" << h << " key=" << j << " query=" << i;
      }
  EXPECT_GT(dropped, 0);
  if (offset) {
    EXPECT_GT(differs_from_no_offset, 0) << "the offset must change the mask for this test to mean anything";
  }
}

TEST_P(Attention, DropoutMaskMatchesPhiloxF32) { check_mask<float>(0); }
TEST_P(Attention, DropoutMaskMatchesPhiloxBf16) { check_mask<bf16>(0); }
TEST_P(Attention, DropoutStreamOffsetReadOnDeviceF32) { check_mask<float>(1234567); }
TEST_P(Attention, DropoutStreamOffsetReadOnDeviceBf16) { check_mask<bf16>(1234567); }

// Two backward runs on the same inputs give the same dqkv bit for bit (no floating-point atomics;
// the workspace and dqkv hold different garbage before each run). Ragged N over several tiles,
// with dropout.
template <typename T>
void check_backward_bitwise(const Case& c) {
  SCOPED_TRACE(name(c));
  const Inputs in = make_inputs<T>(c, 3000u + c.N);
  const size_t n = in.dout.size(), rows = size_t(c.B) * c.H * c.N;
  const float scale = scale_for(c);
  const DropoutSpec drop = dropout_for(c);
  rt::DeviceBuffer<T> qkv(convert<T>(in.qkv)), dout(convert<T>(in.dout)), out(n), dqkv(3 * n);
  rt::DeviceBuffer<float> lse(rows);
  attention_forward<T>(qkv.get(), scale, drop, out.get(), lse.get(), c.B, c.H, c.N, c.d, nullptr);
  const size_t ws_bytes = attention_backward_workspace_bytes(c.B, c.H, c.N, c.d);
  rt::DeviceBuffer<unsigned char> ws(ws_bytes);
  std::vector<T> first;
  for (int run = 0; run < 2; ++run) {
    rt::memset_device(ws.get(), run ? 0x00 : 0xff, ws_bytes);
    rt::memset_device(dqkv.get(), run ? 0x7f : 0xff, 3 * n * sizeof(T));
    attention_backward<T>(dout.get(), qkv.get(), out.get(), lse.get(), scale, drop, dqkv.get(), ws.get(), ws_bytes, c.B,
                          c.H, c.N, c.d, nullptr);
    const std::vector<T> got = dqkv.download();
    if (run == 0) {
      first = got;
      continue;
    }
    ASSERT_EQ(std::memcmp(first.data(), got.data(), got.size() * sizeof(T)), 0) << "dqkv differs between two runs";
  }
}

TEST_P(Attention, BackwardBitwiseReproducible) {
  check_backward_bitwise<bf16>({1, 2, 197, 64, 0.1f});
  check_backward_bitwise<float>({1, 2, 130, 32, 0.1f});
}

// ---- argument validation ---------------------------------------------------------------------

struct Buffers {
  static constexpr int B = 1, H = 1, N = 8, d = 64;
  rt::DeviceBuffer<bf16> qkv{size_t(N) * 3 * d}, out{size_t(N) * d}, dout{size_t(N) * d}, dqkv{size_t(N) * 3 * d};
  rt::DeviceBuffer<float> lse{size_t(N)};
  size_t ws_bytes = attention_backward_workspace_bytes(B, H, N, d);
  rt::DeviceBuffer<unsigned char> ws{ws_bytes};
  Buffers() {
    for (auto* buf : {&qkv, &out, &dout}) buf->upload(convert<bf16>(std::vector<float>(buf->size(), 0.5f)));
  }
  void forward(const bf16* qkvp, int dim, DropoutSpec drop = {}) {
    attention_forward<bf16>(qkvp, 0.125f, drop, out.get(), lse.get(), B, H, N, dim, nullptr);
  }
  void backward(bf16* dqkvp, void* w, size_t w_bytes, int dim) {
    attention_backward<bf16>(dout.get(), qkv.get(), out.get(), lse.get(), 0.125f, {}, dqkvp, w, w_bytes, B, H, N, dim,
                             nullptr);
  }
};

TEST_P(Attention, RejectsUnsupportedHeadDim) {
  EXPECT_FALSE(attention_head_dim_supported(48));
  EXPECT_FALSE(attention_head_dim_supported(36));  // rows inside the packed qkv would not be 16-byte aligned
  EXPECT_TRUE(attention_head_dim_supported(80));
  Buffers b;
  expect_error([&] { b.forward(b.qkv.get(), 48); }, {"attention_forward: head dim d=48", "16-byte aligned"});
  expect_error([&] { b.backward(b.dqkv.get(), b.ws.get(), b.ws_bytes, 256); }, {"attention_backward: head dim d=256"});
  expect_error([&] { attention_backward_workspace_bytes(1, 1, 8, 16); }, {"head dim d=16"});
}

TEST_P(Attention, RejectsNullPointers) {
  Buffers b;
  expect_error([&] { b.forward(nullptr, 64); }, {"attention_forward: qkv is null"});
  expect_error([&] { b.backward(nullptr, b.ws.get(), b.ws_bytes, 64); }, {"attention_backward: dqkv is null"});
  expect_error([&] { b.backward(b.dqkv.get(), nullptr, b.ws_bytes, 64); }, {"attention_backward: workspace is null"});
}

TEST_P(Attention, RejectsSmallWorkspaceMisalignmentAliasingAndBadDropout) {
  Buffers b;
  expect_error([&] { b.backward(b.dqkv.get(), b.ws.get(), b.ws_bytes - 4, 64); }, {"attention_backward: workspace of"});
  expect_error([&] { b.forward(b.qkv.get() + 1, 64); }, {"attention_forward: qkv must be 16-byte aligned"});
  expect_error([&] { b.backward(b.qkv.get(), b.ws.get(), b.ws_bytes, 64); },
               {"attention_backward: dqkv must not alias"});
  expect_error([&] { b.forward(b.qkv.get(), 64, DropoutSpec{1.f, 0, 0}); }, {"attention_forward: dropout p="});
  // Empty problems are no-ops, even with null pointers.
  attention_forward<float>(nullptr, 1.f, {}, nullptr, nullptr, 0, 12, 197, 64, nullptr);
}

INSTANTIATE_TEST_SUITE_P(Backends, Attention, ::testing::Values(std::string(rt::backend_name())), backend_param_name);

}  // namespace
}  // namespace vitcuda::test
