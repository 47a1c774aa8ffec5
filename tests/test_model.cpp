// Tests for include/vitcuda/model.h, config.h and optim.h on the "cpu" backend: parameter
// counts, names, shapes and decay flags against timm, MACs, config validation and JSON,
// determinism, AdamW against PyTorch's formula, clipping, the LR schedule, and a short
// training run that must learn.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "tests/error_of.h"
#include "vitcuda/backend.h"
#include "vitcuda/config.h"
#include "vitcuda/model.h"
#include "vitcuda/optim.h"

using namespace vitcuda;
using vitcuda::test::error_of;

namespace {

#define EXPECT_CONTAINS(text, sub)                                                                \
  do {                                                                                            \
    const std::string text_ = (text);                                                             \
    EXPECT_NE(text_.find(sub), std::string::npos) << "'" << text_ << "' lacks '" << (sub) << "'"; \
  } while (0)

// Runs a scope with a given OpenMP thread count. Small models on a machine whose two cores are
// shared spend most of their time in OpenMP barriers waiting for a descheduled thread
// (measured: 1.6 s with one thread vs 12.7 s with two for the smoke test under load 8).
struct OmpThreads {
  int saved = omp_get_max_threads();
  explicit OmpThreads(int n) { omp_set_num_threads(n); }
  ~OmpThreads() { omp_set_num_threads(saved); }
};

// The parameter count of a timm VisionTransformer, from the architecture alone:
// Conv2d patch embedding (D*C*P*P + D), cls token (D), pos_embed ((N+1)*D), per block
// 2 LayerNorms (2*2D), qkv (3A*D + 3A), proj (D*A + D), fc1 (H*D + H), fc2 (D*H + D),
// the final norm (2D) and the head (K*D + K).
int64_t timm_param_count(const ViTConfig& c) {
  const int64_t D = c.embed_dim, A = c.attn_dim(), H = c.mlp_hidden_dim(), K = c.num_classes;
  const int64_t P = c.patch_size;
  int64_t n = D * c.in_chans * P * P + D;
  n += (c.class_token ? D : 0) + (c.distilled ? D : 0) + c.num_tokens() * D;  // cls, dist_token, pos_embed
  n += c.depth * (4 * D + 3 * A * D + (c.qkv_bias ? 3 * A : 0) + D * A + D + H * D + H + D * H + D);
  n += 2 * D;
  int64_t feat = c.pooled_dim();
  for (int h : c.head_mlp) n += int64_t(h) * feat + h, feat = h;
  if (c.pre_logits > 0) n += int64_t(c.pre_logits) * feat + c.pre_logits, feat = c.pre_logits;
  n += (K * feat + K) * (c.distilled ? 2 : 1);  // head (and head_dist)
  return n;
}

// timm's state_dict names and shapes, in order, for a standard ViT (cls token, token pool).
std::vector<std::pair<std::string, std::vector<int64_t>>> timm_table(const ViTConfig& c) {
  const int64_t D = c.embed_dim, Hm = c.mlp_hidden_dim();
  std::vector<std::pair<std::string, std::vector<int64_t>>> t = {
      {"patch_embed.proj.weight", {D, c.in_chans, c.patch_size, c.patch_size}},
      {"patch_embed.proj.bias", {D}},
      {"cls_token", {1, 1, D}},
      {"pos_embed", {1, c.num_patches() + 1, D}}};
  for (int l = 0; l < c.depth; ++l) {
    const std::string b = "blocks." + std::to_string(l) + ".";
    t.push_back({b + "norm1.weight", {D}});
    t.push_back({b + "norm1.bias", {D}});
    t.push_back({b + "attn.qkv.weight", {3 * D, D}});
    t.push_back({b + "attn.qkv.bias", {3 * D}});
    t.push_back({b + "attn.proj.weight", {D, D}});
    t.push_back({b + "attn.proj.bias", {D}});
    t.push_back({b + "norm2.weight", {D}});
    t.push_back({b + "norm2.bias", {D}});
    t.push_back({b + "mlp.fc1.weight", {Hm, D}});
    t.push_back({b + "mlp.fc1.bias", {Hm}});
    t.push_back({b + "mlp.fc2.weight", {D, Hm}});
    t.push_back({b + "mlp.fc2.bias", {D}});
  }
  t.push_back({"norm.weight", {D}});
  t.push_back({"norm.bias", {D}});
  t.push_back({"head.weight", {c.num_classes, D}});
  t.push_back({"head.bias", {c.num_classes}});
  return t;
}

// timm's rule (timm.optim.param_groups_weight_decay): no decay for 1-D tensors, biases and
// the no_weight_decay() set {pos_embed, cls_token}.
bool timm_decays(const ParamSpec& s) {
  if (s.name == "pos_embed" || s.name == "cls_token" || s.name == "dist_token") return false;
  if (s.name.size() >= 5 && s.name.compare(s.name.size() - 5, 5, ".bias") == 0) return false;
  return s.shape.size() >= 2;
}

void expect_table_consistent(const Model& m) {
  int64_t offset = 0, count = 0;
  for (const ParamSpec& s : m.params()) {
    int64_t n = 1;
    for (int64_t d : s.shape) n *= d;
    EXPECT_EQ(s.numel, n) << s.name;
    EXPECT_EQ(s.offset, (offset + 15) / 16 * 16) << s.name << ": table order, each tensor 16-element aligned";
    EXPECT_EQ(s.decay, timm_decays(s)) << s.name;
    offset = s.offset + s.numel;
    count += s.numel;
  }
  EXPECT_EQ(count, m.num_params());
  EXPECT_GE(m.arena_size(), offset);
}

// ---- parameter counts, names, shapes, decay flags, MACs ----------------------------------

// timm's published figures (timm.models results tables / model cards):
// params and GMACs at 224x224, 1000 classes.
struct TimmFigure {
  const char* name;
  int64_t params;
  double gmacs;
};
constexpr TimmFigure kTimm[] = {
    {"vit_tiny_patch16_224", 5717416, 1.26},    {"vit_small_patch16_224", 22050664, 4.61},
    {"vit_base_patch16_224", 86567656, 17.58},  {"vit_base_patch32_224", 88224232, 4.41},
    {"vit_large_patch16_224", 304326632, 61.6},
};

TEST(ModelTest, TimmFormulaMatchesPublishedCounts) {
  // The formula alone, for every size including vit_large (whose Model would allocate
  // ~2.4 GB of f32 parameters + gradients).
  for (const TimmFigure& f : kTimm) EXPECT_EQ(timm_param_count(preset(f.name)), f.params) << f.name;
}

// macs_per_image counts the GEMMs and the two attention matmuls. timm's GMACs come from
// fvcore, which also counts each LayerNorm as 5 ops per element: for vit_base the 25
// LayerNorms of 197 x 768 add 18.9 M to the 17,563.8 M counted here (0.11%); for vit_tiny
// 0.38%. The published figures are also rounded to two decimals (+-0.005 G).
void expect_timm_macs(const Model& m, double published_gmacs) {
  EXPECT_NEAR(m.macs_per_image() / 1e9, published_gmacs, 0.005 * published_gmacs + 0.005);
}

const TimmFigure& figure(const std::string& name) {
  for (const TimmFigure& f : kTimm)
    if (name == f.name) return f;
  throw Error("test bug: no figure for " + name);
}

TEST(ModelTest, TimmParamCountsAndMacs) {
  auto be = make_backend("cpu");
  // The Model's own table for the sizes whose arenas are cheap enough to allocate in a test
  // (vit_base_patch32: 88.2 M f32 params + grads = 0.7 GB); vit_base_patch16 has its own test.
  for (const char* name : {"vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch32_224"}) {
    SCOPED_TRACE(name);
    Model m(preset(name), *be, 1);
    EXPECT_EQ(m.num_params(), figure(name).params);
    expect_table_consistent(m);
    expect_timm_macs(m, figure(name).gmacs);
  }
}

// vit_base_patch16_224 against timm: 86,567,656 parameters (86.57 M), 17.58 GMACs, and the
// state_dict names, shapes and weight-decay groups.
TEST(ModelTest, VitBaseMatchesTimm) {
  auto be = make_backend("cpu");
  const ViTConfig c = preset("vit_base_patch16_224");
  Model m(c, *be, 1);
  EXPECT_EQ(m.num_params(), 86567656);
  expect_table_consistent(m);
  EXPECT_CONTAINS(m.summary(), "86567656");
  EXPECT_CONTAINS(m.summary(), "86.57 M");
  // Exactly: 196*768*768 (patch embed) + 12 * (197*768*2304 + 2*197*197*768 + 197*768*768
  // + 2*197*768*3072) + 768*1000 (head); within 0.5% of timm's 17.58 (see expect_timm_macs).
  EXPECT_DOUBLE_EQ(m.macs_per_image(), 17563828224.0);
  EXPECT_NEAR(m.macs_per_image() / 1e9, 17.58, 0.005 * 17.58);

  const auto expect = timm_table(c);
  ASSERT_EQ(m.params().size(), expect.size());  // 152 tensors, as timm's state_dict
  EXPECT_EQ(expect.size(), 152u);
  for (size_t i = 0; i < expect.size(); ++i) {
    EXPECT_EQ(m.params()[i].name, expect[i].first);
    EXPECT_EQ(shape_string(m.params()[i].shape), shape_string(expect[i].second)) << expect[i].first;
  }
  // A few spelled out.
  EXPECT_EQ(shape_string(m.param_spec("patch_embed.proj.weight").shape), "[768, 3, 16, 16]");
  EXPECT_EQ(shape_string(m.param_spec("cls_token").shape), "[1, 1, 768]");
  EXPECT_EQ(shape_string(m.param_spec("pos_embed").shape), "[1, 197, 768]");
  EXPECT_EQ(shape_string(m.param_spec("blocks.0.attn.qkv.weight").shape), "[2304, 768]");
  EXPECT_EQ(shape_string(m.param_spec("blocks.11.mlp.fc1.weight").shape), "[3072, 768]");
  EXPECT_EQ(shape_string(m.param_spec("head.weight").shape), "[1000, 768]");
  // Decay flags.
  for (const char* n : {"patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.3.attn.proj.weight",
                        "blocks.11.mlp.fc2.weight", "head.weight"})
    EXPECT_TRUE(m.param_spec(n).decay) << n;
  for (const char* n :
       {"patch_embed.proj.bias", "cls_token", "pos_embed", "blocks.0.norm1.weight", "blocks.0.norm1.bias",
        "blocks.0.attn.qkv.bias", "blocks.5.mlp.fc1.bias", "norm.weight", "norm.bias", "head.bias"})
    EXPECT_FALSE(m.param_spec(n).decay) << n;
  EXPECT_THROW(m.param_spec("blocks.12.norm1.weight"), Error);
  // Views have the table's shape, except the conv weight, which the ops use as [D, C*P*P].
  EXPECT_EQ(m.param("blocks.0.attn.qkv.weight").size(0), 2304);
  EXPECT_EQ(m.param("patch_embed.proj.weight").ndim(), 2);
  EXPECT_EQ(m.param("patch_embed.proj.weight").size(1), 768);
}

// timm's DeiT distilled models (VisionTransformerDistilled): the state_dict of a ViT plus
// dist_token [1, 1, D] after cls_token, pos_embed over both prefix tokens, head_dist after head;
// parameter counts as timm's model cards (deit_tiny 5.91 M, small 22.44 M, base 87.34 M), by
// the formula above, each term checked by hand: tiny 147,648 (patch embed) + 384 (cls, dist) +
// 38,016 (pos 198 x 192) + 12 x 444,864 (blocks) + 384 (norm) + 2 x 193,000 (head, head_dist).
TEST(ModelTest, DeitDistilledMatchesTimm) {
  const std::pair<const char*, int64_t> counts[] = {{"deit_tiny_distilled_patch16_224", 5910800},
                                                    {"deit_small_distilled_patch16_224", 22436432},
                                                    {"deit_base_distilled_patch16_224", 87338192}};
  for (const auto& [name, params] : counts) {
    const ViTConfig c = preset(name);
    EXPECT_TRUE(c.distilled) << name;
    EXPECT_EQ(c.num_prefix_tokens(), 2) << name;
    EXPECT_EQ(c.num_tokens(), 198) << name;
    EXPECT_EQ(c.param_count(), params) << name;
    EXPECT_EQ(timm_param_count(c), params) << name;
    EXPECT_EQ(c.pixel_mean[0], 0.485f) << name << ": ImageNet mean, as timm's DeiT configs";
    EXPECT_EQ(c.pixel_std[2], 0.225f) << name;
  }
  auto be = make_backend("cpu");
  const ViTConfig c = preset("deit_tiny_distilled_patch16_224");
  Model m(c, *be, 1);
  EXPECT_EQ(m.num_params(), 5910800);
  expect_table_consistent(m);
  auto expect = timm_table(c);
  expect[3].second = {1, 198, 192};                                // pos_embed: cls, dist, 196 patches
  expect.insert(expect.begin() + 3, {"dist_token", {1, 1, 192}});  // after cls_token
  expect.push_back({"head_dist.weight", {1000, 192}});
  expect.push_back({"head_dist.bias", {1000}});
  ASSERT_EQ(m.params().size(), expect.size());
  for (size_t i = 0; i < expect.size(); ++i) {
    EXPECT_EQ(m.params()[i].name, expect[i].first);
    EXPECT_EQ(shape_string(m.params()[i].shape), shape_string(expect[i].second)) << expect[i].first;
  }
  EXPECT_FALSE(m.param_spec("dist_token").decay);
  EXPECT_TRUE(m.param_spec("head_dist.weight").decay);
  EXPECT_FALSE(m.param_spec("head_dist.bias").decay);
  // Two heads of 192 x 1000 on top of the trunk's MACs.
  ViTConfig one_head = c;
  one_head.distilled = false;
  Model m1(one_head, *be, 1);
  EXPECT_GT(m.macs_per_image(), m1.macs_per_image() + 192.0 * 1000);
  EXPECT_CONTAINS(m.summary(), "distillation token");
  EXPECT_EQ(m.activation("head_dist.logits").size(1), 1000);
  // The distilled model's logits are the mean of its heads' (one 224 x 224 image on the CPU).
  m.init(3);
  std::vector<uint8_t> img(size_t(3) * 224 * 224);
  for (size_t i = 0; i < img.size(); ++i) img[i] = uint8_t(i * 37 % 251);
  const Tensor logits = m.forward(Tensor::view(img.data(), {1, 3, 224, 224}, DType::U8), false);
  const Tensor h = m.activation("head.logits"), hd = m.activation("head_dist.logits");
  for (int64_t j = 0; j < 1000; ++j)
    ASSERT_EQ(logits.ptr<float>()[j], 0.5f * (h.ptr<float>()[j] + hd.ptr<float>()[j])) << j;
}

TEST(ModelTest, DistilledConfigRules) {
  ViTConfig c = preset("vit_fmnist");
  c.distilled = true;
  c.validate();
  EXPECT_EQ(c.num_tokens(), 18);  // 16 patches + cls + dist
  ViTConfig n = c;
  n.class_token = false;
  n.pool = Pool::Avg;
  EXPECT_CONTAINS(error_of([&] { n.validate(); }), "distilled (the distillation token) needs class_token = true");
  ViTConfig a = c;
  a.pool = Pool::Avg;
  EXPECT_CONTAINS(error_of([&] { a.validate(); }), "needs global_pool 'token', got 'avg'");
  ViTConfig p = c;
  p.pre_logits = 8;
  EXPECT_CONTAINS(error_of([&] { p.validate(); }), "takes no pre_logits or head_mlp");
  ViTConfig h = c;
  h.head_mlp = {32};
  EXPECT_CONTAINS(error_of([&] { h.validate(); }), "takes no pre_logits or head_mlp");
  // JSON: "distilled" written only when set (earlier configs read and write as before).
  EXPECT_EQ(preset("vit_fmnist").to_json().find("distilled"), std::string::npos);
  EXPECT_NE(c.to_json().find("\"distilled\": true"), std::string::npos);
  EXPECT_TRUE(ViTConfig::from_json(c.to_json()).distilled);
  EXPECT_CONTAINS(error_of([] { ViTConfig::from_json(R"({"distilled": 1})"); }), "distilled has the wrong type");
}

TEST(ModelTest, VariantNamesAndCounts) {
  auto be = make_backend("cpu");
  // Mean pool without cls token: timm's fc_norm, no cls_token, N position rows.
  ViTConfig c = preset("vit_fmnist");
  c.class_token = false;
  c.pool = Pool::Avg;
  {
    Model m(c, *be, 2);
    EXPECT_THROW(m.param_spec("cls_token"), Error);
    EXPECT_THROW(m.param_spec("norm.weight"), Error);
    EXPECT_EQ(m.param_spec("fc_norm.weight").shape, std::vector<int64_t>{64});
    EXPECT_EQ(m.param_spec("pos_embed").shape, (std::vector<int64_t>{1, 16, 64}));
    EXPECT_EQ(m.num_params(), timm_param_count(c));
    expect_table_consistent(m);
  }
  // The Keras CIFAR-100 tutorial model: flatten + head MLP, head_dim 64 x 4 heads.
  {
    const ViTConfig k = preset("vit_keras_cifar100");
    Model m(k, *be, 1);
    EXPECT_EQ(m.param_spec("blocks.0.attn.qkv.weight").shape, (std::vector<int64_t>{768, 64}));
    EXPECT_EQ(m.param_spec("head_mlp.0.weight").shape, (std::vector<int64_t>{2048, 144 * 64}));
    EXPECT_EQ(m.param_spec("head_mlp.1.weight").shape, (std::vector<int64_t>{1024, 2048}));
    EXPECT_EQ(m.param_spec("head.weight").shape, (std::vector<int64_t>{100, 1024}));
    EXPECT_EQ(m.num_params(), timm_param_count(k));
    expect_table_consistent(m);
  }
  // Pre-logits.
  {
    ViTConfig p = preset("vit_fmnist");
    p.pre_logits = 32;
    Model m(p, *be, 1);
    EXPECT_EQ(m.param_spec("pre_logits.fc.weight").shape, (std::vector<int64_t>{32, 64}));
    EXPECT_TRUE(m.param_spec("pre_logits.fc.weight").decay);
    EXPECT_FALSE(m.param_spec("pre_logits.fc.bias").decay);
    EXPECT_EQ(m.param_spec("head.weight").shape, (std::vector<int64_t>{10, 32}));
    EXPECT_EQ(m.num_params(), timm_param_count(p));
  }
}

TEST(ModelTest, InitFollowsTimm) {
  auto be = make_backend("cpu");
  Model m(preset("vit_fmnist"), *be, 1);
  m.init(3);
  auto vals = [&](const char* n) {
    const Tensor t = m.param(n);
    return std::vector<float>(t.ptr<float>(), t.ptr<float>() + t.numel());
  };
  for (float v : vals("blocks.0.norm1.weight")) EXPECT_EQ(v, 1.f);
  for (float v : vals("blocks.0.norm1.bias")) EXPECT_EQ(v, 0.f);
  for (float v : vals("head.bias")) EXPECT_EQ(v, 0.f);
  for (float v : vals("cls_token")) EXPECT_LE(std::fabs(v), 1e-5f);
  const auto w = vals("blocks.1.mlp.fc1.weight");
  double ss = 0;
  for (float v : w) {
    EXPECT_LE(std::fabs(v), 0.04f + 1e-7f) << "truncated at 2 std";
    ss += double(v) * v;
  }
  // std of N(0, 0.02) truncated at +-2 std is 0.02 * 0.88 = 0.0176; 8192 samples.
  EXPECT_NEAR(std::sqrt(ss / w.size()), 0.0176, 0.001);
}

// ---- config validation and JSON --------------------------------------------------------------
TEST(ModelTest, ConfigValidationErrors) {
  auto be = make_backend("cpu");
  ViTConfig c = preset("vit_fmnist");
  c.validate();

  ViTConfig p = c;
  p.patch_size = 5;
  EXPECT_CONTAINS(error_of([&] { p.validate(); }), ("patch_size 5 does not divide the image size 28"));
  EXPECT_CONTAINS(error_of([&] { Model m(p, *be, 1); }), ("patch_size"));

  ViTConfig h = c;
  h.num_heads = 5;
  EXPECT_CONTAINS(error_of([&] { h.validate(); }), ("num_heads 5 does not divide the embedding dim 64"));

  EXPECT_CONTAINS(error_of([&] { Model m(c, *be, 0); }), ("batch size must be positive, got 0"));
  EXPECT_CONTAINS(error_of([&] { Model m(c, *be, -3); }), ("batch size must be positive"));

  const std::string unknown = error_of([] { preset("vit_gigantic_patch1_9000"); });
  EXPECT_CONTAINS(unknown, ("unknown model 'vit_gigantic_patch1_9000'"));
  EXPECT_CONTAINS(unknown, ("vit_base_patch16_224"));  // lists the known names

  ViTConfig d = c;
  d.drop_rate = 1.f;
  EXPECT_CONTAINS(error_of([&] { d.validate(); }), ("drop_rate must be in [0, 1)"));
  ViTConfig t = c;
  t.class_token = false;  // pool stays Token
  EXPECT_CONTAINS(error_of([&] { t.validate(); }), ("'token' needs class_token"));
  ViTConfig k = c;
  k.num_classes = 0;
  EXPECT_CONTAINS(error_of([&] { k.validate(); }), ("num_classes"));

  // Every message is the library's Error type (callers catch one type).
  EXPECT_THROW(p.validate(), Error);
  EXPECT_THROW(preset("nope"), Error);

  // forward() rejects wrong image shapes and batch sizes.
  Model m(c, *be, 2);
  std::vector<uint8_t> px(3 * 28 * 28);
  EXPECT_CONTAINS(error_of([&] {
                    m.forward(Tensor::view(px.data(), {3, 1, 28, 28}, DType::U8), false);
                  }),
                  ("batch 3 is outside [1, 2]"));
  EXPECT_CONTAINS(error_of([&] {
                    m.forward(Tensor::view(px.data(), {1, 3, 28, 28}, DType::U8), false);
                  }),
                  ("images must be [B, 1, 28, 28]"));
  std::vector<int32_t> bad_labels = {0, 10};
  m.forward(Tensor::view(px.data(), {2, 1, 28, 28}, DType::U8), false);
  EXPECT_CONTAINS(error_of([&] { m.loss(bad_labels.data(), 0.f, false); }), ("label 10 of sample 1"));
}

void expect_same_config(const ViTConfig& a, const ViTConfig& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.img_size, b.img_size);
  EXPECT_EQ(a.in_chans, b.in_chans);
  EXPECT_EQ(a.patch_size, b.patch_size);
  for (int c = 0; c < a.in_chans; ++c) {
    EXPECT_EQ(a.pixel_mean[c], b.pixel_mean[c]);
    EXPECT_EQ(a.pixel_std[c], b.pixel_std[c]);
  }
  EXPECT_EQ(a.embed_dim, b.embed_dim);
  EXPECT_EQ(a.depth, b.depth);
  EXPECT_EQ(a.num_heads, b.num_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.mlp_ratio, b.mlp_ratio);
  EXPECT_EQ(a.mlp_hidden, b.mlp_hidden);
  EXPECT_EQ(a.mlp_gelu_out, b.mlp_gelu_out);
  EXPECT_EQ(a.qkv_bias, b.qkv_bias);
  EXPECT_EQ(a.qk_scale, b.qk_scale);
  EXPECT_EQ(a.class_token, b.class_token);
  EXPECT_EQ(a.distilled, b.distilled);
  EXPECT_EQ(a.pool, b.pool);
  EXPECT_EQ(a.ln_eps, b.ln_eps);
  EXPECT_EQ(a.gelu, b.gelu);
  EXPECT_EQ(a.drop_rate, b.drop_rate);
  EXPECT_EQ(a.attn_drop_rate, b.attn_drop_rate);
  EXPECT_EQ(a.drop_path_rate, b.drop_path_rate);
  EXPECT_EQ(a.pre_logits, b.pre_logits);
  EXPECT_EQ(a.head_mlp, b.head_mlp);
  EXPECT_EQ(a.head_drop_rate, b.head_drop_rate);
  EXPECT_EQ(a.num_classes, b.num_classes);
}

