// vitcuda — Tensor: the non-inline parts of include/vitcuda/tensor.h.
#include "vitcuda/tensor.h"

#include <cstdlib>
#include <cstring>
#include <string>

namespace vitcuda {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::BF16: return 2;
    case DType::F16: return 2;
    case DType::U8: return 1;
    case DType::I32: return 4;
    case DType::I64: return 8;
  }
  throw Error("dtype_size: invalid DType " + std::to_string(int(t)));
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::BF16: return "bf16";
    case DType::F16: return "f16";
    case DType::U8: return "u8";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
  }
  return "invalid";
}

namespace {
// IEEE half -> float, exact (subnormals renormalised, inf/nan kept).
float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      uint32_t m = man;
      do {
        ++e;
        m <<= 1;
      } while (!(m & 0x400));
      bits = sign | uint32_t(127 - 15 - e) << 23 | (m & 0x3ff) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | man << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
}  // namespace

std::vector<float> to_f32(const void* src_bytes, DType dtype, int64_t n) {
  const auto* src = static_cast<const uint8_t*>(src_bytes);
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    switch (dtype) {
      case DType::F32: {
        float v;
        std::memcpy(&v, src + 4 * i, 4);
        out[i] = v;
        break;
      }
      case DType::F64: {
        double v;
        std::memcpy(&v, src + 8 * i, 8);
        out[i] = float(v);
        break;
      }
      case DType::BF16: {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        const uint32_t bits = uint32_t(h) << 16;
        std::memcpy(&out[i], &bits, 4);
        break;
      }
      case DType::F16: {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        out[i] = half_to_float(h);
        break;
      }
      case DType::I32: {
        int32_t v;
        std::memcpy(&v, src + 4 * i, 4);
        out[i] = float(v);
        break;
      }
      case DType::I64: {
        int64_t v;
        std::memcpy(&v, src + 8 * i, 8);
        out[i] = float(v);
        break;
      }
      case DType::U8: out[i] = src[i]; break;
    }
  }
  return out;
}

static std::string dims_str(const int64_t* shape, int ndim) {
  std::string s = "[";
  for (int i = 0; i < ndim; i++) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string shape_string(const std::vector<int64_t>& shape) { return dims_str(shape.data(), int(shape.size())); }

Tensor Tensor::view(void* data, const int64_t* shape, int ndim, DType dtype, Device device) {
  if (ndim < 0 || ndim > kMaxDims)
    throw Error("Tensor::view: " + std::to_string(ndim) + " dims, at most " + std::to_string(kMaxDims) +
                " are supported");
  for (int i = 0; i < ndim; i++)
    if (shape[i] < 0) throw Error("Tensor::view: negative dimension in shape " + dims_str(shape, ndim));
  Tensor t;
  t.data_ = data;
  for (int i = 0; i < ndim; i++) t.shape_[i] = shape[i];
  t.ndim_ = ndim;
  t.dtype_ = dtype;
  t.device_ = device;
  return t;
}

Tensor Tensor::view(void* data, std::initializer_list<int64_t> shape, DType dtype, Device device) {
  return view(data, shape.begin(), int(shape.size()), dtype, device);
}

Tensor Tensor::empty(std::initializer_list<int64_t> shape, DType dtype) {
  Tensor t = view(nullptr, shape, dtype, Device::CPU);
  size_t bytes = t.nbytes();
  // calloc(0) may return nullptr, which would read as "undefined"; an empty tensor is defined.
  void* p = std::calloc(bytes ? bytes : 1, 1);
  if (!p) throw Error("Tensor::empty: cannot allocate " + std::to_string(bytes) + " bytes for " + t.shape_str());
  t.storage_ = std::shared_ptr<void>(p, std::free);
  t.data_ = p;
  return t;
}

int64_t Tensor::numel() const {
  // A default-constructed Tensor has no elements; a defined 0-dim tensor is a scalar.
  if (ndim_ == 0 && data_ == nullptr) return 0;
  int64_t n = 1;
  for (int i = 0; i < ndim_; i++) n *= shape_[i];
  return n;
}

std::string Tensor::shape_str() const { return dims_str(shape_.data(), ndim_) + " " + dtype_name(dtype_); }

Tensor Tensor::reshape(std::initializer_list<int64_t> shape) const {
  Tensor t = view(data_, shape, dtype_, device_);
  t.storage_ = storage_;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  if (n != numel())
    throw Error("Tensor::reshape: cannot view " + shape_str() + " (" + std::to_string(numel()) + " elements) as " +
                dims_str(shape.begin(), int(shape.size())) + " (" + std::to_string(n) + " elements)");
  return t;
}

}  // namespace vitcuda
