// vitcuda — ViTConfig presets, validation and JSON.
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>

#include "vitcuda/config.h"
#include "vitcuda/tensor.h"

namespace vitcuda {

float ViTConfig::attn_scale() const {
  return qk_scale > 0.f ? qk_scale : 1.f / std::sqrt(static_cast<float>(attn_head_dim()));
}

const char* pool_name(Pool p) {
  switch (p) {
    case Pool::Token: return "token";
    case Pool::Avg: return "avg";
    case Pool::Flatten: return "flatten";
  }
  return "?";
}
const char* gelu_name(Gelu g) { return g == Gelu::Erf ? "erf" : "tanh"; }

namespace {
[[noreturn]] void bad(const std::string& field, const std::string& what) {
  throw Error("invalid model config: " + field + " " + what);
}

ViTConfig timm_vit(const std::string& name, int patch, int dim, int depth, int heads) {
  ViTConfig c;
  c.name = name;
  c.img_size = 224;
  c.in_chans = 3;
  c.patch_size = patch;
  c.embed_dim = dim;
  c.depth = depth;
  c.num_heads = heads;
  c.mlp_ratio = 4.f;
  c.num_classes = 1000;
  c.pixel_mean = {0.5f, 0.5f, 0.5f, 0.f};  // timm's augreg ViT weights use mean = std = 0.5
  c.pixel_std = {0.5f, 0.5f, 0.5f, 1.f};
  return c;
}

std::map<std::string, ViTConfig> make_presets() {
  std::map<std::string, ViTConfig> m;
  {
    // The default: a small ViT for 28x28 Fashion-MNIST / MNIST that trains on two CPU cores
    // in minutes. 7x7 patches give 16 tokens + cls; 2 heads of 32 (the attention kernels
    // support head dims 32, 64, 80, 128).
    ViTConfig c;
    c.name = "vit_fmnist";
    c.img_size = 28;
    c.in_chans = 1;
    c.patch_size = 7;
    c.embed_dim = 64;
    c.depth = 6;
    c.num_heads = 2;
    c.mlp_ratio = 2.f;
    c.num_classes = 10;
    c.pixel_mean = {0.2860f, 0.f, 0.f, 0.f};  // Fashion-MNIST training-set statistics
    c.pixel_std = {0.3530f, 1.f, 1.f, 1.f};
    c.drop_path_rate = 0.05f;
    m[c.name] = c;
  }
  {
    // The Keras CIFAR-100 tutorial (shared/seeds/000): 72x72 inputs, 6x6 patches, no cls token,
    // Flatten + MLP head 2048 -> 1024 with dropout 0.5, MHA key_dim 64 x 4 heads, MLP 128 -> 64
    // with GELU on both Dense layers, dropout 0.1, LayerNorm eps 1e-6.
    ViTConfig c;
    c.name = "vit_keras_cifar100";
    c.img_size = 72;
    c.in_chans = 3;
    c.patch_size = 6;
    c.embed_dim = 64;
    c.depth = 8;
    c.num_heads = 4;
    c.head_dim = 64;
    c.mlp_hidden = 128;
    c.mlp_gelu_out = true;
    c.class_token = false;
    c.pool = Pool::Flatten;
    c.drop_rate = 0.1f;
    c.attn_drop_rate = 0.1f;
    c.head_mlp = {2048, 1024};
    c.head_drop_rate = 0.5f;
    c.num_classes = 100;
    c.pixel_mean = {0.5071f, 0.4865f, 0.4409f, 0.f};  // CIFAR-100 training-set statistics
    c.pixel_std = {0.2673f, 0.2564f, 0.2762f, 1.f};
    m[c.name] = c;
  }
  // timm's DeiT distilled models (Touvron et al. 2021): ViT-Ti/S/B with the distillation token,
  // ImageNet mean / std.
  for (auto [name, dim, heads] : {std::tuple<const char*, int, int>{"deit_tiny_distilled_patch16_224", 192, 3},
                                  {"deit_small_distilled_patch16_224", 384, 6},
                                  {"deit_base_distilled_patch16_224", 768, 12}}) {
    ViTConfig c = timm_vit(name, 16, dim, 12, heads);
    c.distilled = true;
    c.pixel_mean = {0.485f, 0.456f, 0.406f, 0.f};  // timm IMAGENET_DEFAULT_MEAN / STD
    c.pixel_std = {0.229f, 0.224f, 0.225f, 1.f};
    m[c.name] = c;
  }
  for (const ViTConfig& c :
       {timm_vit("vit_tiny_patch16_224", 16, 192, 12, 3), timm_vit("vit_small_patch16_224", 16, 384, 12, 6),
        timm_vit("vit_base_patch16_224", 16, 768, 12, 12), timm_vit("vit_large_patch16_224", 16, 1024, 24, 16),
        timm_vit("vit_base_patch32_224", 32, 768, 12, 12), timm_vit("vit_large_patch32_224", 32, 1024, 24, 16),
        timm_vit("vit_huge_patch14_224", 14, 1280, 32, 16)})
    m[c.name] = c;
  return m;
}

const std::map<std::string, ViTConfig>& presets() {
  static const std::map<std::string, ViTConfig> m = make_presets();
  return m;
}
}  // namespace

const char* default_preset() { return "vit_fmnist"; }

ViTConfig preset(const std::string& name) {
  auto it = presets().find(name);
  if (it == presets().end()) {
    std::string known;
    for (const auto& kv : presets()) known += (known.empty() ? "" : ", ") + kv.first;
    throw Error("unknown model '" + name + "' (known: " + known + ")");
  }
  return it->second;
}

std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const auto& kv : presets()) names.push_back(kv.first);
  return names;
}

