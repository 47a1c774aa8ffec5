// vitcuda — normalisation statistics, resize and the random augmentations (see augment.h for
// the conventions). Internally an image goes through float planes and is rounded to uint8
// once at the end, so a pipeline of resize + rotation + zoom rounds only once.
#include "vitcuda/augment.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "host/random.h"
#include "kernels/philox.h"

namespace vitcuda {
namespace {

constexpr double kPi = 3.14159265358979323846;

// ---- randomness: a pure function of (seed, epoch, index, what) ------------------------------
// Philox4x32-10 of the counter (index, epoch ^ what-tag) under the key seed gives a 64-bit
// state; splitmix64 then draws as many numbers as the operation needs. Each operation has its
// own tag, so turning one augmentation on or off leaves the draws of the others unchanged.
enum Tag : uint32_t {
  kTagCrop = 0x63726f70u,
  kTagFlip = 0x666c6970u,
  kTagRotate = 0x726f7461u,
  kTagZoom = 0x7a6f6f6du
};

class SampleRng {
 public:
  SampleRng(uint64_t seed, int64_t epoch, int64_t index, uint32_t tag) {
    const uint64_t e = uint64_t(epoch), i = uint64_t(index);
    const Philox4 r = philox4x32_10(Philox4{{uint32_t(i), uint32_t(i >> 32), uint32_t(e), uint32_t(e >> 32) ^ tag}},
                                    uint32_t(seed), uint32_t(seed >> 32));
    state_ = uint64_t(r.x[0]) | uint64_t(r.x[1]) << 32;
  }
  uint64_t next() { return splitmix64(state_); }
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }

 private:
  uint64_t state_;
};

// ---- float planes ----------------------------------------------------------------------------
std::vector<float> to_float(const uint8_t* src, size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = float(src[i]);
  return v;
}

void to_u8(const float* src, size_t n, uint8_t* dst) {
  for (size_t i = 0; i < n; ++i) {
    const float r = std::floor(src[i] + 0.5f);
    dst[i] = uint8_t(r <= 0.f ? 0.f : r >= 255.f ? 255.f : r);
  }
}

// One output coordinate of a half-pixel-centred bilinear resize of the span [offset, offset+len).
struct Tap {
  int i0, i1;
  float f;  // weight of i1
};

std::vector<Tap> taps(int out, int offset, int len) {
  std::vector<Tap> t(static_cast<size_t>(out));
  const double scale = double(len) / out;
  for (int o = 0; o < out; ++o) {
    const double s = (o + 0.5) * scale - 0.5;
    const double fl = std::floor(s);
    const int i = int(fl);
    t[size_t(o)] = {offset + std::clamp(i, 0, len - 1), offset + std::clamp(i + 1, 0, len - 1), float(s - fl)};
  }
  return t;
}

template <class T>
void resample(const T* src, int c, int h, int w, const CropBox& box, float* dst, int oh, int ow) {
  const std::vector<Tap> ty = taps(oh, box.top, box.height), tx = taps(ow, box.left, box.width);
  for (int ch = 0; ch < c; ++ch) {
    const T* p = src + size_t(ch) * h * w;
    float* q = dst + size_t(ch) * oh * ow;
    for (int y = 0; y < oh; ++y) {
      const T* r0 = p + size_t(ty[size_t(y)].i0) * w;
      const T* r1 = p + size_t(ty[size_t(y)].i1) * w;
      const float fy = ty[size_t(y)].f;
      for (int x = 0; x < ow; ++x) {
        const Tap& t = tx[size_t(x)];
        const float a = float(r0[t.i0]) + t.f * (float(r0[t.i1]) - float(r0[t.i0]));
        const float b = float(r1[t.i0]) + t.f * (float(r1[t.i1]) - float(r1[t.i0]));
        q[size_t(y) * ow + x] = a + fy * (b - a);
      }
    }
  }
}

void flip_rows(float* p, int c, int h, int w) {
  for (int r = 0; r < c * h; ++r) std::reverse(p + size_t(r) * w, p + size_t(r + 1) * w);
}

// tf.raw_ops.ImageProjectiveTransformV3's fill_mode="reflect" (d c b a | a b c d | d c b a):
// maps a coordinate outside [0, len - 1] back inside.
double reflect(double x, int len) {
  if (len <= 1) return 0;
  const double sz2 = 2.0 * len;
  if (x < 0) {
    x += sz2 * std::floor(-x / sz2);  // now in (-sz2, 0]
    x = x < -len ? x + sz2 : -x - 1;
  } else if (x > len - 1) {
    x -= sz2 * std::floor(x / sz2);
    if (x >= len) x = sz2 - x - 1;
  }
  return std::clamp(x, 0.0, double(len - 1));
}

// dst(x, y) = src(cx + a (x - cx) + b (y - cy), cy + c (x - cx) + d (y - cy)), bilinear, reflect.
void affine(const float* src, int ch, int h, int w, double a, double b, double c, double d, float* dst) {
  const double cx = (w - 1) / 2.0, cy = (h - 1) / 2.0;
  std::vector<int> i00(size_t(h) * w), i01(i00.size()), i10(i00.size()), i11(i00.size());
  std::vector<float> fx(i00.size()), fy(i00.size());
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const double sx = reflect(cx + a * (x - cx) + b * (y - cy), w);
      const double sy = reflect(cy + c * (x - cx) + d * (y - cy), h);
      const int x0 = int(std::floor(sx)), y0 = int(std::floor(sy));
      const int x1 = std::min(x0 + 1, w - 1), y1 = std::min(y0 + 1, h - 1);
      const size_t k = size_t(y) * w + x;
      i00[k] = y0 * w + x0;
      i01[k] = y0 * w + x1;
      i10[k] = y1 * w + x0;
      i11[k] = y1 * w + x1;
      fx[k] = float(sx - x0);
      fy[k] = float(sy - y0);
    }
  const size_t plane = size_t(h) * w;
  for (int k0 = 0; k0 < ch; ++k0) {
    const float* p = src + k0 * plane;
    float* q = dst + k0 * plane;
    for (size_t k = 0; k < plane; ++k) {
      const float top = p[i00[k]] + fx[k] * (p[i01[k]] - p[i00[k]]);
      const float bot = p[i10[k]] + fx[k] * (p[i11[k]] - p[i10[k]]);
      q[k] = top + fy[k] * (bot - top);
    }
  }
}

