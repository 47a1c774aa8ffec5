// vitcuda — image preprocessing and augmentation on uint8 NCHW images, and a batch loader that
// runs them in worker threads ahead of the training step.
//
// Everything stays uint8 (rounded to nearest): the model divides by 255 and normalises with
// ViTConfig::pixel_mean / pixel_std in its patch_extract op. Every random decision is a pure
// function of (seed, epoch, example index), so the batches of an epoch are the same whatever
// the thread timing, and a resumed run sees exactly the augmentations of an uninterrupted one.
//
// Conventions (pixel-index coordinates: pixel (x, y) has its centre at (x, y)):
// * resize: bilinear with half-pixel centres and edge clamping, no antialiasing, as
//   tf.image.resize(method="bilinear") / Keras Resizing and torch interpolate(bilinear,
//   align_corners=False, antialias=False).
// * rotation and zoom: the Keras 2 RandomRotation / RandomZoom transforms (about the image
//   centre ((W-1)/2, (H-1)/2)), bilinear, fill mode "reflect" (d c b a | a b c d | d c b a, as
//   tf.raw_ops.ImageProjectiveTransformV3). When both are on they are composed into one
//   resampling (Keras resamples twice).
// * random-resized-crop: torchvision / timm RandomResizedCrop.get_params (10 attempts, then a
//   centre crop clamped to the ratio range), then a bilinear resize of the crop.
#pragma once
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "vitcuda/data.h"

namespace vitcuda {

// ---- normalisation statistics ------------------------------------------------------------
// Per-channel mean and population standard deviation of pixel / 255 over every pixel of every
// image, as Keras' Normalization layer adapted on the training set. A constant channel gets
// std 1e-7 (Keras' epsilon) so the result is always usable as ViTConfig::pixel_std.
struct ChannelStats {
  std::vector<float> mean, std;
};
ChannelStats channel_stats(const Dataset& data);

// A copy of `data` with every image resized (bilinear) to height x width.
Dataset resize_dataset(const Dataset& data, int height, int width);

// ---- single-image operations on uint8 [C, H, W] ------------------------------------------
void resize_bilinear(const uint8_t* src, int c, int h, int w, uint8_t* dst, int out_h, int out_w);
// The rows [top, top + crop_h) and columns [left, left + crop_w) of src, resized to out_h x out_w.
void crop_resize_bilinear(const uint8_t* src, int c, int h, int w, int top, int left, int crop_h, int crop_w,
                          uint8_t* dst, int out_h, int out_w);
void hflip(const uint8_t* src, int c, int h, int w, uint8_t* dst);
// Keras RandomRotation by `angle` radians (positive: counter-clockwise on screen) followed by
// RandomZoom by factors zoom_h, zoom_w (> 1 zooms out, < 1 zooms in); fill "reflect".
void rotate_zoom(const uint8_t* src, int c, int h, int w, double angle, double zoom_h, double zoom_w, uint8_t* dst);

struct CropBox {
  int top = 0, left = 0, height = 0, width = 0;
};

// ---- the pipeline --------------------------------------------------------------------------
// Order: random-resized-crop (or resize) to the output size -> horizontal flip -> rotation and
// zoom. Each random part is off at its default.
struct AugmentConfig {
  int out_height = 0, out_width = 0;  // output size; 0: the input's
  float hflip = 0.f;                  // probability of a horizontal flip (Keras RandomFlip("horizontal"): 0.5)
  float rotation = 0.f;               // Keras RandomRotation factor: angle uniform in [-f·2π, f·2π]
  // Keras RandomZoom(height_factor, width_factor) with a single float each: the zoom factor
  // along that axis is uniform in [1 - f, 1 + f]; > 1 zooms out (more of the image, reflected
  // at the borders), < 1 zooms in. width 0 with height > 0: the same factor for both axes
  // (Keras' width_factor=None).
  float zoom_height = 0.f, zoom_width = 0.f;
  bool rrc = false;                             // random-resized-crop instead of the plain resize
  float rrc_scale[2] = {0.08f, 1.f};            // area fraction range
  float rrc_ratio[2] = {3.f / 4.f, 4.f / 3.f};  // aspect ratio (w / h) range, sampled log-uniformly