namespace {
// "%g" of a float, so that NaN, inf and 1e+39 read as themselves.
std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}
// NaN fails every comparison, so each range is written as !(lo <= v && v <= hi).
void int_in(const char* field, int64_t v, int64_t lo, int64_t hi) {
  if (!(lo <= v && v <= hi))
    bad(field, "must be " + std::to_string(lo) + " to " + std::to_string(hi) + ", got " + std::to_string(v));
}
void real_in(const char* field, double v, double lo, double hi, bool lo_open = false, bool hi_open = false) {
  const bool ok = (lo_open ? lo < v : lo <= v) && (hi_open ? v < hi : v <= hi);
  if (!ok)
    bad(field, std::string("must be in ") + (lo_open ? "(" : "[") + num(lo) + ", " + num(hi) + (hi_open ? ")" : "]") +
                   ", got " + num(v));
}
}  // namespace

int64_t ViTConfig::param_count() const {
  // The tensors of Model's constructor (host/model.cpp), each product in 64 bits.
  const int64_t D = embed_dim, A = int64_t(num_heads) * attn_head_dim(), H = mlp_hidden_dim();
  int64_t n = D * in_chans * patch_size * patch_size + D + int64_t(num_prefix_tokens()) * D + int64_t(num_tokens()) * D;
  const int64_t block = 4 * D + 3 * A * D + (qkv_bias ? 3 * A : 0) + A * D + D + 2 * H * D + H + D;
  n += int64_t(depth) * block + 2 * D;
  int64_t feat = pool == Pool::Flatten ? int64_t(num_tokens()) * D : D;
  for (int h : head_mlp) {
    n += int64_t(h) * feat + h;
    feat = h;
  }
  if (pre_logits > 0) {
    n += int64_t(pre_logits) * feat + pre_logits;
    feat = pre_logits;
  }
  return n + int64_t(num_classes) * feat * (distilled ? 2 : 1) + num_classes * (distilled ? 2 : 1);
}