void rotate_zoom_float(const float* src, int c, int h, int w, double angle, double zoom_h, double zoom_w, float* dst) {
  const double cs = std::cos(angle), sn = std::sin(angle);
  // Keras: zoom (output -> rotated image) then rotation (rotated image -> input).
  affine(src, c, h, w, cs * zoom_w, -sn * zoom_h, sn * zoom_w, cs * zoom_h, dst);
}

std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}

void check_image(const char* what, int c, int h, int w) {
  if (c < 1 || h < 1 || w < 1)
    throw Error(std::string(what) + ": image is " + std::to_string(c) + "x" + std::to_string(h) + "x" +
                std::to_string(w) + " (channels x height x width must be positive)");
}

}  // namespace

// ---- statistics ------------------------------------------------------------------------------
ChannelStats channel_stats(const Dataset& data) {
  if (data.size() == 0 || data.image_bytes() == 0) throw Error("channel_stats: dataset '" + data.name + "' is empty");
  const int c = data.channels;
  const size_t plane = size_t(data.height) * data.width;
  std::vector<uint64_t> sum(size_t(c), 0), sumsq(size_t(c), 0);  // exact integer sums
  for (int64_t i = 0; i < data.size(); ++i) {
    const uint8_t* img = data.image(i);
    for (int k = 0; k < c; ++k) {
      uint64_t s = 0, s2 = 0;
      for (size_t j = 0; j < plane; ++j) {
        const uint64_t v = img[size_t(k) * plane + j];
        s += v;
        s2 += v * v;
      }
      sum[size_t(k)] += s;
      sumsq[size_t(k)] += s2;
    }
  }
  ChannelStats st;
  const double n = double(plane) * double(data.size());
  for (int k = 0; k < c; ++k) {
    const double mean = double(sum[size_t(k)]) / n / 255.0;
    const double var = std::max(0.0, double(sumsq[size_t(k)]) / n / (255.0 * 255.0) - mean * mean);
    st.mean.push_back(float(mean));
    st.std.push_back(float(std::max(std::sqrt(var), 1e-7)));
  }
  return st;
}

// ---- single-image operations ---------------------------------------------------------------
void resize_bilinear(const uint8_t* src, int c, int h, int w, uint8_t* dst, int out_h, int out_w) {
  crop_resize_bilinear(src, c, h, w, 0, 0, h, w, dst, out_h, out_w);
}

