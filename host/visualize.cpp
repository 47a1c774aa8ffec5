// vitcuda — metrics and pictures: confusion matrix, images and PNG, patch grid, attention
// rollout, heat maps. The one translation unit with the stb_image / stb_image_write
// implementations (static, so they never clash with another copy in an application).
#include "vitcuda/visualize.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>

#include "vitcuda/checkpoint.h"

#if VITCUDA_HAVE_STB
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_FAILURE_USERMSG
#include <stb_image.h>
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#pragma GCC diagnostic pop
#endif

namespace vitcuda {
namespace {

std::string class_name(const std::vector<std::string>& names, int i) {
  return i < int(names.size()) ? names[i] : std::to_string(i);
}

// CSV field: quoted when it holds a comma, a quote or a line break.
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

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

// The view of image `index` of a batch-major activation [B, ...].
Tensor batch_item(const Tensor& t, int index) {
  int64_t shape[kMaxDims];
  int64_t per = 1;
  for (int i = 1; i < t.ndim(); ++i) per *= t.size(i);
  shape[0] = 1;
  for (int i = 1; i < t.ndim(); ++i) shape[i] = t.size(i);
  if (index < 0 || index >= t.size(0))
    throw Error("image index " + std::to_string(index) + " is outside the last batch of " +
                std::to_string(t.size(0)));
  return Tensor::view(static_cast<char*>(t.data()) + size_t(index) * per * dtype_size(t.dtype()), shape, t.ndim(),
                      t.dtype(), t.device());
}

int auto_scale(int height, int width) {
  const int m = std::max(1, std::max(height, width));
  return std::max(1, (256 + m / 2) / m);
}

// Bilinear sample of a [h, w] float map at continuous pixel-centre coordinates.
float sample_bilinear(const float* map, int h, int w, float y, float x) {
  y = std::min(std::max(y, 0.f), float(h - 1));
  x = std::min(std::max(x, 0.f), float(w - 1));
  const int y0 = int(y), x0 = int(x), y1 = std::min(y0 + 1, h - 1), x1 = std::min(x0 + 1, w - 1);
  const float fy = y - y0, fx = x - x0;
  const float a = map[y0 * w + x0] * (1 - fx) + map[y0 * w + x1] * fx;
  const float b = map[y1 * w + x0] * (1 - fx) + map[y1 * w + x1] * fx;
  return a * (1 - fy) + b * fy;
}

// Nearest-neighbour upscaled copy of a CHW image into the RGB canvas at (x0, y0).
void blit_chw(Image& dst, int x0, int y0, const uint8_t* chw, int channels, int height, int width, int scale,
              int sx = 0, int sy = 0, int sw = -1, int sh = -1) {
  if (sw < 0) sw = width;
  if (sh < 0) sh = height;
  const size_t plane = size_t(height) * width;
  for (int y = 0; y < sh * scale; ++y)
    for (int x = 0; x < sw * scale; ++x) {
      const size_t src = size_t(sy + y / scale) * width + (sx + x / scale);
      uint8_t* p = dst.at(x0 + x, y0 + y);
      for (int c = 0; c < 3; ++c) p[c] = chw[(channels >= 3 ? c : 0) * plane + src];
    }
}

}  // namespace

// ---- metrics --------------------------------------------------------------------------------
void ConfusionMatrix::add(int truth, int predicted) {
  if (truth < 0 || truth >= num_classes || predicted < 0 || predicted >= num_classes)
    throw Error("confusion matrix: class pair (" + std::to_string(truth) + ", " + std::to_string(predicted) +
                ") is outside [0, " + std::to_string(num_classes) + ")");
  ++counts[size_t(truth) * num_classes + predicted];
}

int64_t ConfusionMatrix::total() const {
  int64_t n = 0;
  for (int64_t c : counts) n += c;
  return n;
}

int64_t ConfusionMatrix::support(int truth) const {
  int64_t n = 0;
  for (int p = 0; p < num_classes; ++p) n += at(truth, p);
  return n;
}

double ConfusionMatrix::accuracy() const {
  int64_t hit = 0;
  for (int t = 0; t < num_classes; ++t) hit += at(t, t);
  const int64_t n = total();
  return n > 0 ? double(hit) / n : 0.0;
}

double ConfusionMatrix::class_accuracy(int truth) const {
  const int64_t n = support(truth);
  return n > 0 ? double(at(truth, truth)) / n : std::numeric_limits<double>::quiet_NaN();
}

std::string ConfusionMatrix::to_csv(const std::vector<std::string>& names) const {
  std::ostringstream s;
  s << "true\\pred";
  for (int p = 0; p < num_classes; ++p) s << ',' << csv_field(class_name(names, p));
  s << '\n';
  for (int t = 0; t < num_classes; ++t) {
    s << csv_field(class_name(names, t));
    for (int p = 0; p < num_classes; ++p) s << ',' << at(t, p);
    s << '\n';
  }
  return s.str();
}

std::string ConfusionMatrix::per_class_csv(const std::vector<std::string>& names) const {
  std::ostringstream s;
  s << "class,name,support,correct,accuracy\n";
  for (int t = 0; t < num_classes; ++t) {
    s << t << ',' << csv_field(class_name(names, t)) << ',' << support(t) << ',' << at(t, t) << ',';
    const double a = class_accuracy(t);
    if (!std::isnan(a)) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.6f", a);
      s << buf;
    }
    s << '\n';
  }
  return s.str();
}

