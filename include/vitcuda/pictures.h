// vitcuda — pictures of a model at work: the Keras tutorial's patch grid, the attention-rollout
// overlay and the confusion matrix as a colour grid.
#pragma once
#include <cstdint>
#include <vector>

#include "vitcuda/image.h"
#include "vitcuda/metrics.h"

namespace vitcuda {

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
Image patch_grid_image(const uint8_t* chw, int channels, int height, int width, int patch, int scale = 0, int gap = 4);

// A perceptual colour map (viridis, 0 → dark purple, 1 → yellow) as RGB.
void colormap(float t, uint8_t rgb[3]);
// The rollout map [grid²] over the image: three panels (image, map, overlay), upsampled
// bilinearly and min-max normalised to [0, 1] (a constant map shows as 1).
Image attention_overlay(const uint8_t* chw, int channels, int height, int width, const std::vector<float>& map,
                        int grid, int scale = 0, int gap = 4);
// The confusion matrix as a colour grid, `cell` pixels per entry: each row normalised by its
// support (per-class recall on the diagonal), through colormap(); no text.
Image confusion_matrix_image(const ConfusionMatrix& cm, int cell = 0);

}  // namespace vitcuda
