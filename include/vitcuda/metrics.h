// vitcuda — evaluation metrics: the confusion matrix and per-class accuracy.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace vitcuda {

// counts[t * num_classes + p]: images of true class t predicted as p (rows: truth).
struct ConfusionMatrix {
  int num_classes = 0;
  std::vector<int64_t> counts;

  explicit ConfusionMatrix(int classes = 0) : num_classes(classes), counts(size_t(classes) * classes, 0) {}
  void add(int truth, int predicted);  // throws Error when either is outside [0, num_classes)
  int64_t at(int truth, int predicted) const { return counts[size_t(truth) * num_classes + predicted]; }
  int64_t total() const;
  int64_t support(int truth) const;  // images of class `truth`
  double accuracy() const;           // trace / total (0 when empty)
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

}  // namespace vitcuda