ConfusionMatrix confusion_matrix(const std::vector<int32_t>& labels, const std::vector<int32_t>& predictions,
                                 int num_classes) {
  if (labels.size() != predictions.size())
    throw Error("confusion matrix: " + std::to_string(labels.size()) + " labels but " +
                std::to_string(predictions.size()) + " predictions");
  if (num_classes <= 0) throw Error("confusion matrix: num_classes must be positive");
  ConfusionMatrix cm(num_classes);
  for (size_t i = 0; i < labels.size(); ++i) cm.add(labels[i], predictions[i]);
  return cm;
}

// ---- reading a forward pass back ------------------------------------------------------------
std::vector<float> to_host_f32(Backend& backend, const Tensor& t) {
  const int64_t n = t.numel();
  std::vector<uint8_t> raw;
  const uint8_t* src = static_cast<const uint8_t*>(t.data());
  if (t.device() != Device::CPU) {
    raw.resize(t.nbytes());
    backend.copy_to_host(raw.data(), t.data(), t.nbytes());
    src = raw.data();
  }
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    switch (t.dtype()) {
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
      case DType::U8: out[i] = src[i]; break;
    }
  }
  return out;
}

std::vector<float> last_logits(const Model& model) { return to_host_f32(model.backend(), model.activation("logits")); }

std::vector<int32_t> last_predictions(const Model& model) {
  const std::vector<float> logits = last_logits(model);
  const int K = model.config().num_classes;
  std::vector<int32_t> pred(logits.size() / K);
  for (size_t b = 0; b < pred.size(); ++b) {
    const float* row = logits.data() + b * K;
    pred[b] = int32_t(std::max_element(row, row + K) - row);  // first maximum, as torch.argmax
  }
  return pred;
}

std::vector<float> last_probabilities(const Model& model) {
  std::vector<float> p = last_logits(model);
  const int K = model.config().num_classes;
  for (size_t b = 0; b < p.size() / K; ++b) {
    float* row = p.data() + b * K;
    const float mx = *std::max_element(row, row + K);
    double sum = 0;
    for (int k = 0; k < K; ++k) sum += std::exp(double(row[k]) - mx);
    for (int k = 0; k < K; ++k) row[k] = float(std::exp(double(row[k]) - mx) / sum);
  }
  return p;
}

