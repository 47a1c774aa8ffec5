// vitcuda — pictures (include/vitcuda/pictures.h).
#include "vitcuda/pictures.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "vitcuda/tensor.h"

namespace vitcuda {
namespace {

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
  static const uint8_t k[9][3] = {{68, 1, 84},    {71, 44, 122}, {59, 81, 139},  {44, 113, 142}, {33, 144, 141},
                                  {39, 173, 129}, {92, 200, 99}, {170, 220, 50}, {253, 231, 37}};
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
    throw Error("attention_overlay: map has " + std::to_string(map.size()) +
                " values, expected grid² = " + std::to_string(size_t(grid) * grid));
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

}  // namespace vitcuda