void ViTConfig::validate() const {
  using L = ViTLimits;
  auto s = [](auto v) { return std::to_string(v); };
  int_in("img_size", img_size, 1, L::kImgSize);
  int_in("in_chans", in_chans, 1, 4);
  int_in("patch_size", patch_size, 1, img_size);
  if (img_size % patch_size != 0) bad("patch_size", s(patch_size) + " does not divide the image size " + s(img_size));
  if (int64_t(grid()) * grid() > L::kPatches)
    bad("patch_size", s(patch_size) + " makes " + s(int64_t(grid()) * grid()) + " patches of the image size " +
                          s(img_size) + ", more than " + s(L::kPatches));
  int_in("embed_dim", embed_dim, 1, L::kEmbedDim);
  int_in("depth", depth, 1, L::kDepth);
  int_in("num_heads", num_heads, 1, L::kNumHeads);
  int_in("head_dim", head_dim, 0, L::kHeadDim);
  if (head_dim == 0 && embed_dim % num_heads != 0)
    bad("num_heads", s(num_heads) + " does not divide the embedding dim " + s(embed_dim));
  if (int64_t(num_heads) * attn_head_dim() > L::kAttnDim)
    bad("num_heads", s(num_heads) + " heads of " + s(attn_head_dim()) + " (head_dim) are " +
                         s(int64_t(num_heads) * attn_head_dim()) + " attention channels, more than " + s(L::kAttnDim));
  real_in("mlp_ratio", mlp_ratio, 0, L::kMlpRatio);
  int_in("mlp_hidden", mlp_hidden, 0, L::kMlpHidden);
  if (mlp_hidden == 0) {
    // mlp_ratio and embed_dim are bounded above, so the float product cannot overflow.
    const int64_t h = mlp_hidden_dim();
    if (!(1 <= h && h <= L::kMlpHidden))
      bad("mlp_ratio", num(mlp_ratio) + " x embed_dim " + s(embed_dim) + " gives an MLP of " + s(h) +
                           " units, must be 1 to " + s(L::kMlpHidden));
  }
  real_in("qk_scale", qk_scale, 0, L::kQkScale);  // 0: head_dim^-0.5
  real_in("ln_eps", ln_eps, 0, L::kLnEps, /*lo_open=*/true);
  for (auto [field, rate] : {std::pair<const char*, float>{"drop_rate", drop_rate},
                             {"attn_drop_rate", attn_drop_rate},
                             {"drop_path_rate", drop_path_rate},
                             {"head_drop_rate", head_drop_rate}})
    real_in(field, rate, 0, 1, false, /*hi_open=*/true);
  if (pool != Pool::Token && pool != Pool::Avg && pool != Pool::Flatten)
    bad("pool", "must be token, avg or flatten, got " + s(int(pool)));
  if (gelu != Gelu::Erf && gelu != Gelu::Tanh) bad("gelu", "must be erf or tanh, got " + s(int(gelu)));
  if (pool == Pool::Token && !class_token) bad("pool", "'token' needs class_token = true");
  if (distilled && !class_token) bad("distilled", "(the distillation token) needs class_token = true");
  if (distilled && pool != Pool::Token)
    bad("distilled", std::string("(the distillation token) needs global_pool 'token', got '") + pool_name(pool) + "'");
  int_in("pre_logits", pre_logits, 0, L::kHeadWidth);
  if (head_mlp.size() > size_t(L::kHeadLayers))
    bad("head_mlp", "has " + s(head_mlp.size()) + " layers, at most " + s(L::kHeadLayers));
  for (int h : head_mlp) int_in("head_mlp", h, 1, L::kHeadWidth);
  if (distilled && (pre_logits > 0 || !head_mlp.empty()))
    bad("distilled", "(the distillation token) takes no pre_logits or head_mlp layers (timm's two linear heads)");
  int_in("num_classes", num_classes, 1, L::kNumClasses);
  for (int c = 0; c < in_chans; ++c) {
    real_in("pixel_mean", pixel_mean[c], 0, 1);
    real_in("pixel_std", pixel_std[c], L::kPixelStdMin, L::kPixelStdMax);
  }
  // Every factor is bounded above, so the 64-bit count cannot overflow.
  const int64_t params = param_count();
  if (params > L::kParams)
    bad("size", "(img_size " + s(img_size) + ", patch_size " + s(patch_size) + ", embed_dim " + s(embed_dim) +
                    ", depth " + s(depth) + ", mlp " + s(mlp_hidden_dim()) + ", num_classes " + s(num_classes) +
                    ") is " + s(params) + " parameters, more than " + s(L::kParams));
}

