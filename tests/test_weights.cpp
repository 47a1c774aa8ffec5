// Weight loading: position-embedding resize against a direct bicubic computation, dtype
// conversion, timm-named files built by hand, and mismatches reported by name.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "tests/scratch_dir.h"
#include "vitcuda/checkpoint.h"
#include "vitcuda/checkpoint.h"

using namespace vitcuda;

namespace {

// timm's resize written as one 2-D sum (PIL-style anti-aliased bicubic, a = -0.5, weights
// renormalised over the taps inside the image), independent of the separable code in
// host/checkpoint.cpp.
double cubic(double x) {
  const double a = -0.5;
  x = std::fabs(x);
  if (x < 1) return (a + 2) * x * x * x - (a + 3) * x * x + 1;
  if (x < 2) return a * x * x * x - 5 * a * x * x + 8 * a * x - 4 * a;
  return 0;
}
double direct_bicubic(const std::vector<float>& grid, int h, int w, int dim, int c, int oy, int ox, int nh, int nw) {
  const double sy = double(h) / nh, sx = double(w) / nw;
  const double cy = sy * (oy + 0.5), cx = sx * (ox + 0.5);
  const double fy = 1 / std::max(sy, 1.0), fx = 1 / std::max(sx, 1.0);
  double acc = 0, norm = 0;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const double k = cubic((y + 0.5 - cy) * fy) * cubic((x + 0.5 - cx) * fx);
      acc += k * grid[(size_t(y) * w + x) * dim + c];
      norm += k;
    }
  return acc / norm;
}

ViTConfig tiny(int img) {
  ViTConfig c = preset("vit_fmnist");
  c.img_size = img;
  c.patch_size = 4;
  c.embed_dim = 8;
  c.depth = 1;
  c.num_heads = 2;
  c.mlp_hidden = 8;
  c.num_classes = 3;
  return c;
}

std::string error_of_config(const std::string& path) {
  try {
    weights_config(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// big's pos_embed (4x4 grid) is small's (2x2 grid) resized by resize_pos_embed, the num_prefix
// prefix rows kept.
void expect_pos_embed_resized(const Model& small, const Model& big, int num_prefix) {
  const ParamSpec& ps = small.param_spec("pos_embed");
  const ParamSpec& pb = big.param_spec("pos_embed");
  const auto ws = small.get_master(), wb = big.get_master();
  const std::vector<float> pos(ws.begin() + ps.offset, ws.begin() + ps.offset + ps.numel);
  const auto expect = resize_pos_embed(pos, num_prefix, 2, 2, 4, 4, 8);
  ASSERT_EQ(int64_t(expect.size()), pb.numel);
  for (int64_t i = 0; i < pb.numel; ++i) EXPECT_EQ(wb[pb.offset + i], expect[i]) << i;
}

}  // namespace

// Files of a test live in its own scratch folder, removed afterwards.
class Weights : public vitcuda::test::ScratchDirTest {
 protected:
  Weights() : ScratchDirTest("weights") {}
  std::string tmp(const std::string& name) const { return path(name); }
};

TEST_F(Weights, PosEmbedResizeMatchesDirectBicubic) {
  const int dim = 3, prefix = 1;
  for (auto [h, nh] : {std::pair{4, 7}, {7, 4}, {14, 16}, {3, 3}}) {
    std::vector<float> pos(size_t(prefix + h * h) * dim);
    for (size_t i = 0; i < pos.size(); ++i) pos[i] = float(std::sin(0.7 * i) + 0.1 * i);
    const auto out = resize_pos_embed(pos, prefix, h, h, nh, nh, dim);
    ASSERT_EQ(out.size(), size_t(prefix + nh * nh) * dim);
    for (int c = 0; c < dim; ++c) EXPECT_EQ(out[c], pos[c]) << "cls row is copied";
    const std::vector<float> grid(pos.begin() + prefix * dim, pos.end());
    for (int oy = 0; oy < nh; ++oy)
      for (int ox = 0; ox < nh; ++ox)
        for (int c = 0; c < dim; ++c)
          // both sums run in double and are rounded to float once: 1e-5 relative covers the
          // float rounding of values of magnitude <= ~5.
          EXPECT_NEAR(out[(prefix + oy * nh + ox) * dim + c], direct_bicubic(grid, h, h, dim, c, oy, ox, nh, nh), 5e-5)
              << h << "->" << nh << " at " << oy << "," << ox;
  }
}

TEST_F(Weights, PosEmbedResizeEqualsTimm) {
  // timm 1.0.31 / torch 2.15: resample_abs_pos_embed of this 3x3 grid (+ a cls row 9) to 5x5.
  const std::vector<float> pos = {9, 1, 2, 3, 4, 5, 7, 0, -1, 2};
  const std::vector<float> timm = {
      9.0f,      0.69811326f, 1.0829345f, 1.773585f,    2.4186146f,  2.767889f,  2.149113f,   2.5550234f, 3.3208957f,
      4.217588f, 4.7254295f,  3.9245284f, 4.2611938f,   5.0f,        6.3432837f, 7.1509433f,  1.5598416f, 1.311984f,
      1.238805f, 2.9745483f,  4.1361575f, -0.21502307f, -0.8432835f, -1.452830f, 0.49239704f, 1.8547525f};
  const auto out = resize_pos_embed(pos, 1, 3, 3, 5, 5, 1);
  ASSERT_EQ(out.size(), timm.size());
  // PyTorch computes in float32 with precomputed float weights: agreement to ~1e-6 relative.
  for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], timm[i], 2e-6 * std::max(1.f, std::fabs(timm[i]))) << i;
}

