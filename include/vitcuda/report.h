// vitcuda — the end-of-training report: confusion matrix and per-class accuracy (CSV, PNG),
// the patch grid and the attention map of one test image.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "vitcuda/data.h"
#include "vitcuda/model.h"

namespace vitcuda {

// Writes into `dir`: confusion_matrix.csv, per_class_accuracy.csv (from `predictions`, one per
// image of `data`, e.g. from Trainer::evaluate), and, when PNG output is available,
// confusion_matrix.png, patches.png and attention.png (image `image_index` of `data`; runs
// one forward pass). Returns the file names written.
std::vector<std::string> write_test_report(const std::string& dir, Model& model, const Dataset& data,
                                           const std::vector<int32_t>& predictions,
                                           const std::vector<std::string>& class_names = {}, int64_t image_index = 0);

}  // namespace vitcuda