TEST(ModelTest, ConfigJsonRoundTrip) {
  for (const std::string& name : preset_names()) {
    SCOPED_TRACE(name);
    const ViTConfig c = preset(name);
    const ViTConfig r = ViTConfig::from_json(c.to_json());
    expect_same_config(c, r);
    EXPECT_EQ(r.to_json(), c.to_json());
  }
  // Every field away from its default, floats that are not short decimals included.
  ViTConfig c;
  c.name = "everything";
  c.img_size = 30;
  c.in_chans = 3;
  c.patch_size = 5;
  c.pixel_mean = {0.1f, 0.2f, 0.3f, 0.f};
  c.pixel_std = {0.7f, 0.8f, 1.f / 3.f, 1.f};
  c.embed_dim = 48;
  c.depth = 3;
  c.num_heads = 3;
  c.head_dim = 20;
  c.mlp_ratio = 2.5f;
  c.mlp_hidden = 100;
  c.mlp_gelu_out = true;
  c.qkv_bias = false;
  c.qk_scale = 0.123456789f;
  c.class_token = false;
  c.pool = Pool::Flatten;
  c.ln_eps = 1e-5f;
  c.gelu = Gelu::Tanh;
  c.drop_rate = 0.1f;
  c.attn_drop_rate = 0.2f;
  c.drop_path_rate = 0.3f;
  c.pre_logits = 17;
  c.head_mlp = {64, 32};
  c.head_drop_rate = 0.5f;
  c.num_classes = 7;
  const ViTConfig r = ViTConfig::from_json(c.to_json());
  expect_same_config(c, r);
  EXPECT_EQ(r.to_json(), c.to_json());

  // Missing keys take the defaults; bad input names the problem.
  expect_same_config(ViTConfig::from_json("{}"), ViTConfig{});
  EXPECT_CONTAINS(error_of([] { ViTConfig::from_json("{\"depth\": "); }), ("JSON is invalid"));
  EXPECT_CONTAINS(error_of([] { ViTConfig::from_json("[1, 2]"); }), ("not an object"));
  EXPECT_CONTAINS(error_of([] { ViTConfig::from_json("{\"depth\": \"six\"}"); }), ("wrong type"));
  EXPECT_CONTAINS(error_of([] { ViTConfig::from_json("{\"global_pool\": \"max\"}"); }), ("global_pool"));
  EXPECT_CONTAINS(error_of([] { ViTConfig::from_json("{\"img_size\": 30}"); }), ("does not divide"));
}

