// vitcuda — images (include/vitcuda/image.h). The one translation unit with the stb_image /
// stb_image_write implementations (static, so they never clash with another copy in an
// application).
#include "vitcuda/image.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "host/file_io.h"
#include "vitcuda/augment.h"  // resize_bilinear on [C, H, W] planes
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

void check_image_size(const std::string& path, int64_t width, int64_t height) {
  if (width < 1 || height < 1 || width > kMaxImageSide || height > kMaxImageSide || width * height > kMaxImagePixels)
    throw Error("image '" + path + "' is " + std::to_string(width) + "x" + std::to_string(height) +
                " pixels, more than the limit of " + std::to_string(kMaxImagePixels) + " pixels (" +
                std::to_string(kMaxImageSide) + " per side) for one image");
}

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
  // Regular files only (a FIFO would block stb's fopen), and the size from the header
  // (stbi_info) before the decoder allocates width x height x channels.
  uint64_t file_size = 0;
  FILE* f = nullptr;
  try {
    f = open_regular_file(path, &file_size);
  } catch (const Error& e) {
    const std::string what = e.what();
    const std::string prefix = "cannot open " + in_quotes(path) + ": ";
    throw Error("cannot read image '" + path +
                "': " + (what.compare(0, prefix.size(), prefix) == 0 ? what.substr(prefix.size()) : what));
  }
  std::unique_ptr<FILE, int (*)(FILE*)> closer(f, std::fclose);
  int w = 0, h = 0, c = 0;
  if (!stbi_info_from_file(f, &w, &h, &c)) throw Error("cannot decode image '" + path + "': " + stbi_failure_reason());
  check_image_size(path, w, h);
  stbi_uc* data = stbi_load_from_file(f, &w, &h, &c, 0);
  if (!data) throw Error("cannot decode image '" + path + "': " + stbi_failure_reason());
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
  auto sink = [](void* ctx, void* data, int size) {
    static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size);
  };
  if (!stbi_write_png_to_func(sink, &bytes, image.width, image.height, image.channels, image.pixels.data(),
                              image.width * image.channels))
    throw Error("write_png '" + path + "': PNG encoding failed");
  write_file_atomic(path, bytes);
}
#endif

// augment.h's planar resize, the training loader's, on the image's planes: inference
// (model_input) resizes exactly as training does.
Image resize_bilinear(const Image& image, int width, int height) {
  if (width <= 0 || height <= 0) throw Error("resize_bilinear: target size must be positive");
  if (width == image.width && height == image.height) return image;
  const std::vector<uint8_t> chw = image_to_chw(image);
  std::vector<uint8_t> out(size_t(image.channels) * height * width);
  resize_bilinear(chw.data(), image.channels, image.height, image.width, out.data(), height, width);
  return image_from_chw(out.data(), image.channels, height, width);
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

}  // namespace vitcuda
