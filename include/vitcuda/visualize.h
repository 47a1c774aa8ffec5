// vitcuda — evaluation metrics and pictures: the confusion matrix and per-class accuracy,
// images (load, resize, PNG), the Keras tutorial's patch grid, attention rollout
// (Abnar & Zuidema 2020) from a forward pass's saved q, k and logsumexp, and a colour-grid
// heat map of the confusion matrix. PNG/JPEG go through stb_image / stb_image_write.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "vitcuda/config.h"
#include "vitcuda/data.h"
#include "vitcuda/model.h"
#include "vitcuda/tensor.h"

namespace vitcuda {

// ---- metrics --------------------------------------------------------------------------------
// counts[t * num_classes + p]: images of true class t predicted as p (rows: truth).
struct ConfusionMatrix {
  int num_classes = 0;
  std::vector<int64_t> counts;

  explicit ConfusionMatrix(int classes = 0) : num_classes(classes), counts(size_t(classes) * classes, 0) {}
  void add(int truth, int predicted);  // throws Error when either is outside [0, num_classes)
  int64_t at(int truth, int predicted) const { return counts[size_t(truth) * num_classes + predicted]; }
  int64_t total() const;
  int64_t support(int truth) const;    // images of class `truth`
  double accuracy() const;             // trace / total (0 when empty)
  // Recall of class t: at(t, t) / support(t); NaN when the class has no images.
  double class_accuracy(int truth) const;
  // CSV with a header row "true\pred,<names...>" and one row per true class. `names` may be
  // empty (class indices are used) or hold one name per class.
  std::string to_csv(const std::vector<std::string>& names = {}) const;
  // CSV "class,name,support,correct,accuracy" (accuracy empty for classes with no images).
  std::string per_class_csv(const std::vector<std::string>& names = {}) const;
};
ConfusionMatrix confusion_matrix(const std::vector<int32_t>& labels, const std::vector<int32_t>& predictions,
                                 int num_classes);

// ---- reading a forward pass back ------------------------------------------------------------
// Host fp32 copy of any tensor (host or device memory of `backend`; f32, f64, bf16, f16, i32, u8).
std::vector<float> to_host_f32(Backend& backend, const Tensor& t);
// Logits of the last forward on the host, [B * num_classes].
std::vector<float> last_logits(const Model& model);
// argmax of each row of the last forward's logits, [B].
std::vector<int32_t> last_predictions(const Model& model);
// Softmax probabilities of the last forward, [B * num_classes].
std::vector<float> last_probabilities(const Model& model);

// Attention probabilities of block `layer` for image `index` of the last forward:
// [H, T, T], P = exp(scale · q·k − lse), recomputed from the saved q, k and logsumexp.
std::vector<float> attention_probs(const Model& model, int layer, int index);

// Attention rollout (Abnar & Zuidema 2020). `layers[l]` holds [heads, T, T] attention
// probabilities. Per layer: average the heads, add the identity, renormalise the rows;
// multiply the layers (R = Â_L ··· Â_1). Returns the relevance of each patch, [T − 1] with
// a class token (the cls row without its own column) or [T] without (the mean over rows).
std::vector<float> attention_rollout(const std::vector<std::vector<float>>& layers, int heads, int tokens,
                                     bool class_token);
// The rollout map of image `index` of the model's last forward, [grid * grid].
std::vector<float> attention_rollout(const Model& model, int index);

// ---- images ---------------------------------------------------------------------------------
// 8-bit image, interleaved HWC (channels 1, 3 or 4).
struct Image {
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;
  Image() = default;
  Image(int w, int h, int c, uint8_t fill = 0) : width(w), height(h), channels(c), pixels(size_t(w) * h * c, fill) {}
  uint8_t* at(int x, int y) { return pixels.data() + (size_t(y) * width + x) * channels; }
  const uint8_t* at(int x, int y) const { return pixels.data() + (size_t(y) * width + x) * channels; }
};

// False when vitcuda was built without stb (libstb-dev): load_image and write_png throw.
bool png_supported();
// PNG, JPEG, BMP, GIF, … via stb_image. Throws Error naming the file and stb's reason.
Image load_image(const std::string& path);
// Writes a PNG atomically (temporary file + rename). Throws Error naming the path.
void write_png(const std::string& path, const Image& image);
// Bilinear resampling (pixel centres aligned, as PIL/OpenCV's INTER_LINEAR without antialias).
Image resize_bilinear(const Image& image, int width, int height);
// 1 channel: ITU-R BT.601 luma; 3: gray replicated / alpha dropped; 4: opaque alpha added.
Image convert_channels(const Image& image, int channels);
// Planar CHW bytes <-> Image.
std::vector<uint8_t> image_to_chw(const Image& image);
Image image_from_chw(const uint8_t* chw, int channels, int height, int width);
// What the model takes: the image converted to cfg.in_chans, resized to img_size², CHW.
std::vector<uint8_t> model_input(const Image& image, const ViTConfig& cfg);

// ---- pictures -------------------------------------------------------------------------------
// Layout of the patch-grid picture (see patch_grid_image), in output pixels.
struct PatchGridLayout {
  int scale = 1;  // upscaling of every input pixel (nearest neighbour)
  int gap = 4;    // white margin around and between the panels and between patches
  int width = 0, height = 0;
  int grid_x0 = 0;  // left edge of the patch grid (top edge: gap); the original starts at (gap, gap)
};
PatchGridLayout patch_grid_layout(int height, int width, int patch, int scale, int gap);
// The Keras tutorial's picture: the original image (left) and its patches laid out on the
// grid with `gap` white pixels between them (right), upscaled `scale` times. RGB output;
// chw: [channels, height, width] bytes. scale 0: chosen so the image is about 256 pixels.
Image patch_grid_image(const uint8_t* chw, int channels, int height, int width, int patch, int scale = 0,
                       int gap = 4);

// A perceptual colour map (viridis, 0 → dark purple, 1 → yellow) as RGB.
void colormap(float t, uint8_t rgb[3]);
// The rollout map [grid²] over the image: three panels (image, map, overlay), upsampled
// bilinearly and min-max normalised to [0, 1] (a constant map shows as 1).
Image attention_overlay(const uint8_t* chw, int channels, int height, int width, const std::vector<float>& map,
                        int grid, int scale = 0, int gap = 4);
// The confusion matrix as a colour grid, `cell` pixels per entry: each row normalised by its
// support (per-class recall on the diagonal), through colormap(); no text.
Image confusion_matrix_image(const ConfusionMatrix& cm, int cell = 0);

// ---- the end-of-training report ---------------------------------------------------------------
// Writes into `dir`: confusion_matrix.csv, per_class_accuracy.csv (from `predictions`, one per
// image of `data`, e.g. from Trainer::evaluate), and, when PNG output is available,
// confusion_matrix.png, patches.png and attention.png (image `image_index` of `data`; runs
// one forward pass). Returns the file names written.
std::vector<std::string> write_test_report(const std::string& dir, Model& model, const Dataset& data,
                                           const std::vector<int32_t>& predictions,
                                           const std::vector<std::string>& class_names = {},
                                           int64_t image_index = 0);

}  // namespace vitcuda