// ---- determinism -----------------------------------------------------------------------------
ViTConfig small_train_config() {
  ViTConfig c = preset("vit_fmnist");
  c.depth = 1;
  c.drop_rate = 0.1f;
  c.attn_drop_rate = 0.1f;
  c.drop_path_rate = 0.2f;
  return c;
}

std::vector<uint8_t> random_images(int n, int pixels, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> v(size_t(n) * pixels);
  for (uint8_t& p : v) p = uint8_t(rng() & 0xFF);
  return v;
}

TEST(ModelTest, DeterministicInitForwardBackward) {
  // Two threads, so that per-thread partial sums (LayerNorm's dgamma, the split GEMMs) are
  // part of what must be reproducible.
  const OmpThreads two(2);
  auto be = make_backend("cpu");
  const ViTConfig c = small_train_config();
  const int B = 8;
  Model a(c, *be, B), b(c, *be, B);
  a.init(11);
  b.init(11);
  EXPECT_EQ(a.get_master(), b.get_master()) << "same seed, same weights";
  {
    Model other(c, *be, B);
    other.init(12);
    EXPECT_NE(other.get_master(), a.get_master()) << "another seed, other weights";
  }
  auto px = random_images(B, 28 * 28, 5);
  const Tensor images = Tensor::view(px.data(), {B, 1, 28, 28}, DType::U8);
  std::vector<int32_t> labels = {0, 1, 2, 3, 4, 5, 6, 7};

  auto run = [&](Model& m, uint64_t step) {
    m.forward(images, true, 42, step);
    const StepStats st = m.loss(labels.data(), 0.1f, true);
    m.zero_grad();
    m.backward();
    const Tensor g = m.grad_arena();
    return std::make_pair(st.loss, std::vector<float>(g.ptr<float>(), g.ptr<float>() + g.numel()));
  };
  const auto r1 = run(a, 1), r2 = run(a, 1), r3 = run(b, 1);
  // Bitwise: the same ops in the same order with the same masks (no atomics on the cpu).
  EXPECT_EQ(std::memcmp(&r1.first, &r2.first, sizeof(double)), 0) << r1.first << " vs " << r2.first;
  EXPECT_EQ(std::memcmp(&r1.first, &r3.first, sizeof(double)), 0);
  EXPECT_TRUE(r1.second == r2.second) << "gradients of two identical steps differ";
  EXPECT_TRUE(r1.second == r3.second) << "gradients of two identically seeded models differ";
  // Another step draws other dropout masks.
  const auto r4 = run(a, 2);
  EXPECT_NE(r4.first, r1.first);
  // Evaluation ignores the masks: same loss for any (seed, step).
  a.forward(images, false, 1, 1);
  const double e1 = a.loss(labels.data(), 0.f, false).loss;
  a.forward(images, false, 2, 9);
  EXPECT_EQ(a.loss(labels.data(), 0.f, false).loss, e1);
}

