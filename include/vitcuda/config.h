// vitcuda — ViTConfig: every architectural knob of a Vision Transformer, and named presets.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace vitcuda {

enum class Pool : uint8_t { Token, Avg, Flatten };  // cls token, mean over tokens, Keras Flatten
enum class Gelu : uint8_t { Erf, Tanh };            // exact erf GELU, tanh approximation

// Limits of ViTConfig::validate(): generous (ViT-H/14 at 518 px with 21k classes and ViT-22B's
// widths pass), and small enough that every size, product and index of the model fits its
// integer type. Shared by config.json / checkpoint metadata and the tools' flags.
struct ViTLimits {
  static constexpr int kImgSize = 8192;                 // img_size in [1, 8192]
  static constexpr int kPatches = 16384;                // (img_size / patch_size)^2 <= 16384 (a 128 x 128 grid)
  static constexpr int kEmbedDim = 16384;               // embed_dim in [1, 16384]
  static constexpr int kDepth = 1024;                   // depth in [1, 1024]
  static constexpr int kNumHeads = 1024;                // num_heads in [1, 1024]
  static constexpr int kHeadDim = 16384;                // head_dim in [0, 16384]
  static constexpr int kAttnDim = 65536;                // num_heads * head dim <= 65536
  static constexpr float kMlpRatio = 64.f;              // mlp_ratio in [0, 64]
  static constexpr int kMlpHidden = 262144;             // mlp_hidden (given or mlp_ratio * embed_dim) <= 262144
  static constexpr int kHeadWidth = 65536;              // pre_logits in [0, 65536], head_mlp sizes in [1, 65536]
  static constexpr int kHeadLayers = 16;                // at most 16 head_mlp layers
  static constexpr int kNumClasses = 1 << 20;           // num_classes in [1, 1048576]
  static constexpr int64_t kParams = int64_t(1) << 33;  // at most 2^33 (8.6 G) parameters in all
  static constexpr float kQkScale = 100.f;              // qk_scale in [0, 100] (0: head_dim^-0.5)
  static constexpr float kLnEps = 1.f;                  // ln_eps in (0, 1]
  static constexpr float kPixelStdMin = 1e-7f;          // pixel_std in [1e-7, 1e3] (1e-7: the floor of adapted
  static constexpr float kPixelStdMax = 1e3f;           //   statistics of a constant channel); pixel_mean in [0, 1]
};

struct ViTConfig {
  std::string name = "custom";
  // Input.
  int img_size = 28;
  int in_chans = 1;
  int patch_size = 7;
  // Pixels are divided by 255 (uint8 input) then normalised: (x - mean[c]) / std[c].
  std::array<float, 4> pixel_mean{0.f, 0.f, 0.f, 0.f};
  std::array<float, 4> pixel_std{1.f, 1.f, 1.f, 1.f};
  // Trunk.
  int embed_dim = 64;
  int depth = 4;
  int num_heads = 4;
  int head_dim = 0;       // 0: embed_dim / num_heads (timm); Keras MHA uses key_dim
  float mlp_ratio = 4.f;  // MLP hidden = mlp_ratio * embed_dim unless mlp_hidden > 0
  int mlp_hidden = 0;
  bool mlp_gelu_out = false;  // Keras' tutorial applies GELU after the MLP's second Dense too
  bool qkv_bias = true;
  float qk_scale = 0.f;  // 0: head_dim^-0.5
  bool class_token = true;
  // DeiT's distillation token (timm's VisionTransformerDistilled, `distilled=True`): a second
  // learned prefix token `dist_token` after the cls token, position embeddings for both, and a
  // second classifier `head_dist` on it. The model's logits are the mean of the two heads'
  // (inference, and training without a teacher, as timm); distilled training
  // (vitcuda/train_step.h, TrainStepOptions::teacher) gives each head its own loss. Needs the cls
  // token and token pooling, without pre_logits or head_mlp layers.
  bool distilled = false;
  Pool pool = Pool::Token;
  float ln_eps = 1e-6f;
  Gelu gelu = Gelu::Erf;
  // Regularisation.
  float drop_rate = 0.f;       // after pos-embed, attention proj, MLP fc1 and fc2 (timm)
  float attn_drop_rate = 0.f;  // on attention probabilities
  float drop_path_rate = 0.f;  // stochastic depth, rising linearly from 0 to this over depth
  // Head.
  int pre_logits = 0;          // >0: Linear(dim, pre_logits) + tanh before the classifier
  std::vector<int> head_mlp;   // Keras tutorial: Dense+GELU+Dropout layers, e.g. {2048, 1024}
  float head_drop_rate = 0.f;  // dropout before and inside the head MLP
  int num_classes = 10;

  // Derived quantities.
  int grid() const { return img_size / patch_size; }
  int num_patches() const { return grid() * grid(); }
  int num_prefix_tokens() const { return (class_token ? 1 : 0) + (distilled ? 1 : 0); }
  int num_tokens() const { return num_patches() + num_prefix_tokens(); }
  int attn_head_dim() const { return head_dim > 0 ? head_dim : embed_dim / num_heads; }
  int attn_dim() const { return num_heads * attn_head_dim(); }
  // -1 when mlp_ratio * embed_dim is NaN, negative or beyond int (validate() refuses it) rather
  // than an undefined float-to-int conversion.
  int mlp_hidden_dim() const {
    if (mlp_hidden > 0) return mlp_hidden;
    const float h = mlp_ratio * static_cast<float>(embed_dim) + 0.5f;
    return h >= 0.f && h < 2147483520.f ? static_cast<int>(h) : -1;  // 2147483520: the last float below 2^31
  }
  float attn_scale() const;
  int patch_dim() const { return in_chans * patch_size * patch_size; }
  // Width of the features the head sees after pooling.
  int pooled_dim() const { return pool == Pool::Flatten ? num_tokens() * embed_dim : embed_dim; }

  // Every field finite and within ViTLimits, the derived sizes consistent and computed in 64
  // bits; throws vitcuda::Error naming the field, its value and the allowed range.
  void validate() const;
  // Parameter count of the model this config describes, in 64 bits (validate() bounds it).
  int64_t param_count() const;
  std::string to_json() const;
  // Throws Error on bad JSON, a field of the wrong type or out of range (naming the field),
  // then validate()s.
  static ViTConfig from_json(const std::string& text);
};

// Named presets: "vit_fmnist" (default), "vit_keras_cifar100", timm names
// vit_{tiny,small,base,large}_patch16_224, vit_{base,large}_patch32_224, vit_huge_patch14_224,
// deit_{tiny,small,base}_distilled_patch16_224.
ViTConfig preset(const std::string& name);  // throws Error for an unknown name
std::vector<std::string> preset_names();
const char* default_preset();

const char* pool_name(Pool p);
const char* gelu_name(Gelu g);

}  // namespace vitcuda
