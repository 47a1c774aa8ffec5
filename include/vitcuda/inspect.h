// vitcuda — reading a forward pass back to the host: logits, predictions, probabilities and
// the attention maps (probabilities recomputed from the saved q, k and logsumexp; attention
// rollout, Abnar & Zuidema 2020).
#pragma once
#include <cstdint>
#include <vector>

#include "vitcuda/backend.h"
#include "vitcuda/model.h"
#include "vitcuda/tensor.h"

namespace vitcuda {

// Host fp32 copy of any tensor (host or device memory of `backend`; f32, f64, bf16, f16, i32, u8).
std::vector<float> to_host_f32(Backend& backend, const Tensor& t);
// Logits of the last forward on the host, [B * num_classes].
std::vector<float> last_logits(const Model& model);
// argmax of each row of the last forward's logits, [B].
std::vector<int32_t> last_predictions(const Model& model);
// Softmax probabilities of the last forward, [B * num_classes].
std::vector<float> last_probabilities(const Model& model);

// Attention probabilities of block `layer` for image `index` of the last forward:
// [H, T, T], P = exp(scale · q·k − lse), recomputed from the saved q, k and logsumexp.
std::vector<float> attention_probs(const Model& model, int layer, int index);

// Attention rollout (Abnar & Zuidema 2020). `layers[l]` holds [heads, T, T] attention
// probabilities. Per layer: average the heads, add the identity, renormalise the rows;
// multiply the layers (R = Â_L ··· Â_1). Returns the relevance of each patch, [T − num_prefix]
// with prefix tokens (the cls row, without the prefix tokens' columns: cls, DeiT's distillation
// token) or [T] without (the mean over rows).
std::vector<float> attention_rollout(const std::vector<std::vector<float>>& layers, int heads, int tokens,
                                     int num_prefix);
// The rollout map of image `index` of the model's last forward, [grid * grid].
std::vector<float> attention_rollout(const Model& model, int index);

}  // namespace vitcuda