// ---- AdamW -----------------------------------------------------------------------------------
// PyTorch's torch.optim.AdamW (single tensor, foreach=False), written out in double:
//   p *= 1 - lr * wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
struct TorchAdamW {
  double lr, b1, b2, eps, wd;
  std::vector<double> p, m, v;
  int t = 0;
  void step(const std::vector<double>& g, const std::vector<bool>& decay) {
    ++t;
    for (size_t i = 0; i < p.size(); ++i) {
      if (decay[i]) p[i] *= 1 - lr * wd;
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
      p[i] -= (lr / bc1) * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + eps);
    }
  }
};

TEST(ModelTest, AdamWMatchesPyTorchFormula) {
  auto be = make_backend("cpu");
  // Two decayed weights, then two without decay (a bias-like segment).
  std::vector<float> master = {1.0f, -2.0f, 0.5f, 3.0f}, grads(4), m(4, 0.f), v(4, 0.f);
  const AdamWSegment segs[] = {{0, 2, true}, {2, 2, false}};
  AdamWHyper h;
  h.lr = 0.1f;
  h.weight_decay = 0.01f;
  TorchAdamW ref{h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, {1.0, -2.0, 0.5, 3.0}, {0, 0, 0, 0}, {0, 0, 0, 0}};
  const std::vector<bool> decay = {true, true, false, false};
  const std::vector<std::vector<double>> gs = {{0.5, -0.1, 0.25, -4.0}, {-0.3, 0.2, 0.25, 1.0}, {0.1, 0.1, -2, 0}};
  auto view = [](std::vector<float>& x) { return Tensor::view(x.data(), {int64_t(x.size())}, DType::F32); };
  for (size_t s = 0; s < gs.size(); ++s) {
    for (int i = 0; i < 4; ++i) grads[i] = float(gs[s][i]);
    h.step = int64_t(s + 1);
    be->adamw_update(view(master), view(grads), view(m), view(v), view(master), h, segs, 2);
    ref.step(gs[s], decay);
    if (s == 0) {
      // Step 1 by hand: mhat = g, vhat = g^2, so the update is lr * g / (|g| + eps):
      // 1.0 * (1 - 0.1 * 0.01) - 0.1 * 0.5 / (0.5 + 1e-8) = 0.999 - 0.099999998 = 0.899000002
      // -2.0 * 0.999 + 0.1 * 0.1 / (0.1 + 1e-8) = -1.998 + 0.09999999 = -1.89800001
      // 0.5 (no decay) - 0.1 = 0.4;  3.0 (no decay) + 0.1 = 3.1
      EXPECT_NEAR(master[0], 0.899000002, 1e-6);  // f32 arithmetic: ~1 ulp of 1.0 is 1.2e-7
      EXPECT_NEAR(master[1], -1.89800001, 1e-6);
      EXPECT_NEAR(master[2], 0.4, 1e-6);
      EXPECT_NEAR(master[3], 3.1, 1e-6);
    }
    for (int i = 0; i < 4; ++i) {
      // f32 state and arithmetic vs double: a few ulps of values ~1.
      EXPECT_NEAR(master[i], ref.p[i], 2e-6) << "step " << s + 1 << ", element " << i;
      EXPECT_NEAR(m[i], ref.m[i], 1e-6 * (1 + std::fabs(ref.m[i])));
      EXPECT_NEAR(v[i], ref.v[i], 1e-6 * (1 + std::fabs(ref.v[i])));
    }
  }
  // grad_scale multiplies the gradient before the moments.
  std::vector<float> p2 = {1.f}, g2 = {2.f}, m2 = {0.f}, v2 = {0.f};
  AdamWHyper h2;
  h2.grad_scale = 0.25f;
  const AdamWSegment seg2{0, 1, false};
  be->adamw_update(view(p2), view(g2), view(m2), view(v2), view(p2), h2, &seg2, 1);
  // (1 - beta) is formed from the f32 betas (0.9f, 0.999f): compare at f32 precision.
  EXPECT_NEAR(m2[0], (1.0 - double(h2.beta1)) * 0.5, 1e-6 * 0.05);
  EXPECT_NEAR(v2[0], (1.0 - double(h2.beta2)) * 0.25, 1e-6 * 0.00025);
}