std::vector<float> attention_probs(const Model& model, int layer, int index) {
  const ViTConfig& c = model.config();
  if (layer < 0 || layer >= c.depth)
    throw Error("attention_probs: layer " + std::to_string(layer) + " is outside [0, " + std::to_string(c.depth) + ")");
  const std::string pre = "blocks." + std::to_string(layer) + ".";
  Backend& be = model.backend();
  const std::vector<float> q = to_host_f32(be, batch_item(model.activation(pre + "q"), index));
  const std::vector<float> k = to_host_f32(be, batch_item(model.activation(pre + "k"), index));
  const std::vector<float> lse = to_host_f32(be, batch_item(model.activation(pre + "lse"), index));
  const int H = c.num_heads, T = c.num_tokens(), d = c.attn_head_dim();
  const double scale = c.attn_scale();
  std::vector<float> P(size_t(H) * T * T);
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < T; ++i) {
      const float* qi = q.data() + (size_t(h) * T + i) * d;
      for (int j = 0; j < T; ++j) {
        const float* kj = k.data() + (size_t(h) * T + j) * d;
        double dot = 0;
        for (int e = 0; e < d; ++e) dot += double(qi[e]) * kj[e];
        P[(size_t(h) * T + i) * T + j] = float(std::exp(scale * dot - lse[size_t(h) * T + i]));
      }
    }
  return P;
}

std::vector<float> attention_rollout(const std::vector<std::vector<float>>& layers, int heads, int tokens,
                                     bool class_token) {
  const int T = tokens;
  if (layers.empty()) throw Error("attention_rollout: no layers");
  if (heads <= 0 || T <= (class_token ? 1 : 0)) throw Error("attention_rollout: bad heads or token count");
  std::vector<double> R(size_t(T) * T, 0.0), A(size_t(T) * T), tmp(size_t(T) * T);
  for (int i = 0; i < T; ++i) R[size_t(i) * T + i] = 1.0;
  for (size_t l = 0; l < layers.size(); ++l) {
    const std::vector<float>& P = layers[l];
    if (P.size() != size_t(heads) * T * T)
      throw Error("attention_rollout: layer " + std::to_string(l) + " has " + std::to_string(P.size()) +
                  " values, expected heads*T*T = " + std::to_string(size_t(heads) * T * T));
    // Â = rownorm(mean_h P + I)
    for (int i = 0; i < T; ++i) {
      double sum = 0;
      for (int j = 0; j < T; ++j) {
        double a = 0;
        for (int h = 0; h < heads; ++h) a += P[(size_t(h) * T + i) * T + j];
        a = a / heads + (i == j ? 1.0 : 0.0);
        A[size_t(i) * T + j] = a;
        sum += a;
      }
      for (int j = 0; j < T; ++j) A[size_t(i) * T + j] /= sum;
    }
    // R ← Â · R
    std::fill(tmp.begin(), tmp.end(), 0.0);
    for (int i = 0; i < T; ++i)
      for (int m = 0; m < T; ++m) {
        const double a = A[size_t(i) * T + m];
        if (a == 0) continue;
        for (int j = 0; j < T; ++j) tmp[size_t(i) * T + j] += a * R[size_t(m) * T + j];
      }
    R.swap(tmp);
  }
  std::vector<float> out;
  if (class_token) {
    for (int j = 1; j < T; ++j) out.push_back(float(R[j]));
  } else {
    out.assign(size_t(T), 0.f);
    for (int j = 0; j < T; ++j) {
      double s = 0;
      for (int i = 0; i < T; ++i) s += R[size_t(i) * T + j];
      out[j] = float(s / T);
    }
  }
  return out;
}

std::vector<float> attention_rollout(const Model& model, int index) {
  const ViTConfig& c = model.config();
  std::vector<std::vector<float>> layers;
  for (int l = 0; l < c.depth; ++l) layers.push_back(attention_probs(model, l, index));
  return attention_rollout(layers, c.num_heads, c.num_tokens(), c.class_token);
}