TEST_F(Weights, PosEmbedResizeKnownValues) {
  // Same size: the kernel taps are (0, 1, 0, 0): identity.
  std::vector<float> pos(16);
  for (int i = 0; i < 16; ++i) pos[i] = float(i * i);
  EXPECT_EQ(resize_pos_embed(pos, 0, 4, 4, 4, 4, 1), pos);
  // Constant grid stays constant (the weights sum to 1).
  std::vector<float> ones(25, 2.5f);
  for (float v : resize_pos_embed(ones, 0, 5, 5, 9, 9, 1)) EXPECT_NEAR(v, 2.5f, 1e-6);
  // A linear ramp is reproduced away from the border when upsampling (the cubic's weights
  // are symmetric and sum to 1, so it is exact for degree-1 polynomials): 8 -> 16 along x,
  // interior outputs equal the ramp at the half-pixel source coordinate.
  std::vector<float> ramp(64);
  for (int y = 0; y < 8; ++y)
    for (int x = 0; x < 8; ++x) ramp[y * 8 + x] = float(x);
  const auto up = resize_pos_embed(ramp, 0, 8, 8, 16, 16, 1);
  for (int ox = 4; ox < 12; ++ox) EXPECT_NEAR(up[5 * 16 + ox], 0.5 * (ox + 0.5) - 0.5, 1e-5) << ox;
  EXPECT_THROW(resize_pos_embed(ramp, 1, 8, 8, 4, 4, 1), Error);
}

TEST_F(Weights, HandBuiltTimmFileLoadsWithKnownValuesAndBf16) {
  // A timm-style state_dict written tensor by tensor, with values we choose: every tensor
  // holds value = (index % 7) * 0.125, exact in bf16, stored as BF16 for the weights.
  auto backend = make_backend("cpu");
  Model model(tiny(8), *backend, 2);
  SafeTensorsFile f;
  for (const ParamSpec& s : model.params()) {
    SafeTensor t;
    t.dtype = s.decay ? DType::BF16 : DType::F32;
    t.shape = s.shape;
    t.bytes.resize(size_t(s.numel) * (s.decay ? 2 : 4));
    for (int64_t i = 0; i < s.numel; ++i) {
      const float v = float(i % 7) * 0.125f;
      uint32_t bits;
      std::memcpy(&bits, &v, 4);
      if (s.decay) {
        const uint16_t hi = uint16_t(bits >> 16);
        std::memcpy(t.bytes.data() + 2 * i, &hi, 2);
      } else {
        std::memcpy(t.bytes.data() + 4 * i, &v, 4);
      }
    }
    f.tensors[s.name] = t;
  }
  save_safetensors(tmp("timm.safetensors"), f);
  load_weights(tmp("timm.safetensors"), model);
  const std::vector<float> w = model.get_master();
  for (const ParamSpec& s : model.params())
    for (int64_t i = 0; i < s.numel; ++i)
      ASSERT_EQ(w[s.offset + i], float(i % 7) * 0.125f) << s.name << "[" << i << "]";

  // And back: save_weights writes exactly these values under the same names.
  save_weights(tmp("roundtrip.safetensors"), model);
  const SafeTensorsFile back = load_safetensors(tmp("roundtrip.safetensors"));
  for (const ParamSpec& s : model.params()) {
    const SafeTensor& t = back.tensors.at(s.name);
    ASSERT_EQ(t.dtype, DType::F32);
    ASSERT_EQ(t.shape, s.shape);
    ASSERT_EQ(0, std::memcmp(t.bytes.data(), w.data() + s.offset, t.bytes.size())) << s.name;
  }
}