ViTConfig tiny_model_config() {
  ViTConfig c = preset("vit_fmnist");
  c.depth = 1;
  c.embed_dim = 16;
  c.num_heads = 2;
  return c;
}

TEST(ModelTest, AdamWDecaysOnlyDecaySegments) {
  auto be = make_backend("cpu");
  Model model(tiny_model_config(), *be, 1);
  model.init(1);
  // Non-zero everywhere, so "unchanged" means something for biases and norms too.
  std::vector<float> w0 = model.get_master();
  for (size_t i = 0; i < w0.size(); ++i) w0[i] = 0.5f + float(i % 7) * 0.1f;
  model.set_master(w0);
  AdamWConfig oc;
  oc.weight_decay = 0.1f;
  AdamW opt(model, oc);
  model.zero_grad();
  // Zero gradients: m = v = 0, the Adam term is 0 / (0 + eps) = 0, only the decay acts.
  opt.step(0.01f);
  const double norm = opt.last_grad_norm();
  EXPECT_EQ(norm, 0.0);
  EXPECT_EQ(opt.steps_taken(), 1);
  const std::vector<float> w1 = model.get_master();
  for (const ParamSpec& s : model.params()) {
    for (int64_t i = s.offset; i < s.offset + s.numel; ++i) {
      if (s.decay)
        ASSERT_FLOAT_EQ(w1[i], w0[i] * (1.f - 0.01f * 0.1f)) << s.name;
      else
        ASSERT_EQ(w1[i], w0[i]) << s.name << " must not decay";
    }
  }
  // The compute copy is the master (f32 model).
  const Tensor p = model.param_arena();
  EXPECT_EQ(std::vector<float>(p.ptr<float>(), p.ptr<float>() + p.numel()), w1);
}

