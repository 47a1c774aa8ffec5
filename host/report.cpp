// vitcuda — the end-of-training report (include/vitcuda/report.h).
#include "vitcuda/report.h"

#include <algorithm>

#include "vitcuda/checkpoint.h"
#include "vitcuda/image.h"
#include "vitcuda/inspect.h"
#include "vitcuda/metrics.h"
#include "vitcuda/pictures.h"

namespace vitcuda {

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