void crop_resize_bilinear(const uint8_t* src, int c, int h, int w, int top, int left, int crop_h, int crop_w,
                          uint8_t* dst, int out_h, int out_w) {
  check_image("crop_resize_bilinear", c, h, w);
  if (out_h < 1 || out_w < 1)
    throw Error("crop_resize_bilinear: output size " + std::to_string(out_h) + "x" + std::to_string(out_w) +
                " must be positive");
  if (top < 0 || left < 0 || crop_h < 1 || crop_w < 1 || top + crop_h > h || left + crop_w > w)
    throw Error("crop_resize_bilinear: crop rows " + std::to_string(top) + "+" + std::to_string(crop_h) + ", columns " +
                std::to_string(left) + "+" + std::to_string(crop_w) + " is not inside the " + std::to_string(h) + "x" +
                std::to_string(w) + " image");
  std::vector<float> out(size_t(c) * out_h * out_w);
  resample(src, c, h, w, CropBox{top, left, crop_h, crop_w}, out.data(), out_h, out_w);
  to_u8(out.data(), out.size(), dst);
}

Dataset resize_dataset(const Dataset& data, int height, int width) {
  if (height == data.height && width == data.width) return data;
  Dataset out;
  out.name = data.name;
  out.channels = data.channels;
  out.height = height;
  out.width = width;
  out.num_classes = data.num_classes;
  out.labels = data.labels;
  out.class_names = data.class_names;
  out.images.assign(size_t(data.size()) * size_t(out.image_bytes()), 0);
  for (int64_t i = 0; i < data.size(); ++i)
    resize_bilinear(data.image(i), data.channels, data.height, data.width, out.images.data() + i * out.image_bytes(),
                    height, width);
  return out;
}

void hflip(const uint8_t* src, int c, int h, int w, uint8_t* dst) {
  check_image("hflip", c, h, w);
  for (int r = 0; r < c * h; ++r)
    for (int x = 0; x < w; ++x) dst[size_t(r) * w + x] = src[size_t(r) * w + (w - 1 - x)];
}

void rotate_zoom(const uint8_t* src, int c, int h, int w, double angle, double zoom_h, double zoom_w, uint8_t* dst) {
  check_image("rotate_zoom", c, h, w);
  const size_t n = size_t(c) * h * w;
  std::vector<float> in = to_float(src, n), out(n);
  rotate_zoom_float(in.data(), c, h, w, angle, zoom_h, zoom_w, out.data());
  to_u8(out.data(), n, dst);
}

// ---- the pipeline ----------------------------------------------------------------------------
void AugmentConfig::validate() const {
  auto bad = [](const std::string& field, const std::string& why) {
    throw Error("augmentation: " + field + " " + why);
  };
  if (out_height < 0 || out_width < 0) bad("output size", "must be non-negative");
  if (!(hflip >= 0 && hflip <= 1)) bad("hflip probability " + fmt(hflip), "must be in [0, 1]");
  if (!(rotation >= 0 && rotation <= 1))
    bad("rotation factor " + fmt(rotation), "must be in [0, 1] (a fraction of a full turn)");
  if (!(zoom_height >= 0 && zoom_height < 1)) bad("zoom factor " + fmt(zoom_height), "must be in [0, 1)");
  if (!(zoom_width >= 0 && zoom_width < 1)) bad("zoom width factor " + fmt(zoom_width), "must be in [0, 1)");
  if (rrc) {
    if (!(rrc_scale[0] > 0 && rrc_scale[0] <= rrc_scale[1] && std::isfinite(rrc_scale[1])))
      bad("random-resized-crop scale (" + fmt(rrc_scale[0]) + ", " + fmt(rrc_scale[1]) + ")",
          "must satisfy 0 < lo <= hi");
    if (!(rrc_ratio[0] > 0 && rrc_ratio[0] <= rrc_ratio[1] && std::isfinite(rrc_ratio[1])))
      bad("random-resized-crop ratio (" + fmt(rrc_ratio[0]) + ", " + fmt(rrc_ratio[1]) + ")",
          "must satisfy 0 < lo <= hi");
  }
}

