// vitcuda — ViTConfig presets, validation and JSON.
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

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

void ViTConfig::validate() const {
  auto s = [](auto v) { return std::to_string(v); };
  if (img_size <= 0) bad("img_size", "must be positive, got " + s(img_size));
  if (in_chans < 1 || in_chans > 4) bad("in_chans", "must be 1 to 4, got " + s(in_chans));
  if (patch_size <= 0) bad("patch_size", "must be positive, got " + s(patch_size));
  if (img_size % patch_size != 0) bad("patch_size", s(patch_size) + " does not divide the image size " + s(img_size));
  if (embed_dim <= 0) bad("embed_dim", "must be positive, got " + s(embed_dim));
  if (depth < 1) bad("depth", "must be at least 1, got " + s(depth));
  if (num_heads <= 0) bad("num_heads", "must be positive, got " + s(num_heads));
  if (head_dim < 0) bad("head_dim", "must be >= 0, got " + s(head_dim));
  if (head_dim == 0 && embed_dim % num_heads != 0)
    bad("num_heads", s(num_heads) + " does not divide the embedding dim " + s(embed_dim));
  if (mlp_hidden_dim() <= 0) bad("mlp_hidden", "must be positive");
  if (!(qk_scale >= 0.f)) bad("qk_scale", "must be >= 0 (0 means head_dim^-0.5)");
  if (!(ln_eps > 0.f)) bad("ln_eps", "must be positive");
  for (auto [field, rate] : {std::pair<const char*, float>{"drop_rate", drop_rate},
                             {"attn_drop_rate", attn_drop_rate},
                             {"drop_path_rate", drop_path_rate},
                             {"head_drop_rate", head_drop_rate}})
    if (!(rate >= 0.f && rate < 1.f)) bad(field, "must be in [0, 1), got " + std::to_string(rate));
  if (pool == Pool::Token && !class_token) bad("pool", "'token' needs class_token = true");
  if (pre_logits < 0) bad("pre_logits", "must be >= 0");
  for (int h : head_mlp)
    if (h <= 0) bad("head_mlp", "sizes must be positive");
  if (num_classes < 1) bad("num_classes", "must be at least 1, got " + s(num_classes));
  for (int c = 0; c < in_chans; ++c)
    if (!(pixel_std[c] > 0.f)) bad("pixel_std", "must be positive");
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

ViTConfig ViTConfig::from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw Error(std::string("model config JSON is invalid: ") + e.what());
  }
  if (!j.is_object()) throw Error("model config JSON is not an object");
  ViTConfig c;
  try {
    auto get = [&](const char* key, auto& field) {
      if (j.contains(key)) field = j.at(key).get<std::decay_t<decltype(field)>>();
    };
    get("name", c.name);
    get("img_size", c.img_size);
    get("in_chans", c.in_chans);
    get("patch_size", c.patch_size);
    if (j.contains("pixel_mean")) {
      auto v = j.at("pixel_mean").get<std::vector<float>>();
      for (size_t i = 0; i < v.size() && i < 4; ++i) c.pixel_mean[i] = v[i];
    }
    if (j.contains("pixel_std")) {
      auto v = j.at("pixel_std").get<std::vector<float>>();
      for (size_t i = 0; i < v.size() && i < 4; ++i) c.pixel_std[i] = v[i];
    }
    get("embed_dim", c.embed_dim);
    get("depth", c.depth);
    get("num_heads", c.num_heads);
    get("head_dim", c.head_dim);
    get("mlp_ratio", c.mlp_ratio);
    get("mlp_hidden", c.mlp_hidden);
    get("mlp_gelu_out", c.mlp_gelu_out);
    get("qkv_bias", c.qkv_bias);
    get("qk_scale", c.qk_scale);
    get("class_token", c.class_token);
    if (j.contains("global_pool")) {
      const std::string p = j.at("global_pool").get<std::string>();
      if (p == "token")
        c.pool = Pool::Token;
      else if (p == "avg")
        c.pool = Pool::Avg;
      else if (p == "flatten")
        c.pool = Pool::Flatten;
      else
        throw Error("model config: global_pool must be token, avg or flatten, got '" + p + "'");
    }
    get("ln_eps", c.ln_eps);
    if (j.contains("gelu")) {
      const std::string g = j.at("gelu").get<std::string>();
      if (g == "erf")
        c.gelu = Gelu::Erf;
      else if (g == "tanh")
        c.gelu = Gelu::Tanh;
      else
        throw Error("model config: gelu must be erf or tanh, got '" + g + "'");
    }
    get("drop_rate", c.drop_rate);
    get("attn_drop_rate", c.attn_drop_rate);
    get("drop_path_rate", c.drop_path_rate);
    get("pre_logits", c.pre_logits);
    get("head_mlp", c.head_mlp);
    get("head_drop_rate", c.head_drop_rate);
    get("num_classes", c.num_classes);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("model config JSON has a field of the wrong type: ") + e.what());
  }
  c.validate();
  return c;
}

}  // namespace vitcuda