TEST(ModelTest, AdamWGlobalNormClipping) {
  auto be = make_backend("cpu");
  Model model(tiny_model_config(), *be, 1);
  model.init(1);
  const int64_t n = model.num_params();
  auto set_grads = [&](float g) {
    float* gp = model.grad_arena().ptr<float>();
    for (int64_t i = 0; i < n; ++i) gp[i] = (i % 2 ? -g : g);
  };
  AdamWConfig oc;
  oc.clip_grad = 1.f;
  {
    AdamW opt(model, oc);
    set_grads(0.1f);  // norm = 0.1 * sqrt(n) > 1 (n ~ 3.5k)
    const double expect_norm = 0.1 * std::sqrt(double(n));
    ASSERT_GT(expect_norm, 1.0);
    opt.step(1e-3f);
    const double norm = opt.last_grad_norm();
    EXPECT_NEAR(norm, expect_norm, 1e-5 * expect_norm);
    // torch.nn.utils.clip_grad_norm_: g *= max_norm / (norm + 1e-6); m = (1 - b1) * g.
    const double scale = 1.0 / (norm + 1e-6);
    const std::vector<float> m = opt.exp_avg();
    for (int64_t i = 0; i < n; i += 997)
      EXPECT_NEAR(m[i], (1.0 - double(oc.beta1)) * (i % 2 ? -0.1 : 0.1) * scale, 1e-6 * 0.01 * scale) << i;
    // The clipped gradient has norm clip: sum of m^2 = (0.1 * clip)^2.
    double ss = 0;
    for (float x : m) ss += double(x) * x;
    EXPECT_NEAR(std::sqrt(ss), 0.1, 1e-5);
  }
  {
    AdamW opt(model, oc);
    set_grads(1e-3f);  // norm = 1e-3 * sqrt(n) < 1: no clipping
    ASSERT_LT(1e-3 * std::sqrt(double(n)), 1.0);
    opt.step(1e-3f);
    const std::vector<float> m = opt.exp_avg();
    EXPECT_NEAR(m[0], (1.0 - double(oc.beta1)) * 1e-3, 1e-6 * 1e-4);
    EXPECT_NEAR(m[1], -(1.0 - double(oc.beta1)) * 1e-3, 1e-6 * 1e-4);
  }
  AdamWConfig negative_lr;
  negative_lr.lr = -1.f;
  EXPECT_THROW(AdamW(model, negative_lr), Error);
}