std::string ViTConfig::to_json() const {
  nlohmann::ordered_json j;
  j["name"] = name;
  j["img_size"] = img_size;
  j["in_chans"] = in_chans;
  j["patch_size"] = patch_size;
  j["pixel_mean"] = std::vector<float>(pixel_mean.begin(), pixel_mean.begin() + in_chans);
  j["pixel_std"] = std::vector<float>(pixel_std.begin(), pixel_std.begin() + in_chans);
  j["embed_dim"] = embed_dim;
  j["depth"] = depth;
  j["num_heads"] = num_heads;
  j["head_dim"] = head_dim;
  j["mlp_ratio"] = mlp_ratio;
  j["mlp_hidden"] = mlp_hidden;
  j["mlp_gelu_out"] = mlp_gelu_out;
  j["qkv_bias"] = qkv_bias;
  j["qk_scale"] = qk_scale;
  j["class_token"] = class_token;
  if (distilled) j["distilled"] = true;  // only when set: configs without it read as before
  j["global_pool"] = pool_name(pool);
  j["ln_eps"] = ln_eps;
  j["gelu"] = gelu_name(gelu);
  j["drop_rate"] = drop_rate;
  j["attn_drop_rate"] = attn_drop_rate;
  j["drop_path_rate"] = drop_path_rate;
  j["pre_logits"] = pre_logits;
  j["head_mlp"] = head_mlp;
  j["head_drop_rate"] = head_drop_rate;
  j["num_classes"] = num_classes;
  return j.dump(2);
}

namespace {
// Strict readers of one field: the JSON type must match and the number fit the C++ type
// (nlohmann's get<int> would wrap 3e9 and truncate 2.5; get<float> would turn 1e39 into inf).
std::string shown(const nlohmann::json& v) {
  std::string d = v.dump();
  return d.size() > 40 ? d.substr(0, 40) + "..." : d;
}
int json_int(const std::string& field, const nlohmann::json& v) {
  double d = 0;
  if (v.is_number_unsigned()) {
    d = double(v.get<uint64_t>());
  } else if (v.is_number_integer()) {
    d = double(v.get<int64_t>());
  } else if (v.is_number_float()) {
    d = v.get<double>();
    if (!(std::isfinite(d) && d == std::floor(d))) bad(field, "must be an integer, got " + shown(v));
  } else {
    bad(field, "has the wrong type: expected an integer, got " + shown(v));
  }
  if (!(d >= -2147483648.0 && d <= 2147483647.0)) bad(field, "is out of range, got " + shown(v));
  return int(d);
}
float json_float(const std::string& field, const nlohmann::json& v) {
  if (!v.is_number()) bad(field, "has the wrong type: expected a number, got " + shown(v));
  const double d = v.get<double>();
  if (!(std::fabs(d) <= double(std::numeric_limits<float>::max())))
    bad(field, "must be a finite number within the float range, got " + shown(v));
  return float(d);
}
}  // namespace

