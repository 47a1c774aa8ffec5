// vitcuda — safetensors files (https://github.com/huggingface/safetensors): an 8-byte
// little-endian header length, a JSON header {name: {dtype, shape, data_offsets}, ...,
// "__metadata__": {str: str}}, then the raw little-endian tensor bytes.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "vitcuda/tensor.h"

namespace vitcuda {

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
// Throws Error naming the path and the problem: missing, truncated, header length or JSON
// invalid, unknown dtype, shape and byte size that disagree, offsets outside the data or
// overlapping.
SafeTensorsFile load_safetensors(const std::string& path);

// Atomic write of any small text file (config.json, history.csv) by the same protocol.
void write_file_atomic(const std::string& path, const std::string& contents);

}  // namespace vitcuda