  bool is_random() const { return hflip > 0 || rotation > 0 || zoom_height > 0 || zoom_width > 0 || rrc; }
  void validate() const;         // throws Error naming the field
  std::string describe() const;  // e.g. "rrc(0.08-1) hflip 0.5 rotation 0.02 zoom 0.2"
};

// The random draws of one example.
struct AugmentParams {
  bool crop = false;  // use `box` (random-resized-crop); else the whole image
  CropBox box;
  bool flip = false;
  double angle = 0;  // radians
  double zoom_h = 1, zoom_w = 1;
};
// A pure function of (config, input size, seed, epoch, index).
AugmentParams sample_augment(const AugmentConfig& cfg, int in_h, int in_w, uint64_t seed, int64_t epoch, int64_t index);
// timm / torchvision RandomResizedCrop.get_params with the uniform draws taken from `uniform`
// (each call returns a double in [0, 1)).
template <class Uniform>
CropBox random_resized_crop_box(int h, int w, const float scale[2], const float ratio[2], Uniform&& uniform);
// Applies `p` to src [c, in_h, in_w]; dst is [c, out_h, out_w] of cfg (or the input size).
void augment_image(const AugmentConfig& cfg, const AugmentParams& p, const uint8_t* src, int c, int in_h, int in_w,
                   uint8_t* dst);

// ---- threaded loader -----------------------------------------------------------------------
// BatchLoader's epoch order (same (seed, epoch) permutation) with each example passed through
// `augment` (random draws keyed by its dataset index). threads > 0 workers fill a bounded queue
// of `queue_depth` batches ahead of next(); threads == 0 does the work inside next(). Both
// produce bitwise the same batches. An identity pipeline (no resize, nothing random) always
// runs synchronously (it is a copy). Worker exceptions are rethrown by next().
class AugmentLoader {
 public:
  AugmentLoader(const Dataset& data, int batch_size, bool shuffle, bool drop_last, uint64_t seed,
                const AugmentConfig& augment, int threads = 2, int queue_depth = 3);
  ~AugmentLoader();
  AugmentLoader(const AugmentLoader&) = delete;
  AugmentLoader& operator=(const AugmentLoader&) = delete;

  // Data parallelism: every batch of batch_size examples is cut into `count` contiguous shards and
  // next() hands out shard `index` only: examples [index·c/count, (index+1)·c/count) of a batch
  // of c, so the shards of all ranks, in rank order, are the whole batch in the same order. A
  // shard of a short last batch may be empty (next() then returns 0 before the epoch ends: loop
  // over num_batches()). Call before the first next() of an epoch.
  void set_shard(int index, int count);
  std::pair<int, int> shard_range(int64_t k) const;  // this shard's [begin, end) within batch k
  void start_epoch(int64_t epoch);
  int64_t num_batches() const { return order_.num_batches(); }
  // Fills images [B, C, out_h, out_w] and labels [B]; returns B (0 at the end of the epoch).
  int next(uint8_t* images, int32_t* labels);

  int channels() const { return data_.channels; }
  int height() const { return out_h_; }
  int width() const { return out_w_; }
  int64_t image_bytes() const { return int64_t(data_.channels) * out_h_ * out_w_; }
  bool threaded() const { return !workers_.empty(); }

 private:
  struct Slot {
    std::vector<uint8_t> images;
    std::vector<int32_t> labels;
    int count = 0;
    int64_t batch = -1;  // which batch it holds when ready
    bool ready = false;
    std::exception_ptr error;
  };
  int batch_count(int64_t k) const;  // of the whole batch
  void make_batch(int64_t k, uint8_t* images, int32_t* labels) const;
  void worker();

  const Dataset& data_;
  BatchLoader order_;  // the epoch permutation
  AugmentConfig aug_;
  uint64_t seed_;
  int batch_size_, out_h_ = 0, out_w_ = 0;
  int shard_ = 0, shards_ = 1;
  bool drop_last_, identity_ = true;
  int64_t epoch_ = 0;
  int64_t consumed_ = 0;  // batches handed out by next() this epoch

  // Threaded state, guarded by mu_.
  std::vector<std::thread> workers_;
  std::vector<Slot> slots_;
  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  int64_t claimed_ = 0;  // next batch a worker takes
  int busy_ = 0;         // workers computing a batch
  bool active_ = false, stop_ = false;
};

// ---- template definition -------------------------------------------------------------------
template <class Uniform>
CropBox random_resized_crop_box(int h, int w, const float scale[2], const float ratio[2], Uniform&& uniform) {
  const double area = double(h) * w;
  const double log_lo = std::log(double(ratio[0])), log_hi = std::log(double(ratio[1]));
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * (scale[0] + (scale[1] - scale[0]) * uniform());
    const double aspect = std::exp(log_lo + (log_hi - log_lo) * uniform());
    const int cw = int(std::nearbyint(std::sqrt(target * aspect)));
    const int ch = int(std::nearbyint(std::sqrt(target / aspect)));
    if (0 < cw && cw <= w && 0 < ch && ch <= h) {
      CropBox b;
      b.height = ch;
      b.width = cw;
      b.top = int(uniform() * (h - ch + 1));  // randint(0, h - ch) inclusive
      b.left = int(uniform() * (w - cw + 1));
      return b;
    }
  }
  // Fallback: a centre crop, the whole image clamped to the ratio range.
  CropBox b;
  const double in_ratio = double(w) / h;
  if (in_ratio < ratio[0]) {
    b.width = w;
    b.height = int(std::nearbyint(w / double(ratio[0])));
  } else if (in_ratio > ratio[1]) {
    b.height = h;
    b.width = int(std::nearbyint(h * double(ratio[1])));
  } else {
    b.width = w;
    b.height = h;
  }
  b.top = (h - b.height) / 2;
  b.left = (w - b.width) / 2;
  return b;
}

}  // namespace vitcuda
