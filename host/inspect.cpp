// vitcuda — reading a forward pass back (include/vitcuda/inspect.h).
#include "vitcuda/inspect.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace vitcuda {
namespace {

// The view of image `index` of a batch-major activation [B, ...].
Tensor batch_item(const Tensor& t, int index) {
  int64_t shape[kMaxDims];
  int64_t per = 1;
  for (int i = 1; i < t.ndim(); ++i) per *= t.size(i);
  shape[0] = 1;
  for (int i = 1; i < t.ndim(); ++i) shape[i] = t.size(i);
  if (index < 0 || index >= t.size(0))
    throw Error("image index " + std::to_string(index) + " is outside the last batch of " + std::to_string(t.size(0)));
  return Tensor::view(static_cast<char*>(t.data()) + size_t(index) * per * dtype_size(t.dtype()), shape, t.ndim(),
                      t.dtype(), t.device());
}

}  // namespace

std::vector<float> to_host_f32(Backend& backend, const Tensor& t) {
  const int64_t n = t.numel();
  std::vector<uint8_t> raw;
  const uint8_t* src = static_cast<const uint8_t*>(t.data());
  if (t.device() != Device::CPU) {
    raw.resize(t.nbytes());
    backend.copy_to_host(raw.data(), t.data(), t.nbytes());
    src = raw.data();
  }
  return to_f32(src, t.dtype(), n);
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
  // The packed projection [T, 3, H, d] of this image: q of head h at row offset h·d, k at A + h·d.
  const std::vector<float> qkv = to_host_f32(be, batch_item(model.activation(pre + "qkv"), index));
  const std::vector<float> lse = to_host_f32(be, batch_item(model.activation(pre + "lse"), index));
  const int H = c.num_heads, T = c.num_tokens(), d = c.attn_head_dim();
  const size_t A = size_t(H) * d;
  const double scale = c.attn_scale();
  std::vector<float> P(size_t(H) * T * T);
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < T; ++i) {
      const float* qi = qkv.data() + size_t(i) * 3 * A + size_t(h) * d;
      for (int j = 0; j < T; ++j) {
        const float* kj = qkv.data() + size_t(j) * 3 * A + A + size_t(h) * d;
        double dot = 0;
        for (int e = 0; e < d; ++e) dot += double(qi[e]) * kj[e];
        P[(size_t(h) * T + i) * T + j] = float(std::exp(scale * dot - lse[size_t(h) * T + i]));
      }
    }
  return P;
}

std::vector<float> attention_rollout(const std::vector<std::vector<float>>& layers, int heads, int tokens,
                                     int num_prefix) {
  const int T = tokens;
  if (layers.empty()) throw Error("attention_rollout: no layers");
  if (heads <= 0 || num_prefix < 0 || T <= num_prefix) throw Error("attention_rollout: bad heads or token count");
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
  if (num_prefix > 0) {
    for (int j = num_prefix; j < T; ++j) out.push_back(float(R[j]));
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
  return attention_rollout(layers, c.num_heads, c.num_tokens(), c.num_prefix_tokens());
}

}  // namespace vitcuda