// ---- learning-rate schedule ----------------------------------------------------------------
TEST(ModelTest, LrScheduleWarmupAndCosine) {
  LrSchedule s;
  s.base_lr = 1e-3f;
  s.min_lr = 1e-5f;
  s.warmup_steps = 10;
  s.total_steps = 110;
  s.cosine = true;
  // Linear warmup: step k (0-based) gets base * (k + 1) / warmup.
  EXPECT_FLOAT_EQ(s.at(0), 1e-4f);
  EXPECT_FLOAT_EQ(s.at(4), 5e-4f);
  EXPECT_FLOAT_EQ(s.at(9), 1e-3f);
  for (int64_t k = 1; k < 10; ++k) EXPECT_GT(s.at(k), s.at(k - 1));
  // Cosine from base at the end of warmup to min at total_steps, halfway at the midpoint.
  EXPECT_FLOAT_EQ(s.at(10), 1e-3f);
  EXPECT_FLOAT_EQ(s.at(60), 0.5f * (1e-3f + 1e-5f));
  EXPECT_FLOAT_EQ(s.at(110), 1e-5f);
  EXPECT_FLOAT_EQ(s.at(500), 1e-5f);  // stays at min past the end
  for (int64_t k = 11; k <= 110; ++k) EXPECT_LE(s.at(k), s.at(k - 1));
  // Constant after warmup without cosine; no warmup starts at base.
  s.cosine = false;
  EXPECT_FLOAT_EQ(s.at(50), 1e-3f);
  EXPECT_FLOAT_EQ(s.at(109), 1e-3f);
  s.warmup_steps = 0;
  EXPECT_FLOAT_EQ(s.at(0), 1e-3f);
  s.cosine = true;
  EXPECT_FLOAT_EQ(s.at(0), 1e-3f);
  EXPECT_FLOAT_EQ(s.at(110), 1e-5f);
}