ViTConfig ViTConfig::from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw Error(std::string("model config JSON is invalid: ") + e.what());
  }
  if (!j.is_object()) throw Error("model config JSON is not an object");
  ViTConfig c;
  auto has = [&](const char* key) { return j.contains(key); };
  auto get_int = [&](const char* key, int& field) {
    if (has(key)) field = json_int(key, j.at(key));
  };
  auto get_float = [&](const char* key, float& field) {
    if (has(key)) field = json_float(key, j.at(key));
  };
  auto get_bool = [&](const char* key, bool& field) {
    if (!has(key)) return;
    if (!j.at(key).is_boolean()) bad(key, "has the wrong type: expected true or false, got " + shown(j.at(key)));
    field = j.at(key).get<bool>();
  };
  auto get_string = [&](const char* key, std::string& field) {
    if (!has(key)) return;
    if (!j.at(key).is_string()) bad(key, "has the wrong type: expected a string, got " + shown(j.at(key)));
    field = j.at(key).get<std::string>();
  };
  auto get_array = [&](const char* key, size_t max_size) -> const nlohmann::json* {
    if (!has(key)) return nullptr;
    const nlohmann::json& v = j.at(key);
    if (!v.is_array()) bad(key, "has the wrong type: expected an array, got " + shown(v));
    if (v.size() > max_size)
      bad(key, "has " + std::to_string(v.size()) + " values, at most " + std::to_string(max_size));
    return &v;
  };
  // A key this version does not read would be silently lost (a typo, or a newer field).
  static const char* const kKeys[] = {
      "name",           "img_size",       "in_chans",   "patch_size",  "pixel_mean",     "pixel_std",    "embed_dim",
      "depth",          "num_heads",      "head_dim",   "mlp_ratio",   "mlp_hidden",     "mlp_gelu_out", "qkv_bias",
      "qk_scale",       "class_token",    "distilled",  "global_pool", "ln_eps",         "gelu",         "drop_rate",
      "attn_drop_rate", "drop_path_rate", "pre_logits", "head_mlp",    "head_drop_rate", "num_classes"};
  for (const auto& item : j.items()) {
    bool known = false;
    for (const char* k : kKeys) known = known || item.key() == k;
    if (!known) throw Error("invalid model config: unknown field '" + item.key() + "'");
  }
  get_string("name", c.name);
  get_int("img_size", c.img_size);
  get_int("in_chans", c.in_chans);
  get_int("patch_size", c.patch_size);
  for (auto [key, field] :
       {std::pair<const char*, std::array<float, 4>*>{"pixel_mean", &c.pixel_mean}, {"pixel_std", &c.pixel_std}})
    if (const nlohmann::json* v = get_array(key, 4))
      for (size_t i = 0; i < v->size(); ++i)
        (*field)[i] = json_float(std::string(key) + "[" + std::to_string(i) + "]", v->at(i));
  get_int("embed_dim", c.embed_dim);
  get_int("depth", c.depth);
  get_int("num_heads", c.num_heads);
  get_int("head_dim", c.head_dim);
  get_float("mlp_ratio", c.mlp_ratio);
  get_int("mlp_hidden", c.mlp_hidden);
  get_bool("mlp_gelu_out", c.mlp_gelu_out);
  get_bool("qkv_bias", c.qkv_bias);
  get_float("qk_scale", c.qk_scale);
  get_bool("class_token", c.class_token);
  get_bool("distilled", c.distilled);
  std::string p, g;
  get_string("global_pool", p);
  if (p == "token")
    c.pool = Pool::Token;
  else if (p == "avg")
    c.pool = Pool::Avg;
  else if (p == "flatten")
    c.pool = Pool::Flatten;
  else if (!p.empty() || has("global_pool"))
    throw Error("model config: global_pool must be token, avg or flatten, got '" + p + "'");
  get_float("ln_eps", c.ln_eps);
  get_string("gelu", g);
  if (g == "erf")
    c.gelu = Gelu::Erf;
  else if (g == "tanh")
    c.gelu = Gelu::Tanh;
  else if (!g.empty() || has("gelu"))
    throw Error("model config: gelu must be erf or tanh, got '" + g + "'");
  get_float("drop_rate", c.drop_rate);
  get_float("attn_drop_rate", c.attn_drop_rate);
  get_float("drop_path_rate", c.drop_path_rate);
  get_int("pre_logits", c.pre_logits);
  if (const nlohmann::json* v = get_array("head_mlp", ViTLimits::kHeadLayers)) {
    c.head_mlp.clear();
    for (size_t i = 0; i < v->size(); ++i)
      c.head_mlp.push_back(json_int("head_mlp[" + std::to_string(i) + "]", v->at(i)));
  }
  get_float("head_drop_rate", c.head_drop_rate);
  get_int("num_classes", c.num_classes);
  c.validate();
  return c;
}

}  // namespace vitcuda
