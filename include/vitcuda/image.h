// vitcuda — 8-bit images: load (PNG, JPEG, … through stb_image), write PNG (stb_image_write),
// resize, channel conversion, CHW planes and the model's input.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "vitcuda/config.h"

namespace vitcuda {

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
// PNG, JPEG, BMP, GIF, … via stb_image. Throws Error naming the file and stb's reason, and
// (before decoding) for a file that is not a regular file (a FIFO, a folder) or whose header
// claims more than the per-image pixel limit (check_image_size).
Image load_image(const std::string& path);
// Throws Error naming the file when width x height exceeds the per-image limit: 2^26 pixels
// (64 Mpixel, e.g. 8192 x 8192) and 65536 per side (docs/DESIGN.md, "Input limits").
void check_image_size(const std::string& path, int64_t width, int64_t height);
// Writes a PNG atomically (temporary file + rename). Throws Error naming the path.
void write_png(const std::string& path, const Image& image);
// Bilinear resampling (pixel centres aligned, as PIL/OpenCV's INTER_LINEAR without antialias):
// augment.h's resize_bilinear, the training loader's, applied to the image's channel planes.
Image resize_bilinear(const Image& image, int width, int height);
// 1 channel: ITU-R BT.601 luma; 3: gray replicated / alpha dropped; 4: opaque alpha added.
Image convert_channels(const Image& image, int channels);
// Planar CHW bytes <-> Image.
std::vector<uint8_t> image_to_chw(const Image& image);
Image image_from_chw(const uint8_t* chw, int channels, int height, int width);
// What the model takes: the image converted to cfg.in_chans, resized to img_size², CHW.
std::vector<uint8_t> model_input(const Image& image, const ViTConfig& cfg);

}  // namespace vitcuda
