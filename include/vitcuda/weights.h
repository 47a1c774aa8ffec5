// vitcuda — loading weights for fine-tuning and inference: vitcuda checkpoints and
// state_dicts saved from timm's VisionTransformer with safetensors, whose tensor names and
// shapes vitcuda's parameter table follows.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "vitcuda/model.h"

namespace vitcuda {

// Bicubic resize of a [num_prefix + old_h*old_w, dim] position embedding to the grid
// new_h x new_w, prefix (cls) rows kept as they are, exactly as timm's
// resample_abs_pos_embed: F.interpolate(mode='bicubic', antialias=True), i.e. PyTorch's
// anti-aliased bicubic (cubic a = -0.5, support scaled when downsampling, edge taps dropped
// and renormalised). Note antialias=True changes upsampling too, not only downsampling.
std::vector<float> resize_pos_embed(const std::vector<float>& pos, int num_prefix, int old_h, int old_w,
                                    int new_h, int new_w, int dim);

// Loads model weights from a safetensors file (vitcuda checkpoint or timm state_dict):
// F32, F16, BF16 and F64 tensors are converted to fp32; "optimizer.*" entries are ignored;
// a pos_embed for another grid is resized bicubically. Throws Error naming the file and the
// tensor for a missing tensor, an unexpected one, or a shape that does not match the model.
// Returns the file's metadata.
std::map<std::string, std::string> load_weights(const std::string& path, Model& model);

// Saves the model's fp32 weights alone (a timm-loadable state_dict), atomically.
void save_weights(const std::string& path, const Model& model,
                  const std::map<std::string, std::string>& metadata = {});

}  // namespace vitcuda
