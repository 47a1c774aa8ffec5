// vitcuda — ViTConfig: every architectural knob of a Vision Transformer, and named presets.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace vitcuda {

enum class Pool : uint8_t { Token, Avg, Flatten };  // cls token, mean over tokens, Keras Flatten
enum class Gelu : uint8_t { Erf, Tanh };            // exact erf GELU, tanh approximation

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
  int num_tokens() const { return num_patches() + (class_token ? 1 : 0); }
  int attn_head_dim() const { return head_dim > 0 ? head_dim : embed_dim / num_heads; }
  int attn_dim() const { return num_heads * attn_head_dim(); }
  int mlp_hidden_dim() const { return mlp_hidden > 0 ? mlp_hidden : static_cast<int>(mlp_ratio * embed_dim + 0.5f); }
  float attn_scale() const;
  int patch_dim() const { return in_chans * patch_size * patch_size; }
  // Width of the features the head sees after pooling.
  int pooled_dim() const { return pool == Pool::Flatten ? num_tokens() * embed_dim : embed_dim; }

  // Throws vitcuda::Error naming the field and what is wrong.
  void validate() const;
  std::string to_json() const;
  static ViTConfig from_json(const std::string& text);  // throws Error on bad JSON or fields
};

// Named presets: "vit_fmnist" (default), "vit_keras_cifar100", timm names
// vit_{tiny,small,base,large}_patch16_224, vit_{base,large}_patch32_224, vit_huge_patch14_224.
ViTConfig preset(const std::string& name);  // throws Error for an unknown name
std::vector<std::string> preset_names();
const char* default_preset();

const char* pool_name(Pool p);
const char* gelu_name(Gelu g);

}  // namespace vitcuda
