// vitcuda — Tensor: a typed, shaped view of memory on one device, owning or borrowed.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace vitcuda {

enum class DType : uint8_t { F32, F64, BF16, F16, U8, I32, I64 };
enum class Device : uint8_t { CPU, CUDA };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
// n elements of `dtype` at host address `src` (as they sit in memory: little-endian) as fp32:
// bf16 and f16 widened exactly, f64 rounded, integers converted.
std::vector<float> to_f32(const void* src, DType dtype, int64_t n);
// "[2, 3, 4]": how shapes appear in every message.
std::string shape_string(const std::vector<int64_t>& shape);

// An error from the library. The message names the op, tensor, flag or file and what is wrong.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

constexpr int kMaxDims = 4;

// A view of `numel()` elements of `dtype` at `data`. Copies of a Tensor share the memory.
// An owning Tensor (from Tensor::empty) keeps its memory alive through `storage`;
// a borrowed one (from Tensor::view) does not.
class Tensor {
 public:
  Tensor() = default;
  static Tensor view(void* data, std::initializer_list<int64_t> shape, DType dtype, Device device = Device::CPU);
  static Tensor view(void* data, const int64_t* shape, int ndim, DType dtype, Device device = Device::CPU);
  // Host-memory tensor owning zero-initialised storage.
  static Tensor empty(std::initializer_list<int64_t> shape, DType dtype);

  void* data() const { return data_; }
  template <typename T>
  T* ptr() const {
    return static_cast<T*>(data_);
  }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  int ndim() const { return ndim_; }
  int64_t size(int i) const { return shape_[i < 0 ? i + ndim_ : i]; }
  const int64_t* shape() const { return shape_.data(); }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool defined() const { return data_ != nullptr; }
  bool owning() const { return storage_ != nullptr; }
  std::string shape_str() const;  // "[2, 50, 64] f32"

  // Same memory, new shape with the same element count.
  Tensor reshape(std::initializer_list<int64_t> shape) const;

 private:
  void* data_ = nullptr;
  std::array<int64_t, kMaxDims> shape_{};
  int ndim_ = 0;
  DType dtype_ = DType::F32;
  Device device_ = Device::CPU;
  std::shared_ptr<void> storage_;
};

}  // namespace vitcuda
