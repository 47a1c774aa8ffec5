// vitcuda — weight loading with dtype conversion and position-embedding resizing.
#include "vitcuda/weights.h"

#include <cmath>
#include <cstring>

#include "vitcuda/checkpoint.h"

namespace vitcuda {
namespace {

// PyTorch's cubic convolution kernel (Keys 1981) with A = -0.75.
constexpr double kCubicA = -0.75;
double cubic_near(double x) { return ((kCubicA + 2) * x - (kCubicA + 3)) * x * x + 1; }           // |x| <= 1
double cubic_far(double x) { return ((kCubicA * x - 5 * kCubicA) * x + 8 * kCubicA) * x - 4 * kCubicA; }  // 1 < |x| < 2

// The 4 source indices (clamped) and weights for output index `o` of a resize in -> out.
void cubic_taps(int o, int in, int out, int idx[4], double w[4]) {
  const double scale = double(in) / out;
  const double src = scale * (o + 0.5) - 0.5;  // half-pixel centres, not clamped (as PyTorch for cubic)
  const int i0 = int(std::floor(src));
  const double t = src - i0;
  w[0] = cubic_far(t + 1);
  w[1] = cubic_near(t);
  w[2] = cubic_near(1 - t);
  w[3] = cubic_far(2 - t);
  for (int k = 0; k < 4; ++k) idx[k] = std::min(std::max(i0 - 1 + k, 0), in - 1);
}

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      uint32_t m = mant;
      do { ++e; m <<= 1; } while (!(m & 0x400));
      bits = sign | uint32_t(127 - 15 - e) << 23 | (m & 0x3FF) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7F800000u | mant << 13;
  } else {
    bits = sign | (exp + 112) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

std::vector<float> to_f32(const SafeTensor& t, const std::string& path, const std::string& name) {
  const int64_t n = t.numel();
  std::vector<float> out(n);
  const uint8_t* b = t.bytes.data();
  switch (t.dtype) {
    case DType::F32: std::memcpy(out.data(), b, n * 4); break;
    case DType::F64:
      for (int64_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, b + 8 * i, 8);
        out[i] = float(d);
      }
      break;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint32_t bits = uint32_t(b[2 * i] | b[2 * i + 1] << 8) << 16;
        std::memcpy(&out[i], &bits, 4);
      }
      break;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) out[i] = half_to_float(uint16_t(b[2 * i] | b[2 * i + 1] << 8));
      break;
    default:
      throw Error("weights '" + path + "': tensor '" + name + "' has dtype " + dtype_name(t.dtype) +
                  ", expected a floating-point dtype");
  }
  return out;
}

std::string shape_text(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

}  // namespace

std::vector<float> resize_pos_embed(const std::vector<float>& pos, int num_prefix, int old_h, int old_w, int new_h,
                                    int new_w, int dim) {
  if (int64_t(pos.size()) != int64_t(num_prefix + old_h * old_w) * dim)
    throw Error("resize_pos_embed: " + std::to_string(pos.size()) + " values do not form [" +
                std::to_string(num_prefix) + " + " + std::to_string(old_h) + "x" + std::to_string(old_w) + ", " +
                std::to_string(dim) + "]");
  std::vector<float> out(size_t(num_prefix + new_h * new_w) * dim);
  std::copy(pos.begin(), pos.begin() + size_t(num_prefix) * dim, out.begin());
  const float* grid = pos.data() + size_t(num_prefix) * dim;
  float* dst = out.data() + size_t(num_prefix) * dim;
  // Separable: along x on the 4 source rows, then along y, in double.
  for (int oy = 0; oy < new_h; ++oy) {
    int iy[4], ix[4];
    double wy[4], wx[4];
    cubic_taps(oy, old_h, new_h, iy, wy);
    for (int ox = 0; ox < new_w; ++ox) {
      cubic_taps(ox, old_w, new_w, ix, wx);
      for (int c = 0; c < dim; ++c) {
        double acc = 0;
        for (int a = 0; a < 4; ++a) {
          double row = 0;
          for (int b = 0; b < 4; ++b) row += wx[b] * grid[(size_t(iy[a]) * old_w + ix[b]) * dim + c];
          acc += wy[a] * row;
        }
        dst[(size_t(oy) * new_w + ox) * dim + c] = float(acc);
      }
    }
  }
  return out;
}

std::map<std::string, std::string> load_weights(const std::string& path, Model& model) {
  const SafeTensorsFile f = load_safetensors(path);
  const ViTConfig& cfg = model.config();
  std::vector<float> w(model.num_params());
  for (const ParamSpec& s : model.params()) {
    auto it = f.tensors.find(s.name);
    if (it == f.tensors.end())
      throw Error("weights '" + path + "' have no tensor '" + s.name + "' (model " + cfg.name + ")");
    const SafeTensor& t = it->second;
    std::vector<float> v = to_f32(t, path, s.name);
    if (t.shape != s.shape) {
      const int prefix = cfg.class_token ? 1 : 0;
      const int64_t old_grid = t.shape.size() == 3 && t.shape[0] == 1 && t.shape[2] == s.shape[2] ? t.shape[1] - prefix : -1;
      const int old_side = old_grid > 0 ? int(std::lround(std::sqrt(double(old_grid)))) : -1;
      if (s.name == "pos_embed" && old_side > 0 && int64_t(old_side) * old_side == old_grid) {
        v = resize_pos_embed(v, prefix, old_side, old_side, cfg.grid(), cfg.grid(), cfg.embed_dim);
      } else {
        throw Error("weights '" + path + "': tensor '" + s.name + "' has shape " + shape_text(t.shape) +
                    ", the model expects " + shape_text(s.shape));
      }
    }
    std::memcpy(w.data() + s.offset, v.data(), size_t(s.numel) * 4);
  }
  for (const auto& kv : f.tensors) {
    if (kv.first.rfind("optimizer.", 0) == 0) continue;
    bool known = false;
    for (const ParamSpec& s : model.params()) known = known || s.name == kv.first;
    if (!known)
      throw Error("weights '" + path + "' have a tensor '" + kv.first + "' that model " + cfg.name +
                  " does not (check --model, --global-pool, --pre-logits)");
  }
  model.set_master(w);
  return f.metadata;
}

void save_weights(const std::string& path, const Model& model, const std::map<std::string, std::string>& metadata) {
  SafeTensorsFile f;
  f.metadata = metadata;
  f.metadata["format"] = "vitcuda";
  f.metadata["config"] = model.config().to_json();
  const std::vector<float> w = model.get_master();
  for (const ParamSpec& s : model.params()) {
    SafeTensor t;
    t.dtype = DType::F32;
    t.shape = s.shape;
    t.bytes.resize(size_t(s.numel) * 4);
    std::memcpy(t.bytes.data(), w.data() + s.offset, t.bytes.size());
    f.tensors[s.name] = std::move(t);
  }
  save_safetensors(path, f);
}

}  // namespace vitcuda