// ---- images ---------------------------------------------------------------------------------
#if !VITCUDA_HAVE_STB
bool png_supported() { return false; }
namespace {
[[noreturn]] void no_stb(const std::string& what) {
  throw Error(what + ": vitcuda was built without stb (install libstb-dev and rebuild)");
}
}  // namespace
Image load_image(const std::string& path) { no_stb("cannot read image '" + path + "'"); }
void write_png(const std::string& path, const Image&) { no_stb("cannot write '" + path + "'"); }
#else
bool png_supported() { return true; }
Image load_image(const std::string& path) {
  int w = 0, h = 0, c = 0;
  stbi_uc* data = stbi_load(path.c_str(), &w, &h, &c, 0);
  if (!data) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) throw Error("cannot read image '" + path + "': " + std::strerror(errno));
    std::fclose(f);
    throw Error("cannot decode image '" + path + "': " + stbi_failure_reason());
  }
  Image img(w, h, c);
  std::memcpy(img.pixels.data(), data, img.pixels.size());
  stbi_image_free(data);
  if (c == 2) {  // grey + alpha: drop the alpha
    Image g(w, h, 1);
    for (size_t i = 0; i < size_t(w) * h; ++i) g.pixels[i] = img.pixels[2 * i];
    return g;
  }
  return img;
}

void write_png(const std::string& path, const Image& image) {
  if (image.width <= 0 || image.height <= 0 || image.channels < 1 || image.channels > 4 ||
      image.pixels.size() != size_t(image.width) * image.height * image.channels)
    throw Error("write_png '" + path + "': invalid image " + std::to_string(image.width) + "x" +
                std::to_string(image.height) + "x" + std::to_string(image.channels));
  std::string bytes;
  auto sink = [](void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size); };
  if (!stbi_write_png_to_func(sink, &bytes, image.width, image.height, image.channels, image.pixels.data(),
                              image.width * image.channels))
    throw Error("write_png '" + path + "': PNG encoding failed");
  write_file_atomic(path, bytes);
}
#endif

Image resize_bilinear(const Image& image, int width, int height) {
  if (width <= 0 || height <= 0) throw Error("resize_bilinear: target size must be positive");
  if (width == image.width && height == image.height) return image;
  Image out(width, height, image.channels);
  const float sy = float(image.height) / height, sx = float(image.width) / width;
  for (int y = 0; y < height; ++y) {
    const float fy = std::min(std::max((y + 0.5f) * sy - 0.5f, 0.f), float(image.height - 1));
    const int y0 = int(fy), y1 = std::min(y0 + 1, image.height - 1);
    const float wy = fy - y0;
    for (int x = 0; x < width; ++x) {
      const float fx = std::min(std::max((x + 0.5f) * sx - 0.5f, 0.f), float(image.width - 1));
      const int x0 = int(fx), x1 = std::min(x0 + 1, image.width - 1);
      const float wx = fx - x0;
      for (int c = 0; c < image.channels; ++c) {
        const float a = image.at(x0, y0)[c] * (1 - wx) + image.at(x1, y0)[c] * wx;
        const float b = image.at(x0, y1)[c] * (1 - wx) + image.at(x1, y1)[c] * wx;
        out.at(x, y)[c] = uint8_t(std::min(255.f, std::max(0.f, a * (1 - wy) + b * wy + 0.5f)));
      }
    }
  }
  return out;
}

Image convert_channels(const Image& image, int channels) {
  if (channels != 1 && channels != 3 && channels != 4) throw Error("convert_channels: channels must be 1, 3 or 4");
  if (image.channels == channels) return image;
  Image out(image.width, image.height, channels);
  for (size_t i = 0; i < size_t(image.width) * image.height; ++i) {
    const uint8_t* s = image.pixels.data() + i * image.channels;
    uint8_t* d = out.pixels.data() + i * channels;
    uint8_t rgb[3];
    if (image.channels >= 3) {
      rgb[0] = s[0], rgb[1] = s[1], rgb[2] = s[2];
    } else {
      rgb[0] = rgb[1] = rgb[2] = s[0];
    }
    if (channels == 1) {
      d[0] = uint8_t((299 * rgb[0] + 587 * rgb[1] + 114 * rgb[2] + 500) / 1000);
    } else {
      d[0] = rgb[0], d[1] = rgb[1], d[2] = rgb[2];
      if (channels == 4) d[3] = image.channels == 4 ? s[3] : 255;
    }
  }
  return out;
}