TEST_F(Weights, LoadingAtAnotherImageSizeResizesPosEmbed) {
  auto backend = make_backend("cpu");
  Model small(tiny(8), *backend, 1);  // 2x2 grid + cls
  small.init(3);
  save_weights(tmp("small.safetensors"), small);
  Model big(tiny(16), *backend, 1);  // 4x4 grid + cls
  load_weights(tmp("small.safetensors"), big);
  expect_pos_embed_resized(small, big, 1);
  const auto ws = small.get_master(), wb = big.get_master();
  // Other tensors are unchanged.
  const ParamSpec& q = small.param_spec("blocks.0.attn.qkv.weight");
  EXPECT_EQ(
      0, std::memcmp(ws.data() + q.offset, wb.data() + big.param_spec("blocks.0.attn.qkv.weight").offset, q.numel * 4));
}

TEST_F(Weights, MismatchesNameFileAndTensor) {
  auto backend = make_backend("cpu");
  Model model(tiny(8), *backend, 1);
  model.init(1);
  save_weights(tmp("ok.safetensors"), model);
  SafeTensorsFile f = load_safetensors(tmp("ok.safetensors"));
  auto expect_error = [&](const SafeTensorsFile& file, const std::string& what) {
    save_safetensors(tmp("bad.safetensors"), file);
    try {
      load_weights(tmp("bad.safetensors"), model);
      FAIL() << "no error for " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("bad.safetensors"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  SafeTensorsFile missing = f;
  missing.tensors.erase("head.bias");
  expect_error(missing, "head.bias");
  SafeTensorsFile extra = f;
  extra.tensors["blocks.7.attn.qkv.weight"] = f.tensors.at("head.bias");
  expect_error(extra, "blocks.7.attn.qkv.weight");
  SafeTensorsFile wrong_shape = f;
  wrong_shape.tensors["head.weight"].shape = {1, 24};
  expect_error(wrong_shape, "head.weight");
  SafeTensorsFile wrong_dtype = f;
  wrong_dtype.tensors["head.bias"].dtype = DType::I32;
  expect_error(wrong_dtype, "head.bias");
}

// DeiT distilled weights in timm's layout (no vitcuda metadata): the architecture comes from a
// preset (weights_config), dist_token and head_dist load under timm's names, and a pos_embed for
// another grid is resized with BOTH prefix rows (cls, dist) kept as they are (timm's
// resample_abs_pos_embed with num_prefix_tokens = 2).
TEST_F(Weights, DistilledTimmFileLoadsAndResizesWithTwoPrefixTokens) {
  auto backend = make_backend("cpu");
  ViTConfig c8 = tiny(8), c16 = tiny(16);
  c8.distilled = c16.distilled = true;
  Model small(c8, *backend, 1);  // 2x2 grid + cls + dist
  small.init(5);
  save_weights(tmp("deit.safetensors"), small);  // timm's names, with vitcuda's config metadata
  SafeTensorsFile f = load_safetensors(tmp("deit.safetensors"));
  EXPECT_EQ(f.tensors.at("dist_token").shape, (std::vector<int64_t>{1, 1, 8}));
  EXPECT_EQ(f.tensors.at("pos_embed").shape, (std::vector<int64_t>{1, 6, 8}));
  EXPECT_EQ(f.tensors.at("head_dist.weight").shape, (std::vector<int64_t>{3, 8}));
  f.metadata.clear();  // as timm writes it
  save_safetensors(tmp("timm_deit.safetensors"), f);
  EXPECT_NE(error_of_config(tmp("timm_deit.safetensors")).find("name the architecture with --model"),
            std::string::npos);
  EXPECT_TRUE(weights_config(tmp("deit.safetensors")).distilled);  // from the metadata

  Model big(c16, *backend, 1);  // 4x4 grid + cls + dist
  load_weights(tmp("timm_deit.safetensors"), big);
  expect_pos_embed_resized(small, big, 2);
  const ParamSpec& ps = small.param_spec("pos_embed");
  const ParamSpec& pb = big.param_spec("pos_embed");
  const auto ws = small.get_master(), wb = big.get_master();
  for (int64_t i = 0; i < 16; ++i) EXPECT_EQ(wb[pb.offset + i], ws[ps.offset + i]) << "prefix rows kept, " << i;
  for (const char* n : {"dist_token", "head_dist.weight", "head_dist.bias", "cls_token"}) {
    const ParamSpec& a = small.param_spec(n);
    EXPECT_EQ(0, std::memcmp(ws.data() + a.offset, wb.data() + big.param_spec(n).offset, size_t(a.numel) * 4)) << n;
  }
  // A plain ViT cannot take them: the extra tensors are named.
  Model plain(tiny(8), *backend, 1);
  try {
    load_weights(tmp("timm_deit.safetensors"), plain);
    FAIL() << "a distilled file loaded into a model without the distillation token";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'dist_token'"), std::string::npos) << e.what();
  }
}
