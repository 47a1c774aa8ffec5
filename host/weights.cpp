// vitcuda — weight loading with dtype conversion and position-embedding resizing.
#include "vitcuda/weights.h"

#include <cmath>
#include <cstring>

#include "vitcuda/checkpoint.h"

namespace vitcuda {
namespace {

// timm resizes with F.interpolate(mode='bicubic', antialias=True): PyTorch's separable
// anti-aliased kernel (PIL's algorithm), a cubic with a = -0.5 whose support widens by the
// downscale factor, sampled at half-pixel centres, with the taps that fall outside the image
// dropped and the rest renormalised (no border clamping).
double cubic_aa(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

// Taps for output index o of a resize in -> out: first source index and normalised weights.
int cubic_taps(int o, int in, int out, std::vector<double>& w) {
  const double scale = double(in) / out, support = 2 * std::max(scale, 1.0), inv = 1 / std::max(scale, 1.0);
  const double center = scale * (o + 0.5);
  const int lo = std::max(int(center - support + 0.5), 0), hi = std::min(int(center + support + 0.5), in);
  w.assign(hi - lo, 0.0);
  double sum = 0;
  for (int j = lo; j < hi; ++j) sum += (w[j - lo] = cubic_aa((j - center + 0.5) * inv));
  for (double& v : w) v /= sum;
  return lo;
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
  std::vector<double> wy, wx;
  for (int oy = 0; oy < new_h; ++oy) {
    const int y0 = cubic_taps(oy, old_h, new_h, wy);
    for (int ox = 0; ox < new_w; ++ox) {
      const int x0 = cubic_taps(ox, old_w, new_w, wx);
      for (int c = 0; c < dim; ++c) {
        double acc = 0;
        for (size_t a = 0; a < wy.size(); ++a)
          for (size_t b = 0; b < wx.size(); ++b) acc += wy[a] * wx[b] * grid[((y0 + a) * old_w + x0 + b) * dim + c];
        dst[(size_t(oy) * new_w + ox) * dim + c] = float(acc);
      }
    }
  }
  return out;
}

std::map<std::string, std::string> load_weights(const std::string& path, Model& model) {
  const SafeTensorsFile f = load_safetensors(path);
  const ViTConfig& cfg = model.config();
  std::vector<float> w(model.arena_size());
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