std::vector<uint8_t> image_to_chw(const Image& image) {
  const size_t plane = size_t(image.width) * image.height;
  std::vector<uint8_t> chw(plane * image.channels);
  for (size_t i = 0; i < plane; ++i)
    for (int c = 0; c < image.channels; ++c) chw[c * plane + i] = image.pixels[i * image.channels + c];
  return chw;
}

Image image_from_chw(const uint8_t* chw, int channels, int height, int width) {
  Image img(width, height, channels);
  const size_t plane = size_t(width) * height;
  for (size_t i = 0; i < plane; ++i)
    for (int c = 0; c < channels; ++c) img.pixels[i * channels + c] = chw[c * plane + i];
  return img;
}

std::vector<uint8_t> model_input(const Image& image, const ViTConfig& cfg) {
  if (cfg.in_chans != 1 && cfg.in_chans != 3)
    throw Error("model_input: images can feed models with 1 or 3 channels, not " + std::to_string(cfg.in_chans));
  return image_to_chw(resize_bilinear(convert_channels(image, cfg.in_chans), cfg.img_size, cfg.img_size));
}

// ---- pictures -------------------------------------------------------------------------------
PatchGridLayout patch_grid_layout(int height, int width, int patch, int scale, int gap) {
  if (height <= 0 || width <= 0 || patch <= 0 || height % patch || width % patch)
    throw Error("patch grid: patch " + std::to_string(patch) + " does not tile a " + std::to_string(width) + "x" +
                std::to_string(height) + " image");
  PatchGridLayout L;
  L.scale = scale > 0 ? scale : auto_scale(height, width);
  L.gap = std::max(0, gap);
  const int gw = width / patch, gh = height / patch, ps = patch * L.scale;
  L.grid_x0 = 3 * L.gap + width * L.scale;
  const int grid_w = gw * ps + (gw - 1) * L.gap, grid_h = gh * ps + (gh - 1) * L.gap;
  L.width = L.grid_x0 + grid_w + L.gap;
  L.height = 2 * L.gap + std::max(height * L.scale, grid_h);
  return L;
}

Image patch_grid_image(const uint8_t* chw, int channels, int height, int width, int patch, int scale, int gap) {
  const PatchGridLayout L = patch_grid_layout(height, width, patch, scale, gap);
  Image out(L.width, L.height, 3, 255);
  blit_chw(out, L.gap, L.gap, chw, channels, height, width, L.scale);
  const int ps = patch * L.scale;
  for (int py = 0; py < height / patch; ++py)
    for (int px = 0; px < width / patch; ++px)
      blit_chw(out, L.grid_x0 + px * (ps + L.gap), L.gap + py * (ps + L.gap), chw, channels, height, width, L.scale,
               px * patch, py * patch, patch, patch);
  return out;
}

void colormap(float t, uint8_t rgb[3]) {
  // viridis, sampled at 9 points of matplotlib's table
  static const uint8_t k[9][3] = {{68, 1, 84},    {71, 44, 122},  {59, 81, 139},  {44, 113, 142}, {33, 144, 141},
                                  {39, 173, 129}, {92, 200, 99},  {170, 220, 50}, {253, 231, 37}};
  if (!(t >= 0)) t = 0;  // NaN too
  if (t > 1) t = 1;
  const float f = t * 8;
  const int i = std::min(int(f), 7);
  const float w = f - i;
  for (int c = 0; c < 3; ++c) rgb[c] = uint8_t(k[i][c] * (1 - w) + k[i + 1][c] * w + 0.5f);
}