// ---- training smoke test -----------------------------------------------------------------------
// The default preset, 2 blocks, on 512 synthetic images of two classes: dark (pixels around
// 60) and bright (around 190), with noise. A few dozen AdamW steps must take the loss from
// ~ln 2 to a small fraction of it.
TEST(ModelTest, TrainingSmokeTestLearns) {
  const OmpThreads one(1);  // a learning test, not a threading test (see OmpThreads)
  auto be = make_backend("cpu");
  ViTConfig c = preset(default_preset());
  c.depth = 2;
  c.num_classes = 2;
  const int N = 512, B = 32, P = 28 * 28;
  std::mt19937_64 rng(8);
  std::normal_distribution<double> noise(0.0, 40.0);
  std::vector<uint8_t> px(size_t(N) * P);
  std::vector<int32_t> labels(N);
  for (int i = 0; i < N; ++i) {
    labels[i] = i % 2;
    const double base = labels[i] ? 190.0 : 60.0;
    for (int k = 0; k < P; ++k) px[size_t(i) * P + k] = uint8_t(std::clamp(base + noise(rng), 0.0, 255.0));
  }
  Model model(c, *be, B);
  model.init(0);
  AdamWConfig oc;
  oc.lr = 1e-3f;
  oc.clip_grad = 1.f;
  AdamW opt(model, oc);
  std::vector<double> losses;
  const int steps = 48;  // 3 epochs of 16 batches
  for (int s = 0; s < steps; ++s) {
    const int first = (s % (N / B)) * B;
    const Tensor images = Tensor::view(px.data() + size_t(first) * P, {B, 1, 28, 28}, DType::U8);
    model.forward(images, true, 1, uint64_t(s));
    losses.push_back(model.loss(labels.data() + first, 0.f, true).loss);
    model.zero_grad();
    model.backward();
    opt.step(oc.lr);
  }
  const double start = losses[0];
  double end = 0;
  for (int s = steps - 8; s < steps; ++s) end += losses[s] / 8;
  if (std::getenv("VITCUDA_TEST_VERBOSE"))
    for (double l : losses) std::printf("%.4f ", l);
  EXPECT_GT(start, 0.4) << "an untrained two-class model starts near ln 2 = 0.69";
  EXPECT_LT(end, start / 10) << "loss went from " << start << " to " << end;
  // And it classifies the training images.
  int64_t correct = 0;
  for (int first = 0; first < N; first += B) {
    model.forward(Tensor::view(px.data() + size_t(first) * P, {B, 1, 28, 28}, DType::U8), false);
    correct += model.loss(labels.data() + first, 0.f, false).top1;
  }
  EXPECT_GE(correct, N * 95 / 100);
}

}  // namespace

// A Model built for inference (Use::Inference: a distillation teacher, vit_infer) computes the
// same logits bit for bit as one built for training, with one block's activations instead of
// every block's and no gradients; what needs the rest is refused naming it.
TEST(ModelTest, InferenceModelMatchesTrainingForwardInLessMemory) {
  auto be = make_backend("cpu");
  ViTConfig avg = preset("vit_fmnist");
  avg.class_token = false;
  avg.pool = Pool::Avg;
  ViTConfig flat = preset("vit_fmnist");
  flat.pool = Pool::Flatten;
  flat.head_mlp = {32};
  flat.pre_logits = 16;
  flat.mlp_gelu_out = true;
  ViTConfig deit = preset("vit_fmnist");
  deit.distilled = true;
  std::vector<uint8_t> img(size_t(5) * 28 * 28);
  for (size_t i = 0; i < img.size(); ++i) img[i] = uint8_t(i * 131 % 253);
  const Tensor x = Tensor::view(img.data(), {5, 1, 28, 28}, DType::U8);
  for (const ViTConfig& c : {preset("vit_fmnist"), avg, flat, deit}) {
    SCOPED_TRACE(std::string(pool_name(c.pool)) + (c.distilled ? " distilled" : ""));
    Model train(c, *be, 5);
    Model infer(c, *be, 5, be->compute_dtype(), 64, Model::Use::Inference);
    train.init(11);
    infer.set_master(train.get_master());
    const Tensor a = train.forward(x, false), b = infer.forward(x, false);
    ASSERT_EQ(a.numel(), b.numel());
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), size_t(a.nbytes()))) << "logits differ";
    // 6 blocks' activations and the gradient scratch against one block's.
    EXPECT_LT(infer.activation_bytes() * 3, train.activation_bytes());
    EXPECT_FALSE(infer.grad_arena().defined());
    EXPECT_EQ(infer.activation("logits").numel(), a.numel());
  }
  Model infer(preset("vit_fmnist"), *be, 5, be->compute_dtype(), 64, Model::Use::Inference);
  infer.init(1);
  std::vector<int32_t> labels = {0, 1, 2, 3, 4};
  EXPECT_CONTAINS(error_of([&] { infer.forward(x, true); }), "built for inference): a training forward");
  infer.forward(x, false);
  EXPECT_NO_THROW(infer.loss(labels.data(), 0.f, false));  // evaluation
  EXPECT_CONTAINS(error_of([&] { infer.loss(labels.data(), 0.f, true); }), "needs a Model built with Use::Training");
  EXPECT_CONTAINS(error_of([&] { infer.backward(); }), "backward() needs");
  EXPECT_CONTAINS(error_of([&] { infer.zero_grad(); }), "zero_grad() needs");
  EXPECT_CONTAINS(error_of([&] { infer.grad("head.weight"); }), "grad() needs");
  EXPECT_CONTAINS(error_of([&] { infer.activation("blocks.0.qkv"); }), "activation 'blocks.0.qkv' is not kept");
  EXPECT_CONTAINS(error_of([&] { infer.activation("res.0"); }), "activation 'res.0' is not kept");
  EXPECT_CONTAINS(error_of([&] { AdamW opt(infer, AdamWConfig{}); }), "built for inference (no gradients)");
  EXPECT_CONTAINS(infer.summary(), "inference: one block's");
}
