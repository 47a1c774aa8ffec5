// vitcuda — checkpoints, in three layers:
//   * safetensors files (https://github.com/huggingface/safetensors): an 8-byte little-endian
//     header length, a JSON header {name: {dtype, shape, data_offsets}, ..., "__metadata__":
//     {str: str}}, then the raw little-endian tensor bytes; written atomically;
//   * training state: the model's fp32 master weights under timm's names, the AdamW moments
//     and string metadata (config, epoch, step, best, history), for --resume;
//   * weights for fine-tuning and inference: vitcuda checkpoints and timm state_dicts saved
//     with safetensors, converted to fp32, the position embedding resized for other grids.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "vitcuda/model.h"
#include "vitcuda/optim.h"
#include "vitcuda/tensor.h"

namespace vitcuda {

// ---- safetensors ------------------------------------------------------------------------------
struct SafeTensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
  int64_t numel() const;
};

struct SafeTensorsFile {
  std::map<std::string, SafeTensor> tensors;
  std::map<std::string, std::string> metadata;
};

// Written atomically: a temporary file in the same directory, fsync, rename over `path`,
// fsync of the directory. A crash or kill at any point leaves the old file intact.
// Throws Error naming the path when it cannot be written.
void save_safetensors(const std::string& path, const SafeTensorsFile& file);
// Throws Error naming the path and the problem: missing, not a regular file (a FIFO, a folder:
// refused without blocking), truncated, header length or JSON invalid or over the limits below,
// unknown dtype, shape and byte size that disagree, offsets outside the data or overlapping,
// tensors larger than the host's memory. Everything is checked before any tensor is allocated.
SafeTensorsFile load_safetensors(const std::string& path);

// Limits on a safetensors header (docs/DESIGN.md, "Input limits"), checked before the header is
// read (its length) or while it is parsed (its entries), so a hostile header costs bounded
// memory: the safetensors library's own 100 MB header cap, 65536 tensors, 2^20 JSON values.
constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;
constexpr size_t kMaxSafetensorsTensors = size_t(1) << 16;
constexpr size_t kMaxSafetensorsJsonValues = size_t(1) << 20;

// One tensor of a header: dtype, shape and its byte range in the data section.
struct SafeTensorsEntry {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};
struct SafeTensorsHeader {
  std::vector<SafeTensorsEntry> tensors;  // by data offset
  std::map<std::string, std::string> metadata;
  uint64_t file_size = 0, data_start = 0;  // data_start: 8 + header length
  uint64_t data_bytes = 0;                 // the tensors' bytes, all together
};
// The header alone, checked as load_safetensors checks it (same errors), without reading any
// tensor: what vit_infer reads for a checkpoint's metadata.
SafeTensorsHeader read_safetensors_header(const std::string& path);

// Atomic write of any small text file (config.json, history.csv) by the same protocol.
void write_file_atomic(const std::string& path, const std::string& contents);

// ---- training state ---------------------------------------------------------------------------
// Checkpoint: the fp32 master weights under timm's names, the AdamW moments as
// "optimizer.exp_avg.<name>" / "optimizer.exp_avg_sq.<name>", and string metadata
// (config JSON, epoch, step, best, history). Written atomically.
void save_checkpoint(const std::string& path, const Model& model, const AdamW* opt,
                     const std::map<std::string, std::string>& metadata);
// Loads weights (and the optimizer state when `opt` is given); throws Error naming the file
// when a tensor is missing or has the wrong shape or dtype. Returns the metadata.
std::map<std::string, std::string> load_checkpoint(const std::string& path, Model& model, AdamW* opt);
// The metadata value under `key`; throws Error naming the checkpoint when it is absent (not a
// vitcuda training checkpoint).
std::string checkpoint_metadata(const std::map<std::string, std::string>& metadata, const std::string& key,
                                const std::string& path);
// The metadata value under `key` read as a whole integer (digits only) or a finite number within
// [lo, hi]; throws Error naming the checkpoint, the key and the text otherwise.
int64_t checkpoint_metadata_int(const std::map<std::string, std::string>& metadata, const std::string& key,
                                const std::string& path, int64_t lo, int64_t hi);
double checkpoint_metadata_number(const std::map<std::string, std::string>& metadata, const std::string& key,
                                  const std::string& path, double lo, double hi);

// ---- weights (vitcuda or timm) ----------------------------------------------------------------
// Bicubic resize of a [num_prefix + old_h*old_w, dim] position embedding to the grid
// new_h x new_w, prefix (cls) rows kept as they are, exactly as timm's
// resample_abs_pos_embed: F.interpolate(mode='bicubic', antialias=True), i.e. PyTorch's
// anti-aliased bicubic (cubic a = -0.5, support scaled when downsampling, edge taps dropped
// and renormalised). Note antialias=True changes upsampling too, not only downsampling.
std::vector<float> resize_pos_embed(const std::vector<float>& pos, int num_prefix, int old_h, int old_w, int new_h,
                                    int new_w, int dim);

// Loads model weights from a safetensors file (vitcuda checkpoint or timm state_dict):
// F32, F16, BF16 and F64 tensors are converted to fp32; "optimizer.*" entries are ignored;
// a pos_embed for another grid is resized bicubically. Throws Error naming the file and the
// tensor for a missing tensor, an unexpected one, or a shape that does not match the model.
// Returns the file's metadata.
std::map<std::string, std::string> load_weights(const std::string& path, Model& model);

// The architecture of a weights file: its "config" metadata (a vitcuda checkpoint) or, for a file
// without one (a timm state_dict), the preset `preset_name`, optionally with timm's global_pool
// ("token" or "avg"; "" keeps the preset's). Throws Error naming the file when the metadata is
// invalid, or when it has none and no preset is named (`flag`: the option that names one, e.g.
// "--model", for the message).
ViTConfig weights_config(const std::string& path, const std::string& preset_name = "",
                         const std::string& global_pool = "", const std::string& flag = "--model");

// Saves the model's fp32 weights alone (a timm-loadable state_dict), atomically: a checkpoint
// without the optimizer state.
void save_weights(const std::string& path, const Model& model, const std::map<std::string, std::string>& metadata = {});

}  // namespace vitcuda