Image attention_overlay(const uint8_t* chw, int channels, int height, int width, const std::vector<float>& map,
                        int grid, int scale, int gap) {
  if (grid <= 0 || map.size() != size_t(grid) * grid)
    throw Error("attention_overlay: map has " + std::to_string(map.size()) + " values, expected grid² = " +
                std::to_string(size_t(grid) * grid));
  const int s = scale > 0 ? scale : auto_scale(height, width);
  const int W = width * s, H = height * s;
  gap = std::max(0, gap);
  Image out(4 * gap + 3 * W, 2 * gap + H, 3, 255);
  // Min-max normalised: the identity added per layer gives every patch a large floor.
  const auto [lo_it, hi_it] = std::minmax_element(map.begin(), map.end());
  const float lo = *lo_it, hi = *hi_it;
  std::vector<float> m(map.size());
  for (size_t i = 0; i < m.size(); ++i) m[i] = hi - lo > 1e-12f * std::fabs(hi) ? (map[i] - lo) / (hi - lo) : 1.f;
  blit_chw(out, gap, gap, chw, channels, height, width, s);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const float v = sample_bilinear(m.data(), grid, grid, (y + 0.5f) * grid / H - 0.5f, (x + 0.5f) * grid / W - 0.5f);
      uint8_t rgb[3];
      colormap(v, rgb);
      uint8_t* heat = out.at(2 * gap + W + x, gap + y);
      uint8_t* over = out.at(3 * gap + 2 * W + x, gap + y);
      const uint8_t* img = out.at(gap + x, gap + y);
      for (int c = 0; c < 3; ++c) {
        heat[c] = rgb[c];
        over[c] = uint8_t(std::min(255.f, 0.55f * img[c] + 0.45f * rgb[c] + 0.5f));  // cv2.addWeighted
      }
    }
  return out;
}

Image confusion_matrix_image(const ConfusionMatrix& cm, int cell) {
  const int K = cm.num_classes;
  if (K <= 0) throw Error("confusion_matrix_image: empty matrix");
  if (cell <= 0) cell = std::max(4, 320 / K);
  const int border = std::max(1, cell / 8);
  Image out(K * cell + 2 * border, K * cell + 2 * border, 3, 255);
  for (int t = 0; t < K; ++t) {
    const int64_t n = cm.support(t);
    for (int p = 0; p < K; ++p) {
      uint8_t rgb[3] = {160, 160, 160};  // rows without images: grey
      if (n > 0) colormap(float(double(cm.at(t, p)) / n), rgb);
      for (int y = 0; y < cell; ++y)
        for (int x = 0; x < cell; ++x) std::memcpy(out.at(border + p * cell + x, border + t * cell + y), rgb, 3);
    }
  }
  return out;
}

// ---- the end-of-training report ---------------------------------------------------------------
std::vector<std::string> write_test_report(const std::string& dir, Model& model, const Dataset& data,
                                           const std::vector<int32_t>& predictions,
                                           const std::vector<std::string>& class_names, int64_t image_index) {
  const ViTConfig& c = model.config();
  const int K = std::max(c.num_classes, data.num_classes);
  const ConfusionMatrix cm = confusion_matrix(data.labels, predictions, K);
  std::vector<std::string> written;
  write_file_atomic(dir + "/confusion_matrix.csv", cm.to_csv(class_names));
  written.push_back("confusion_matrix.csv");
  write_file_atomic(dir + "/per_class_accuracy.csv", cm.per_class_csv(class_names));
  written.push_back("per_class_accuracy.csv");
  if (!png_supported()) return written;
  write_png(dir + "/confusion_matrix.png", confusion_matrix_image(cm));
  written.push_back("confusion_matrix.png");
  if (data.size() == 0) return written;
  if (image_index < 0 || image_index >= data.size())
    throw Error("report image " + std::to_string(image_index) + " is outside the " + std::to_string(data.size()) +
                " images of '" + data.name + "'");
  const uint8_t* img = data.image(image_index);
  write_png(dir + "/patches.png", patch_grid_image(img, data.channels, data.height, data.width, c.patch_size));
  written.push_back("patches.png");
  model.forward(Tensor::view(const_cast<uint8_t*>(img), {1, data.channels, data.height, data.width}, DType::U8), false);
  write_png(dir + "/attention.png",
            attention_overlay(img, data.channels, data.height, data.width, attention_rollout(model, 0), c.grid()));
  written.push_back("attention.png");
  return written;
}

}  // namespace vitcuda