std::string AugmentConfig::describe() const {
  std::string s;
  auto add = [&](const std::string& part) { s += (s.empty() ? "" : ", ") + part; };
  if (rrc) add("random-resized-crop scale " + fmt(rrc_scale[0]) + "-" + fmt(rrc_scale[1]));
  if (hflip > 0) add("hflip " + fmt(hflip));
  if (rotation > 0) add("rotation " + fmt(rotation));
  if (zoom_height > 0 || zoom_width > 0)
    add("zoom " + fmt(zoom_height) + (zoom_width > 0 && zoom_width != zoom_height ? "x" + fmt(zoom_width) : ""));
  return s.empty() ? "none" : s;
}

AugmentParams sample_augment(const AugmentConfig& cfg, int in_h, int in_w, uint64_t seed, int64_t epoch,
                             int64_t index) {
  AugmentParams p;
  if (cfg.rrc) {
    SampleRng r(seed, epoch, index, kTagCrop);
    p.crop = true;
    p.box = random_resized_crop_box(in_h, in_w, cfg.rrc_scale, cfg.rrc_ratio, [&r] { return r.uniform(); });
  }
  if (cfg.hflip > 0) {
    SampleRng r(seed, epoch, index, kTagFlip);
    p.flip = r.uniform() < cfg.hflip;
  }
  if (cfg.rotation > 0) {
    SampleRng r(seed, epoch, index, kTagRotate);
    const double lim = double(cfg.rotation) * 2 * kPi;
    p.angle = r.uniform(-lim, lim);
  }
  if (cfg.zoom_height > 0 || cfg.zoom_width > 0) {
    SampleRng r(seed, epoch, index, kTagZoom);
    p.zoom_h = r.uniform(1.0 - cfg.zoom_height, 1.0 + cfg.zoom_height);
    p.zoom_w = cfg.zoom_width > 0 ? r.uniform(1.0 - cfg.zoom_width, 1.0 + cfg.zoom_width) : p.zoom_h;
  }
  return p;
}

void augment_image(const AugmentConfig& cfg, const AugmentParams& p, const uint8_t* src, int c, int in_h, int in_w,
                   uint8_t* dst) {
  check_image("augment_image", c, in_h, in_w);
  const int oh = cfg.out_height > 0 ? cfg.out_height : in_h;
  const int ow = cfg.out_width > 0 ? cfg.out_width : in_w;
  const size_t n = size_t(c) * oh * ow;
  const bool warp = p.angle != 0 || p.zoom_h != 1 || p.zoom_w != 1;
  if (!p.crop && oh == in_h && ow == in_w && !p.flip && !warp) {
    std::memcpy(dst, src, n);
    return;
  }
  std::vector<float> a;
  if (p.crop || oh != in_h || ow != in_w) {
    a.resize(n);
    resample(src, c, in_h, in_w, p.crop ? p.box : CropBox{0, 0, in_h, in_w}, a.data(), oh, ow);
  } else {
    a = to_float(src, n);
  }
  if (p.flip) flip_rows(a.data(), c, oh, ow);
  if (warp) {
    std::vector<float> b(n);
    rotate_zoom_float(a.data(), c, oh, ow, p.angle, p.zoom_h, p.zoom_w, b.data());
    a.swap(b);
  }
  to_u8(a.data(), n, dst);
}

// ---- the loader ------------------------------------------------------------------------------
AugmentLoader::AugmentLoader(const Dataset& data, int batch_size, bool shuffle, bool drop_last, uint64_t seed,
                             const AugmentConfig& augment, int threads, int queue_depth)
    : data_(data),
      order_(data, batch_size, shuffle, drop_last, seed),
      aug_(augment),
      seed_(seed),
      batch_size_(batch_size),
      drop_last_(drop_last) {
  aug_.validate();
  if (threads < 0 || queue_depth < 1)
    throw Error("AugmentLoader: threads " + std::to_string(threads) + " must be >= 0 and queue depth " +
                std::to_string(queue_depth) + " >= 1");
  out_h_ = aug_.out_height > 0 ? aug_.out_height : data.height;
  out_w_ = aug_.out_width > 0 ? aug_.out_width : data.width;
  identity_ = !aug_.is_random() && out_h_ == data.height && out_w_ == data.width;
  if (threads > 0 && !identity_) {
    slots_.resize(size_t(queue_depth));
    for (Slot& s : slots_) {
      s.images.resize(size_t(batch_size) * size_t(image_bytes()));
      s.labels.resize(size_t(batch_size));
    }
    for (int t = 0; t < threads; ++t) workers_.emplace_back([this] { worker(); });
  }
}

AugmentLoader::~AugmentLoader() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void AugmentLoader::start_epoch(int64_t epoch) {
  std::unique_lock<std::mutex> lk(mu_);
  active_ = false;  // no new claims; wait for batches being made for the old epoch
  done_cv_.wait(lk, [this] { return busy_ == 0; });
  for (Slot& s : slots_) {
    s.ready = false;
    s.batch = -1;
    s.error = nullptr;
  }
  order_.start_epoch(epoch);
  epoch_ = epoch;
  claimed_ = consumed_ = 0;
  if (!workers_.empty()) {
    active_ = true;  // start making this epoch's first batches right away
    work_cv_.notify_all();
  }
}

int AugmentLoader::batch_count(int64_t k) const {
  const int64_t n = data_.size();
  const int64_t end = drop_last_ ? num_batches() * batch_size_ : n;
  return int(std::max<int64_t>(0, std::min<int64_t>(batch_size_, end - k * batch_size_)));
}

void AugmentLoader::set_shard(int index, int count) {
  if (count < 1 || index < 0 || index >= count)
    throw Error("AugmentLoader: shard " + std::to_string(index) + " of " + std::to_string(count) +
                " (needs 0 <= index < count)");
  std::lock_guard<std::mutex> lk(mu_);
  if (active_ || consumed_ > 0) throw Error("AugmentLoader: set_shard during an epoch");
  shard_ = index;
  shards_ = count;
}

std::pair<int, int> AugmentLoader::shard_range(int64_t k) const {
  const int64_t c = batch_count(k);
  return {int(c * shard_ / shards_), int(c * (shard_ + 1) / shards_)};
}

void AugmentLoader::make_batch(int64_t k, uint8_t* images, int32_t* labels) const {
  const auto [begin, end] = shard_range(k);
  const std::vector<int64_t>& order = order_.order();
  const size_t out_bytes = size_t(image_bytes());
  for (int b = 0; b < end - begin; ++b) {
    const int64_t i = order[size_t(k * batch_size_ + begin + b)];
    labels[b] = data_.labels[size_t(i)];
    if (identity_) {
      std::memcpy(images + size_t(b) * out_bytes, data_.image(i), out_bytes);
      continue;
    }
    const AugmentParams p = sample_augment(aug_, data_.height, data_.width, seed_, epoch_, i);
    augment_image(aug_, p, data_.image(i), data_.channels, data_.height, data_.width, images + size_t(b) * out_bytes);
  }
}

void AugmentLoader::worker() {
  std::unique_lock<std::mutex> lk(mu_);
  const int64_t depth = int64_t(slots_.size());
  for (;;) {
    work_cv_.wait(lk, [&] { return stop_ || (active_ && claimed_ < num_batches() && claimed_ < consumed_ + depth); });
    if (stop_) return;
    const int64_t k = claimed_++;
    Slot& s = slots_[size_t(k % depth)];
    ++busy_;
    lk.unlock();
    std::exception_ptr err;
    try {
      make_batch(k, s.images.data(), s.labels.data());
    } catch (...) {
      err = std::current_exception();
    }
    lk.lock();
    --busy_;
    const auto [begin, end] = shard_range(k);
    s.count = end - begin;
    s.batch = k;
    s.error = err;
    s.ready = true;
    done_cv_.notify_all();
  }
}

int AugmentLoader::next(uint8_t* images, int32_t* labels) {
  if (workers_.empty()) {
    if (consumed_ >= num_batches()) return 0;
    const auto [begin, end] = shard_range(consumed_);
    make_batch(consumed_++, images, labels);
    return end - begin;
  }
  std::unique_lock<std::mutex> lk(mu_);
  if (consumed_ >= num_batches()) return 0;
  if (!active_) {  // first use without start_epoch: epoch 0
    active_ = true;
    work_cv_.notify_all();
  }
  const int64_t k = consumed_;
  Slot& s = slots_[size_t(k % int64_t(slots_.size()))];
  done_cv_.wait(lk, [&] { return s.ready && s.batch == k; });
  if (s.error) std::rethrow_exception(s.error);
  lk.unlock();  // the workers leave a ready slot alone until consumed_ moves past it
  std::memcpy(images, s.images.data(), size_t(s.count) * size_t(image_bytes()));
  std::memcpy(labels, s.labels.data(), size_t(s.count) * sizeof(int32_t));
  const int count = s.count;
  lk.lock();
  s.ready = false;
  ++consumed_;
  work_cv_.notify_all();
  return count;
}

}  // namespace vitcuda
